// Re-export NiiVue so the review pages can `import { Niivue } from ".../niivue.js"`.
export * from "@niivue/niivue";
