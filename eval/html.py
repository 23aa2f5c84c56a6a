"""The self-contained HTML comparison report (tables, SVG plots, answers) and writing its files."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from eval.report import HTML_NAME, JSON_NAME, Report, fmt_ci
from eval.svg import bar_chart, colour, forest_plot, latency_plot
from ingest.atomic import atomic_write_text

# Nothing may load from elsewhere, and no script may run even if a model's answer got through.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1400px;padding:0 16px;
color:#1d1d1f}h1{font-size:22px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;
vertical-align:top;text-align:left}th{background:#f5f5f7}td.num{text-align:right;
white-space:nowrap;font-variant-numeric:tabular-nums}.plots{display:flex;flex-wrap:wrap;gap:8px}
.answer{white-space:pre-wrap;max-width:360px}.muted{color:#777;font-size:12px}
.arm{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
pre{background:#f5f5f7;padding:8px;overflow:auto;font-size:12px}
"""
NOTES = (
    '<p class="muted">Retrieval and grounding metrics apply only to the arms that retrieve: '
    "base and tuned saw no passages, so their answers are not judged against passages they "
    "never had. Both RAG arms get the same retrieved passages for each question (retrieved "
    "once), so their retrieval metrics are equal. A RAG arm's latency includes that retrieval. "
    "Every arm decodes greedily with the same token budget and seed; the intervals are seeded "
    "percentile bootstraps over questions, paired for differences.</p>"
)
QUESTION_METRICS = (
    ("token_f1", "F1"),
    ("key_fact_recall", "facts"),
    ("exact_match", "EM"),
    ("grounded_share", "grounded"),
    ("citation_accuracy", "cites"),
    ("tone_score", "tone"),
    ("recall@k", "recall@k"),
)


def e(value: Any) -> str:
    """Escaped text: every string in the report may be model output or user input."""
    return escape("" if value is None else str(value), quote=True)


