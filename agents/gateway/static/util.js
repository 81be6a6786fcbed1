// Small helpers shared by the page's modules. Server text is only ever inserted as text nodes.

export const $ = (sel, root = document) => root.querySelector(sel);

/** Create an element. Children that are strings become text nodes, so this is XSS-safe. */
export function el(tag, props = {}, ...children) {
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

/** An inline SVG icon from one or more path strings (drawn with currentColor). */
export function icon(...paths) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  for (const d of paths) {
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

export const ICONS = {
  up: "M7 10v10H4V10zM7 10l4-7c1.5 0 2.5 1 2.2 2.6L12.6 9H19a2 2 0 0 1 2 2.3l-1.2 7A2 2 0 0 1 17.8 20H7",
  down: "M17 14V4h3v10zM17 14l-4 7c-1.5 0-2.5-1-2.2-2.6L11.4 15H5a2 2 0 0 1-2-2.3l1.2-7A2 2 0 0 1 6.2 4H17",
  copy: "M9 9h11v11H9zM5 15H4V4h11v1",
  check: "M5 12l5 5 9-10",
};

/** Resolve a gateway path against the page, so the page keeps working behind a path prefix. */
export const api = (path) => new URL(path, document.baseURI).href;

export const fmtSeconds = (ms) => `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
export const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

export function fmtBytes(n) {
  if (typeof n !== "number") return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 ** 2).toFixed(1)} MB`;
}

export function fmtScore(score) {
  return typeof score === "number" && Number.isFinite(score) ? String(Number(score.toPrecision(2))) : "";
}

const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });

/** "just now", "5 min. ago", "yesterday", then a date. */
export function fmtWhen(iso) {
  const then = new Date(iso);
  if (Number.isNaN(then.getTime())) return "";
  const seconds = (then.getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return RELATIVE.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return RELATIVE.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return RELATIVE.format(Math.round(seconds / 86400), "day");
  return then.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

export function parseJson(text) {
  try { return JSON.parse(text); } catch { return null; }
}

/** FastAPI errors: {"detail": "..."} or, for validation, {"detail": [{"msg": ...}]}. */
export function detailOf(body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return detail ? JSON.stringify(detail) : "";
}

/** fetch() that returns parsed JSON or throws an Error carrying the server's detail and status. */
export async function getJson(path, options = {}) {
  const res = await fetch(api(path), { ...options, headers: { Accept: "application/json", ...options.headers } });
  const body = await res.json().catch(() => null);
  if (res.status === 401 && !path.startsWith("auth")) emit("unauthorized", detailOf(body));
  if (!res.ok) {
    const err = new Error(detailOf(body) || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

export function newId() {
  // crypto.randomUUID only exists in secure contexts; plain http on a LAN (a Pi) is not one.
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** sessionStorage that degrades to memory when storage is disabled. */
const memory = new Map();
export const store = {
  get(key) {
    try { return sessionStorage.getItem(key); } catch { return memory.get(key) ?? null; }
  },
  set(key, value) {
    try { sessionStorage.setItem(key, value); } catch { memory.set(key, value); }
  },
  remove(key) {
    try { sessionStorage.removeItem(key); } catch { memory.delete(key); }
  },
};

/** Page-wide events between modules: "answer-done", "session-changed", "docs-changed". */
export const events = new EventTarget();
export const emit = (type, detail) => events.dispatchEvent(new CustomEvent(type, { detail }));
export const on = (type, fn) => events.addEventListener(type, (e) => fn(e.detail));

/** Polite screen-reader announcement (the streaming answer itself is not live, it would chatter). */
export function announce(text) {
  const region = $("#announcer");
  if (!region) return;
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // plain http on a LAN: the old way
  const area = el("textarea", { class: "visually-hidden", "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("copy refused");
}
