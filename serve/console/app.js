// ragtune console: plain JavaScript over the JSON API. Every value that comes from a document,
// an answer or the server is put in the page as text (textContent, createElement), never as
// HTML, so a document holding <script> shows as text.
"use strict";

const KEY = "ragtune.key";
const RANK = { reader: 1, editor: 2, admin: 3 };
const FINAL = ["succeeded", "failed", "cancelled", "interrupted"];
const state = { role: null, page: null, timers: {}, chatAbort: null, models: [] };

// ---- DOM helpers ------------------------------------------------------------------------
function $(id) { return document.getElementById(id); }

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) { node.replaceChildren(); return node; }
function fmt(n, digits = 2) {
  return n === null || n === undefined ? "–" : Number(n).toFixed(digits).replace(/\.?0+$/, "") || "0";
}
// A time as the API gives it: seconds since the epoch (jobs) or an ISO 8601 string.
function when(value) {
  if (value === null || value === undefined || value === "") return "–";
  const date = new Date(typeof value === "number" ? value * 1000 : value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}
const isoWhen = when;

// ---- errors -------------------------------------------------------------------------------
class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function showError(err) {
  const status = err instanceof ApiFailure && err.status ? ` (HTTP ${err.status})` : "";
  const code = err instanceof ApiFailure ? err.code : "console_error";
  const box = el("div", { class: "error" },
    el("span", { class: "code" }, code + status),
    el("span", { class: "message" }, err.message || String(err)),
    el("button", { type: "button", title: "dismiss", onclick: () => box.remove() }, "×"));
  $("errors").append(box);
  while ($("errors").children.length > 5) $("errors").firstChild.remove();
}

async function failureOf(res) {
  let code = `http_${res.status}`, message = res.statusText || "the request failed";
  try {
    const body = await res.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiFailure(res.status, code, message);
}

// Report anything that escapes a handler instead of leaving a half-drawn page.
window.addEventListener("error", (e) => showError(e.error || new Error(e.message)));
window.addEventListener("unhandledrejection", (e) => showError(e.reason));

// ---- API --------------------------------------------------------------------------------
function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function request(method, path, body, signal) {
  const init = { method, headers: headers(), signal };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiFailure(0, "network_error", `the server did not answer (${e.message})`);
  }
  if (!res.ok) {
    const failure = await failureOf(res);
    if (res.status === 401 && state.role) signOut(failure);
    throw failure;
  }
  return res;
}

async function api(method, path, body) {
  const res = await request(method, path, body);
  return res.json();
}

// Run an action from a button; show its failure instead of throwing it away.
function guarded(fn) {
  return async (...args) => {
    try { await fn(...args); } catch (e) { if (e.name !== "AbortError") showError(e); }
  };
}

// ---- sign in, roles, navigation ----------------------------------------------------------
function can(role) { return state.role && RANK[state.role] >= RANK[role]; }

async function identify() {
  try {
    const me = await api("GET", "/v1/whoami");
    state.role = me.role;
    $("who").textContent = me.auth === "none" ? "no keys (local): admin" : `${me.key_id} · ${me.role}`;
    $("signout").hidden = me.auth === "none";
    $("login").hidden = true;
    $("nav").hidden = false;
    for (const node of document.querySelectorAll("[data-role]")) {
      node.hidden = !can(node.dataset.role);
    }
    const wanted = location.hash.slice(1);
    const button = document.querySelector(`nav [data-page="${CSS.escape(wanted)}"]`);
    show(button && !button.hidden ? wanted : "chat");
  } catch (e) {
    state.role = null;
    $("login").hidden = false;
    $("nav").hidden = true;
    if (e instanceof ApiFailure && e.status === 401) {
      if (sessionStorage.getItem(KEY)) { sessionStorage.removeItem(KEY); showError(e); }
    } else {
      showError(e);
    }
  }
}

function signOut(reason) {
  sessionStorage.removeItem(KEY);
  state.role = null;
  for (const page of document.querySelectorAll(".page")) page.hidden = true;
  stopTimers();
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  if (reason) showError(reason);
}

function stopTimers() {
  for (const id of Object.values(state.timers)) clearInterval(id);
  state.timers = {};
}

const PAGES = {
  chat: () => loadModels(), documents: () => loadDocuments(), adapters: () => loadAdapters(),
  compare: () => loadComparisons(), health: () => startHealth(),
};

function show(name) {
  state.page = name;
  stopTimers();
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${name}`;
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.page === name);
  history.replaceState(null, "", `#${name}`);
  guarded(PAGES[name])();
}

// ---- jobs ---------------------------------------------------------------------------------
// Follow a job until it ends: draw(job) after every poll; resolves with the final job.
function follow(jobId, draw, timerName) {
  return new Promise((resolve) => {
    const tick = guarded(async () => {
      const job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
      draw(job);
      if (FINAL.includes(job.state)) {
        clearInterval(state.timers[timerName]);
        delete state.timers[timerName];
        resolve(job);
      }
    });
    clearInterval(state.timers[timerName]);
    state.timers[timerName] = setInterval(tick, 500);
    tick();
  });
}

function jobHeader(job, onCancel) {
  return el("div", { class: "row" },
    el("strong", {}, `${job.kind} job ${job.id.slice(0, 8)}`),
    el("span", { class: `state state-${job.state}` }, job.state),
    !FINAL.includes(job.state) && onCancel
      ? el("button", { type: "button", class: "danger", onclick: guarded(onCancel) }, "Cancel") : null);
}

function jobError(job) {
  return job.error ? el("p", { class: "error" }, el("span", { class: "code" }, job.error.code),
    el("span", {}, job.error.message)) : "";
}

function cancelJob(job) {
  return api("POST", `/v1/jobs/${encodeURIComponent(job.id)}/cancel`);
}

// ---- chat ---------------------------------------------------------------------------------
async function loadModels() {
  const list = await api("GET", "/v1/models");
  state.models = list.data.map((m) => m.id);
  drawModelPickers();
}

function drawModelPickers() {
  const box = $("chat-models");
  const previous = [...box.querySelectorAll("select")].map((s) => s.value);
  const count = Number($("chat-arms").value);
  const defaults = ["rag", "base", ...state.models];
  clear(box);
  for (let i = 0; i < count; i++) {
    const chosen = previous[i] || defaults[i] || state.models[0];
    const select = el("select", { class: "model", "aria-label": `model ${i + 1}` },
      state.models.map((id) => el("option", { value: id, selected: id === chosen }, id)));
    box.append(el("label", {}, count > 1 ? `arm ${i + 1} ` : "model ", select));
  }
}

function armPanel(model) {
  const panel = {
    model,
    answer: el("div", { class: "answer streaming" }),
    stats: el("div", { class: "stats" }, "waiting…"),
    sources: el("ol", { class: "sources" }),
    text: "", sourceRows: [], started: performance.now(), first: null, usage: null,
  };
  panel.node = el("div", { class: "arm", dataset: { model } },
    el("h3", {}, model), panel.answer, panel.stats, el("h4", {}, "Sources"), panel.sources);
  return panel;
}

function drawSources(panel) {
  clear(panel.sources);
  if (!panel.sourceRows.length) {
    panel.sources.append(el("li", { class: "hint" }, "no sources (this mode does not retrieve, or nothing matched)"));
    return;
  }
  for (const s of panel.sourceRows) {
    const cited = new RegExp(`\\[${s.number}\\]`).test(panel.text);
    panel.sources.append(el("li", { class: cited ? "cited source" : "source" },
      el("div", {},
        el("strong", {}, `[${s.number}] `), el("span", { class: "doc" }, s.document_id),
        s.page !== null && s.page !== undefined ? ` · page ${s.page}` : "",
        ` · score ${fmt(s.score, 3)}`, cited ? el("span", { class: "tag" }, "cited") : null),
      el("div", { class: "passage" }, s.text)));
  }
}

function drawStats(panel, done) {
  const total = (performance.now() - panel.started) / 1000;
  const parts = [];
  if (panel.first !== null) parts.push(`first token ${fmt(panel.first, 2)} s`);
  parts.push(`${done ? "total" : "elapsed"} ${fmt(total, 2)} s`);
  if (panel.usage) {
    parts.push(`tokens ${panel.usage.prompt_tokens} in / ${panel.usage.completion_tokens} out`);
    if (total > 0) parts.push(`${fmt(panel.usage.completion_tokens / total, 1)} tokens/s`);
  }
  panel.stats.textContent = parts.join(" · ");
}

// One server-sent event: the sources (first), a text delta, usage, an error or [DONE].
function onEvent(panel, data) {
  if (data === "[DONE]") return true;
  const event = JSON.parse(data);
  if (event.error) throw new ApiFailure(0, event.error.code, event.error.message);
  if (event.sources) { panel.sourceRows = event.sources; drawSources(panel); }
  if (event.usage) panel.usage = event.usage;
  const delta = event.choices && event.choices[0] && event.choices[0].delta;
  if (delta && delta.content) {
    if (panel.first === null) panel.first = (performance.now() - panel.started) / 1000;
    panel.text += delta.content;
    panel.answer.textContent = panel.text;
    drawStats(panel, false);
  }
  return false;
}

async function streamAnswer(panel, question, signal) {
  const body = {
    model: panel.model, stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: question }],
    max_tokens: Number($("chat-max-tokens").value) || undefined,
  };
  const topK = Number($("chat-top-k").value);
  if (topK) body.top_k = topK;
  try {
    const res = await request("POST", "/v1/chat/completions", body, signal);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "", done = false;
    while (!done) {
      const chunk = await reader.read();
      if (chunk.done) break;
      buffer += chunk.value;
      let cut;
      while (!done && (cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: "))
          .map((l) => l.slice(6)).join("\n");
        if (data) done = onEvent(panel, data);
      }
    }
    drawSources(panel);  // mark the cited ones against the whole answer
    drawStats(panel, true);
  } catch (e) {
    if (e.name === "AbortError") panel.stats.textContent = "stopped";
    else {
      panel.node.append(el("p", { class: "error" }, el("span", { class: "code" }, e.code || "error"),
        el("span", {}, e.message)));
      panel.stats.textContent = "failed";
    }
  } finally {
    panel.answer.classList.remove("streaming");
  }
}

