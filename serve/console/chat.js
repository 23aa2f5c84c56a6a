// ragtune console, Chat: ask one model or several side by side, watch the answers stream.
import { $, ApiFailure, FINAL, api, cancelJob, clear, el, fmt, follow, guarded, isoWhen, jobError, jobHeader, request, state, when } from "./core.js";

export async function loadModels() {
  const list = await api("GET", "/v1/models");
  state.models = list.data.map((m) => m.id);
  drawModelPickers();
}

export function drawModelPickers() {
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

export function armPanel(model) {
  const panel = {
    model,
    answer: el("div", { class: "answer streaming" }),
    stats: el("div", { class: "stats" }, "waiting…"),
    sources: el("ol", { class: "sources" }),
    text: "", sourceRows: [], retrieved: [], unknown: [], started: performance.now(), first: null,
    usage: null,
  };
  panel.node = el("div", { class: "arm", dataset: { model } },
    el("h3", {}, model), panel.answer, panel.stats, el("h4", {}, "Sources"), panel.sources);
  return panel;
}

export function drawSources(panel) {
  clear(panel.sources);
  if (panel.unknown.length) {
    panel.sources.append(el("li", { class: "hint unknown" },
      `no document mentions ${panel.unknown.map((t) => `“${t}”`).join(", ")}: answered without the model`));
  }
  if (!panel.sourceRows.length && !panel.unknown.length) {
    panel.sources.append(el("li", { class: "hint" }, "no sources (this mode does not retrieve, or nothing matched)"));
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
  const others = panel.retrieved.filter((r) => !r.shown);
  if (others.length) {
    panel.sources.append(el("li", { class: "hint retrieved" },
      `also retrieved, not shown to the model: ${others.map((r) => `${r.document_id} (${fmt(r.score, 3)})`).join(", ")}`));
  }
}

export function drawStats(panel, done) {
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
export function onEvent(panel, data) {
  if (data === "[DONE]") return true;
  const event = JSON.parse(data);
  if (event.error) throw new ApiFailure(0, event.error.code, event.error.message);
  if (event.ragtune) {
    panel.retrieved = event.ragtune.retrieved || [];
    panel.unknown = event.ragtune.unknown_terms || [];
  }
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

export async function streamAnswer(panel, question, signal) {
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

export async function ask(event) {
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

export function wire() {
  $("chat-arms").addEventListener("change", drawModelPickers);
  $("chat-form").addEventListener("submit", guarded(ask));
  $("chat-stop").addEventListener("click", () => state.chatAbort && state.chatAbort.abort());
}
