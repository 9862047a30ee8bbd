"""The HTML side of the reports: page shell, escaping, number formatting and hand-written inline SVG charts.

Everything here returns strings. A page is one file: the CSS is inline, the charts are inline SVG, there is
no script and no external resource, so it opens from disk, offline, and renders the same everywhere.

Figures are marked for auditing: :func:`fig` and :func:`cell` wrap a number in an element carrying
``data-src`` (``stats`` = the run's stats.json, ``plan`` = the training manifest, ``report`` = the report's
own JSON) and ``data-path`` (a dotted path into that JSON, list indices as numbers). A displayed text is
the value formatted by :func:`fmt`: thousands separators, ``%`` for shares (value x 100) and `` s`` for
seconds, rounded to the digits shown, so a reader can parse it back and compare it with the source.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: colours of well-known source names, the same in every report; other sources take the next free ones
KNOWN_COLOURS = {"web": "#3b6fb6", "code": "#d9822b", "books": "#3a9a5b", "wiki": "#8e5ea2",
                 "math": "#c8404a", "papers": "#7a6a4f"}
PALETTE = ["#3b6fb6", "#d9822b", "#3a9a5b", "#8e5ea2", "#c8404a", "#7a6a4f", "#2a9d9f", "#b5a000",
           "#5b5b5b", "#e377c2", "#17becf", "#9467bd"]
KEPT_COLOUR = "#3a9a5b"
DROPPED_COLOUR = "#c8404a"
NEUTRAL_COLOUR = "#5f7fa8"

CSS = """
:root { --fg: #1d232b; --muted: #5d6876; --line: #d9dee5; --bg: #ffffff; --panel: #f5f7fa; --accent: #3b6fb6; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #1f2a38; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .meta { color: #c3ccd8; font-size: 13px; }
header .meta code { color: #fff; }
nav { background: var(--panel); border-bottom: 1px solid var(--line); padding: 8px 32px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 32px 48px; }
section { margin-top: 28px; }
h2 { font-size: 18px; border-bottom: 2px solid var(--line); padding-bottom: 4px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
p.note { color: var(--muted); margin: 4px 0 10px; font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.grid { display: flex; flex-wrap: wrap; gap: 18px 28px; align-items: flex-start; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; margin: 14px 0 6px; }
.kpi { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.kpi .label { color: var(--muted); font-size: 12px; }
.kpi .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.example { border-left: 3px solid var(--line); padding: 4px 10px; margin: 8px 0; }
.example.kept { border-color: #3a9a5b; }
.example.dropped { border-color: #c8404a; }
.example .head { font-size: 12px; color: var(--muted); word-break: break-all; }
.example pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0 0; font-size: 12px;
               max-height: 9em; overflow: hidden; background: var(--panel); padding: 6px 8px; }
details { margin: 4px 0 10px; }
summary { cursor: pointer; color: var(--accent); font-size: 13px; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font-family: inherit; fill: #1d232b; }
svg .axis { stroke: #9aa5b1; stroke-width: 1; }
svg .gridline { stroke: #e6e9ee; stroke-width: 1; }
svg .tick { font-size: 11px; fill: #5d6876; }
svg .val { font-size: 11px; }
svg .label { font-size: 12px; }
svg .caption { font-size: 13px; font-weight: 600; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; }
"""


def esc(value: object) -> str:
    """HTML-escape any value (quotes included, so it is safe inside attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def path(*parts: object) -> str:
    """A dotted data-path: ``path("sources", "web", "steps", 2)`` -> ``sources.web.steps.2``."""
    return ".".join(str(p) for p in parts)


# ---------------------------------------------------------------- numbers


def fmt(value: float | int | None, kind: str = "int", digits: int = 2) -> str:
    """Format a figure the way every report shows it.

    ``int``: ``1,234,567``; ``float``: ``1,234.57`` (``digits`` decimals); ``pct``: a share shown as a
    percentage, ``12.3%`` (value 0.123); ``sec``: ``12.35 s``. None shows as an en dash.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    if kind == "int":
        return f"{int(round(value)):,}"
    if kind == "pct":
        return f"{value * 100:,.{digits}f}%"
    if kind == "sec":
        return f"{value:,.{digits}f} s"
    return f"{value:,.{digits}f}"


def mark(src: str | None, data_path: str | None) -> str:
    """The ``data-src``/``data-path`` attributes of a displayed figure (empty when it has no source)."""
    if not src or data_path is None:
        return ""
    return f' data-src="{esc(src)}" data-path="{esc(data_path)}"'


def fig(value, src: str | None = None, data_path: str | None = None, kind: str = "int", digits: int = 2) -> str:
    """A number in running text, marked with where it comes from."""
    if value is None:
        return fmt(None)
    return f'<span class="fig"{mark(src, data_path)}>{fmt(value, kind, digits)}</span>'


def cell(value, src: str | None = None, data_path: str | None = None, kind: str = "int", digits: int = 2) -> str:
    """A right-aligned table cell holding one marked figure."""
    if value is None:
        return f'<td class="num">{fmt(None)}</td>'
    return f'<td class="num"{mark(src, data_path)}>{fmt(value, kind, digits)}</td>'


def short(value: float) -> str:
    """A compact axis label: 950, 1.2k, 3.4M, 5.6B (never used for a marked figure)."""
    v = float(value)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            s = f"{v / div:.1f}".rstrip("0").rstrip(".")
            return s + suffix
    if v == int(v):
        return str(int(v))
    return f"{v:.2f}".rstrip("0").rstrip(".")


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (1, 2, 2.5 or 5 times a power of ten apart)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


# ---------------------------------------------------------------- colours


def source_colours(names: Iterable[str]) -> dict[str, str]:
    """A fixed colour per source: well-known names always get theirs, the rest the free ones in name order."""
    names = sorted(set(names))
    out = {n: KNOWN_COLOURS[n] for n in names if n in KNOWN_COLOURS}
    free = [c for c in PALETTE if c not in out.values()]
    for i, n in enumerate(n for n in names if n not in out):
        out[n] = free[i % len(free)] if free else PALETTE[i % len(PALETTE)]
    return out


def swatch(colour: str) -> str:
    return f'<span class="swatch" style="background:{esc(colour)}"></span>'


# ---------------------------------------------------------------- page


def page(title: str, heading: str, meta_html: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    """The whole document: header (title + meta line), a table of contents, the sections."""
    links = "".join(f'<a href="#{esc(anchor)}">{esc(text)}</a>' for anchor, text in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n"
            # an inline empty icon: the browser then asks no server (or disk) for /favicon.ico
            "<link rel=\"icon\" href=\"data:,\">\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n"
            f"<header><h1>{esc(heading)}</h1><div class=\"meta\">{meta_html}</div></header>\n"
            f"<nav>{links}</nav>\n<main>\n{body}\n"
            "<footer>Generated by smelter. Self-contained: no scripts, no network; every figure is marked "
            "with its source (data-src, data-path).</footer>\n</main>\n</body>\n</html>\n")


def section(anchor: str, title: str, body: str, note: str | None = None) -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{note_html}{body}</section>\n'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None,
          total: Sequence[str] | None = None) -> str:
    """A table from ready-made cells: each row item is either a full ``<td ...>`` or plain text to escape."""
    numeric = numeric or [False] * len(headers)
    head = "".join(f'<th class="num">{esc(h)}</th>' if n else f"<th>{esc(h)}</th>"
                   for h, n in zip(headers, numeric, strict=True))

    def tr(row: Sequence[str], cls: str = "") -> str:
        cells = "".join(c if str(c).startswith("<td") else f"<td>{c}</td>" for c in row)
        return f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>"

    body = "".join(tr(r) for r in rows)
    if total is not None:
        body += tr(total, "total")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kpis(items: Iterable[tuple[str, str]]) -> str:
    """A row of key figures: (label, rendered figure)."""
    return '<div class="kpis">' + "".join(
        f'<div class="kpi"><div class="label">{esc(label)}</div><div class="value">{value}</div></div>'
        for label, value in items) + "</div>"


# ---------------------------------------------------------------- charts


@dataclass
class Bar:
    """One bar of a bar chart: a label, a value, its colour and where the value comes from."""

    label: str
    value: float
    colour: str = NEUTRAL_COLOUR
    src: str | None = None
    path: str | None = None
    kind: str = "int"
    digits: int = 2
    #: an optional reference value drawn as a dark tick across the bar (e.g. a cap)
    marker: float | None = None


_svg_counter = [0]


def _svg_open(width: int, height: int, title: str) -> str:
    _svg_counter[0] += 1
    tid = f"svg-title-{_svg_counter[0]}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{tid}" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<title id="{tid}">{esc(title)}</title>')


def reset_ids() -> None:
    """Restart the SVG title ids, so the same report always renders to the same bytes."""
    _svg_counter[0] = 0


def hbar_chart(bars: Sequence[Bar], title: str, width: int = 640, label_width: int = 210,
               max_value: float | None = None) -> str:
    """Horizontal bars, one row per item: label on the left, the value after the bar."""
    if not bars:
        return ""
    row_h, top = 22, 26
    height = top + row_h * len(bars) + 10
    value_w = 90
    area = width - label_width - value_w - 10
    top_value = max_value if max_value is not None else max((b.value or 0) for b in bars)
    scale = area / top_value if top_value > 0 else 0
    parts = [_svg_open(width, height, title), f'<text class="caption" x="0" y="16">{esc(title)}</text>']
    for i, b in enumerate(bars):
        y = top + i * row_h
        w = max(0.0, (b.value or 0) * scale)
        parts.append(f'<text class="label" x="{label_width - 8}" y="{y + 15}" text-anchor="end">'
                     f'{esc(_clip(b.label, 34))}</text>')
        parts.append(f'<rect x="{label_width}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                     f'fill="{esc(b.colour)}" rx="2"><title>{esc(b.label)}: {fmt(b.value, b.kind, b.digits)}'
                     f'</title></rect>')
        parts.append(f'<text class="val" x="{label_width + w + 6:.1f}" y="{y + 15}"{mark(b.src, b.path)}>'
                     f'{fmt(b.value, b.kind, b.digits)}</text>')
        if b.marker is not None:
            mx = label_width + b.marker * scale
            parts.append(f'<line x1="{mx:.1f}" y1="{y + 1}" x2="{mx:.1f}" y2="{y + row_h - 1}" stroke="#1d232b" '
                         f'stroke-width="2"><title>{esc(b.label)}: cap {fmt(b.marker, b.kind, b.digits)}</title></line>')
    parts.append(f'<line class="axis" x1="{label_width}" y1="{top}" x2="{label_width}" y2="{height - 8}"/>')
    parts.append("</svg>")
    return "".join(parts)


def funnel_chart(stages: Sequence[Bar], title: str, width: int = 640) -> str:
    """A funnel: one centred bar per stage whose width is the rows left after it; values on the right."""
    if not stages:
        return ""
    row_h, top, label_w, value_w = 26, 26, 190, 90
    height = top + row_h * len(stages) + 8
    area = width - label_w - value_w - 10
    first = max(max((s.value or 0) for s in stages), 1)
    centre = label_w + area / 2
    parts = [_svg_open(width, height, title), f'<text class="caption" x="0" y="16">{esc(title)}</text>']
    for i, s in enumerate(stages):
        y = top + i * row_h
        w = max(1.0, area * (s.value or 0) / first)
        parts.append(f'<text class="label" x="{label_w - 8}" y="{y + 17}" text-anchor="end">'
                     f'{esc(_clip(s.label, 30))}</text>')
        parts.append(f'<rect x="{centre - w / 2:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                     f'fill="{esc(s.colour)}" rx="2"><title>{esc(s.label)}: {fmt(s.value)} rows</title></rect>')
        parts.append(f'<text class="val" x="{label_w + area + 8}" y="{y + 17}"{mark(s.src, s.path)}>'
                     f'{fmt(s.value, s.kind, s.digits)}</text>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass
class Series:
    """One series of a histogram: a name, its count per bin, its colour."""

    name: str
    counts: Sequence[float]
    colour: str = NEUTRAL_COLOUR
    extra: dict = field(default_factory=dict)


def histogram(bin_labels: Sequence[str], series: Sequence[Series], title: str, width: int = 640,
              height: int = 230, y_label: str = "documents") -> str:
    """Vertical bars, one group per bin (series side by side), a y axis with round ticks, a legend.

    Bin values are in each bar's tooltip; the report prints them in a table beside the chart."""
    if not bin_labels or not series:
        return ""
    left, right, top, bottom = 56, 10, 30, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = max((max(s.counts) if len(s.counts) else 0) for s in series)
    ticks = nice_ticks(top_value)
    scale = plot_h / ticks[-1] if ticks[-1] > 0 else 0
    group_w = plot_w / len(bin_labels)
    bar_w = max(1.0, (group_w - 4) / len(series))
    parts = [_svg_open(width, height, title), f'<text class="caption" x="0" y="16">{esc(title)}</text>']
    for t in ticks:
        y = top + plot_h - t * scale
        parts.append(f'<line class="gridline" x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{short(t)}</text>')
    for b, label in enumerate(bin_labels):
        x0 = left + b * group_w + 2
        for k, s in enumerate(series):
            v = s.counts[b] if b < len(s.counts) else 0
            h = v * scale
            parts.append(f'<rect x="{x0 + k * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}" fill="{esc(s.colour)}"><title>{esc(s.name)}, {esc(label)}: '
                         f'{fmt(v)}</title></rect>')
        cx = left + (b + 0.5) * group_w
        parts.append(f'<text class="tick" x="{cx:.1f}" y="{top + plot_h + 12}" text-anchor="end" '
                     f'transform="rotate(-40 {cx:.1f} {top + plot_h + 12})">{esc(label)}</text>')
    parts.append(f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}"/>')
    parts.append(f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>')
    parts.append(f'<text class="tick" x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{esc(y_label)}</text>')
    parts.append(_legend([(s.name, s.colour) for s in series], width - right, 16, anchor_end=True))
    parts.append("</svg>")
    return "".join(parts)


@dataclass
class Segment:
    """A block of the curriculum chart: a phase spans [start, start + size) of the training tokens,
    split by ``shares`` (name, value, colour, src, path) from bottom to top; src/path mark the share shown."""

    name: str
    start: float
    size: float
    shares: Sequence[tuple[str, float, str, str | None, str | None]]


def curriculum_chart(segments: Sequence[Segment], total: float, title: str, width: int = 900,
                     height: int = 240, axis_label: str = "training tokens") -> str:
    """Stacked blocks along the training-token axis: each phase as wide as its tokens, its sources stacked
    by their share of the phase (a Marimekko chart of the curriculum)."""
    if not segments or total <= 0:
        return ""
    left, right, top, bottom = 46, 12, 42, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    sx = plot_w / total
    parts = [_svg_open(width, height, title), f'<text class="caption" x="0" y="16">{esc(title)}</text>']
    names: dict[str, str] = {}
    for seg in segments:
        x = left + seg.start * sx
        w = max(1.0, seg.size * sx)
        whole = sum(share[1] for share in seg.shares) or 1
        y = top + plot_h
        for name, v, colour, src, data_path in seg.shares:
            names.setdefault(name, colour)
            h = plot_h * v / whole
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{esc(colour)}" '
                         f'stroke="#fff" stroke-width="0.5"><title>{esc(seg.name)} / {esc(name)}: '
                         f'{fmt(v)} tokens ({fmt(v / whole, "pct", 1)} of the phase)</title></rect>')
            if h >= 14 and w >= 60:
                parts.append(f'<text class="val" x="{x + w / 2:.1f}" y="{y + h / 2 + 4:.1f}" text-anchor="middle" '
                             f'style="fill:#fff"><tspan>{esc(_clip(name, 14))} </tspan>'
                             f'<tspan{mark(src, data_path)}>{fmt(v / whole, "pct", 1)}</tspan></text>')
        parts.append(f'<line class="axis" x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{top + plot_h}"/>')
        parts.append(f'<text class="label" x="{x + w / 2:.1f}" y="{top - 10}" text-anchor="middle">'
                     f'{esc(_clip(seg.name, max(4, int(w / 7))))}</text>')
    for t in nice_ticks(total, 6):
        if t > total * 1.0001:
            break
        x = left + t * sx
        parts.append(f'<line class="axis" x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{short(t)}</text>')
    parts.append(f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>')
    parts.append(f'<text class="tick" x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                 f'{esc(axis_label)}</text>')
    parts.append(_legend(list(names.items()), width - right, 16, anchor_end=True))
    parts.append("</svg>")
    return "".join(parts)


def _legend(items: Sequence[tuple[str, str]], x: float, y: float, anchor_end: bool = False) -> str:
    """A one-line legend of coloured squares, right-aligned at ``x`` when ``anchor_end``."""
    widths = [16 + 7 * len(_clip(name, 20)) + 12 for name, _ in items]
    cx = x - sum(widths) if anchor_end else x
    out = []
    for (name, colour), w in zip(items, widths, strict=True):
        out.append(f'<rect x="{cx:.1f}" y="{y - 9}" width="10" height="10" fill="{esc(colour)}"/>'
                   f'<text class="tick" x="{cx + 14:.1f}" y="{y}">{esc(_clip(name, 20))}</text>')
        cx += w
    return "".join(out)


def _clip(text: str, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else text[: max(1, n - 1)] + "\u2026"
