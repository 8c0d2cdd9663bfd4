#!/usr/bin/env python3
"""tests/bench/charts.py: SVG charts of a bench run, written next to its JSON.

    tests/bench/charts.py DIR PEER...      (run.sh calls it after `make bench` / `make bench-compare`)

Reads DIR/<peer>-fanout-ladder.json and DIR/<peer>-idle.json and writes, in DIR:
  ladder.svg   deliveries/s offered (x) against kept up (y), one line per server, log-log,
               a step that missed marked with a hollow point
  p99.svg      p99 latency per ladder step (offered deliveries/s, log x; ms, log y)
  memory.svg   KiB per idle connection, one bar per server
Plain SVG by hand: no plotting library to install. The caption names the commit and machine
(DIR/machine.json).
"""
import json
import math
import os
import sys

W, H = 820, 420
LEFT, RIGHT, TOP, BOTTOM = 80, 250, 40, 60
COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#57606a"]
NAMES = {
    "wsgate": "wsgate",
    "wsgate-sio": "wsgate (Socket.IO)",
    "classic": "HAProxy+nginx+Node socket.io",
    "node-ws": "Node ws",
}


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def caption(out_dir):
    m = load(os.path.join(out_dir, "machine.json")) or {}
    commit = m.get("git_commit")
    if commit and m.get("git_dirty"):
        commit += " (dirty)"
    cores = f"{m['nproc']} cores" if m.get("nproc") else None
    parts = ["wsgate " + commit if commit else None, m.get("cpu_model"), cores, m.get("kernel"), m.get("started")]
    return " · ".join(esc(p) for p in parts if p)


def ticks(lo, hi):
    """Powers of ten (and 2x, 5x between) covering [lo, hi] on a log axis."""
    out = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi * 1.0001:
                out.append(v)
        e += 1
    return out


def human(v):
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if v >= div:
            x = v / div
            return f"{x:g}{unit}" if x >= 10 else f"{x:.3g}{unit}"
    return f"{v:g}"


class Chart:
    def __init__(self, title, xlabel, ylabel, xr, yr, cap):
        self.parts = []
        self.title, self.xlabel, self.ylabel, self.cap = title, xlabel, ylabel, cap
        self.x0, self.x1 = xr
        self.y0, self.y1 = yr

    def px(self, x):
        f = (math.log10(x) - math.log10(self.x0)) / (math.log10(self.x1) - math.log10(self.x0))
        return LEFT + f * (W - LEFT - RIGHT)

    def py(self, y):
        f = (math.log10(y) - math.log10(self.y0)) / (math.log10(self.y1) - math.log10(self.y0))
        return H - BOTTOM - f * (H - TOP - BOTTOM)

    def axes(self):
        p = self.parts
        for v in ticks(self.x0, self.x1):
            x = self.px(v)
            p.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" stroke="#eee"/>')
            p.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{human(v)}</text>')
        for v in ticks(self.y0, self.y1):
            y = self.py(v)
            p.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#eee"/>')
            p.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{human(v)}</text>')
        p.append(f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" stroke="#999"/>')
        p.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 22}" text-anchor="middle">{esc(self.xlabel)}</text>')
        p.append(f'<text transform="translate(18,{(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">{esc(self.ylabel)}</text>')

    def line(self, i, name, pts, hollow):
        c = COLORS[i % len(COLORS)]
        d = " ".join(f"{'M' if k == 0 else 'L'}{self.px(x):.1f},{self.py(y):.1f}" for k, (x, y) in enumerate(pts))
        self.parts.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for (x, y), h in zip(pts, hollow):
            fill = "#fff" if h else c
            self.parts.append(f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="3.5" fill="{fill}" stroke="{c}" stroke-width="1.5"/>')
        ly = TOP + 14 + 18 * i
        self.parts.append(f'<line x1="{W - RIGHT + 12}" y1="{ly - 4}" x2="{W - RIGHT + 32}" y2="{ly - 4}" stroke="{c}" stroke-width="2"/>')
        self.parts.append(f'<text x="{W - RIGHT + 36}" y="{ly}">{esc(name)}</text>')

    def svg(self):
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
                f'font-family="sans-serif" font-size="11" fill="#222">'
                f'<rect width="{W}" height="{H}" fill="#fff"/>'
                f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{esc(self.title)}</text>'
                f'<text x="{LEFT}" y="{H - 6}" font-size="9" fill="#666">{self.cap}</text>')
        return head + "".join(self.parts) + "</svg>\n"


