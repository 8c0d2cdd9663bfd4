#!/usr/bin/env python3
"""tests/bench/report.py: the JSON plumbing and the tables of tests/bench/run.sh (stdlib only).

  report.py last-json OUTFILE RC THREADS  the last JSON line of a wsgate-load stdout (or an error)
  report.py error-json MESSAGE            {"error": MESSAGE}
  report.py one-line JSONFILE NAME        one progress line for a finished run
  report.py climb MAXP99 JSONFILE...      exit 0 while the ladder should go on (see cmd_climb)
  report.py merge-ladder MAXP99 OUT PART...   one ladder JSON from its chunks
  report.py wait-quiet MAX_S CORES        wait until fewer than CORES cores are busy (at most MAX_S)
  report.py machine OUT                   nproc, lscpu, kernel, load, git commit, settings
  report.py table MAXP99 DIR PEER...      prints the table, writes DIR/summary.json
  report.py compare MAXP99 DIR PEER...    prints ratios and goals, writes compare.json, compare.md

"Keeping up" is the tool's `keeping_up` (nothing lost, at least 95% of the offered deliveries/s
within the step, publishers on schedule) and p99 latency at most MAXP99 ms. A ladder's capacity
is the most deliveries/s of a step that kept up.
"""

import json
import os
import subprocess
import sys
import time

PEER_NAMES = {
    "wsgate": "wsgate",
    "wsgate-sio": "wsgate (Socket.IO)",
    "classic": "HAProxy + nginx + Node socket.io",
    "node-ws": "Node ws",
}
SCENARIOS = ("idle", "fanout-100", "fanout-50", "fanout-ladder")
# The fixed-rate steps: a chat's busy hour (100 msg/s) and its everyday load (50 msg/s).
FIXED = ("fanout-100", "fanout-50")
# Issue 5's goals.
GOAL_CAPACITY_X = {"classic": 25.0, "node-ws": 10.0}
GOAL_P99_MS = 20.0
GOAL_KIB_PER_CONN = 3.0
GOAL_IDLE_CLIENTS = 10000
# A step is marked as limited by the machine or by the tool when they were this busy.
BUSY = 0.9
# A step is marked as disturbed when other processes kept this many cores busy during it.
OTHER_LOAD = 0.25


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": f"no result ({e.__class__.__name__}: {path})"}


def dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def cmd_last_json(out, rc, threads):
    last = None
    try:
        with open(out) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        last = json.loads(line)
                    except ValueError:
                        pass
    except OSError:
        pass
    if not isinstance(last, dict):
        last = {"error": f"wsgate-load printed no JSON (exit code {rc})"}
    last["exit_code"] = int(rc)
    last["tool_threads"] = int(threads)
    print(json.dumps(last))


def steps_of(run):
    """The steps of a fanout run: its `steps[]`, or the run itself when it had one rate."""
    if "error" in run and "rate" not in run:
        return []
    return run.get("steps") or [{k: v for k, v in run.items() if k != "steps"}]


def kept_up(step, max_p99):
    lat = step.get("latency_ms") or {}
    return bool(step.get("keeping_up")) and (lat.get("p99") or 0) <= max_p99


def cmd_climb(max_p99, paths):
    """Whether the ladder goes on after these chunks: not when a chunk failed, nor when the two
    heaviest steps so far both missed. One miss alone is often another process's burst on a
    shared machine, and a later step that keeps up shows it."""
    steps = []
    for path in paths:
        run = load(path)
        if "error" in run and not steps_of(run):
            sys.exit(1)
        steps += steps_of(run)
    tail = steps[-2:]
    sys.exit(1 if len(tail) == 2 and not any(kept_up(s, max_p99) for s in tail) else 0)


