"""Hand-written inline SVG plots: bars with error bars, a forest plot, latency box-and-strips."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

ARM_COLOURS = {"base": "#7a7a7a", "rag": "#1f77b4", "tuned": "#d62728", "rag+tuned": "#8e44ad"}
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def colour(arm: str) -> str:
    return ARM_COLOURS.get(arm, "#333333")


def _svg(width: int, height: int, body: Sequence[str], label: str) -> str:
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" {FONT}>'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(text)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, width: float = 1) -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
        f'stroke="{stroke}" stroke-width="{width}"/>'
    )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _error_bar(cx: float, y_lo: float, y_hi: float) -> list[str]:
    return [
        _line(cx, y_lo, cx, y_hi, "#111", 1.5),
        _line(cx - 5, y_lo, cx + 5, y_lo, "#111", 1.5),
        _line(cx - 5, y_hi, cx + 5, y_hi, "#111", 1.5),
    ]


def bar_chart(title: str, cells: Mapping[str, Mapping[str, Any] | None]) -> str:
    """One metric: a bar per arm at its mean, with a 95% CI error bar; y from 0 to 1 (or the
    largest upper bound, for metrics beyond 1)."""
    width, height, left, top, bottom = 240, 180, 34, 22, 30
    plot_h, arms = height - top - bottom, list(cells)
    tops = [v for c in cells.values() if c for v in (_num(c.get("hi")), _num(c.get("mean")))]
    y_max = max([1.0, *(v for v in tops if v is not None)])
    step = (width - left - 10) / max(1, len(arms))

    def y(v: float) -> float:
        return top + plot_h * (1 - min(max(v, 0.0), y_max) / y_max)

    body = [
        _text(width / 2, 14, title, extra='font-weight="600"'),
        _line(left, top, left, top + plot_h, "#999"),
        _line(left, top + plot_h, width - 6, top + plot_h, "#999"),
    ]
    for tick in (0.0, 0.5 * y_max, y_max):
        body += [
            _text(left - 4, y(tick) + 4, f"{tick:.2g}", "end"),
            _line(left, y(tick), width - 6, y(tick), "#eee"),
        ]
    for i, arm in enumerate(arms):
        cell, x0 = cells[arm] or {}, left + i * step + step * 0.15
        bar_w, mean = step * 0.7, _num(cell.get("mean"))
        body.append(_text(x0 + bar_w / 2, height - 12, arm))
        if mean is None:
            body.append(_text(x0 + bar_w / 2, top + plot_h - 6, "n/a", extra='fill="#999"'))
            continue
        body.append(
            f'<rect x="{x0:.1f}" y="{y(mean):.1f}" width="{bar_w:.1f}" '
            f'height="{top + plot_h - y(mean):.1f}" fill="{colour(arm)}" '
            f'fill-opacity="0.8"><title>{escape(arm)}: {mean:.3f}</title></rect>'
        )
        lo, hi = _num(cell.get("lo")), _num(cell.get("hi"))
        if lo is not None and hi is not None:
            body += _error_bar(x0 + bar_w / 2, y(lo), y(hi))
    return _svg(width, height, body, f"{title}: mean per arm with 95% CI")


def forest_plot(rows: Sequence[Mapping[str, Any]]) -> str:
    """Paired differences a - b with their 95% CIs around a zero line."""
    width, row_h, label_w, top = 640, 22, 270, 24
    height = top + row_h * len(rows) + 26
    spans = [abs(v) for r in rows for v in (_num(r.get("lo")), _num(r.get("hi"))) if v is not None]
    half = max([0.05, *spans]) * 1.1
    plot_w = width - label_w - 20

    def x(v: float) -> float:
        return label_w + plot_w * (v + half) / (2 * half)

    body = [
        _line(x(0), top - 6, x(0), height - 22, "#999"),
        _text(x(-half), height - 6, f"{-half:.2f}"),
        _text(x(0), height - 6, "0"),
        _text(x(half), height - 6, f"{half:.2f}"),
        _text(
            label_w + plot_w / 2,
            14,
            "difference a - b (95% paired bootstrap CI)",
            extra='font-weight="600"',
        ),
    ]
    for i, r in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        label = f"{r['a']} - {r['b']} · {r['metric']}"
        body.append(_text(label_w - 8, cy + 4, label, "end"))
        mean, lo, hi = _num(r.get("mean")), _num(r.get("lo")), _num(r.get("hi"))
        if lo is not None and hi is not None:
            body.append(_line(x(lo), cy, x(hi), cy, colour(str(r["a"])), 2))
        if mean is not None:
            body.append(
                f'<circle cx="{x(mean):.1f}" cy="{cy:.1f}" r="4" '
                f'fill="{colour(str(r["a"]))}"><title>{escape(label)}: '
                f"{mean:+.3f}</title></circle>"
            )
    return _svg(width, height, body, "paired differences between arms")


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_plot(latencies: Mapping[str, Sequence[float]]) -> str:
    """Per arm: every question's latency as a dot, over a box (quartiles, median) whose whiskers
    reach the 5th and 95th percentiles."""
    width, row_h, label_w, top = 640, 40, 90, 26
    height = top + row_h * len(latencies) + 28
    x_max = max([1e-3, *(v for vs in latencies.values() for v in vs)]) * 1.05
    plot_w = width - label_w - 20

    def x(v: float) -> float:
        return label_w + plot_w * v / x_max

    body = [
        _text(label_w + plot_w / 2, 14, "latency per question (s)", extra='font-weight="600"'),
        _line(label_w, height - 24, width - 20, height - 24, "#999"),
    ]
    for tick in (0.0, x_max / 2, x_max):
        body.append(_text(x(tick), height - 8, f"{tick:.2f}"))
    for i, (arm, values) in enumerate(latencies.items()):
        cy, c = top + row_h * i + row_h / 2, colour(arm)
        body.append(_text(label_w - 8, cy + 4, arm, "end"))
        if not values:
            continue
        q = [_quantile(values, p) for p in (0.05, 0.25, 0.5, 0.75, 0.95)]
        body += [
            _line(x(q[0]), cy, x(q[1]), cy, c),
            _line(x(q[3]), cy, x(q[4]), cy, c),
            f'<rect x="{x(q[1]):.1f}" y="{cy - 9:.1f}" width="{max(x(q[3]) - x(q[1]), 1):.1f}"'
            f' height="18" fill="{c}" fill-opacity="0.15" stroke="{c}"/>',
            _line(x(q[2]), cy - 9, x(q[2]), cy + 9, c, 2),
        ]
        for j, v in enumerate(values):
            jitter = ((j * 7919) % 13 - 6) * 0.9  # deterministic spread, no random numbers
            body.append(
                f'<circle cx="{x(v):.1f}" cy="{cy + jitter:.1f}" r="2" fill="{c}" '
                'fill-opacity="0.6"/>'
            )
    return _svg(width, height, body, "latency distribution per arm")
