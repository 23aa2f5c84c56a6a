// ragtune console, Comparisons: start one, follow it, open its report; earlier reports.
import { $, ApiFailure, FINAL, api, cancelJob, clear, el, fmt, follow, guarded, isoWhen, jobError, jobHeader, request, state, when } from "./core.js";

export async function loadComparisons() {
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

export async function startComparison(event) {
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

export async function watchComparison(jobId) {
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
export async function openReport(jobId) {
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

export function wire() {
  $("cmp-form").addEventListener("submit", guarded(startComparison));
  $("cmp-report-close").addEventListener("click", () => { $("cmp-report").hidden = true; });
}
