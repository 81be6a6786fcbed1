// The conversation: websocket /ws/chat (ask, stream, resume), answer rendering with citations, ratings.
//
// Frames: client {"type":"ask",...} | {"type":"resume","query_id","after_seq"}; server accepted, token{seq},
// then done or error. Questions on one socket are answered in order, so asks waiting for their "accepted"
// frame are kept per socket, oldest first.

import {
  $, ICONS, announce, copyText, el, emit, fmtScore, fmtSeconds, getJson, icon, newId, parseJson,
  plural, store,
} from "./util.js";

const SESSION_KEY = "ragbus.session_id";
const INFLIGHT_KEY = "ragbus.inflight"; // the answer streaming when the tab was closed or reloaded
const MODE_KEY = "ragbus.answer_mode"; // generative | extractive | auto; empty: the generator's setting
const UNAUTHORIZED = 4401; // the close code of a socket refused for want of a valid API key
const CITE_RE = /\[(\d+(?:\s*,\s*\d+)*)\]/g; // [1]  [2, 3]

const ui = {
  log: $("#log"), scroller: $("#scroller"), empty: $("#empty"),
  form: $("#composer"), input: $("#question"), send: $("#send"), stop: $("#stop"), mode: $("#answer-mode"),
  conn: $("#conn"), connText: $("#conn-text"), connDetail: $("#conn-detail"), retry: $("#conn-retry"),
  drawer: $("#passage"), drawerN: $("#passage-n"), drawerTitle: $("#passage-title"),
  drawerMeta: $("#passage-meta"), drawerText: $("#passage-text"),
};

/* ---------- session id ---------- */

export function currentSession() {
  let id = store.get(SESSION_KEY);
  if (!id) {
    id = newId();
    store.set(SESSION_KEY, id);
  }
  return id;
}

export const storedSession = () => store.get(SESSION_KEY);

function setSession(id) {
  store.set(SESSION_KEY, id);
  emit("session-changed", id);
}

/* ---------- websocket connection ---------- */

const conn = { ws: null, attempt: 0, timer: 0 };

