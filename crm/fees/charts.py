"""Server-side SVG charts for the fee dashboard: no script, no library, no inline styles.

Colours and sizes are SVG presentation attributes (allowed under our CSP, unlike
`style=""`). Every text is escaped. Amounts stay integer øre; only
the drawing coordinates are fractions, rounded to one decimal.
"""

from datetime import date
from decimal import Decimal

from babel.numbers import format_decimal
from flask_babel import get_locale
from flask_babel import gettext as _
from markupsafe import Markup, escape

BLUE = "#1f5f8b"
BLUE_SOFT = "#d7e6f2"
GREEN = "#1e7a4c"
AMBER = "#c98a12"
GRID = "#dde3ea"
MUTED = "#5f6b7a"
TRACK = "#e6ebf1"


def _kr(ore: int) -> str:
    """Whole kroner for axis labels: `kr 125 000`."""
    locale = str(get_locale() or "nb")
    number = format_decimal(ore // 100, format="#,##0", locale=locale)
    return f"kr\u00a0{number}" if locale == "nb" else f"NOK\u00a0{number}"


def nice_ceiling(ore: int, intervals: int = 4) -> int:
    """The top of the axis: `intervals` equal round steps (1, 1.2, 1.5 … 8 times a power
    of ten kroner), the smallest that covers `ore`, so grid lines fall on even figures."""
    needed = -(-ore // intervals)  # the smallest step, rounded up
    scale = 100  # one krone in øre
    while True:
        for tenths in (10, 12, 15, 20, 25, 30, 40, 50, 60, 80):
            step = scale * tenths // 10
            if step >= needed:
                return step * intervals
        scale *= 10


def _day(value: date) -> str:
    return value.strftime("%d.%m")


def payments_chart(
    by_day: list[tuple[date, int]], invoiced_ore: int, width: int = 680, height: int = 260
) -> Markup:
    """Cumulative money received over time, against the invoiced total."""
    title = _("Payments received over time")
    if not by_day:
        empty = _("No payments yet.")
        return Markup(
            f'<svg class="fee-chart" viewBox="0 0 {width} 80" role="img" '
            f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
            f"<title>{escape(title)}</title>"
            f'<text x="{width // 2}" y="45" text-anchor="middle" fill="{MUTED}" '
            f'font-size="14">{escape(empty)}</text></svg>'
        )
    left, right, top, bottom = 92, 16, 16, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    points = []
    running = 0
    for day, amount in by_day:
        running += amount
        points.append((day, running))
    peak = nice_ceiling(max(max(total for _day_, total in points), invoiced_ore, 1))
    first, last = by_day[0][0], by_day[-1][0]
    # A little room after the last payment day, so its step is seen as a step.
    span = max((last - first).days, 1)
    span += max(span // 12, 1)

    def x(day: date) -> float:
        return round(left + (day - first).days * plot_w / span, 1)

    def y(ore: int) -> float:
        return round(top + plot_h - max(ore, 0) * plot_h / peak, 1)

    parts = [
        f'<svg class="fee-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for step in range(5):
        value = peak * step // 4
        gy = y(value)
        parts.append(
            f'<line x1="{left}" y1="{gy}" x2="{width - right}" y2="{gy}" stroke="{GRID}" '
            f'stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{left - 8}" y="{gy + 4}" text-anchor="end" font-size="11" '
            f'fill="{MUTED}">{escape(_kr(value))}</text>'
        )
    # A step line: the total stays flat until the next day with payments.
    path = [f"M{x(first)},{y(0)}"]
    previous_total = 0
    for day, total in points:
        path.append(f"L{x(day)},{y(previous_total)}")
        path.append(f"L{x(day)},{y(total)}")
        previous_total = total
    path.append(f"L{width - right},{y(previous_total)}")
    line = " ".join(path)
    area = f"{line} L{width - right},{y(0)} Z"
    parts.append(f'<path d="{area}" fill="{BLUE_SOFT}" stroke="none"/>')
    parts.append(
        f'<path d="{line}" fill="none" stroke="{BLUE}" stroke-width="2.5" stroke-linejoin="round"/>'
    )
    if invoiced_ore > 0:
        invoiced = _("Invoiced")
        iy = y(invoiced_ore)
        parts.append(
            f'<line x1="{left}" y1="{iy}" x2="{width - right}" y2="{iy}" stroke="{AMBER}" '
            f'stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        parts.append(
            f'<text x="{width - right}" y="{iy - 6}" text-anchor="end" font-size="11" '
            f'fill="{AMBER}">{escape(invoiced)}</text>'
        )
    labels = [first, last] if span < 2 else [first, first + (last - first) / 2, last]
    anchors = ["start", "middle", "end"] if len(labels) == 3 else ["start", "end"]
    for day, anchor in zip(labels, anchors, strict=True):
        parts.append(
            f'<text x="{x(day)}" y="{height - 10}" text-anchor="{anchor}" font-size="11" '
            f'fill="{MUTED}">{escape(_day(day))}</text>'
        )
    parts.append(
        f'<line x1="{left}" y1="{y(0)}" x2="{width - right}" y2="{y(0)}" stroke="{MUTED}" '
        f'stroke-width="1"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def share_chart(per_mille: int, size: int = 180) -> Markup:
    """A ring showing the share of the invoiced amount that is paid."""
    per_mille = min(max(per_mille, 0), 1000)
    radius = 70
    circumference = 439.82  # 2 * pi * 70, to two decimals
    filled = round(circumference * per_mille / 1000, 2)
    centre = size // 2
    percent = format_decimal(
        Decimal(per_mille) / 10, format="#,##0.#", locale=str(get_locale() or "nb")
    )
    label = _("%(percent)s %% paid", percent=percent)
    paid = _("paid")
    return Markup(
        f'<svg class="fee-ring" viewBox="0 0 {size} {size}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>"
        f'<circle cx="{centre}" cy="{centre}" r="{radius}" fill="none" stroke="{TRACK}" '
        f'stroke-width="18"/>'
        f'<circle cx="{centre}" cy="{centre}" r="{radius}" fill="none" stroke="{GREEN}" '
        f'stroke-width="18" stroke-linecap="butt" stroke-dasharray="{filled} {circumference}" '
        f'transform="rotate(-90 {centre} {centre})"/>'
        f'<text x="{centre}" y="{centre + 4}" text-anchor="middle" font-size="30" '
        f'font-weight="700" fill="#1d2733">{escape(percent)} %</text>'
        f'<text x="{centre}" y="{centre + 26}" text-anchor="middle" font-size="12" '
        f'fill="{MUTED}">{escape(paid)}</text>'
        f"</svg>"
    )
