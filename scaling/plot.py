"""A self-contained SVG of a sweep: loss against training compute, both axes logarithmic.

* every run is a dot, coloured by its model size N (legend);
* for each model size, the fitted law along its own runs, L(N, C / 6N), as a thin line of the same colour;
* the fitted compute-optimal frontier L(N_opt(C), D_opt(C)) as a thick black line;
* a held-out run as a ringed diamond, with its predicted loss as a hollow circle and a dashed line
  between the two.

No plotting library: the SVG is written by hand (nothing like matplotlib is installed).
"""

from __future__ import annotations

import html
import math

from scaling.fit import Run
from scaling.laws import Law, human

WIDTH, HEIGHT = 860, 560
MARGIN = {"left": 78, "right": 190, "top": 48, "bottom": 62}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def _nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    span = hi - lo
    for step in (0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 20, 50):
        if span / step <= count:
            break
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + 1e-12:
        out.append(round(v, 6))
        v += step
    return out


def plot_svg(runs: list[Run], law: Law | None, path: str, title: str = "scaling sweep") -> str:
    """Write the plot to ``path`` (an .svg); -> ``path``."""
    pts = [(r.flops, r.loss) for r in runs]
    if law is not None:
        pts += [(r.flops, law.loss(r.params, r.tokens)) for r in runs if r.heldout]
    c_lo = min(c for c, _ in pts) / 1.6
    c_hi = max(c for c, _ in pts) * 1.6
    frontier = []
    if law is not None:
        for k in range(81):
            c = math.exp(math.log(c_lo) + (math.log(c_hi) - math.log(c_lo)) * k / 80)
            n, d = law.optimum(c)
            frontier.append((c, law.loss(n, d)))
    ys = [y for _, y in pts] + [y for _, y in frontier]
    y_lo, y_hi = min(ys) / 1.03, max(ys) * 1.03
    x0, x1 = MARGIN["left"], WIDTH - MARGIN["right"]
    y0, y1 = HEIGHT - MARGIN["bottom"], MARGIN["top"]

    def sx(c: float) -> float:
        return x0 + (math.log(c) - math.log(c_lo)) / (math.log(c_hi) - math.log(c_lo)) * (x1 - x0)

    def sy(v: float) -> float:
        return y0 - (math.log(v) - math.log(y_lo)) / (math.log(y_hi) - math.log(y_lo)) * (y0 - y1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{(x0 + x1) / 2}" y="26" text-anchor="middle" font-size="15">{html.escape(title)}</text>']
    # axes, decade ticks on x, nice ticks on y
    out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#333"/>')
    for e in range(math.floor(math.log10(c_lo)), math.ceil(math.log10(c_hi)) + 1):
        for m in range(1, 10):
            c = m * 10.0 ** e
            if not c_lo <= c <= c_hi:
                continue
            x = sx(c)
            if m == 1:
                out.append(f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y0}" stroke="#ddd"/>')
                out.append(f'<text x="{x:.1f}" y="{y0 + 18}" text-anchor="middle">1e{e}</text>')
            out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 - (6 if m == 1 else 3)}" stroke="#333"/>')
    for v in _nice_ticks(y_lo, y_hi):
        y = sy(v)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 8}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{HEIGHT - 18}" text-anchor="middle">training compute C (FLOPs)</text>')
    out.append(f'<text transform="translate(22 {(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">'
               'held-out loss (nats/token)</text>')

    sizes = sorted({r.params for r in runs})
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sizes)}
    if law is not None:  # the law along each model size's own runs
        for n in sizes:
            cs = [r.flops for r in runs if r.params == n]
            lo, hi = min(cs) / 1.3, max(cs) * 1.3
            line = []
            for k in range(31):
                c = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * k / 30)
                line.append(f"{sx(c):.1f},{sy(law.loss(n, c / (6 * n))):.1f}")
            out.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{colour[n]}" '
                       'stroke-width="1" opacity="0.6"/>')
        pl = " ".join(f"{sx(c):.1f},{sy(v):.1f}" for c, v in frontier if y_lo <= v <= y_hi)
        out.append(f'<polyline points="{pl}" fill="none" stroke="black" stroke-width="2.5"/>')
    for r in runs:
        x, y = sx(r.flops), sy(r.loss)
        tip = html.escape(f"{r.name}: N {human(r.params)}, D {human(r.tokens)}, C {r.flops:.3g}, L {r.loss:.4f}")
        if r.heldout:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="10" fill="none" stroke="black" stroke-width="1.5"/>')
            out.append(f'<path d="M{x:.1f},{y - 7:.1f} L{x + 7:.1f},{y:.1f} L{x:.1f},{y + 7:.1f} L{x - 7:.1f},{y:.1f} Z" '
                       f'fill="{colour[r.params]}" stroke="black"><title>{tip} (held out)</title></path>')
            if law is not None:
                yp = sy(law.loss(r.params, r.tokens))
                out.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{yp:.1f}" stroke="black" '
                           'stroke-dasharray="3,3"/>')
                out.append(f'<circle cx="{x:.1f}" cy="{yp:.1f}" r="5" fill="white" stroke="black" stroke-width="1.5">'
                           f'<title>predicted {law.loss(r.params, r.tokens):.4f}</title></circle>')
        else:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour[r.params]}" stroke="#222" '
                       f'stroke-width="0.6"><title>{tip}</title></circle>')
    # legend
    lx, ly = x1 + 18, y1 + 6
    out.append(f'<text x="{lx}" y="{ly}" font-weight="bold">model size N</text>')
    for i, n in enumerate(sizes):
        yy = ly + 20 + 18 * i
        out.append(f'<circle cx="{lx + 6}" cy="{yy - 4}" r="5" fill="{colour[n]}" stroke="#222" stroke-width="0.6"/>')
        out.append(f'<text x="{lx + 18}" y="{yy}">{human(n)}</text>')
    yy = ly + 20 + 18 * len(sizes) + 10
    if law is not None:
        out.append(f'<line x1="{lx}" y1="{yy - 4}" x2="{lx + 14}" y2="{yy - 4}" stroke="black" stroke-width="2.5"/>')
        out.append(f'<text x="{lx + 18}" y="{yy}">fitted frontier</text>')
        out.append(f'<text x="{lx + 18}" y="{yy + 14}" font-size="10">L(N_opt(C), D_opt(C))</text>')
        yy += 34
    if any(r.heldout for r in runs):
        out.append(f'<path d="M{lx + 6},{yy - 11} L{lx + 13},{yy - 4} L{lx + 6},{yy + 3} L{lx - 1},{yy - 4} Z" '
                   'fill="#999" stroke="black"/>')
        out.append(f'<text x="{lx + 18}" y="{yy}">held-out run</text>')
        if law is not None:
            out.append(f'<circle cx="{lx + 6}" cy="{yy + 14}" r="5" fill="white" stroke="black" stroke-width="1.5"/>')
            out.append(f'<text x="{lx + 18}" y="{yy + 18}">its prediction</text>')
    if law is not None:
        yy += 48
        for k, text in enumerate([f"E {law.E:.3g}  A {law.A:.3g}  B {law.B:.3g}",
                                  f"alpha {law.alpha:.3f}  beta {law.beta:.3f}"]):
            out.append(f'<text x="{lx}" y="{yy + 15 * k}" font-size="10">{html.escape(text)}</text>')
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")
    return path
