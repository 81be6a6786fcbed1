// Recent conversations (GET /sessions): the list in the side panel, refreshed after each answer.

import { $, el, fmtWhen, getJson, plural } from "./util.js";

const SHOWN = 8; // more behind "Show all"

const ui = { list: $("#session-list"), empty: $("#sessions-empty"), more: $("#sessions-more") };
const state = { sessions: [], current: null, expanded: false, seq: 0, onOpen: null };

export function setupSessions({ onOpen }) {
  state.onOpen = onOpen;
  ui.more.addEventListener("click", () => {
    state.expanded = !state.expanded;
    render();
  });
}

export async function refreshSessions() {
  const seq = ++state.seq;
  try {
    const body = await getJson("sessions");
    if (seq !== state.seq) return;
    state.sessions = body.sessions || [];
    render();
  } catch {
    /* the list is a convenience: keep what is shown */
  }
  return state.sessions;
}

/** After an answer the session may take a moment to reach the read model: look again until it is there. */
export async function refreshUntilListed(sessionId, tries = 4) {
  for (let i = 0; i < tries; i++) {
    const sessions = await refreshSessions();
    if (sessions.some((s) => s.session_id === sessionId)) return;
    await new Promise((r) => setTimeout(r, 700 * (i + 1)));
  }
}

export function markCurrent(sessionId) {
  state.current = sessionId;
  for (const button of ui.list.querySelectorAll(".session")) {
    if (button.dataset.sessionId === sessionId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function render() {
  const all = state.sessions;
  const currentIndex = all.findIndex((s) => s.session_id === state.current);
  // the current conversation stays visible even when it is not among the most recent
  const shown = state.expanded ? all : all.filter((s, i) => i < SHOWN || i === currentIndex);
  ui.list.replaceChildren(...shown.map(item));
  ui.empty.hidden = all.length > 0;
  ui.more.hidden = all.length <= SHOWN;
  ui.more.textContent = state.expanded ? "Show fewer" : `Show all ${all.length}`;
  ui.more.setAttribute("aria-expanded", String(state.expanded));
}

function item(s) {
  const title = s.title || "Untitled conversation";
  const when = fmtWhen(s.updated_at);
  return el("li", {},
    el("button", {
      type: "button", class: "session", "data-session-id": s.session_id, title,
      "aria-current": s.session_id === state.current ? "true" : null,
      onclick: () => state.onOpen?.(s.session_id),
    },
    el("span", { class: "session-title" }, title),
    el("span", { class: "session-meta" }, [plural(s.turns || 0, "question"), when].filter(Boolean).join(" · "))));
}
