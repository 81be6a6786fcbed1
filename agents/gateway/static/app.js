// ragbus web chat. No framework, no build step: ES modules talking to the gateway on the same origin.
//   chat.js       websocket /ws/chat: ask, stream, stop, resume; answers with citations and ratings
//   sessions.js   recent conversations (GET /sessions)
//   documents.js  document list, live status over SSE, uploads
//   indexes.js    which embedding index answers, and re-index progress
//   auth.js       signing in with an API key where the gateway requires one
//   util.js       DOM and formatting helpers

import {
  ask, autoGrow, connect, currentSession, newConversation, openConversation, reconnectNow, setupAnswerMode,
  stopTurn, storedSession, updateComposer,
} from "./chat.js";
import { setupAuth, signedIn } from "./auth.js";
import { listen, refreshDocs, setupUploads } from "./documents.js";
import { refreshIndexes } from "./indexes.js";
import { markCurrent, refreshSessions, refreshUntilListed, setupSessions } from "./sessions.js";
import { $, el, on } from "./util.js";

const THEME_KEY = "ragbus.theme";
const PHONE = matchMedia("(max-width: 799px)");

const ui = {
  form: $("#composer"), input: $("#question"), stop: $("#stop"), retry: $("#conn-retry"),
  newChat: $("#new-chat"), theme: $("#theme"), toggle: $("#panel-toggle"), close: $("#panel-close"),
  scrim: $("#scrim"), drawer: $("#passage"), drawerClose: $("#passage-close"), emptyTitle: $("#empty-title"),
  suggestions: $("#suggestions"), emptyUpload: $("#empty-upload"), fileInput: $("#file-input"), toast: $("#toast"), working: $("#working-count"),
};

/* ---------- side panel (off-canvas on phones) ---------- */

function setPanelOpen(open) {
  document.body.classList.toggle("panel-open", open);
  ui.toggle.setAttribute("aria-expanded", String(open));
  ui.scrim.hidden = !open;
  if (open && PHONE.matches) ui.close.focus();
}

const closePanelOnPhone = () => { if (PHONE.matches) setPanelOpen(false); };

/* ---------- theme: system, light or dark ---------- */

const THEMES = ["system", "light", "dark"];

function applyTheme(theme) {
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  const next = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
  ui.theme.dataset.mode = theme;
  ui.theme.setAttribute("aria-label", `Theme: ${theme}. Switch to ${next}.`);
  ui.theme.title = `Theme: ${theme} (click for ${next})`;
}

function cycleTheme() {
  let theme = "system";
  try { theme = localStorage.getItem(THEME_KEY) || "system"; } catch { /* storage disabled */ }
  theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
  try { localStorage.setItem(THEME_KEY, theme); } catch { /* this page only */ }
  applyTheme(theme);
}

function loadTheme() {
  let theme = "system";
  try { theme = localStorage.getItem(THEME_KEY) || "system"; } catch { /* storage disabled */ }
  applyTheme(theme);
}

/* ---------- small things ---------- */

function toast(text) {
  clearTimeout(ui.toast.timer);
  ui.toast.textContent = text;
  ui.toast.hidden = false;
  ui.toast.timer = setTimeout(() => { ui.toast.hidden = true; }, 5000);
}

/** The empty state suggests a first question about the newest indexed documents. */
function onDocsChanged(list) {
  const indexed = list.filter((d) => d.status === "indexed");
  const working = list.filter((d) => d.status === "uploaded" || d.status === "parsed").length;
  ui.working.textContent = working ? String(working) : "";
  ui.working.title = working ? `${working} document${working === 1 ? "" : "s"} processing` : "";
  ui.emptyUpload.hidden = list.length > 0;
  ui.emptyTitle.textContent = indexed.length ? "Ask a question about your documents"
    : list.length ? "Your documents are being read…" : "Upload a document, then ask about it";
  const questions = indexed.slice(0, 3).map((d) => {
    const topic = (d.title || d.name || "").replace(/\.[a-z0-9]{1,5}$/i, "").replace(/[-_]+/g, " ").trim();
    return `What is “${topic}” about?`;
  });
  ui.suggestions.replaceChildren(...questions.map((q) =>
    el("button", { type: "button", class: "suggestion", onclick: () => ask(q) }, q)));
}

async function openSession(id) {
  closePanelOnPhone();
  try {
    await openConversation(id, { focus: !PHONE.matches }); // no keyboard popping up on a phone
  } catch (err) {
    toast(`Couldn't open that conversation: ${err.message}`);
  }
}

/* ---------- wiring ---------- */

function bindEvents() {
  setupAnswerMode();
  ui.form.addEventListener("submit", (e) => { e.preventDefault(); ask(ui.input.value); });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); ask(ui.input.value); }
  });
  ui.input.addEventListener("input", autoGrow);
  ui.stop.addEventListener("click", () => { stopTurn(); ui.input.focus(); });
  ui.retry.addEventListener("click", reconnectNow);
  ui.newChat.addEventListener("click", () => { newConversation(); closePanelOnPhone(); });
  ui.theme.addEventListener("click", cycleTheme);
  ui.emptyUpload.addEventListener("click", () => ui.fileInput.click());

  ui.toggle.addEventListener("click", () => setPanelOpen(!document.body.classList.contains("panel-open")));
  ui.close.addEventListener("click", () => { setPanelOpen(false); ui.toggle.focus(); });
  ui.scrim.addEventListener("click", () => setPanelOpen(false));
  addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("panel-open") && !ui.drawer.open) {
      setPanelOpen(false);
      ui.toggle.focus();
    }
  });

  ui.drawerClose.addEventListener("click", () => ui.drawer.close());
  ui.drawer.addEventListener("click", (e) => { if (e.target === ui.drawer) ui.drawer.close(); }); // backdrop

  on("docs-changed", onDocsChanged);
  on("session-changed", markCurrent);
  on("answer-done", ({ session_id: id }) => { if (id) refreshUntilListed(id); });

  addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    reconnectNow();
    refreshDocs();
    refreshSessions();
  });
}

async function start() {
  setupAuth();
  try {
    await signedIn(); // where the gateway requires a key: the sign-in dialog first
  } catch (err) {
    toast(`Couldn't reach the server: ${err.message}`);
  }
  // a key refused later (revoked, or the browser session ended): start afresh once signed in again
  on("signed-in", () => location.reload());
  connect();
  refreshDocs();
  refreshIndexes();
  listen();
  const returning = storedSession(); // this tab had a conversation before a reload: show it again
  markCurrent(currentSession());
  refreshSessions();
  if (returning) openConversation(returning, { focus: false }).catch(() => toast("Couldn't load this conversation."));
}

loadTheme();
bindEvents();
setupUploads({ onDrop: () => setPanelOpen(true) });
setupSessions({ onOpen: openSession });
updateComposer();
start();
