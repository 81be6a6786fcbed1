// The embedding index line under "Documents": which model answers, and a re-index's progress (GET /indexes).
// Polls slowly, faster while an index is being built; a switch shows up within seconds.

import { $, getJson } from "./util.js";

const IDLE_MS = 30000;
const BUILDING_MS = 4000;
const line = $("#index-status");
let timer = 0;

export async function refreshIndexes() {
  clearTimeout(timer);
  let building = false;
  try {
    const body = await getJson("indexes");
    const others = (body.indexes || []).filter((i) => i.state === "building");
    building = others.length > 0;
    const parts = body.active ? [`Answers from ${body.active}`] : ["No active index"];
    const base = (name) => (name || "").split("@")[0];
    for (const i of others) {
      const what = base(i.model) === base(body.active) ? "rebuilding the index" : `re-indexing to ${i.model}`;
      parts.push(`${what}: ${Math.floor(i.progress * 100)}%`);
    }
    const active = (body.indexes || []).find((i) => i.state === "active");
    if (active && active.fingerprint_mismatches && !building) {
      parts.push("some vectors predate an upgrade: an admin can run `ragbus reindex --rebuild`");
    }
    line.textContent = parts.join(" · ");
    line.title = (body.indexes || []).map((i) => `${i.model}: ${i.state}, ${i.vectors} vectors`).join("\n");
    line.hidden = false;
  } catch {
    line.hidden = true; // an older gateway or a hiccup: the line is a nicety, not a feature to fail on
  }
  timer = setTimeout(refreshIndexes, building ? BUILDING_MS : IDLE_MS);
}