async function ask(event) {
  event.preventDefault();
  const question = $("chat-question").value.trim();
  if (!question) return;
  const models = [...$("chat-models").querySelectorAll("select")].map((s) => s.value);
  const results = clear($("chat-results"));
  results.style.setProperty("--arms", String(models.length));
  const panels = models.map(armPanel);
  results.append(...panels.map((p) => p.node));
  state.chatAbort = new AbortController();
  $("chat-ask").disabled = true;
  $("chat-stop").disabled = false;
  try {
    await Promise.all(panels.map((p) => streamAnswer(p, question, state.chatAbort.signal)));
  } finally {
    $("chat-ask").disabled = false;
    $("chat-stop").disabled = true;
  }
}

// ---- documents -------------------------------------------------------------------------------
async function loadDocuments() {
  const [list, health] = await Promise.all([
    api("GET", "/v1/documents?limit=1000"), api("GET", "/health")]);
  const index = health.index || {};
  $("doc-summary").textContent = `Index version ${list.index_version}: ${index.documents ?? "?"} ` +
    `documents, ${index.chunks ?? "?"} chunks, embedder ${index.embedder_model_id ?? "?"}.`;
  const body = clear($("doc-table").tBodies[0]);
  for (const d of list.data) {
    body.append(el("tr", { dataset: { id: d.id } },
      el("td", { class: "mono" }, d.id), el("td", {}, d.source), el("td", { class: "num" }, d.chunks),
      el("td", { class: "num" }, d.version), el("td", {}, when(d.updated_at)),
      el("td", {}, el("button", { type: "button", class: "danger",
        onclick: guarded(() => deleteDocument(d.id)) }, "Delete"))));
  }
  if (!list.data.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "hint" }, "no documents")));
  await loadIngestJobs();
}

