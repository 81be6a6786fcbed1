// Signing in with an API key, where the gateway requires one (GET /auth says). The key goes to
// POST /auth/login once and comes back as an HttpOnly cookie for this browser session: the page never
// keeps it, and every request and the websocket carry the cookie. A 401 anywhere opens the dialog again.

import { $, api, emit, getJson, on } from "./util.js";

const ui = {
  dialog: $("#signin"), form: $("#signin-form"), key: $("#signin-key"), error: $("#signin-error"),
  who: $("#who"), whoName: $("#who-name"), signOut: $("#sign-out"),
};

let waiting = null; // the promise of the sign-in in progress, shared by everyone who needs it

function showWho(me) {
  ui.who.hidden = !me.authenticated;
  ui.whoName.textContent = me.authenticated ? me.name : "";
  ui.who.title = me.authenticated ? `Signed in with key ${me.key_id} (${me.scopes.join(", ")})` : "";
}

/** Resolves once this page may call the gateway: at once when no key is needed or the cookie is valid. */
export async function signedIn() {
  const me = await getJson("auth");
  showWho(me);
  if (!me.keys_required || me.authenticated) return me;
  return askForKey();
}

/** Open the dialog (once, however many callers ask) and resolve after a successful sign-in. */
export function askForKey(message = "") {
  if (waiting) return waiting;
  ui.error.textContent = message;
  ui.key.value = "";
  waiting = new Promise((resolve) => {
    ui.form.onsubmit = async (event) => {
      event.preventDefault();
      ui.error.textContent = "";
      try {
        const me = await getJson("auth/login", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ key: ui.key.value.trim() }),
        });
        ui.dialog.close();
        waiting = null;
        showWho(me);
        emit("signed-in", me);
        resolve(me);
      } catch (err) {
        ui.error.textContent = err.status === 401 ? "That key is not valid (or was revoked)." : err.message;
        ui.key.select();
      }
    };
  });
  if (!ui.dialog.open) ui.dialog.showModal();
  ui.key.focus();
  return waiting;
}

export function setupAuth() {
  ui.dialog.addEventListener("cancel", (e) => e.preventDefault()); // nothing works without a key
  on("unauthorized", (message) => askForKey(message || "Your key is no longer accepted. Enter a key."));
  ui.signOut.addEventListener("click", async () => {
    await fetch(api("auth/logout"), { method: "POST" }).catch(() => null);
    location.reload();
  });
}