def _arm(arm: str) -> str:
    return f'<span class="arm" style="background:{colour(arm)}"></span>{e(arm)}'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """Cells are already-escaped HTML; columns from `numeric_from` on are right-aligned."""
    out = ["<table><thead><tr>", *(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        cells = (
            f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        out += ["<tr>", *cells, "</tr>"]
    return "".join([*out, "</tbody></table>"])


def _overview(data: Mapping[str, Any]) -> str:
    s = data["settings"]
    adapter = (s.get("adapter") or {}).get("ref") or "none"
    index = (s.get("index") or {}).get("version")
    facts = [
        ("questions", s["cases"]["count"]),
        ("arms", ", ".join(data["arms"])),
        ("generator", s["generator"]["model_id"]),
        ("adapter", adapter),
        ("index version", index),
        ("max tokens", s["decoding"]["max_new_tokens"]),
        ("created", s["created_at"]),
    ]
    items = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in facts)
    return f"<h1>ragtune comparison</h1><ul>{items}</ul>"


def _summary_table(data: Mapping[str, Any]) -> str:
    metrics = data["metrics"]
    head = ["arm", *(e(m["name"]) for m in metrics), "latency p50 / p95 s", "tokens in / out"]
    rows = []
    for arm in data["arms"]:
        cells, c = data["summary"][arm], data["cost"][arm]
        rows.append(
            [
                _arm(arm),
                *(e(fmt_ci(cells.get(m["name"]))) for m in metrics),
                e(
                    f"{fmt_ci({'mean': c['latency_p50_s']})} / "
                    f"{fmt_ci({'mean': c['latency_p95_s']})}"
                ),
                e(f"{c['prompt_tokens']} / {c['completion_tokens']}"),
            ]
        )
    note = '<p class="muted">mean [95% bootstrap CI]; "-": does not apply to the arm.</p>'
    return f"<h2>Arms x metrics</h2>{_table(head, rows)}{note}"


def _plots(data: Mapping[str, Any]) -> str:
    charts = []
    for m in data["metrics"]:
        if m["group"] == "cost" and m["name"] != "tokens_per_s":
            continue
        cells = {arm: data["summary"][arm].get(m["name"]) for arm in data["arms"]}
        charts.append(bar_chart(m["name"], cells))
    latencies = {
        arm: [q["answers"][arm]["latency_s"] or 0.0 for q in data["questions"]]
        for arm in data["arms"]
    }
    return (
        f'<h2>Plots</h2><div class="plots">{"".join(charts)}</div>'
        f"<div>{latency_plot(latencies)}</div>"
    )


def _differences(data: Mapping[str, Any]) -> str:
    rows = data["differences"]
    if not rows:
        return ""
    overall = [r for r in rows if r["tag"] is None]
    table = [
        [
            e(r["tag"] or "all"),
            e(f"{r['a']} - {r['b']}"),
            e(r["metric"]),
            e(fmt_ci(r, 3)),
            e(r["n"]),
        ]
        for r in rows
    ]
    return (
        f"<h2>Differences (paired)</h2><div>{forest_plot(overall)}</div>"
        f"{_table(['tag', 'arms', 'metric', 'a - b [95% CI]', 'n'], table, 3)}"
    )


def _by_tag(data: Mapping[str, Any]) -> str:
    names = [m["name"] for m in data["metrics"] if m["group"] != "cost"]
    rows = []
    for tag, part in data["by_tag"].items():
        for arm in data["arms"]:
            cells = part["arms"][arm]
            rows.append(
                [e(f"{tag} ({part['n']})"), _arm(arm), *(e(fmt_ci(cells.get(n))) for n in names)]
            )
    if not rows:
        return ""
    return f"<h2>Per tag</h2>{_table(['tag', 'arm', *map(e, names)], rows, 2)}"


def _tone(data: Mapping[str, Any]) -> str:
    tone = data.get("tone")
    if not tone:
        return "<h2>Tone classifier</h2><p>not trained for this run: no tone score.</p>"
    h = tone["heldout"]
    facts = [
        ("held-out accuracy", h["accuracy"]),
        ("precision", h["precision"]),
        ("recall", h["recall"]),
        ("pasted-boilerplate texts called plain", h["pasted_accuracy"]),
        ("held-out texts", h["n_heldout"]),
        ("brand answers (positives)", tone["positives"]),
        ("base-model answers (negatives)", tone["negatives"]),
    ]
    rows = [[e(k), e(fmt_ci({"mean": v}, 3) if isinstance(v, float) else v)] for k, v in facts]
    return f"<h2>Tone classifier</h2>{_table(['', 'value'], rows)}"


def _answer_cell(answer: Mapping[str, Any]) -> str:
    m = answer["metrics"]
    parts = [f"{label} {m[k]:.2f}" for k, label in QUESTION_METRICS if m.get(k) is not None]
    parts.append(f"{answer['latency_s'] or 0:.2f} s")
    cited = ", ".join(f"[{n}]" for n in answer["cited"])
    extra = f" · cites {cited}" if cited else ""
    return (
        f'<div class="answer">{e(answer["text"])}</div>'
        f'<div class="muted">{e(" · ".join(parts) + extra)}</div>'
    )


def _questions(data: Mapping[str, Any]) -> str:
    rows = []
    for q in data["questions"]:
        docs = ", ".join(dict.fromkeys(h["document_id"] for h in q["retrieved"]))
        about = (
            f"<b>{e(q['id'])}</b> <span class='muted'>{e(', '.join(q['tags']))}</span>"
            f"<div>{e(q['question'])}</div><div class='muted'>reference: "
            f"{e(q['reference'])}</div><div class='muted'>key facts: "
            f"{e('; '.join(q['key_facts']) or '-')}</div>"
            f"<div class='muted'>retrieved: {e(docs or '-')}</div>"
        )
        rows.append([about, *(_answer_cell(q["answers"][arm]) for arm in data["arms"])])
    head = ["question", *(_arm(arm) for arm in data["arms"])]
    return f"<h2>Every question</h2>{_table(head, rows, numeric_from=len(head))}"


def _settings(data: Mapping[str, Any]) -> str:
    text = json.dumps(data["settings"], indent=2, ensure_ascii=False)
    tone = data.get("tone")
    tone_text = (
        json.dumps({k: v for k, v in tone.items() if k != "heldout"}, indent=2) if tone else ""
    )
    help_rows = [[e(m["name"]), e(m["description"])] for m in data["metrics"]]
    return (
        f"<h2>Settings</h2><pre>{e(text)}</pre>"
        + (f"<h3>Tone data</h3><pre>{e(tone_text)}</pre>" if tone else "")
        + f"<h2>Metrics</h2>{_table(['metric', 'how it is computed'], help_rows, 2)}{NOTES}"
    )


def render_html(data: Mapping[str, Any]) -> str:
    """One HTML page from a report's `to_dict()`: no scripts, no external resources."""
    title = f"ragtune comparison {data['settings'].get('created_at', '')}"
    body = [
        _overview(data),
        _summary_table(data),
        _plots(data),
        _differences(data),
        _by_tag(data),
        _tone(data),
        _questions(data),
        _settings(data),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """report.json and report.html in `out_dir` (created), each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    paths = {"json": out_dir / JSON_NAME, "html": out_dir / HTML_NAME}
    atomic_write_text(paths["json"], json.dumps(data, indent=1, ensure_ascii=False))
    atomic_write_text(paths["html"], render_html(data))
    return paths