async function loadIngestJobs() {
  const jobs = await api("GET", "/v1/jobs?kind=ingest");
  const ul = clear($("doc-jobs"));
  for (const job of jobs.data.slice(0, 10)) {
    ul.append(el("li", {}, el("button", { type: "button", class: "link-button",
      onclick: guarded(() => watchIngest(job.id)) }, job.id.slice(0, 8)),
      ` ${when(job.created_at)} · `, el("span", { class: `state-${job.state}` }, job.state),
      job.params && job.params.files ? ` · ${job.params.files.join(", ")}` : " · re-index"));
  }
}

async function deleteDocument(id) {
  if (!confirm(`Remove ${id} from the index?`)) return;
  await api("DELETE", `/v1/documents/${id.split("/").map(encodeURIComponent).join("/")}`);
  await loadDocuments();
}

async function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const job = await api("POST", "/v1/documents", form);
  await watchIngest(job.id);
}

async function reindex() {
  const job = await api("POST", "/v1/documents/reindex", { reembed: $("doc-reembed").checked });
  await watchIngest(job.id);
}

function drawIngest(job) {
  const box = clear($("doc-job"));
  box.hidden = false;
  box.append(jobHeader(job, () => cancelJob(job)));
  const p = job.progress || {};
  if (!FINAL.includes(job.state)) {
    box.append(el("div", { class: "row" },
      el("progress", { max: p.files_total || 1, value: p.files_done || 0 }),
      `files ${p.files_done || 0}/${p.files_total || "?"} · chunks embedded ${p.chunks_embedded || 0}`));
  }
  box.append(jobError(job));
  const r = job.result;
  if (!r) return;
  const kinds = ["added", "changed", "removed", "unchanged", "failed"];
  box.append(el("table", { class: "diff" },
    el("thead", {}, el("tr", {}, el("th", {}, ""), kinds.map((k) => el("th", {}, k)))),
    el("tbody", {}, ["documents", "chunks"].map((what) => el("tr", { dataset: { what } },
      el("th", {}, what), kinds.map((k) => el("td", { class: "num", dataset: { kind: k } }, r[what][k])))))));
  box.append(el("p", {}, `index version ${r.index_version} · ${r.embedded} chunks embedded · ${fmt(r.seconds, 2)} s`));
  if (r.failures && r.failures.length) {
    box.append(el("table", { class: "failures" },
      el("thead", {}, el("tr", {}, el("th", {}, "file"), el("th", {}, "code"), el("th", {}, "reason"))),
      el("tbody", {}, r.failures.map((f) => el("tr", {},
        el("td", { class: "mono" }, f.path), el("td", { class: "mono" }, f.code), el("td", {}, f.reason))))));
  }
}

