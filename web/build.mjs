// Bundle @niivue/niivue into one ES module served by neurorad.server (route /web/static/dist/niivue.js).
// Output: neurorad/server/static/dist/niivue.js (gitignored; rebuilt by `make web`).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const outfile = path.join(here, "..", "neurorad", "server", "static", "dist", "niivue.js");

await build({
  entryPoints: [path.join(here, "src", "niivue-entry.js")],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["chrome110", "firefox115"],
  minify: true,
  sourcemap: false,
  legalComments: "linked",
  outfile,
  logLevel: "warning",
});
console.log(`built ${path.relative(process.cwd(), outfile)}`);
