// Documents: the list, live status over Server-Sent Events (GET /documents/events), uploads with progress.
//
// The list comes from GET /documents once, then every change arrives as an SSE `document` frame. A slow
// poll stays as a fallback (and picks up deletions); it speeds up while the event stream is down.

import { $, api, detailOf, el, emit, fmtBytes, getJson, parseJson, plural } from "./util.js";

const GONE = new Set(["deleted", "superseded"]);
const TYPE_LABELS = { markdown: "MD", text: "TXT", html: "HTML", pdf: "PDF", docx: "DOCX" };
const WORKING = new Set(["uploaded", "parsed"]);
const POLL_MS = 30000;
const POLL_NO_SSE_MS = 5000;
const MAX_PARALLEL_UPLOADS = 2;

const ui = {
  list: $("#doc-list"), empty: $("#docs-empty"), count: $("#docs-count"), notice: $("#docs-notice"),
  uploads: $("#uploads"), zone: $("#dropzone"), pick: $("#pick"), fileInput: $("#file-input"),
};

const docs = { byId: new Map(), rendered: new Map(), timer: 0, seq: 0, live: false, opened: false };

export const documentList = () => [...docs.byId.values()];

/* ---------- state ---------- */

function upsert(doc) {
  if (!doc || !doc.doc_id) return;
  if (GONE.has(doc.status)) docs.byId.delete(doc.doc_id);
  else docs.byId.set(doc.doc_id, { ...docs.byId.get(doc.doc_id), ...doc });
}

export async function refreshDocs() {
  clearTimeout(docs.timer);
  const seq = ++docs.seq;
  try {
    const body = await getJson("documents");
    if (seq !== docs.seq) return; // a newer refresh owns the list and the timer
    docs.byId.clear();
    for (const doc of body.documents || []) upsert(doc);
    render();
    if (ui.notice.dataset.kind === "load") setNotice("");
  } catch {
    if (seq !== docs.seq) return;
    setNotice("Couldn't load the document list — retrying.", "load");
  }
  schedulePoll();
}

function schedulePoll() {
  clearTimeout(docs.timer);
  docs.timer = setTimeout(refreshDocs, docs.live ? POLL_MS : POLL_NO_SSE_MS);
}

/* ---------- live status (SSE) ---------- */

export function listen() {
  if (!("EventSource" in window)) return;
  const source = new EventSource(api("documents/events"));
  source.addEventListener("document", (event) => {
    const doc = parseJson(event.data);
    if (!doc) return;
    upsert(doc);
    render();
  });
  source.onopen = () => {
    const reconnected = docs.opened && !docs.live;
    docs.opened = docs.live = true;
    if (reconnected) refreshDocs(); // changes made while the stream was down
    else schedulePoll();
  };
  source.onerror = () => {
    // EventSource reconnects by itself (the server asks for 2 s); poll faster meanwhile
    if (docs.live) {
      docs.live = false;
      schedulePoll();
    }
  };
}

/* ---------- rendering ---------- */

function render() {
  const list = documentList().sort((a, b) =>
    String(b.uploaded_at || "").localeCompare(String(a.uploaded_at || "")));
  const focusedId = document.activeElement && document.activeElement.dataset.docId;
  const items = list.map((doc) => {
    const signature = JSON.stringify(doc);
    const cached = docs.rendered.get(doc.doc_id);
    if (cached && cached.signature === signature) return cached.node;
    const node = docItem(doc);
    docs.rendered.set(doc.doc_id, { signature, node });
    return node;
  });
  for (const id of docs.rendered.keys()) if (!docs.byId.has(id)) docs.rendered.delete(id);
  // keep nodes that did not change, so a progress bar animates instead of being rebuilt
  items.forEach((node, i) => {
    if (ui.list.children[i] !== node) ui.list.insertBefore(node, ui.list.children[i] || null);
  });
  while (ui.list.children.length > items.length) ui.list.lastElementChild.remove();
  if (focusedId) ui.list.querySelector(`[data-doc-id="${CSS.escape(focusedId)}"]`)?.focus();
  ui.empty.hidden = list.length > 0;
  ui.count.textContent = list.length ? String(list.length) : "";
  emit("docs-changed", list);
}

function statusLabel(doc) {
  const chunks = Number(doc.chunks) || 0;
  const done = Number(doc.chunks_indexed) || 0;
  if (doc.status === "uploaded") return "reading";
  if (doc.status === "parsed") return chunks ? `embedding ${Math.min(done, chunks)}/${chunks}` : "embedding";
  return doc.status || "uploaded";
}

