// ragtune console, Adapters: versions, aliases, manifests with loss curves, training.
import { $, ApiFailure, FINAL, api, cancelJob, clear, el, fmt, follow, guarded, isoWhen, jobError, jobHeader, request, state, when } from "./core.js";

export async function loadAdapters() {
  const list = await api("GET", "/v1/adapters");
  const body = clear($("ad-table").tBodies[0]);
  const names = [...new Set(list.data.map((a) => a.name))];
  for (const a of list.data) {
    const m = a.metrics || {};
    body.append(el("tr", { dataset: { ref: a.ref } },
      el("td", {}, a.name), el("td", { class: "num" }, `v${a.version}`),
      el("td", { class: "aliases" }, a.aliases.join(", ")), el("td", {}, a.base_model_id),
      el("td", { class: "mono", title: a.dataset_hash || "" }, (a.dataset_hash || "–").slice(0, 12)),
      el("td", { class: "num" }, fmt(m.best_val_loss, 3)), el("td", {}, isoWhen(a.created_at)),
      el("td", {},
        el("button", { type: "button", onclick: guarded(() => showAdapter(a.name, a.version)) }, "Details"), " ",
        el("button", { type: "button", class: "promote", onclick: guarded(() => promote(a.name, a.version)) }, "Promote"), " ",
        el("button", { type: "button", class: "danger", onclick: guarded(() => deleteAdapter(a.name, a.version)) }, "Delete"))));
  }
  for (const name of names) {
    body.append(el("tr", { class: "adapter-actions", dataset: { name } }, el("td", { colspan: 8 },
      el("strong", {}, name), ": ",
      el("button", { type: "button", class: "rollback", onclick: guarded(() => rollback(name)) }, "Roll back an alias"), " ",
      el("button", { type: "button", class: "danger", onclick: guarded(() => deleteAdapter(name, null)) }, "Delete every version"))));
  }
  if (!list.data.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "hint" }, "no adapters yet")));
}

export function askAlias(what) {
  const alias = prompt(`${what}: which alias?`, "prod");
  return alias === null ? null : alias.trim() || "prod";
}

export async function promote(name, version) {
  const alias = askAlias(`Promote ${name}@v${version}`);
  if (alias === null) return;
  await api("POST", `/v1/adapters/${encodeURIComponent(name)}/promote`, { version: `v${version}`, alias });
  await loadAdapters();
}

export async function rollback(name) {
  const alias = askAlias(`Roll back ${name}`);
  if (alias === null) return;
  await api("POST", `/v1/adapters/${encodeURIComponent(name)}/rollback`, { alias });
  await loadAdapters();
}

export async function deleteAdapter(name, version) {
  const what = version === null ? `every version of ${name}` : `${name}@v${version}`;
  if (!confirm(`Delete ${what}?`)) return;
  const query = version === null ? "" : `?version=${version}`;
  await api("DELETE", `/v1/adapters/${encodeURIComponent(name)}${query}`);
  $("ad-detail").hidden = true;
  await loadAdapters();
}

export async function showAdapter(name, version) {
  const info = await api("GET", `/v1/adapters/${encodeURIComponent(name)}`);
  const m = info.versions.find((v) => v.version === version) || {};
  const box = clear($("ad-detail"));
  box.hidden = false;
  const ds = m.dataset || {};
  const pinned = Object.entries(info.aliases).filter(([, v]) => v === version).map(([k]) => k);
  const rows = [
    ["adapter", `${name}@v${version}`], ["aliases here", pinned.join(", ") || "none"],
    ["base model", m.base_model_id], ["created", isoWhen(m.created_at)],
    ["dataset", `${ds.file ?? "–"} · ${ds.examples ?? "?"} examples (${ds.train ?? "?"} train, ${ds.validation ?? "?"} validation)`],
    ["dataset sha256", ds.sha256], ["index version", m.index_version],
  ];
  for (const [k, v] of Object.entries(m.metrics || {})) rows.push([`metric: ${k}`, typeof v === "number" ? fmt(v, 4) : v]);
  for (const [k, v] of Object.entries(m.hyperparameters || {})) rows.push([k, Array.isArray(v) ? v.join(", ") : v]);
  box.append(el("h3", {}, `${name}@v${version}`), lossPlot(m.curves || {}),
    el("dl", {}, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")])));
}

// Loss curves as inline SVG: train (grey) and validation (green) loss against the step.
export function lossPlot(curves) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const series = [["train", curves.train || [], "#999"], ["validation", curves.validation || [], "#2a7"]];
  const points = series.flatMap(([, pts]) => pts);
  if (!points.length) return el("p", { class: "hint" }, "no loss curves in this manifest");
  const W = 520, H = 220, L = 44, R = 10, T = 10, B = 30;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const root = svg("svg", { class: "plot", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "loss curves" });
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }),
    svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }),
    svg("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, fmt(y1, 2)),
    svg("text", { x: L - 4, y: H - B, "text-anchor": "end" }, fmt(y0, 2)),
    svg("text", { x: L, y: H - 8 }, `step ${x0}`),
    svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, `step ${x1}`));
  series.forEach(([name, pts, color], i) => {
    if (!pts.length) return;
    const d = pts.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    root.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: `curve-${name}` }));
    for (const p of name === "validation" ? pts : []) {
      root.append(svg("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 3, fill: color }));
    }
    root.append(svg("text", { x: W - R - 90, y: T + 12 + 14 * i, fill: color }, `— ${name} loss`));
  });
  return root;
}

export async function train(event) {
  event.preventDefault();
  const name = $("train-name").value.trim();
  const form = new FormData();
  form.append("data", $("train-data").files[0]);
  const promoteTo = $("train-promote").value.trim();
  if (promoteTo) form.append("promote", promoteTo);
  const config = $("train-config").value.trim();
  if (config) form.append("config", config);
  const job = await api("POST", `/v1/adapters/${encodeURIComponent(name)}/train`, form);
  const done = await follow(job.id, drawTraining, "train");
  if (done.state === "succeeded" && state.page === "adapters") await loadAdapters();
}

export function drawTraining(job) {
  const box = clear($("train-job"));
  box.hidden = false;
  const p = job.progress || {};
  box.append(jobHeader(job, () => cancelJob(job)));
  if (p.total_steps) {
    box.append(el("div", { class: "row" }, el("progress", { max: p.total_steps, value: p.step || 0 }),
      `step ${p.step || 0}/${p.total_steps} · loss ${fmt(p.loss, 3)} · val loss ${fmt(p.val_loss, 3)} · ${fmt(p.tokens_per_s, 1)} tokens/s`));
  } else if (!FINAL.includes(job.state)) {
    box.append(el("p", { class: "hint" }, "loading the model and the data…"));
  }
  box.append(jobError(job));
  if (job.result && job.result.adapter) box.append(el("p", {}, `trained ${job.result.adapter.ref}`));
}

export function wire() {
  $("train-form").addEventListener("submit", guarded(train));
}
