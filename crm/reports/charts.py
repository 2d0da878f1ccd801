"""Server-side SVG bar charts for the results page: no script, no library, no inline style.

Like the fee dashboard's charts (crm/fees/charts.py, whose palette this uses): colours and
sizes are SVG presentation attributes, every text is escaped.
"""

from markupsafe import Markup, escape

from crm.fees.charts import BLUE, GRID, MUTED
from crm.i18n import format_number


def bar_chart(title: str, bars: list[tuple[str, int]], width: int = 560) -> Markup:
    """Horizontal bars, one per (label, value), longest value filling the width."""
    if not bars:
        return Markup("")
    label_w, bar_h, gap, right = 210, 18, 8, 56
    height = len(bars) * (bar_h + gap) + gap
    peak = max(max(value for _label, value in bars), 1)
    plot_w = width - label_w - right
    parts = [
        f'<svg class="report-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{label_w}" y1="0" x2="{label_w}" y2="{height}" stroke="{GRID}"/>',
    ]
    for index, (label, value) in enumerate(bars):
        y = gap + index * (bar_h + gap)
        length = round(max(value, 0) * plot_w / peak, 1)
        shown = label if len(label) <= 32 else label[:31] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end" font-size="12" '
            f'fill="{MUTED}">{escape(shown)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{length}" height="{bar_h}" rx="2" fill="{BLUE}"/>'
        )
        parts.append(
            f'<text x="{label_w + length + 6}" y="{y + 13}" font-size="12" '
            f'fill="{MUTED}">{escape(format_number(value))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
