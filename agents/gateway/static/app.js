// ragbus web chat. No framework, no build step: talks to the gateway on the same origin.
// Server text is only ever inserted as text nodes (never innerHTML).

const FINAL_STATUSES = new Set(["indexed", "failed", "deleted"]);
const POLL_FAST_MS = 2000;
const POLL_SLOW_MS = 15000;
const MAX_PARALLEL_UPLOADS = 2;
const SESSION_KEY = "ragbus.session_id";
const CITE_RE = /\[(\d+(?:\s*,\s*\d+)*)\]/g; // [1]  [2, 3]

const $ = (sel) => document.querySelector(sel);
const ui = {
  log: $("#log"), scroller: $("#scroller"), empty: $("#empty"), emptyTitle: $("#empty-title"),
  form: $("#composer"), input: $("#question"), send: $("#send"), stop: $("#stop"),
  conn: $("#conn"), connText: $("#conn-text"), connDetail: $("#conn-detail"), retry: $("#conn-retry"), newChat: $("#new-chat"),
  docsToggle: $("#docs-toggle"), docsClose: $("#docs-close"), scrim: $("#scrim"),
  docsCount: $("#docs-count"), docList: $("#doc-list"), docsEmpty: $("#docs-empty"),
  notice: $("#docs-notice"), uploads: $("#uploads"), zone: $("#dropzone"),
  pick: $("#pick"), fileInput: $("#file-input"),
  drawer: $("#passage"), drawerN: $("#passage-n"), drawerTitle: $("#passage-title"),
  drawerMeta: $("#passage-meta"), drawerText: $("#passage-text"), drawerClose: $("#passage-close"),
};

/* ---------- helpers ---------- */

/** Create an element. Children that are strings become text nodes, so this is XSS-safe. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) if (child != null && child !== false) node.append(child);
  return node;
}

const api = (path) => new URL(path, document.baseURI).href;
const fmtSeconds = (ms) => `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function fmtBytes(n) {
  if (typeof n !== "number") return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 ** 2).toFixed(1)} MB`;
}

function fmtScore(score) {
  return typeof score === "number" && Number.isFinite(score) ? String(Number(score.toPrecision(2))) : "";
}

function parseJson(text) {
  try { return JSON.parse(text); } catch { return null; }
}

/** FastAPI errors: {"detail": "..."} or, for validation, {"detail": [{"msg": ...}]}. */
function detailOf(body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return detail ? JSON.stringify(detail) : "";
}

