// Small page behaviours (sign-in, sign-out, add user): external so the pages' Content-Security-Policy
// needs no 'unsafe-inline' for scripts. URLs come from data attributes the templates set.
const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

const signout = document.getElementById("signout");
if (signout) {
  signout.addEventListener("click", async () => {
    await fetch(signout.dataset.logoutUrl, { method: "POST", credentials: "same-origin",
                                             headers: { "X-CSRF-Token": csrf() } });
    location.href = signout.dataset.loginPage;
  });
}

const login = document.getElementById("login-form");
if (login) {
  login.addEventListener("submit", async (e) => {
    e.preventDefault();
    const err = document.getElementById("login-error");
    err.textContent = "";
    const resp = await fetch(login.dataset.loginUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: login.username.value, password: login.password.value }),
    });
    if (resp.ok) {
      location.href = login.dataset.next;
      return;
    }
    if (resp.status === 429) {
      // rate-limited sign-in: the server says how long to wait (Retry-After, seconds)
      const wait = Math.max(1, Math.ceil(Number(resp.headers.get("Retry-After") || 60) / 60));
      err.textContent = `Too many failed sign-ins; try again in ${wait} minute${wait > 1 ? "s" : ""}.`;
      err.dataset.retryAfter = resp.headers.get("Retry-After") ?? "";
      return;
    }
    err.textContent = "Wrong user name or password.";
  });
}

const addUser = document.getElementById("add-user");
if (addUser) {
  addUser.addEventListener("submit", async (e) => {
    e.preventDefault();
    const resp = await fetch("/api/users", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify({ username: addUser.username.value, password: addUser.password.value,
                             role: addUser.role.value }),
    });
    const out = await resp.json().catch(() => ({}));
    document.getElementById("add-status").textContent = resp.ok ? `added ${out.username}`
                                                                : `failed: ${out.detail ?? resp.status}`;
    if (resp.ok) location.reload();
  });
}

// Worklist rows open their study (no inline handlers).
for (const tr of document.querySelectorAll("#worklist tbody tr[data-href]")) {
  tr.addEventListener("click", () => { location.href = tr.dataset.href; });
}
