// ragtune console, Health: status and metrics at a glance, refreshed every 5 seconds.
import { $, ApiFailure, FINAL, api, cancelJob, clear, el, fmt, follow, guarded, isoWhen, jobError, jobHeader, request, state, when } from "./core.js";

export function card(label, value, id) {
  return el("div", { class: "card", dataset: { stat: id } },
    el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

export async function loadHealth() {
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

export function startHealth() {
  const tick = guarded(loadHealth);
  state.timers.health = setInterval(tick, 5000);
  return loadHealth();
}