function docItem(doc) {
  const name = doc.name || doc.doc_id;
  const status = doc.status || "uploaded";
  const chunks = Number(doc.chunks) || 0;
  // while embedding, the badge already says k/n chunks
  const meta = [status === "indexed" || (chunks && status !== "parsed") ? plural(chunks, "chunk") : "", fmtBytes(doc.size),
    TYPE_LABELS[doc.doc_type] || (doc.doc_type || "").toUpperCase()].filter(Boolean).join(" · ");
  let progress = null;
  if (status === "parsed" && chunks) {
    progress = el("progress", { max: String(chunks), value: String(Math.min(Number(doc.chunks_indexed) || 0, chunks)),
      "aria-label": `Embedding ${name}` });
  } else if (status === "uploaded") {
    progress = el("progress", { "aria-label": `Reading ${name}` }); // indeterminate: parsing
  }
  return el("li", { class: "doc", "data-status": status, "data-doc-id": doc.doc_id },
    el("div", { class: "doc-name", title: name }, name,
      doc.version > 1 && el("span", { class: "version", title: `version ${doc.version}` }, `v${doc.version}`)),
    el("div", { class: "doc-row" },
      el("span", { class: `badge ${WORKING.has(status) ? "working" : ""}`, "data-status": status },
        statusLabel(doc)),
      meta && el("span", { class: "doc-meta" }, meta)),
    progress,
    status === "failed" && el("p", { class: "doc-error" }, doc.error || "Processing failed."),
    el("button", { type: "button", class: "icon-btn delete", "aria-label": `Delete ${name}`, title: "Delete",
      "data-doc-id": doc.doc_id, onclick: (e) => deleteDoc(doc, e.currentTarget) }));
}

async function deleteDoc(doc, button) {
  const name = doc.name || doc.doc_id;
  if (!confirm(`Delete “${name}”? Its passages will leave the index.`)) return;
  button.closest(".doc").classList.add("deleting");
  try {
    await getJson(`documents/${encodeURIComponent(doc.doc_id)}`, { method: "DELETE" });
    docs.byId.delete(doc.doc_id);
    render();
    setNotice(`Deleted “${name}”.`);
  } catch (err) {
    button.closest(".doc")?.classList.remove("deleting");
    setNotice(`Couldn't delete “${name}”: ${err.message}`, "error");
  }
}

function setNotice(text, kind = "") {
  ui.notice.textContent = text;
  ui.notice.dataset.kind = kind;
}

/* ---------- uploads ---------- */

const uploads = { queue: [], running: 0 };

export function enqueueUploads(files) {
  for (const file of files) uploads.queue.push({ file, row: uploadRow(file) });
  pumpUploads();
}

function pumpUploads() {
  while (uploads.running < MAX_PARALLEL_UPLOADS && uploads.queue.length) {
    const job = uploads.queue.shift();
    uploads.running++;
    upload(job).then(() => { uploads.running--; pumpUploads(); });
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
    const xhr = new XMLHttpRequest(); // fetch() has no upload progress
    xhr.open("POST", api("documents"));
    xhr.setRequestHeader("Accept", "application/json");
    row.status.textContent = "Uploading…";
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      row.progress.value = e.loaded / e.total;
      row.status.textContent = `Uploading… ${Math.round((100 * e.loaded) / e.total)}%`;
    };
    xhr.onload = () => {
      const body = parseJson(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) uploadDone(row, body || {}, file);
      else uploadFailed(row, detailOf(body) || `Upload failed (HTTP ${xhr.status} ${xhr.statusText}).`);
      if (xhr.status === 401) emit("unauthorized", detailOf(body));
      resolve();
    };
    xhr.onerror = () => { uploadFailed(row, "Network error — the upload did not finish."); resolve(); };
    xhr.send(form);
  });
}

function uploadDone(row, body, file) {
  row.progress.value = 1;
  row.status.textContent = body.duplicate ? "Already uploaded — same file." :
    body.supersedes ? `Uploaded as version ${body.version} — processing…` : "Uploaded — processing…";
  row.row.classList.add("done");
  setTimeout(() => row.row.remove(), 2500);
  // show it at once; the event stream takes it from here (reading → embedding k/n → indexed)
  if (body.doc_id && !docs.byId.has(body.doc_id)) {
    upsert({ doc_id: body.doc_id, name: body.name || file.name, status: body.status || "uploaded",
      doc_type: body.doc_type, size: file.size, chunks: 0, chunks_indexed: 0, version: body.version,
      uploaded_at: new Date().toISOString() });
    if (body.supersedes) docs.byId.delete(body.supersedes);
    render();
  }
}

function uploadFailed(row, message) {
  row.row.classList.add("failed");
  row.progress.remove();
  row.status.textContent = message;
  row.status.setAttribute("role", "alert");
  row.dismiss.hidden = false;
}

/** Dropping files anywhere on the page uploads them; the drop zone lights up while dragging. */
export function setupUploads({ onDrop }) {
  ui.pick.addEventListener("click", () => ui.fileInput.click());
  ui.fileInput.addEventListener("change", () => {
    enqueueUploads(Array.from(ui.fileInput.files));
    ui.fileInput.value = ""; // picking the same file again fires "change" again
  });
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).includes("Files");
  const reset = () => { depth = 0; document.body.classList.remove("dragging"); };
  addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth++;
    document.body.classList.add("dragging");
  });
  addEventListener("dragleave", (e) => { if (hasFiles(e) && --depth <= 0) reset(); });
  addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    reset();
    onDrop?.();
    enqueueUploads(Array.from(e.dataTransfer.files));
  });
}