async function watchIngest(jobId) {
  const job = await follow(jobId, drawIngest, "ingest");
  if (job && state.page === "documents") await loadDocuments();
}

function wireDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", guarded(async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    await upload([...e.dataTransfer.files]);
  }));
  $("doc-files").addEventListener("change", guarded(async (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    await upload(files);
  }));
}

// ---- adapters -------------------------------------------------------------------------------
async function loadAdapters() {
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

function askAlias(what) {
  const alias = prompt(`${what}: which alias?`, "prod");
  return alias === null ? null : alias.trim() || "prod";
}

async function promote(name, version) {
  const alias = askAlias(`Promote ${name}@v${version}`);
  if (alias === null) return;
  await api("POST", `/v1/adapters/${encodeURIComponent(name)}/promote`, { version: `v${version}`, alias });
  await loadAdapters();
}

async function rollback(name) {
  const alias = askAlias(`Roll back ${name}`);
  if (alias === null) return;
  await api("POST", `/v1/adapters/${encodeURIComponent(name)}/rollback`, { alias });
  await loadAdapters();
}

async function deleteAdapter(name, version) {
  const what = version === null ? `every version of ${name}` : `${name}@v${version}`;
  if (!confirm(`Delete ${what}?`)) return;
  const query = version === null ? "" : `?version=${version}`;
  await api("DELETE", `/v1/adapters/${encodeURIComponent(name)}${query}`);
  $("ad-detail").hidden = true;
  await loadAdapters();
}

async function showAdapter(name, version) {
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
function lossPlot(curves) {
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

async function train(event) {
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

function drawTraining(job) {
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

// ---- comparisons ---------------------------------------------------------------------------
async function loadComparisons() {
  const [jobs, adapters] = await Promise.all([api("GET", "/v1/jobs?kind=compare"), api("GET", "/v1/adapters")]);
  const select = $("cmp-adapter");
  const current = select.value;
  clear(select).append(el("option", { value: "" }, "none"));
  const refs = [...new Set(adapters.data.flatMap((a) => [a.name, a.ref]))];
  for (const ref of refs) select.append(el("option", { value: ref, selected: ref === current }, ref));
  const ul = clear($("cmp-list"));
  for (const job of jobs.data) {
    const p = job.params || {};
    ul.append(el("li", { dataset: { id: job.id } },
      `${when(job.created_at)} · ${(p.modes || ["default arms"]).join(" / ")}${p.adapter ? ` (${p.adapter})` : ""} · `,
      el("span", { class: `state-${job.state}` }, job.state), " ",
      job.state === "succeeded"
        ? el("button", { type: "button", class: "open-report", onclick: guarded(() => openReport(job.id)) }, "Open report")
        : FINAL.includes(job.state) ? null
          : el("button", { type: "button", onclick: guarded(() => watchComparison(job.id)) }, "Follow")));
  }
  if (!jobs.data.length) ul.append(el("li", { class: "hint" }, "no comparisons yet"));
}

async function startComparison(event) {
  event.preventDefault();
  const modes = [...document.querySelectorAll("#cmp-form [name=mode]:checked")].map((c) => c.value);
  const body = { use_shipped: true, modes, max_tokens: Number($("cmp-max-tokens").value) || 64,
    tone_questions: Number($("cmp-tone").value) || 0 };
  const limit = Number($("cmp-limit").value);
  if (limit) body.limit = limit;
  if ($("cmp-adapter").value) body.adapter = $("cmp-adapter").value;
  const job = await api("POST", "/v1/compare", body);
  await watchComparison(job.id);
}

async function watchComparison(jobId) {
  const draw = (job) => {
    const box = clear($("cmp-job"));
    box.hidden = false;
    const p = job.progress || {};
    box.append(jobHeader(job, () => cancelJob(job)));
    if (!FINAL.includes(job.state) && p.total) {
      box.append(el("div", { class: "row" }, el("progress", { max: p.total, value: p.done || 0 }),
        `${p.stage || ""} ${p.done || 0}/${p.total}`));
    }
    box.append(jobError(job));
    if (job.state === "succeeded") {
      box.append(el("button", { type: "button", onclick: guarded(() => openReport(job.id)) }, "Open report"));
    }
  };
  await follow(jobId, draw, "compare");
  if (state.page === "compare") await loadComparisons();
}

// The report needs the key, so it is fetched here and shown in a sandboxed frame (no scripts,
// its own origin); Download saves the same file.
async function openReport(jobId) {
  const res = await request("GET", `/v1/compare/${encodeURIComponent(jobId)}/report.html`);
  const html = await res.text();
  $("cmp-frame").srcdoc = html;
  const link = $("cmp-report-download");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([html], { type: "text/html" }));
  link.download = `report-${jobId.slice(0, 8)}.html`;
  $("cmp-report-title").textContent = `Report ${jobId.slice(0, 8)}`;
  $("cmp-report").hidden = false;
}

// ---- health ------------------------------------------------------------------------------------
function card(label, value, id) {
  return el("div", { class: "card", dataset: { stat: id } },
    el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

async function loadHealth() {
  const [health, stats] = await Promise.all([api("GET", "/health"), api("GET", "/v1/stats")]);
  const g = health.generator || {}, i = health.index || {};
  const pct = (x) => (x === null || x === undefined ? "–" : `${fmt(100 * x, 1)} %`);
  clear($("health-cards")).append(
    card("status", health.status, "status"),
    card("queue waiting / active", `${stats.queue.waiting} / ${stats.queue.active}`, "queue"),
    card("chat requests (ok)", `${stats.requests.total} (${stats.requests.ok})`, "requests"),
    card("mean latency", stats.latency_s.mean === null ? "–" : `${fmt(stats.latency_s.mean, 3)} s`, "latency"),
    card("p95 latency at most", stats.latency_s.p95_at_most === null ? "–" : `${stats.latency_s.p95_at_most} s`, "p95"),
    card("tokens/s", fmt(stats.tokens_per_s, 1), "tokens_per_s"),
    card("empty-context rate", pct(stats.empty_context_rate), "empty_context_rate"),
    card("rejected (overload)", stats.requests.rejected, "rejected"),
    card("index", `v${i.version} · ${i.documents} docs · ${i.chunks} chunks`, "index"),
    card("generator", `${g.backend} · ${g.model_id}`, "generator"),
    card("adapters", health.adapters, "adapters"),
    card("auth", health.auth, "auth"));
}

function startHealth() {
  const tick = guarded(loadHealth);
  state.timers.health = setInterval(tick, 5000);
  return loadHealth();
}

// ---- start -------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.page));
  $("login-form").addEventListener("submit", guarded(async (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    clear($("errors"));
    await identify();
  }));
  $("signout").addEventListener("click", () => signOut());
  $("chat-arms").addEventListener("change", drawModelPickers);
  $("chat-form").addEventListener("submit", guarded(ask));
  $("chat-stop").addEventListener("click", () => state.chatAbort && state.chatAbort.abort());
  $("doc-reindex").addEventListener("click", guarded(reindex));
  $("doc-refresh").addEventListener("click", guarded(loadDocuments));
  $("train-form").addEventListener("submit", guarded(train));
  $("cmp-form").addEventListener("submit", guarded(startComparison));
  $("cmp-report-close").addEventListener("click", () => { $("cmp-report").hidden = true; });
  wireDrop();
  identify();
});