function newId() {
  // crypto.randomUUID only exists in secure contexts; plain http on a LAN (a Pi) is not one.
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function sessionId(reset = false) {
  let id = null;
  try { id = sessionStorage.getItem(SESSION_KEY); } catch { /* storage disabled */ }
  if (!id || reset) {
    id = newId();
    try { sessionStorage.setItem(SESSION_KEY, id); } catch { /* keep it in memory only */ }
  }
  return id;
}

/* ---------- websocket connection ---------- */

const conn = { ws: null, attempt: 0, timer: 0 };

function wsUrl() {
  const url = new URL("ws/chat", document.baseURI);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function connect() {
  clearTimeout(conn.timer);
  setConnState("connecting", "Connecting…");
  const ws = new WebSocket(wsUrl());
  conn.ws = ws;
  ws.onopen = () => { conn.attempt = 0; setConnState("online", "Connected"); };
  ws.onmessage = (event) => { const msg = parseJson(event.data); if (msg) onFrame(msg); };
  ws.onclose = () => {
    if (conn.ws !== ws) return;
    conn.ws = null;
    interruptAll("Connection lost — this answer was interrupted.");
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  const base = Math.min(15000, 500 * 2 ** conn.attempt++);
  const delay = base * (0.8 + Math.random() * 0.4); // jitter, so many tabs don't reconnect in lockstep
  setConnState("offline", "Offline", ` · retrying in ${Math.ceil(delay / 1000)} s`);
  conn.timer = setTimeout(connect, delay);
}

function reconnectNow() {
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

/* ---------- chat ---------- */

const chat = {
  pending: [],        // asks sent but not yet bound to a query_id (FIFO, the server answers in order)
  byId: new Map(),    // query_id -> turn
  active: null,       // the turn currently streaming; the composer is disabled while set
};

function onFrame(msg) {
  const turn = turnFor(msg);
  if (!turn || turn.finished) return; // stopped by the user, or already done: ignore
  if (msg.type === "token") addToken(turn, msg);
  else if (msg.type === "done") finishTurn(turn, msg);
  else if (msg.type === "error") failTurn(turn, msg.message || "Something went wrong.");
}

/** The first frame carrying an unseen query_id belongs to the oldest ask still waiting. */
function turnFor(msg) {
  const id = msg.query_id;
  if (id && chat.byId.has(id)) return chat.byId.get(id);
  if (!id && !chat.pending.length) return chat.active; // an error that carries no query_id
  const turn = chat.pending.shift();
  if (turn && id) { turn.queryId = id; chat.byId.set(id, turn); }
  return turn;
}

function ask(question) {
  if (!isOnline() || chat.active || !question.trim()) return;
  const turn = addTurn(question);
  conn.ws.send(JSON.stringify({ type: "ask", question, session_id: sessionId() }));
  chat.pending.push(turn);
  chat.active = turn;
  ui.input.value = "";
  autoGrow();
  updateComposer();
}

function addTurn(question) {
  const cursor = el("span", { class: "cursor", "aria-hidden": "true" });
  const text = document.createTextNode("");
  const answer = el("div", { class: "answer", "aria-live": "polite", "aria-busy": "true" }, text, cursor);
  const meta = el("p", { class: "meta" }, "Searching your documents…");
  const bubble = el("div", { class: "bubble" }, answer, meta);
  ui.log.append(
    el("li", { class: "msg user" }, el("div", { class: "bubble" }, question)),
    el("li", { class: "msg assistant" }, bubble),
  );
  ui.empty.hidden = true;
  scrollToBottom();
  return { question, parts: [], text, cursor, answer, meta, bubble, raf: 0, finished: false, queryId: null };
}

/** Keep token parts ordered by seq; tolerates reordering and repeats (seq may be any integer). */
function addToken(turn, msg) {
  const text = msg.text || "";
  const seq = Number.isInteger(msg.seq) ? msg.seq : (turn.parts.at(-1)?.seq ?? -1) + 1;
  const i = turn.parts.findLastIndex((p) => p.seq <= seq); // usually the last one
  if (i >= 0 && turn.parts[i].seq === seq) turn.parts[i].text = text;
  else turn.parts.splice(i + 1, 0, { seq, text });
  if (turn.meta.textContent) turn.meta.textContent = "";
  if (!turn.raf) turn.raf = requestAnimationFrame(() => renderStream(turn));
}

function renderStream(turn) {
  turn.raf = 0;
  const stick = nearBottom();
  turn.text.data = streamedText(turn);
  if (stick) scrollToBottom();
}

function finishTurn(turn, msg) {
  const citations = Array.isArray(msg.citations) ? msg.citations : [];
  const answer = typeof msg.answer === "string" ? msg.answer : streamedText(turn);
  const stick = nearBottom();
  endTurn(turn);
  turn.answer.replaceChildren(...renderAnswer(answer || "(no answer)", citations));
  if (citations.length) turn.bubble.insertBefore(renderSources(citations), turn.meta);
  turn.meta.textContent = fmtTimings(msg.timings, msg.model);
  if (stick) scrollToBottom();
}

function failTurn(turn, message) {
  endTurn(turn);
  flushText(turn);
  turn.bubble.classList.add("error");
  turn.meta.textContent = message;
}

function stopTurn() {
  const turn = chat.active;
  if (!turn) return;
  endTurn(turn); // later frames for its query_id are ignored (turn.finished)
  flushText(turn);
  turn.meta.textContent = "Stopped.";
}

const streamedText = (turn) => turn.parts.map((p) => p.text).join("");

function flushText(turn) {
  turn.text.data = streamedText(turn);
  turn.answer.hidden = !turn.text.data;
}

function interruptAll(message) {
  for (const turn of [...chat.pending, chat.active]) if (turn && !turn.finished) failTurn(turn, message);
  chat.pending = [];
}

function endTurn(turn) {
  cancelAnimationFrame(turn.raf);
  turn.finished = true;
  turn.cursor.remove();
  turn.answer.setAttribute("aria-busy", "false");
  if (chat.active === turn) {
    chat.active = null;
    updateComposer();
    if (!document.activeElement || document.activeElement === document.body) ui.input.focus();
  }
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

const pageLabel = (c) => (c.page != null && c.page !== "" ? `p. ${c.page}` : "");

function citeChip(c) {
  const label = [`Source ${c.n}`, c.name, pageLabel(c)].filter(Boolean).join(", ");
  return el("button", { type: "button", class: "chip", "aria-label": label, title: label,
    onclick: () => openPassage(c) }, String(c.n));
}

function renderSources(citations) {
  const items = citations.map((c) => el("li", {},
    el("button", { type: "button", class: "source", onclick: () => openPassage(c) },
      el("span", { class: "chip static", "aria-hidden": "true" }, String(c.n)),
      el("span", { class: "source-name" }, c.name || c.doc_id || "unknown document"),
      pageLabel(c) && el("span", { class: "source-page" }, pageLabel(c)),
      fmtScore(c.score) && el("span", { class: "source-score", title: "retrieval score" }, fmtScore(c.score)))));
  return el("section", { class: "sources" }, el("h3", {}, "Sources"), el("ol", {}, items));
}

function fmtTimings(t, model) {
  const bits = [];
  if (t && typeof t.ttft_ms === "number") bits.push(`first token ${fmtSeconds(t.ttft_ms)}`);
  if (t && typeof t.tokens === "number") bits.push(plural(t.tokens, "token"));
  if (t && typeof t.total_ms === "number") bits.push(fmtSeconds(t.total_ms));
  if (model) bits.push(model);
  return bits.join(" · ");
}

function openPassage(c) {
  ui.drawerN.textContent = `[${c.n}]`;
  ui.drawerTitle.textContent = c.name || c.doc_id || "Source";
  ui.drawerMeta.textContent = [pageLabel(c), fmtScore(c.score) && `score ${fmtScore(c.score)}`]
    .filter(Boolean).join(" · ");
  ui.drawerText.textContent = c.text || "(no passage text)";
  if (!ui.drawer.open) ui.drawer.showModal();
  ui.drawerText.scrollTop = 0;
}

function newConversation() {
  if (chat.active) stopTurn();
  for (const turn of chat.pending) turn.finished = true; // ignore answers still on their way
  chat.byId.forEach((turn) => { turn.finished = true; });
  sessionId(true);
  ui.log.replaceChildren();
  ui.empty.hidden = false;
  ui.input.focus();
}

/* ---------- composer ---------- */

function updateComposer() {
  const busy = Boolean(chat.active);
  ui.input.disabled = busy;
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.send.disabled = !isOnline();
  ui.send.title = isOnline() ? "" : "Waiting for the connection…";
}

function autoGrow() {
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

/* ---------- documents ---------- */

const docs = { list: [], signature: "", timer: 0, seq: 0 };

async function refreshDocs() {
  clearTimeout(docs.timer);
  const seq = ++docs.seq;
  try {
    const res = await fetch(api("documents"), { headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    if (seq === docs.seq) renderDocs((body.documents || []).filter((d) => d.status !== "deleted"));
    if (ui.notice.dataset.kind === "load") setNotice("");
  } catch {
    setNotice("Couldn't load the document list — retrying.", "load");
  }
  if (seq !== docs.seq) return; // a newer refresh owns the timer
  const busy = uploadsRunning() || docs.list.some((d) => !FINAL_STATUSES.has(d.status));
  docs.timer = setTimeout(refreshDocs, busy && !document.hidden ? POLL_FAST_MS : POLL_SLOW_MS);
}

function renderDocs(list) {
  list.sort((a, b) => String(b.uploaded_at || "").localeCompare(String(a.uploaded_at || "")));
  docs.list = list;
  const signature = JSON.stringify(list);
  if (signature === docs.signature) return;
  docs.signature = signature;
  const focusedId = document.activeElement && document.activeElement.dataset.docId;
  ui.docList.replaceChildren(...list.map(docItem));
  if (focusedId) ui.docList.querySelector(`[data-doc-id="${CSS.escape(focusedId)}"]`)?.focus();
  ui.docsEmpty.hidden = list.length > 0;
  ui.docsCount.textContent = list.length ? String(list.length) : "";
  const ready = list.some((d) => d.status === "indexed");
  ui.emptyTitle.textContent = ready ? "Ask a question about your documents" : "Upload a document, then ask about it";
}

function docItem(doc) {
  const name = doc.name || doc.doc_id;
  const status = doc.status || "uploaded";
  const chunks = status === "indexed" || doc.chunks > 0 ? plural(Number(doc.chunks) || 0, "chunk") : "";
  const meta = [chunks, fmtBytes(doc.size), doc.doc_type || ""].filter(Boolean).join(" · ");
  return el("li", { class: "doc", "data-status": status },
    el("div", { class: "doc-name", title: name }, name),
    el("div", { class: "doc-row" },
      el("span", { class: `badge ${FINAL_STATUSES.has(status) ? "" : "working"}`, "data-status": status }, status),
      meta && el("span", { class: "doc-meta" }, meta)),
    status === "failed" && el("p", { class: "doc-error" }, doc.error || "Processing failed."),
    el("button", { type: "button", class: "icon-btn delete", "aria-label": `Delete ${name}`, title: "Delete",
      "data-doc-id": doc.doc_id, onclick: (e) => deleteDoc(doc, e.currentTarget) }));
}

async function deleteDoc(doc, button) {
  const name = doc.name || doc.doc_id;
  if (!confirm(`Delete “${name}”? Its passages will leave the index.`)) return;
  button.closest(".doc").classList.add("deleting");
  try {
    const res = await fetch(api(`documents/${encodeURIComponent(doc.doc_id)}`), { method: "DELETE" });
    if (!res.ok) throw new Error(detailOf(await res.json().catch(() => null)) || `HTTP ${res.status}`);
    setNotice(`Deleted “${name}”.`);
  } catch (err) {
    setNotice(`Couldn't delete “${name}”: ${err.message}`, "error");
  }
  docs.signature = ""; // force a re-render even if the server still lists it
  refreshDocs();
}

function setNotice(text, kind = "") {
  ui.notice.textContent = text;
  ui.notice.dataset.kind = kind;
}

/* ---------- uploads ---------- */

const uploads = { queue: [], running: 0 };
const uploadsRunning = () => uploads.running > 0 || uploads.queue.length > 0;

function enqueueUploads(files) {
  for (const file of files) uploads.queue.push({ file, row: uploadRow(file) });
  pumpUploads();
}

function pumpUploads() {
  while (uploads.running < MAX_PARALLEL_UPLOADS && uploads.queue.length) {
    const job = uploads.queue.shift();
    uploads.running++;
    upload(job).then(() => { uploads.running--; pumpUploads(); refreshDocs(); });
  }
}

function uploadRow(file) {
  const progress = el("progress", { max: "1", value: "0", "aria-label": `Uploading ${file.name}` });
  const status = el("span", { class: "upload-status" }, "Waiting…");
  const dismiss = el("button", { type: "button", class: "icon-btn small", "aria-label": `Dismiss ${file.name}`,
    hidden: true, onclick: () => row.remove() }, "×");
  const row = el("li", { class: "upload" },
    el("div", { class: "doc-row" }, el("span", { class: "doc-name", title: file.name }, file.name),
      el("span", { class: "doc-meta" }, fmtBytes(file.size)), dismiss),
    progress, status);
  ui.uploads.append(row);
  return { row, progress, status, dismiss };
}

function upload({ file, row }) {
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", api("documents"));
    xhr.setRequestHeader("Accept", "application/json");
    row.status.textContent = "Uploading…";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) row.progress.value = e.loaded / e.total; };
    xhr.onload = () => {
      const body = parseJson(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) uploadDone(row, body || {});
      else uploadFailed(row, detailOf(body) || `Upload failed (HTTP ${xhr.status} ${xhr.statusText}).`);
      resolve();
    };
    xhr.onerror = () => { uploadFailed(row, "Network error — the upload did not finish."); resolve(); };
    xhr.send(form);
  });
}

function uploadDone(row, body) {
  row.progress.value = 1;
  row.status.textContent = body.duplicate ? "Already uploaded — same file." : "Uploaded — processing…";
  row.row.classList.add("done");
  setTimeout(() => row.row.remove(), 2500);
}

function uploadFailed(row, message) {
  row.row.classList.add("failed");
  row.progress.remove();
  row.status.textContent = message;
  row.status.setAttribute("role", "alert");
  row.dismiss.hidden = false;
}

function setupDragAndDrop() {
  // Dropping files anywhere on the page uploads them; the drop zone lights up while dragging.
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).includes("Files");
  const reset = () => { depth = 0; ui.zone.classList.remove("dragging"); };
  addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth++;
    ui.zone.classList.add("dragging");
  });
  addEventListener("dragleave", (e) => { if (hasFiles(e) && --depth <= 0) reset(); });
  addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    reset();
    setDocsOpen(true);
    enqueueUploads(Array.from(e.dataTransfer.files));
  });
}