function wsUrl() {
  const url = new URL("ws/chat", document.baseURI);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export function connect() {
  clearTimeout(conn.timer);
  setConnState("connecting", "Connecting…");
  const ws = new WebSocket(wsUrl());
  ws.pending = []; // asks sent on this socket, not yet accepted (FIFO)
  conn.ws = ws;
  ws.onopen = () => {
    if (conn.ws !== ws) return;
    conn.attempt = 0;
    setConnState("online", "Connected");
    resumeInterrupted();
  };
  ws.onmessage = (event) => {
    const msg = parseJson(event.data);
    if (msg) onFrame(ws, msg);
  };
  ws.onclose = (event) => {
    if (conn.ws !== ws) return; // replaced on purpose (stop, new chat)
    conn.ws = null;
    connectionLost(ws);
    if (event.code === UNAUTHORIZED) { // the key is missing or was revoked: reconnect once signed in
      setConnState("offline", "Signed out");
      emit("unauthorized", "");
      return;
    }
    scheduleReconnect();
  };
}

/** Drop the current socket and open a fresh one: the server stops relaying what we no longer want. */
function rotateSocket() {
  const old = conn.ws;
  connect();
  if (old) old.close(1000, "client moved on");
}

function scheduleReconnect() {
  const base = Math.min(15000, 500 * 2 ** conn.attempt++);
  const delay = base * (0.8 + Math.random() * 0.4); // jitter, so many tabs don't reconnect in lockstep
  setConnState("offline", "Offline", ` · retrying in ${Math.ceil(delay / 1000)} s`);
  conn.timer = setTimeout(connect, delay);
}

export function reconnectNow() {
  if (conn.ws) return;
  conn.attempt = 0;
  connect();
}

const isOnline = () => conn.ws && conn.ws.readyState === WebSocket.OPEN;

function setConnState(state, text, detail = "") {
  ui.conn.dataset.state = state;
  ui.connText.textContent = text;
  ui.connDetail.textContent = detail;
  ui.retry.hidden = state !== "offline";
  updateComposer();
}

/* ---------- turns ---------- */

const chat = {
  byId: new Map(),  // query_id -> turn
  active: null,     // the turn being answered; the composer shows Stop while set
};

function onFrame(ws, msg) {
  if (msg.type === "status") { // the server lost (or got back) NATS, the database or the LLM
    if (msg.state === "ok") setConnState("online", "Connected");
    else setConnState("degraded", "Reconnecting…", ` · ${msg.message || "a part of the system is down"}`);
    return;
  }
  if (msg.code === "unauthorized") return; // the close that follows says it to the page
  const turn = turnFor(ws, msg);
  if (!turn || turn.finished) return; // stopped by the user, or already done: ignore
  if (msg.type === "accepted") accepted(turn);
  else if (msg.type === "token") addToken(turn, msg);
  else if (msg.type === "done") finishTurn(turn, msg);
  else if (msg.type === "error") failTurn(turn, msg.message || "Something went wrong.");
  else if (msg.type === "busy") failTurn(turn, `${msg.message || "Too busy right now."} Try again in ${msg.retry_after || 5} s.`);
}

/** "accepted" binds the oldest waiting ask to its query_id; an error without query_id is for that ask too. */
function turnFor(ws, msg) {
  const id = msg.query_id;
  if (id && chat.byId.has(id)) return chat.byId.get(id);
  if (msg.type !== "accepted" && id) return null; // a query we no longer track
  const turn = ws.pending.shift();
  if (turn && id) {
    turn.queryId = id;
    chat.byId.set(id, turn);
    turn.li.dataset.queryId = id;
  }
  return turn;
}

function accepted(turn) {
  store.set(INFLIGHT_KEY, JSON.stringify({ query_id: turn.queryId, question: turn.question,
    session_id: turn.sessionId }));
  waitForFirstToken(turn);
}

/** Until the first token: what is happening, and for how long (a small model on a Pi can take a while). */
function waitForFirstToken(turn) {
  const started = performance.now();
  const tick = () => {
    const s = Math.round((performance.now() - started) / 1000);
    setMeta(turn, s < 3 ? "Searching your documents…" : `Reading the passages and thinking… ${s} s`);
  };
  tick();
  clearInterval(turn.waiting);
  turn.waiting = setInterval(tick, 1000);
}

/** The answer mode select under the composer: remembered across visits, sent with each question. */
export function setupAnswerMode() {
  if (!ui.mode) return;
  try { ui.mode.value = localStorage.getItem(MODE_KEY) || ""; } catch { /* storage disabled */ }
  ui.mode.addEventListener("change", () => {
    try { localStorage.setItem(MODE_KEY, ui.mode.value); } catch { /* this page only */ }
  });
}

export function ask(question) {
  question = question.trim();
  if (!isOnline() || chat.active || !question) return false;
  const turn = addTurn(question);
  turn.sessionId = currentSession();
  const frame = { type: "ask", question, session_id: turn.sessionId };
  if (ui.mode?.value) frame.answer_mode = ui.mode.value;
  conn.ws.send(JSON.stringify(frame));
  conn.ws.pending.push(turn);
  chat.active = turn;
  if (ui.input.value.trim() === question) {
    ui.input.value = "";
    autoGrow();
  }
  updateComposer();
  return true;
}

function addTurn(question, { streaming = true } = {}) {
  const userLi = el("li", { class: "msg user" }, el("div", { class: "bubble" }, question));
  const cursor = el("span", { class: "cursor", "aria-hidden": "true" });
  const text = document.createTextNode("");
  const answer = el("div", { class: "answer", "aria-busy": String(streaming) }, text, streaming && cursor);
  const meta = el("p", { class: "meta" }, streaming ? "Sending…" : "");
  const bubble = el("div", { class: "bubble" }, answer, meta);
  const li = el("li", { class: "msg assistant", "data-state": streaming ? "streaming" : "done" }, bubble);
  ui.log.append(userLi, li);
  ui.empty.hidden = true;
  scrollToBottom();
  return { question, queryId: null, sessionId: null, tokens: [], next: 0, streamed: "", text, cursor, answer,
    meta, bubble, li, raf: 0, waiting: 0, finished: !streaming, interrupted: false };
}

/** Tokens are kept by seq: a replayed or repeated token is ignored, a gap waits for the missing one. */
function addToken(turn, msg) {
  const seq = Number.isInteger(msg.seq) ? msg.seq : turn.next;
  if (seq < turn.next || turn.tokens[seq] !== undefined) return;
  turn.tokens[seq] = msg.text || "";
  clearInterval(turn.waiting);
  while (turn.tokens[turn.next] !== undefined) turn.streamed += turn.tokens[turn.next++];
  if (turn.meta.textContent) setMeta(turn, "");
  if (!turn.raf) turn.raf = requestAnimationFrame(() => renderStream(turn));
}

function renderStream(turn) {
  turn.raf = 0;
  const stick = nearBottom();
  turn.text.data = turn.streamed;
  if (stick) scrollToBottom();
}

function setMeta(turn, text) {
  turn.meta.textContent = text;
}

function finishTurn(turn, msg) {
  const stick = nearBottom();
  endTurn(turn);
  store.remove(INFLIGHT_KEY);
  renderFinished(turn, {
    answer: typeof msg.answer === "string" ? msg.answer : turn.streamed,
    citations: msg.citations, sources: msg.sources, timings: msg.timings, model: msg.model,
    generator: msg.generator, attribution: msg,
  });
  if (stick) scrollToBottom();
  announce(`Answer: ${msg.answer || ""}`);
  emit("answer-done", { session_id: msg.session_id || turn.sessionId, query_id: turn.queryId });
}

function failTurn(turn, message, { retry = false } = {}) {
  endTurn(turn);
  store.remove(INFLIGHT_KEY);
  flushText(turn);
  turn.li.dataset.state = "error";
  turn.bubble.classList.add("error");
  setMeta(turn, message);
  if (retry) {
    turn.meta.append(" ", el("button", { type: "button", class: "link-btn", onclick: () => {
      if (!ask(turn.question)) return;
      turn.li.previousElementSibling?.remove(); // the question, asked again below
      turn.li.remove();
    } }, "Ask again"));
  }
  announce(message);
}

export function stopTurn() {
  const turn = chat.active;
  if (!turn) return;
  endTurn(turn); // later frames for its query_id are ignored (turn.finished)
  store.remove(INFLIGHT_KEY);
  flushText(turn);
  turn.li.dataset.state = "stopped";
  setMeta(turn, "Stopped.");
  // Tell the server too, so the generator stops and frees the LLM for the next question.
  if (turn.queryId && conn.ws && conn.ws.readyState === WebSocket.OPEN) {
    conn.ws.send(JSON.stringify({ type: "cancel", query_id: turn.queryId }));
  }
  // The server would go on relaying this answer on the socket, and answer the next question only after it:
  // a fresh socket lets the next question start at once.
  rotateSocket();
}

function flushText(turn) {
  turn.text.data = turn.streamed;
  turn.answer.hidden = !turn.streamed;
}

function endTurn(turn) {
  clearInterval(turn.waiting);
  cancelAnimationFrame(turn.raf);
  turn.raf = 0;
  turn.finished = true;
  turn.cursor.remove();
  turn.answer.setAttribute("aria-busy", "false");
  if (chat.active === turn) {
    chat.active = null;
    updateComposer();
    if (!document.activeElement || document.activeElement === document.body) ui.input.focus();
  }
}

/* ---------- dropped connections: resume where the stream stopped ---------- */

function connectionLost(ws) {
  const turn = chat.active;
  // asks the server never acknowledged cannot be resumed: we don't know their query_id
  for (const waiting of ws.pending) {
    if (!waiting.finished) failTurn(waiting, "Connection lost before the question was accepted.", { retry: true });
  }
  ws.pending = [];
  if (turn && !turn.finished && turn.queryId) {
    clearInterval(turn.waiting);
    turn.interrupted = true;
    turn.li.dataset.state = "reconnecting";
    setMeta(turn, "Connection lost — reconnecting to finish this answer…");
  }
}

function resumeInterrupted() {
  const turn = chat.active;
  if (!turn || turn.finished || !turn.interrupted || !turn.queryId) return;
  turn.interrupted = false;
  turn.li.dataset.state = "streaming";
  if (turn.streamed) setMeta(turn, "");
  else waitForFirstToken(turn);
  conn.ws.send(JSON.stringify({ type: "resume", query_id: turn.queryId, after_seq: turn.next - 1 }));
}

/** After a reload: continue the answer that was streaming, unless history shows it finished. */
function resumeAfterReload(messages) {
  const inflight = parseJson(store.get(INFLIGHT_KEY) || "null");
  if (!inflight || !inflight.query_id || inflight.session_id !== currentSession()) return;
  if (messages.some((m) => m.query_id === inflight.query_id)) {
    store.remove(INFLIGHT_KEY);
    return;
  }
  const turn = addTurn(inflight.question || "…");
  turn.queryId = inflight.query_id;
  turn.sessionId = inflight.session_id;
  turn.interrupted = true;
  turn.li.dataset.queryId = turn.queryId;
  chat.byId.set(turn.queryId, turn);
  chat.active = turn;
  setMeta(turn, "Picking up where this answer left off…");
  updateComposer();
  if (isOnline()) resumeInterrupted();
}

/* ---------- rendering a finished answer ---------- */

function renderFinished(turn, { answer, citations, sources, timings, model, generator, rating, attribution }) {
  citations = Array.isArray(citations) ? citations : [];
  sources = Array.isArray(sources) ? sources : [];
  const sentences = Array.isArray(attribution?.sentences) ? attribution.sentences : [];
  turn.li.dataset.state = "done";
  turn.li.dataset.answerMode = attribution?.answer_mode || "generative";
  turn.answer.hidden = false;
  turn.answer.replaceChildren(...(sentences.length
    ? renderAttributed(answer || "", sentences, citations)
    : renderAnswer(answer || "(no answer)", citations)));
  const notices = Array.isArray(attribution?.notices) ? attribution.notices : [];
  if (notices.length) {
    turn.bubble.insertBefore(el("div", { class: "notices" },
      notices.map((text) => el("p", { class: "notice" }, text))), turn.meta);
  }
  // one entry per passage (an attributed answer has one citation per sentence it supports)
  citations = citations.filter((c, i) => citations.findIndex((d) => d.n === c.n) === i)
    .map((c) => sources.find((s) => s.n === c.n) || c);
  const extra = sources.filter((s) => !citations.some((c) => c.n === s.n));
  if (citations.length) turn.bubble.insertBefore(renderSources(citations, "Sources"), turn.meta);
  if (extra.length) turn.bubble.insertBefore(renderMoreSources(extra), turn.meta);
  setMeta(turn, fmtTimings(timings, model));
  turn.meta.title = timingDetails(timings, generator);
  if (turn.queryId) turn.bubble.insertBefore(renderActions(turn, answer, rating), turn.meta);
}

/** Answer text with [n] markers turned into citation chips (unknown numbers stay plain text). */
function renderAnswer(text, citations) {
  const byN = new Map(citations.map((c) => [Number(c.n), c]));
  const out = [];
  let last = 0;
  for (const match of text.matchAll(CITE_RE)) {
    const ns = match[1].split(",").map((s) => Number(s.trim()));
    if (!ns.every((n) => byN.has(n))) continue;
    out.push(text.slice(last, match.index), ...ns.map((n) => citeChip(byN.get(n))));
    last = match.index + match[0].length;
  }
  out.push(text.slice(last));
  return out;
}

/** An attributed answer: each sentence as its own span, the model's [n] markers replaced by chips of the
 *  passages that support it; a sentence no passage supports gets a subtle mark and says so on hover. */
function renderAttributed(text, sentences, citations) {
  const out = [];
  let last = 0;
  for (const s of sentences) {
    out.push(text.slice(last, s.start));
    last = s.end;
    const plain = (s.text || "").replace(CITE_RE, "").replace(/\s+([.!?,;:])/g, "$1").trim();
    const span = el("span", { class: s.supported ? "sentence" : "sentence unsupported" }, plain);
    if (s.supported) {
      const chips = (s.citations || []).map((n) => citations.find((c) => c.n === n && c.sentence === s.i)
        || citations.find((c) => c.n === n)).filter(Boolean);
      out.push(span, ...chips.map((c) => citeChip(c)));
    } else {
      span.title = `Not supported by the sources (best match ${fmtScore(s.score) || s.score})`;
      span.setAttribute("aria-description", "not supported by the sources");
      out.push(span);
    }
  }
  out.push(text.slice(last));
  return out;
}

/** The start of a passage, past its Markdown heading marks: tells apart sources from one document. */
// the passage's first words; a Markdown heading line is left out when body text follows (it repeats the title)
const snippet = (text) => {
  const body = (text || "").replace(/^#{1,6} .*$/gm, "");
  return (body.trim() ? body : text || "").replace(/^[#>*\-\s]+/gm, " ").replace(/\s+/g, " ").trim().slice(0, 140);
};

const pageLabel = (c) => (c.page != null && c.page !== "" ? `p. ${c.page}` : "");

function citeChip(c) {
  const label = [`Source ${c.n}`, c.name, pageLabel(c)].filter(Boolean).join(", ");
  return el("button", { type: "button", class: "chip", "aria-label": label, title: label,
    onclick: () => openPassage(c) }, String(c.n));
}

function sourceList(items) {
  return el("ol", {}, items.map((c) => el("li", {},
    el("button", { type: "button", class: "source", onclick: () => openPassage(c),
      "aria-label": [`Source ${c.n}`, c.name, pageLabel(c)].filter(Boolean).join(", ") },
      el("span", { class: "chip static", "aria-hidden": "true" }, String(c.n)),
      el("span", { class: "source-name" }, c.name || c.doc_id || "unknown document"),
      pageLabel(c) && el("span", { class: "source-page" }, pageLabel(c)),
      el("span", { class: "source-snippet", "aria-hidden": "true" }, snippet(c.text)),
      fmtScore(c.score) && el("span", { class: "source-score", title: "retrieval score" }, fmtScore(c.score))))));
}

function renderSources(citations, title) {
  return el("section", { class: "sources" }, el("h3", {}, title), sourceList(citations));
}

function renderMoreSources(extra) {
  return el("details", { class: "sources more" },
    el("summary", {}, `${plural(extra.length, "more passage")} the model read`), sourceList(extra));
}

function fmtTimings(t, model) {
  const bits = [];
  if (t && typeof t.ttft_ms === "number") bits.push(`first token ${fmtSeconds(t.ttft_ms)}`);
  if (t && typeof t.tokens_per_s === "number" && t.tokens_per_s > 0) bits.push(`${Math.round(t.tokens_per_s)} tok/s`);
  if (t && typeof t.total_ms === "number") bits.push(fmtSeconds(t.total_ms));
  if (model && model !== "none") bits.push(model);
  return bits.join(" · ");
}

function timingDetails(t, generator) {
  if (!t) return "";
  const ms = (key, label) => (typeof t[key] === "number" ? `${label} ${Math.round(t[key])} ms` : "");
  return [ms("condense_ms", "rewrite"), ms("embed_ms", "embed"), ms("search_ms", "search"),
    ms("ttft_ms", "first token"), ms("total_ms", "total"),
    typeof t.prompt_tokens === "number" ? `prompt ${plural(t.prompt_tokens, "token")}` : "",
    generator ? `by ${generator}` : ""].filter(Boolean).join(" · ");
}

/* ---------- thumbs up / down, copy ---------- */

function renderActions(turn, answer, rating) {
  const status = el("span", { class: "act-status", role: "status" });
  const rateBtn = (value, label) => el("button", {
    type: "button", class: `act rate ${value}`, "aria-label": label, title: label,
    "aria-pressed": String(rating === value), onclick: () => rate(turn, value, buttons, status),
  }, icon(ICONS[value]));
  const buttons = { up: rateBtn("up", "Good answer"), down: rateBtn("down", "Bad answer") };
  const copy = el("button", { type: "button", class: "act copy", "aria-label": "Copy answer", title: "Copy answer",
    onclick: async () => {
      try {
        await copyText(answer);
        copy.replaceChildren(icon(ICONS.check));
        flash(status, "Copied");
      } catch {
        flash(status, "Couldn't copy", "error");
      }
      setTimeout(() => copy.replaceChildren(icon(ICONS.copy)), 1500);
    } }, icon(ICONS.copy));
  return el("div", { class: "actions" }, buttons.up, buttons.down, copy, status);
}

function flash(status, text, kind = "") {
  clearTimeout(status.timer);
  status.textContent = text;
  status.dataset.kind = kind;
  status.classList.add("shown");
  status.timer = setTimeout(() => status.classList.remove("shown"), kind === "error" ? 6000 : 2500);
}

async function postRating(queryId, rating, comment = "") {
  const path = `answers/${encodeURIComponent(queryId)}/rating`;
  const send = () => getJson(path, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(comment ? { rating, comment } : { rating }) });
  try {
    return await send();
  } catch (err) {
    if (err.status !== 404) throw err;
    // the answer may not be in the read model yet (it is projected from the log): one more try
    await new Promise((r) => setTimeout(r, 1200));
    return send();
  }
}

async function rate(turn, value, buttons, status) {
  if (buttons[value].getAttribute("aria-pressed") === "true") return;
  for (const b of Object.values(buttons)) b.disabled = true;
  try {
    await postRating(turn.queryId, value);
    for (const [k, b] of Object.entries(buttons)) b.setAttribute("aria-pressed", String(k === value));
    flash(status, value === "up" ? "Thanks for the feedback!" : "Thanks — noted.");
    turn.li.querySelector(".feedback")?.remove();
    if (value === "down") askWhy(turn, status);
  } catch (err) {
    flash(status, err.status === 404 ? "Couldn't save: this answer isn't stored (yet)." :
      `Couldn't save the feedback: ${err.message}`, "error");
  } finally {
    for (const b of Object.values(buttons)) b.disabled = false;
  }
}

/** After a thumbs down, an optional one-line comment goes with a second rating event. */
function askWhy(turn, status) {
  const input = el("input", { type: "text", maxlength: "2000", placeholder: "What was wrong? (optional)",
    "aria-label": "What was wrong with this answer? (optional)" });
  const form = el("form", { class: "feedback" }, input,
    el("button", { type: "submit", class: "btn small" }, "Send"),
    el("button", { type: "button", class: "btn small ghost", onclick: () => form.remove() }, "Skip"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const comment = input.value.trim();
    if (!comment) { form.remove(); return; }
    form.classList.add("sending");
    try {
      await postRating(turn.queryId, "down", comment);
      form.remove();
      flash(status, "Thanks — your comment was saved.");
    } catch (err) {
      form.classList.remove("sending");
      flash(status, `Couldn't send the comment: ${err.message}`, "error");
    }
  });
  turn.bubble.insertBefore(form, turn.meta);
  input.focus();
}

/* ---------- passage drawer ---------- */

export function openPassage(c) {
  ui.drawerN.textContent = `[${c.n}]`;
  ui.drawerTitle.textContent = c.name || c.doc_id || "Source";
  ui.drawerMeta.textContent = [pageLabel(c), fmtScore(c.score) && `relevance ${fmtScore(c.score)}`]
    .filter(Boolean).join(" · ");
  ui.drawerText.textContent = c.text || "(no passage text)";
  if (!ui.drawer.open) ui.drawer.showModal();
  ui.drawerText.scrollTop = 0;
}

/* ---------- conversations ---------- */

/** Forget the turns on screen; answers still streaming for them are dropped. */
function clearLog() {
  if (chat.active) stopTurn();
  chat.byId.forEach((turn) => { turn.finished = true; });
  chat.byId.clear();
  ui.log.replaceChildren();
  ui.empty.hidden = false;
}

export function newConversation() {
  clearLog();
  store.remove(INFLIGHT_KEY);
  setSession(newId());
  ui.input.focus();
}

/** Show a stored conversation (GET /sessions/{id}) and make it the current one. */
export async function openConversation(id, { focus = true } = {}) {
  if (chat.active && id === currentSession()) return; // already on screen, still answering
  let body;
  try {
    body = await getJson(`sessions/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err.status === 404) { // a new conversation nobody has asked in yet
      clearLog();
      setSession(id);
      resumeAfterReload([]);
      return;
    }
    throw err;
  }
  clearLog();
  setSession(id);
  for (const m of body.messages || []) renderStored(m);
  resumeAfterReload(body.messages || []);
  ui.empty.hidden = ui.log.children.length > 0;
  scrollToBottom();
  if (focus) ui.input.focus();
}

function renderStored(m) {
  const turn = addTurn(m.question || "", { streaming: false });
  turn.queryId = m.query_id;
  turn.li.dataset.queryId = m.query_id;
  turn.cursor.remove();
  if (m.status === "failed") {
    turn.li.dataset.state = "error";
    turn.bubble.classList.add("error");
    turn.answer.hidden = true;
    setMeta(turn, m.error || "This question failed.");
    return;
  }
  renderFinished(turn, { answer: m.answer || "", citations: m.citations, timings: m.timings, model: m.model,
    rating: m.rating, attribution: m.attribution });
}

/* ---------- composer ---------- */

export function updateComposer() {
  const busy = Boolean(chat.active);
  ui.input.disabled = busy;
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.send.disabled = !isOnline();
  ui.send.title = isOnline() ? "" : "Waiting for the connection…";
}

export function autoGrow() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
}

function nearBottom() {
  const s = ui.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function scrollToBottom() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
}
