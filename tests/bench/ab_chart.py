#!/usr/bin/env python3
"""tests/bench/ab_chart.py: an SVG of tests/bench/ab.sh's rounds.

    tests/bench/ab_chart.py ROUNDS.txt OUT.svg "TITLE"

ROUNDS.txt holds ab.sh's lines (round, name, lost, p99 ms, CPU us per delivery). One column
per name, in the order they first appear: a bar at the mean CPU per delivery, a dot per round,
and the mean p99 and the rounds' loss under it. Plain SVG by hand, like charts.py.
"""
import sys

W, H = 760, 380
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 50, 80
COLORS = ["#57606a", "#9a6700", "#1f6feb", "#d1242f", "#1a7f37", "#8250df"]


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    src, out, title = sys.argv[1], sys.argv[2], sys.argv[3]
    runs = {}
    for line in open(src):
        f = line.split()
        if len(f) != 5 or f[4] == "None":
            continue
        runs.setdefault(f[1], []).append((int(f[2]), float(f[3]), float(f[4])))
    names = list(runs)
    top = max(c for r in runs.values() for _, _, c in r) * 1.15
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    y = lambda v: TOP + plot_h * (1 - v / top)
    col_w = plot_w / max(len(names), 1)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{esc(title)}</text>']
    step = 1 if top < 12 else 2
    v = 0
    while v <= top:
        svg.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eaeef2"/>')
        svg.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
        v += step
    svg.append(f'<text x="16" y="{TOP + plot_h / 2}" transform="rotate(-90 16 {TOP + plot_h / 2})" '
               f'text-anchor="middle">server CPU per delivery, us</text>')
    for i, name in enumerate(names):
        r = runs[name]
        mean = sum(c for _, _, c in r) / len(r)
        p99 = sum(p for _, p, _ in r) / len(r)
        lost = sum(lo for lo, _, _ in r)
        x0 = LEFT + i * col_w + col_w * 0.2
        bw = col_w * 0.6
        color = COLORS[i % len(COLORS)]
        svg.append(f'<rect x="{x0:.1f}" y="{y(mean):.1f}" width="{bw:.1f}" height="{y(0) - y(mean):.1f}" '
                   f'fill="{color}" fill-opacity="0.35" stroke="{color}"/>')
        for k, (_, _, c) in enumerate(r):
            cx = x0 + bw * (k + 1) / (len(r) + 1)
            svg.append(f'<circle cx="{cx:.1f}" cy="{y(c):.1f}" r="3.5" fill="{color}"/>')
        svg.append(f'<text x="{x0 + bw / 2:.1f}" y="{y(mean) - 6:.1f}" text-anchor="middle">{mean:.2f}</text>')
        cx = x0 + bw / 2
        svg.append(f'<text x="{cx:.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{esc(name)}</text>')
        svg.append(f'<text x="{cx:.1f}" y="{H - BOTTOM + 34}" text-anchor="middle" fill="#57606a">'
                   f'p99 {p99:.1f} ms, lost {lost}</text>')
    svg.append(f'<text x="{LEFT}" y="{H - 10}" fill="#57606a">{esc(src.split("/")[-1])}: '
               f'{sum(len(r) for r in runs.values())} runs, a bar at the mean, a dot per round</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


main()