/* ---------- layout (documents panel on narrow screens) ---------- */

function setDocsOpen(open) {
  document.body.classList.toggle("docs-open", open);
  ui.docsToggle.setAttribute("aria-expanded", String(open));
  ui.scrim.hidden = !open;
  if (open && matchMedia("(max-width: 799px)").matches) ui.docsClose.focus();
}

/* ---------- wiring ---------- */

function bindEvents() {
  ui.form.addEventListener("submit", (e) => { e.preventDefault(); ask(ui.input.value); });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); ask(ui.input.value); }
  });
  ui.input.addEventListener("input", autoGrow);
  ui.stop.addEventListener("click", () => { stopTurn(); ui.input.focus(); });
  ui.retry.addEventListener("click", reconnectNow);
  ui.newChat.addEventListener("click", newConversation);

  ui.pick.addEventListener("click", () => ui.fileInput.click());
  ui.fileInput.addEventListener("change", () => {
    enqueueUploads(Array.from(ui.fileInput.files));
    ui.fileInput.value = ""; // picking the same file again fires "change" again
  });

  ui.docsToggle.addEventListener("click", () => setDocsOpen(!document.body.classList.contains("docs-open")));
  ui.docsClose.addEventListener("click", () => { setDocsOpen(false); ui.docsToggle.focus(); });
  ui.scrim.addEventListener("click", () => setDocsOpen(false));
  addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("docs-open") && !ui.drawer.open) {
      setDocsOpen(false);
      ui.docsToggle.focus();
    }
  });

  ui.drawerClose.addEventListener("click", () => ui.drawer.close());
  ui.drawer.addEventListener("click", (e) => { if (e.target === ui.drawer) ui.drawer.close(); }); // backdrop

  addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    reconnectNow();
    refreshDocs();
  });
}

bindEvents();
setupDragAndDrop();
updateComposer();
connect();
refreshDocs();
