"""The service report as one self-contained HTML file: inline SVG charts, no scripts, no network."""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, HEIGHT, PAD = 640, 220, 36
COLOURS = {
    "volume": "#4063d8",
    "self": "#2e9e5b",
    "escalated": "#e0793b",
    "response": "#8a4fd1",
    "csat": "#d4a20b",
}


def _bars(title: str, labels: list[str], series: list[tuple[str, list[float], str]], *, stacked: bool) -> str:
    """A bar chart (several series side by side, or stacked) as an SVG figure."""
    totals = [sum(values[i] for _, values, _ in series) for i in range(len(labels))] if stacked else []
    peak = max([*totals, *(v for _, values, _ in series for v in values), 1.0])
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    slot = inner_w / max(len(labels), 1)
    width = slot * 0.8 / (1 if stacked else len(series))
    shapes = []
    for i, label in enumerate(labels):
        base = HEIGHT - PAD
        for s, (name, values, colour) in enumerate(series):
            h = inner_h * values[i] / peak
            x = PAD + i * slot + slot * 0.1 + (0 if stacked else s * width)
            y = base - h
            shapes.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(label)} {escape(name)}: {values[i]:g}</title></rect>"
            )
            if stacked:
                base = y
        if len(labels) <= 14 or i % max(len(labels) // 10, 1) == 0:
            shapes.append(
                f'<text x="{PAD + (i + 0.5) * slot:.1f}" y="{HEIGHT - PAD + 14}" font-size="9" '
                f'text-anchor="middle">{escape(label[-5:])}</text>'
            )
    return _frame(title, peak, shapes, series)


def _frame(title: str, peak: float, shapes: list[str], series: list[tuple[str, list[float], str]]) -> str:
    legend = "".join(
        f'<span class="key"><i style="background:{colour}"></i>{escape(name)}</span>'
        for name, _, colour in series
    )
    axis = (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
        f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">{peak:g}</text>'
        f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" font-size="10" text-anchor="end">0</text>'
    )
    return (
        f"<figure><figcaption>{escape(title)} {legend}</figcaption>"
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">{axis}{"".join(shapes)}</svg></figure>'
    )


def _card(label: str, value: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_report(figures: dict[str, Any], *, title: str = "Helpdesk report") -> str:
    days = figures["per_day"]
    labels = [d["day"] for d in days]
    csat = figures["csat"]
    response_min = [(d["first_response_median_s"] or 0) / 60 for d in days]
    ratings = [csat["distribution"][str(s)] for s in range(1, 6)]
    charts = [
        _bars("Conversations per day", labels,
              [("conversations", [d["conversations"] for d in days], COLOURS["volume"])], stacked=False),
        _bars("Self-service vs escalated", labels,
              [("self-served", [d["self_served"] for d in days], COLOURS["self"]),
               ("escalated", [d["escalated"] for d in days], COLOURS["escalated"])], stacked=True),
        _bars("Median time to first agent response (minutes)", labels,
              [("first response", response_min, COLOURS["response"])], stacked=False),
        _bars("CSAT distribution", ["1", "2", "3", "4", "5"],
              [("ratings", ratings, COLOURS["csat"])], stacked=False),
    ]  # fmt: skip
    cards = [
        _card("conversations", str(figures["conversations"])),
        _card("self-service rate", _pct(figures["self_service_rate"])),
        _card("escalation rate", _pct(figures["escalation_rate"])),
        _card("first response, median", _duration(figures["first_response"]["median_s"])),
        _card("first response, p90", _duration(figures["first_response"]["p90_s"])),
        _card("resolution, median", _duration(figures["resolution"]["median_s"])),
        _card("CSAT average", "–" if csat["average"] is None else f"{csat['average']:.2f} / 5"),
        _card("answer feedback rate", _pct(figures["feedback_rate"])),
    ]
    top = (
        "".join(
            f"<tr><td>{escape(a['title'])}</td><td>{a['shown']}</td></tr>" for a in figures["top_articles"]
        )
        or '<tr><td colspan="2">no answers yet</td></tr>'
    )
    gaps = (
        "".join(
            f"<tr><td>{escape(g['question'])}</td><td>{g['asked']}</td></tr>" for g in figures["top_gaps"]
        )
        or '<tr><td colspan="2">no unanswered questions</td></tr>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }}
.card {{ border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px; min-width: 120px; }}
.card b {{ display: block; font-size: 22px; }} .card span {{ color: #666; }}
figure {{ margin: 18px 0; }} figcaption {{ font-weight: 600; margin-bottom: 4px; }}
.key {{ font-weight: normal; margin-left: 12px; }} .key i {{ display: inline-block; width: 10px; height: 10px;
  margin-right: 4px; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; }} td, th {{ border-bottom: 1px solid #eee;
  padding: 4px 10px; text-align: left; }}
</style></head><body>
<h1>{escape(title)}</h1>
<p>{escape(figures["since"][:10])} to {escape(figures["until"][:10])} ({figures["days"]} days)</p>
<div class="cards">{"".join(cards)}</div>
{"".join(charts)}
<h2>Top articles</h2><table><tr><th>article</th><th>shown</th></tr>{top}</table>
<h2>Top unanswered questions</h2><table><tr><th>question</th><th>asked</th></tr>{gaps}</table>
</body></html>
"""