def cmd_merge_ladder(max_p99, out, parts):
    runs = [load(p) for p in parts]
    merged = {"scenario": "fanout-ladder", "max_p99_ms": max_p99, "chunks": len(runs), "steps": []}
    for key in ("clients", "publishers", "rooms", "size", "duration_s", "tool_threads"):
        merged[key] = next((r[key] for r in runs if key in r), None)
    merged["connected"] = min((r.get("connected", 0) for r in runs), default=0)
    merged["connect_failed"] = sum(r.get("connect_failed", 0) for r in runs)
    merged["disconnected"] = sum(r.get("disconnected", 0) for r in runs)
    failures = {}
    for r in runs:
        for k, v in (r.get("failures") or {}).items():
            failures[k] = failures.get(k, 0) + v
    merged["failures"] = failures
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        merged["errors"] = errors
    for chunk, r in enumerate(runs, 1):
        for s in steps_of(r):
            s = dict(s)
            s["chunk"] = chunk
            s["kept_up"] = kept_up(s, max_p99)
            merged["steps"].append(s)
    up = [s for s in merged["steps"] if s["kept_up"]]
    best = max(up, key=lambda s: s["deliveries_per_s"]) if up else None
    merged["capacity_deliveries_per_s"] = best["deliveries_per_s"] if best else 0.0
    merged["capacity_step"] = merged["steps"].index(best) if best else None
    # The step after the capacity step, which did not keep up.
    after = merged["steps"][merged["capacity_step"] + 1:] if best else merged["steps"]
    missed = [s for s in after if not s["kept_up"]]
    merged["saturated"] = bool(missed)
    merged["first_miss"] = describe_miss(missed[0], max_p99) if missed else None
    merged["missed_below_capacity"] = sum(1 for s in merged["steps"][:merged["capacity_step"] or 0]
                                          if not s["kept_up"])
    if not merged["steps"]:
        merged["error"] = "; ".join(errors) or "no step ran"
    dump(merged, out)


def describe_miss(step, max_p99):
    why = []
    if step.get("lost"):
        why.append(f"lost {step['lost']}")
    if step.get("offered_per_s") and step.get("deliveries_per_s", 0) < 0.95 * step["offered_per_s"]:
        why.append(f"{pct(step['deliveries_per_s'], step['offered_per_s'])} of offered")
    if step.get("rate") and step.get("sent_per_s", 0) < 0.95 * step["rate"]:
        why.append(f"publishers sent {step['sent_per_s']:.0f}/s of {step['rate']:g}/s")
    p99 = (step.get("latency_ms") or {}).get("p99") or 0
    if p99 > max_p99:
        why.append(f"p99 {p99:.0f} ms > {max_p99:g} ms")
    return {
        "rate": step.get("rate"),
        "offered_per_s": step.get("offered_per_s"),
        "deliveries_per_s": step.get("deliveries_per_s"),
        "why": ", ".join(why) or "not keeping up",
    }


def pct(a, b):
    return f"{100.0 * a / b:.0f}%" if b else "-"


def cmd_one_line(path, name):
    r = load(path)
    if "error" in r and not r.get("steps") and "rate" not in r and "kb_per_conn" not in r:
        print(f"  {name}: ERROR {r['error']}")
    elif r.get("scenario") == "idle":
        print(f"  {name}: {r.get('connected')}/{r.get('clients')} connected, "
              f"{fmt(r.get('kb_per_conn'), 2)} KiB per connection")
    elif r.get("scenario") == "fanout-ladder":
        print(f"  {name}: capacity {fmt(r.get('capacity_deliveries_per_s'), 0)} deliveries/s; "
              f"first miss: {(r.get('first_miss') or {}).get('why', 'none (not saturated)')}")
    else:
        for s in steps_of(r):
            lat = s.get("latency_ms") or {}
            print(f"  {name}: rate {s.get('rate')}/s: {fmt(s.get('deliveries_per_s'), 0)} of "
                  f"{fmt(s.get('offered_per_s'), 0)} deliveries/s, lost {s.get('lost')}, "
                  f"p99 {fmt(lat.get('p99'), 1)} ms, keeping_up {s.get('keeping_up')}")


def fmt(v, digits):
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def busy_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])


def cmd_wait_quiet(max_s, cores):
    """Waits (at most max_s seconds) until the whole machine keeps fewer than `cores` cores busy
    over half a second, so that other work on a shared machine disturbs a run less."""
    t0 = time.monotonic()
    n = os.cpu_count() or 1
    busy = 0.0
    while True:
        b0, t0j = busy_jiffies()
        time.sleep(0.5)
        b1, t1j = busy_jiffies()
        busy = n * (b1 - b0) / max(1, t1j - t0j)
        waited = time.monotonic() - t0
        if busy < cores:
            if waited > 1.0:
                print(f"  (waited {waited:.0f}s for the machine to go quiet)")
            return
        if waited >= max_s:
            print(f"  (machine still busy after {waited:.0f}s: {busy:.1f} cores; going on)")
            return