def main():
    out_dir, peers = sys.argv[1], sys.argv[2:]
    cap = caption(out_dir)
    ladders = {p: load(os.path.join(out_dir, f"{p}-fanout-ladder.json")) for p in peers}
    ladders = {p: d for p, d in ladders.items() if d and d.get("steps")}
    written = []
    if ladders:
        steps = [s for d in ladders.values() for s in d["steps"]]
        xs = [s["offered_per_s"] for s in steps]
        ys = [max(s["deliveries_per_s"], 1) for s in steps]
        lo, hi = min(xs + ys) * 0.8, max(xs + ys) * 1.25
        c = Chart("Fan-out: deliveries/s kept up against offered (1,000 subscribers, 64 B)",
                  "deliveries/s offered", "deliveries/s delivered", (lo, hi), (lo, hi), cap)
        c.axes()
        c.parts.append(f'<path d="M{c.px(lo):.1f},{c.py(lo):.1f} L{c.px(hi):.1f},{c.py(hi):.1f}" stroke="#bbb" stroke-dasharray="4 4"/>')
        # The first server last, so that its line is on top where lines overlap.
        for i, (p, d) in reversed(list(enumerate(ladders.items()))):
            pts = [(s["offered_per_s"], max(s["deliveries_per_s"], 1)) for s in d["steps"]]
            c.line(i, NAMES.get(p, p), pts, [not s.get("kept_up", s.get("keeping_up")) for s in d["steps"]])
        written.append(("ladder.svg", c.svg()))
        p99s = [max(s["latency_ms"]["p99"], 0.1) for s in steps]
        c = Chart("p99 latency per ladder step", "deliveries/s offered", "p99 latency, ms",
                  (min(xs) * 0.8, max(xs) * 1.25), (min(p99s) * 0.8, max(p99s) * 1.25), cap)
        c.axes()
        for i, (p, d) in reversed(list(enumerate(ladders.items()))):
            pts = [(s["offered_per_s"], max(s["latency_ms"]["p99"], 0.1)) for s in d["steps"]]
            c.line(i, NAMES.get(p, p), pts, [not s.get("kept_up", s.get("keeping_up")) for s in d["steps"]])
        written.append(("p99.svg", c.svg()))
    idle = {p: load(os.path.join(out_dir, f"{p}-idle.json")) for p in peers}
    idle = {p: d for p, d in idle.items() if d and d.get("kb_per_conn")}
    if idle:
        top = max(d["kb_per_conn"] for d in idle.values()) * 1.15
        right = 40  # no legend: the bars get the width
        bw = (W - LEFT - right) / max(len(idle), 1)
        parts = []
        for i, (p, d) in enumerate(idle.items()):
            kb = d["kb_per_conn"]
            h = (kb / top) * (H - TOP - BOTTOM)
            x = LEFT + i * bw + bw * 0.15
            y = H - BOTTOM - h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw * 0.7:.1f}" height="{h:.1f}" fill="{COLORS[i % len(COLORS)]}"/>')
            parts.append(f'<text x="{x + bw * 0.35:.1f}" y="{y - 5:.1f}" text-anchor="middle">{kb:.2f} KiB</text>')
            parts.append(f'<text x="{x + bw * 0.35:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{esc(NAMES.get(p, p))}</text>')
            parts.append(f'<text x="{x + bw * 0.35:.1f}" y="{H - BOTTOM + 30}" text-anchor="middle" fill="#666">{d.get("held", 0):,} held</text>')
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
               f'font-family="sans-serif" font-size="11" fill="#222"><rect width="{W}" height="{H}" fill="#fff"/>'
               f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">Server memory per idle connection (RSS growth / connections held)</text>'
               f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - right}" y2="{H - BOTTOM}" stroke="#999"/>'
               f'<text x="{LEFT}" y="{H - 6}" font-size="9" fill="#666">{cap}</text>' + "".join(parts) + "</svg>\n")
        written.append(("memory.svg", svg))
    for name, svg in written:
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(svg)
        print(f"charts: {os.path.join(out_dir, name)}")
    if not written:
        print("charts: no ladder or idle results to chart", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
