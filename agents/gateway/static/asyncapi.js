// Renders /asyncapi.json as a readable list of subjects with their payload schemas (offline, no CDN).
const resolve = (spec, ref) => ref.replace(/^#\//, "").split("/").map(decodeURIComponent)
  .reduce((node, key) => (node ? node[key] : undefined), spec);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  children.forEach((c) => node.append(c));
  return node;
}

async function main() {
  const spec = await (await fetch("asyncapi.json")).json();
  document.getElementById("description").textContent = spec.info.description;
  const actions = {};
  Object.values(spec.operations || {}).forEach((op) => {
    const channel = op.channel && op.channel.$ref;
    if (channel) actions[channel] = op.action;
  });
  const list = document.getElementById("channels");
  Object.entries(spec.channels).forEach(([name, channel]) => {
    const ref = `#/channels/${encodeURIComponent(name)}`;
    const action = actions[ref] === "receive" ? "consumed by" : "published";
    const box = el("section", { class: "channel" });
    box.append(el("div", { class: "kind" }, `${action} · ${name}`));
    box.append(el("h2", {}, channel.address));
    if (channel.description) box.append(el("p", {}, channel.description));
    Object.values(channel.messages || {}).forEach((m) => {
      const message = resolve(spec, m.$ref) || {};
      const payload = message.payload && message.payload.$ref ? resolve(spec, message.payload.$ref) : message.payload;
      box.append(el("pre", {}, JSON.stringify(payload, null, 2)));
    });
    list.append(box);
  });
}

main();