def cmd_machine(out):
    lscpu = sh(["lscpu"]).splitlines()
    model = next((l.split(":", 1)[1].strip() for l in lscpu if l.startswith("Model name")), "")
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        pass
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    dump({
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "lscpu_head": lscpu[:10],
        "mem_gib": round(mem_kb / 1048576, 1),
        "kernel": sh(["uname", "-srm"]),
        "started": os.environ.get("BENCH_STARTED", ""),
        "uptime_start": os.environ.get("BENCH_LOAD_START", ""),
        "uptime_end": os.environ.get("BENCH_LOAD_END", ""),
        "git_commit": sh(["git", "-C", root, "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(sh(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])),
        "versions": {
            "nginx": sh(["sh", "-c", '"${NGINX_BIN:-nginx}" -v 2>&1']).replace("nginx version: ", ""),
            "haproxy": (sh(["sh", "-c", '"${HAPROXY_BIN:-haproxy}" -v']).splitlines() or [""])[0],
            "node": sh(["node", "--version"]),
        },
        "settings": os.environ.get("BENCH_SETTINGS", ""),
    }, out)


def peer_results(d, peer):
    return {s: load(os.path.join(d, f"{peer}-{s}.json")) for s in SCENARIOS}


def step_notes(step, nproc, threads):
    """Why a step's figures may be the machine's or the tool's limit rather than the server's."""
    notes = []
    rate = step.get("deliveries_per_s") or 0
    machine = step.get("machine_cpu_us_per_delivery")
    if machine is not None and rate and machine * rate / 1e6 >= BUSY * nproc:
        notes.append(f"machine {machine * rate / 1e6:.1f}/{nproc} cores busy")
    tool = step.get("tool_cpu_us_per_delivery")
    if tool is not None and rate and tool * rate / 1e6 >= BUSY * threads:
        notes.append(f"tool {tool * rate / 1e6:.2f}/{threads} core{'s' if threads > 1 else ''}")
    other = other_cores(step)
    if other is not None and other >= OTHER_LOAD:
        notes.append(f"other processes {other:.1f} cores")
    return notes


def other_cores(step):
    """Cores busy with neither the server nor the tool (other work on the machine) in a step."""
    rate = step.get("deliveries_per_s") or 0
    parts = [step.get(k) for k in ("machine_cpu_us_per_delivery", "cpu_us_per_delivery",
                                   "tool_cpu_us_per_delivery")]
    if not rate or any(v is None for v in parts):
        return None
    return max(0.0, (parts[0] - parts[1] - parts[2]) * rate / 1e6)


def rows_for(peer, res, nproc, threads):
    """Table rows: (peer, scenario, clients, deliveries/s, p50, p99, max, lost, kib, cpu, note)."""
    rows = []
    idle = res["idle"]
    if "kb_per_conn" in idle or "connected" in idle:
        note = []
        if idle.get("clients") != GOAL_IDLE_CLIENTS:
            note.append(f"{idle.get('clients')} clients, not {GOAL_IDLE_CLIENTS:,}")
        if idle.get("failed"):
            note.append(f"{idle['failed']} failed ({', '.join(idle.get('failures', {}))})")
        if idle.get("dropped"):
            note.append(f"{idle['dropped']} dropped")
        rows.append((peer, "idle", f"{idle.get('held', idle.get('connected'))}", "", "", "", "", "",
                     fmt(idle.get("kb_per_conn"), 2), "", "; ".join(note)))
    else:
        rows.append((peer, "idle", "", "", "", "", "", "", "", "", f"ERROR {idle.get('error')}"))
    for name in FIXED:
        fixed = res[name]
        steps = steps_of(fixed)
        if steps:
            s = steps[0]
            note = step_notes(s, nproc, fixed.get("tool_threads", threads))
            if fixed.get("connect_failed"):
                note.append(f"{fixed['connect_failed']} members failed to connect")
            if fixed.get("disconnected"):
                note.append(f"{fixed['disconnected']} disconnected")
            if not s.get("keeping_up"):
                note.append("NOT keeping up")
            rows.append(step_row(peer, f"fanout {s.get('rate'):g} msg/s", fixed, s, note))
        elif name == "fanout-100" or "FileNotFoundError" not in str(fixed.get("error")):
            rows.append((peer, name, "", "", "", "", "", "", "", "", f"ERROR {fixed.get('error')}"))
    lad = res["fanout-ladder"]
    if lad.get("steps"):
        if lad.get("capacity_step") is not None:
            s = lad["steps"][lad["capacity_step"]]
            note = step_notes(s, nproc, lad.get("tool_threads", threads))
        else:
            s = max(lad["steps"], key=lambda x: x.get("deliveries_per_s", 0))
            note = ["no step kept up; best step shown"]
        if lad.get("missed_below_capacity"):
            note.append(f"{lad['missed_below_capacity']} lower step(s) missed")
        miss = lad.get("first_miss")
        if miss:
            note.append(f"next: {miss['why']} at {fmt(miss['offered_per_s'], 0)}/s offered")
        else:
            note.append("not saturated: the ladder ended first")
        rows.append(step_row(peer, f"capacity ({s.get('rate'):g} msg/s)", lad, s, note))
    else:
        rows.append((peer, "capacity", "", "", "", "", "", "", "", "", f"ERROR {lad.get('error')}"))
    return rows


def step_row(peer, label, run, s, note):
    lat = s.get("latency_ms") or {}
    return (peer, label, f"{run.get('connected')}", fmt(s.get("deliveries_per_s"), 0),
            fmt(lat.get("p50"), 1), fmt(lat.get("p99"), 1), fmt(lat.get("max"), 1),
            fmt(s.get("lost"), 0), "", fmt(s.get("cpu_us_per_delivery"), 2), "; ".join(note))


HEAD = ("peer", "scenario", "clients", "deliveries/s", "p50 ms", "p99 ms", "max ms", "lost",
        "KiB/conn", "server CPU us/delivery", "note")


def text_table(rows):
    widths = [max(len(str(r[i])) for r in [HEAD] + rows) for i in range(len(HEAD))]
    lines = []
    for k, r in enumerate([HEAD] + rows):
        lines.append("  ".join(str(c).ljust(w) if i in (0, 1, 10) else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def settings(d):
    m = load(os.path.join(d, "machine.json"))
    threads = 1
    for kv in (m.get("settings") or "").split():
        if kv.startswith("tool_threads="):
            threads = int(kv.split("=", 1)[1])
    return m, m.get("nproc") or os.cpu_count() or 1, threads


def cmd_table(max_p99, d, peers):
    m, nproc, threads = settings(d)
    rows = []
    summary = {"machine": m, "max_p99_ms": max_p99, "peers": {}}
    for peer in peers:
        res = peer_results(d, peer)
        summary["peers"][peer] = res
        rows += rows_for(peer, res, nproc, threads)
    print()
    print(f"wsgate bench: {m.get('cpu_model')} x {nproc}, {m.get('kernel')}, commit "
          f"{m.get('git_commit')}{' (dirty)' if m.get('git_dirty') else ''}")
    print(f"load at start: {m.get('uptime_start')}")
    print(f"load at end:   {m.get('uptime_end')}")
    print(text_table(rows))
    for peer in peers:
        lad = summary["peers"][peer]["fanout-ladder"]
        if not lad.get("steps"):
            continue
        print(f"\n{peer} ladder (keeping up = tool's keeping_up and p99 <= {max_p99:g} ms; "
              f"CPU in us per delivery; other cores = machine - server - tool):")
        srows = []
        for s in lad["steps"]:
            lat = s.get("latency_ms") or {}
            srows.append((f"{s.get('rate'):g}", fmt(s.get("offered_per_s"), 0),
                          fmt(s.get("deliveries_per_s"), 0), fmt(lat.get("p50"), 1),
                          fmt(lat.get("p99"), 1), fmt(lat.get("max"), 1), fmt(s.get("lost"), 0),
                          fmt(s.get("cpu_us_per_delivery"), 2), fmt(s.get("tool_cpu_us_per_delivery"), 2),
                          fmt(s.get("machine_cpu_us_per_delivery"), 2), fmt(other_cores(s), 2),
                          "yes" if s["kept_up"] else "NO"))
        head = ("msg/s", "offered/s", "deliveries/s", "p50 ms", "p99 ms", "max ms", "lost",
                "server us", "tool us", "machine us", "other cores", "kept up")
        widths = [max(len(r[i]) for r in [head] + srows) for i in range(len(head))]
        for k, r in enumerate([head] + srows):
            print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))
    dump(summary, os.path.join(d, "summary.json"))
    print(f"\nJSON: {d}/<peer>-<scenario>.json and {d}/summary.json")


def capacity(res):
    return res["fanout-ladder"].get("capacity_deliveries_per_s") or 0.0


def cap_step(res):
    lad = res["fanout-ladder"]
    i = lad.get("capacity_step")
    return lad["steps"][i] if i is not None else {}


def fixed_step(res, name="fanout-100"):
    steps = steps_of(res[name])
    return steps[0] if steps else {}


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def xs(v):
    return f"{v:,.1f}x" if v is not None else "-"


def cmd_compare(max_p99, d, peers):
    m, nproc, threads = settings(d)
    res = {p: peer_results(d, p) for p in peers}
    base = "wsgate" if "wsgate" in peers else peers[0]
    per = {}
    for p in peers:
        r = res[p]
        cs, fs, idle = cap_step(r), fixed_step(r), r["idle"]
        es = fixed_step(r, "fanout-50")
        per[p] = {
            "name": PEER_NAMES.get(p, p),
            "capacity_deliveries_per_s": capacity(r),
            "capacity_rate_msg_per_s": cs.get("rate"),
            "capacity_p99_ms": (cs.get("latency_ms") or {}).get("p99"),
            "capacity_cpu_us_per_delivery": cs.get("cpu_us_per_delivery"),
            "capacity_notes": step_notes(cs, nproc, r["fanout-ladder"].get("tool_threads", threads)) if cs else [],
            "saturated": r["fanout-ladder"].get("saturated"),
            "first_miss": r["fanout-ladder"].get("first_miss"),
            "fixed_notes": step_notes(fs, nproc, r["fanout-100"].get("tool_threads", threads)) if fs else [],
            "fixed_tool_threads": r["fanout-100"].get("tool_threads"),
            "fixed_rate_msg_per_s": fs.get("rate"),
            "fixed_deliveries_per_s": fs.get("deliveries_per_s"),
            "fixed_p50_ms": (fs.get("latency_ms") or {}).get("p50"),
            "fixed_p99_ms": (fs.get("latency_ms") or {}).get("p99"),
            "fixed_lost": fs.get("lost"),
            "fixed_keeping_up": fs.get("keeping_up"),
            "fixed_cpu_us_per_delivery": fs.get("cpu_us_per_delivery"),
            "everyday_rate_msg_per_s": es.get("rate"),
            "everyday_p50_ms": (es.get("latency_ms") or {}).get("p50"),
            "everyday_p99_ms": (es.get("latency_ms") or {}).get("p99"),
            "everyday_lost": es.get("lost"),
            "everyday_cpu_us_per_delivery": es.get("cpu_us_per_delivery"),
            "idle_clients": idle.get("clients"),
            "idle_held": idle.get("held"),
            "kib_per_conn": idle.get("kb_per_conn"),
        }
    for p in peers:
        q = per[p]
        q["wsgate_capacity_x"] = ratio(per[base]["capacity_deliveries_per_s"], q["capacity_deliveries_per_s"])
        q["peer_kib_per_conn_x"] = ratio(q["kib_per_conn"], per[base]["kib_per_conn"])
        q["peer_cpu_per_delivery_x"] = ratio(q["capacity_cpu_us_per_delivery"],
                                             per[base]["capacity_cpu_us_per_delivery"])
        q["peer_cpu_per_delivery_fixed_x"] = ratio(q["fixed_cpu_us_per_delivery"],
                                                   per[base]["fixed_cpu_us_per_delivery"])
        q["peer_cpu_per_delivery_everyday_x"] = ratio(q["everyday_cpu_us_per_delivery"],
                                                      per[base]["everyday_cpu_us_per_delivery"])

    goals = []
    for p, want in GOAL_CAPACITY_X.items():
        if p in per:
            got = per[p]["wsgate_capacity_x"]
            goals.append({"goal": f"capacity >= {want:g}x {PEER_NAMES[p]}", "measured": got,
                          "met": got is not None and got >= want,
                          "by": f"{got / want:.0%} of the goal" if got else "not measured"})
    p99 = per[base]["fixed_p99_ms"]
    goals.append({"goal": f"p99 < {GOAL_P99_MS:g} ms at 100 msg/s x 1,000 subscribers", "measured": p99,
                  "met": p99 is not None and p99 < GOAL_P99_MS,
                  "by": f"{p99 - GOAL_P99_MS:+.1f} ms" if p99 is not None else "not measured"})
    kib, held = per[base]["kib_per_conn"], per[base]["idle_held"]
    goals.append({"goal": f"<= {GOAL_KIB_PER_CONN:g} KiB per idle connection at {GOAL_IDLE_CLIENTS:,}",
                  "measured": kib, "held": held,
                  "met": kib is not None and kib <= GOAL_KIB_PER_CONN and (held or 0) >= GOAL_IDLE_CLIENTS,
                  "by": ("not measured" if kib is None
                         else f"{kib - GOAL_KIB_PER_CONN:+.2f} KiB, at {held:,} connections"
                         + ("" if (held or 0) >= GOAL_IDLE_CLIENTS else f", not {GOAL_IDLE_CLIENTS:,}"))})
    out = {"machine": m, "baseline": base, "max_p99_ms": max_p99, "peers": per, "goals": goals}
    dump(out, os.path.join(d, "compare.json"))

    md = markdown(m, per, peers, base, goals, max_p99, nproc)
    with open(os.path.join(d, "compare.md"), "w") as f:
        f.write(md)
    print("\nwsgate compared with each peer (same machine, same run):")
    for p in peers:
        if p == base:
            continue
        q = per[p]
        print(f"  {q['name']:34} capacity {xs(q['wsgate_capacity_x'])}, "
              f"its KiB per idle connection {xs(q['peer_kib_per_conn_x'])}, "
              f"its server CPU per delivery at capacity {xs(q['peer_cpu_per_delivery_x'])} "
              f"(at {per[base]['fixed_rate_msg_per_s'] or '-'} msg/s {xs(q['peer_cpu_per_delivery_fixed_x'])})")
    print("\nIssue 5 goals:")
    for g in goals:
        print(f"  {'met ' if g['met'] else 'MISS'}  {g['goal']}: measured {fmt(g['measured'], 2)} ({g['by']})")
    print(f"\nJSON: {d}/compare.json; markdown: {d}/compare.md")


def markdown(m, per, peers, base, goals, max_p99, nproc):
    names = [per[p]["name"] for p in peers]
    lines = [
        f"Measured on {m.get('cpu_model')} x {nproc} ({m.get('mem_gib')} GiB, {m.get('kernel')}), "
        f"wsgate {m.get('git_commit')}, {m['versions'].get('nginx')}, "
        f"HAProxy {haproxy_version(m)}, Node {m['versions'].get('node')}; "
        f"server and `wsgate-load` on the same machine over loopback. "
        f"Load average at start / end: {loadavg(m.get('uptime_start'))} / {loadavg(m.get('uptime_end'))}.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(peers),
    ]

    def row(label, vals):
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    def cap(p):
        if not per[p]["capacity_deliveries_per_s"]:
            return "no step kept up"
        return fmt(per[p]["capacity_deliveries_per_s"], 0) + ("" if per[p]["saturated"] else " (not saturated)")

    row("fan-out capacity, deliveries/s keeping up (1,000 subscribers x 64 B)", [cap(p) for p in peers])
    row("next ladder step (missed), deliveries/s offered",
        [fmt((per[p]["first_miss"] or {}).get("offered_per_s"), 0) for p in peers])
    row("p99 at capacity, ms", [fmt(per[p]["capacity_p99_ms"], 1) for p in peers])
    row("server CPU per delivery at capacity, us", [fmt(per[p]["capacity_cpu_us_per_delivery"], 2) for p in peers])
    fr = per[base]["fixed_rate_msg_per_s"] or 100
    tt = per[base].get("fixed_tool_threads")
    row(f"p50 / p99 at {fr:g} msg/s (101k deliveries/s offered; tool on {tt} threads), ms",
        [f"{fmt(per[p]['fixed_p50_ms'], 1)} / {fmt(per[p]['fixed_p99_ms'], 1)}"
         + ("" if per[p]["fixed_keeping_up"] else f" (not keeping up, lost {fmt(per[p]['fixed_lost'], 0)})")
         for p in peers])
    row(f"server CPU per delivery at {fr:g} msg/s, us", [fmt(per[p]["fixed_cpu_us_per_delivery"], 2) for p in peers])
    row(f"limits seen at {fr:g} msg/s", ["; ".join(per[p]["fixed_notes"]) or "-" for p in peers])
    er = per[base]["everyday_rate_msg_per_s"]
    if er:
        row(f"everyday step, {er:g} msg/s: p50 / p99, ms; lost",
            [f"{fmt(per[p]['everyday_p50_ms'], 1)} / {fmt(per[p]['everyday_p99_ms'], 1)}; "
             f"{fmt(per[p]['everyday_lost'], 0)}" for p in peers])
        row(f"everyday step, {er:g} msg/s: server CPU per delivery, us",
            [fmt(per[p]["everyday_cpu_us_per_delivery"], 2) for p in peers])
    row("KiB per idle connection",
        [fmt(per[p]["kib_per_conn"], 2) + f" ({fmt(per[p]['idle_held'], 0)} conns)" for p in peers])
    def rel(p, key):
        return "-" if p == base else xs(per[p][key])

    row("wsgate's capacity relative to it", [rel(p, "wsgate_capacity_x") for p in peers])
    row("its KiB per connection relative to wsgate's", [rel(p, "peer_kib_per_conn_x") for p in peers])
    row("its CPU per delivery relative to wsgate's (at capacity)",
        [rel(p, "peer_cpu_per_delivery_x") for p in peers])
    if er:
        row(f"its CPU per delivery relative to wsgate's (at {er:g} msg/s)",
            [rel(p, "peer_cpu_per_delivery_everyday_x") for p in peers])
    row("limits seen at capacity",
        ["; ".join(per[p]["capacity_notes"]) or "-" for p in peers])
    lines += [
        "",
        f"Capacity: the most deliveries/s of a `fanout` ladder step that kept up (nothing lost, "
        f">= 95% of the offered rate, p99 <= {max_p99:g} ms); 10 publishers, one room. "
        f"CPU: user + system time of the server processes (for the classic stack haproxy + nginx + node) "
        f"per delivery. Limits: \"machine N/2 cores busy\": server, tool and anything else "
        f"filled the machine, so the server's own ceiling is higher; \"other processes\": CPU "
        f"used by neither server nor tool during the step (other work on the machine).",
        "",
        "| goal (issue 5) | measured | |",
        "|---|---:|---|",
    ]
    for g in goals:
        lines.append(f"| {g['goal']} | {fmt(g['measured'], 2)} | {'met' if g['met'] else 'missed'} ({g['by']}) |")
    return "\n".join(lines) + "\n"


def haproxy_version(m):
    words = (m.get("versions", {}).get("haproxy") or "").split()
    return words[2] if len(words) > 2 else "-"


def loadavg(uptime):
    return uptime.split("load average:")[-1].strip() if uptime else "-"


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "last-json":
        cmd_last_json(args[0], args[1], args[2])
    elif cmd == "error-json":
        print(json.dumps({"error": args[0]}))
    elif cmd == "one-line":
        cmd_one_line(args[0], args[1])
    elif cmd == "climb":
        cmd_climb(float(args[0]), args[1:])
    elif cmd == "merge-ladder":
        cmd_merge_ladder(float(args[0]), args[1], args[2:])
    elif cmd == "wait-quiet":
        cmd_wait_quiet(float(args[0]), float(args[1]))
    elif cmd == "machine":
        cmd_machine(args[0])
    elif cmd == "table":
        cmd_table(float(args[0]), args[1], args[2:])
    elif cmd == "compare":
        cmd_compare(float(args[0]), args[1], args[2:])
    else:
        sys.exit(f"report.py: unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
