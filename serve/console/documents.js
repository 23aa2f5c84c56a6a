// ragtune console, Documents: list, upload (drop), delete, re-index, follow ingest jobs.
import { $, ApiFailure, FINAL, api, cancelJob, clear, el, fmt, follow, guarded, isoWhen, jobError, jobHeader, request, state, when } from "./core.js";

export async function loadDocuments() {
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

export async function loadIngestJobs() {
  const jobs = await api("GET", "/v1/jobs?kind=ingest");
  const ul = clear($("doc-jobs"));
  for (const job of jobs.data.slice(0, 10)) {
    ul.append(el("li", {}, el("button", { type: "button", class: "link-button",
      onclick: guarded(() => watchIngest(job.id)) }, job.id.slice(0, 8)),
      ` ${when(job.created_at)} · `, el("span", { class: `state-${job.state}` }, job.state),
      job.params && job.params.files ? ` · ${job.params.files.join(", ")}` : " · re-index"));
  }
}

export async function deleteDocument(id) {
  if (!confirm(`Remove ${id} from the index?`)) return;
  await api("DELETE", `/v1/documents/${id.split("/").map(encodeURIComponent).join("/")}`);
  await loadDocuments();
}

export async function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const job = await api("POST", "/v1/documents", form);
  await watchIngest(job.id);
}

export async function reindex() {
  const job = await api("POST", "/v1/documents/reindex", { reembed: $("doc-reembed").checked });
  await watchIngest(job.id);
}

export function drawIngest(job) {
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

export async function watchIngest(jobId) {
  const job = await follow(jobId, drawIngest, "ingest");
  if (job && state.page === "documents") await loadDocuments();
}

export function wireDrop() {
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

export function wire() {
  $("doc-reindex").addEventListener("click", guarded(reindex));
  $("doc-refresh").addEventListener("click", guarded(loadDocuments));
  wireDrop();
}
