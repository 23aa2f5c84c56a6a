// ragtune console, shared: DOM helpers, the API client and its errors, background jobs.
// Every value that comes from a document, an answer or the server is put in the page as
// text (textContent, createElement), never as HTML, so a document holding <script> shows
// as text.

export const KEY = "ragtune.key";
export const RANK = { reader: 1, editor: 2, admin: 3 };
export const FINAL = ["succeeded", "failed", "cancelled", "interrupted"];
export const state = { role: null, page: null, timers: {}, chatAbort: null, models: [] };
// What a 401 does (the app signs out); set by app.js.
export const hooks = { unauthorized: (failure) => {} };

// ---- DOM helpers ------------------------------------------------------------------------
export function $(id) { return document.getElementById(id); }

export function el(tag, props, ...children) {
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

export function clear(node) { node.replaceChildren(); return node; }
export function fmt(n, digits = 2) {
  return n === null || n === undefined ? "–" : Number(n).toFixed(digits).replace(/\.?0+$/, "") || "0";
}
// A time as the API gives it: seconds since the epoch (jobs) or an ISO 8601 string.
export function when(value) {
  if (value === null || value === undefined || value === "") return "–";
  const date = new Date(typeof value === "number" ? value * 1000 : value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}
export const isoWhen = when;

// ---- errors -------------------------------------------------------------------------------
export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function showError(err) {
  const status = err instanceof ApiFailure && err.status ? ` (HTTP ${err.status})` : "";
  const code = err instanceof ApiFailure ? err.code : "console_error";
  const box = el("div", { class: "error" },
    el("span", { class: "code" }, code + status),
    el("span", { class: "message" }, err.message || String(err)),
    el("button", { type: "button", title: "dismiss", onclick: () => box.remove() }, "×"));
  $("errors").append(box);
  while ($("errors").children.length > 5) $("errors").firstChild.remove();
}

export async function failureOf(res) {
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
export function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

export async function request(method, path, body, signal) {
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
    if (res.status === 401 && state.role) hooks.unauthorized(failure);
    throw failure;
  }
  return res;
}

export async function api(method, path, body) {
  const res = await request(method, path, body);
  return res.json();
}

// Run an action from a button; show its failure instead of throwing it away.
export function guarded(fn) {
  return async (...args) => {
    try { await fn(...args); } catch (e) { if (e.name !== "AbortError") showError(e); }
  };
}


export function can(role) { return state.role && RANK[state.role] >= RANK[role]; }

export function stopTimers() {
  for (const id of Object.values(state.timers)) clearInterval(id);
  state.timers = {};
}

// ---- jobs ---------------------------------------------------------------------------------
// Follow a job until it ends: draw(job) after every poll; resolves with the final job.
export function follow(jobId, draw, timerName) {
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

export function jobHeader(job, onCancel) {
  return el("div", { class: "row" },
    el("strong", {}, `${job.kind} job ${job.id.slice(0, 8)}`),
    el("span", { class: `state state-${job.state}` }, job.state),
    !FINAL.includes(job.state) && onCancel
      ? el("button", { type: "button", class: "danger", onclick: guarded(onCancel) }, "Cancel") : null);
}

export function jobError(job) {
  return job.error ? el("p", { class: "error" }, el("span", { class: "code" }, job.error.code),
    el("span", {}, job.error.message)) : "";
}

export function cancelJob(job) {
  return api("POST", `/v1/jobs/${encodeURIComponent(job.id)}/cancel`);
}
