#!/usr/bin/env python3
"""Runs issue #2's acceptance matrix with lockstep-bench, interleaved, several rounds, and prints
each ratio's median and spread. Every ratio is taken inside one round (same minute, same disk
state), and the disk side always uses the faster of its two rows (prepared, extended).

  bench/acceptance.py BENCH --dir D [--rounds 5] [--seconds 2] [extra lockstep-bench flags, e.g. --io posix]
"""
import argparse, json, statistics, subprocess, sys

p = argparse.ArgumentParser()
p.add_argument("bench")
p.add_argument("--dir", default=".")
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--seconds", type=float, default=2)
a, extra = p.parse_known_args()
a.extra = [x for x in extra if x != "--"]

def run(workload, n, b):
    cmd = [a.bench, "--json", "--dir", a.dir, "--seconds", str(a.seconds), "--workload", workload,
           "--outstanding", str(n), "--record-bytes", str(b)] + a.extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]

def best_disk(n, b, key):
    return max(r[key] for r in run("disk", n, b))

ratios = {"1x200 vs disk 1x4096 (>=0.77)": [], "group efficiency N=16 (>=0.70)": [],
          "group efficiency N=256 (>=0.70)": [], "256x4KiB MB/s vs disk (>=0.70)": []}
rows = {}
for r in range(a.rounds):
    d1 = best_disk(1, 4096, "ops_per_s"); a1 = run("append", 1, 200)[0]
    d16 = best_disk(16, 200, "ops_per_s"); a16 = run("append", 16, 200)[0]
    d256 = best_disk(256, 200, "ops_per_s"); a256 = run("append", 256, 200)[0]
    dmb = best_disk(256, 4096, "mb_per_s"); amb = run("append", 256, 4096)[0]
    vals = [a1["ops_per_s"] / d1, a16["ops_per_s"] / (16 * d16),
            a256["ops_per_s"] / (256 * d256), amb["mb_per_s"] / dmb]
    for k, v in zip(ratios, vals):
        ratios[k].append(v)
    for k, v in {"disk 1x4096 ops/s": d1, "append 1x200 ops/s": a1["ops_per_s"],
                 "append 1x200 p50 us": a1["p50_us"], "append 1x200 p99 us": a1["p99_us"],
                 "disk 16x200 ops/s": d16, "append 16x200 ops/s": a16["ops_per_s"],
                 "disk 256x200 ops/s": d256, "append 256x200 ops/s": a256["ops_per_s"],
                 "append 256x200 p99 us": a256["p99_us"],
                 "disk 256x4096 MB/s": dmb, "append 256x4096 MB/s": amb["mb_per_s"]}.items():
        rows.setdefault(k, []).append(v)
    print(f"round {r + 1}: " + ", ".join(f"{v:.2f}" for v in vals), file=sys.stderr, flush=True)

def fmt(v):
    return f"median {statistics.median(v):.3f} (min {min(v):.3f}, max {max(v):.3f})"
for k, v in ratios.items():
    print(f"{k:36s} {fmt(v)}")
for k, v in rows.items():
    print(f"{k:36s} median {statistics.median(v):12.1f} (min {min(v):.1f}, max {max(v):.1f})")
