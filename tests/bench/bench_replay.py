#!/usr/bin/python3
"""End-to-end step time per codec: gcomp-replay of a ResNet-18 trace (DDP-sized buckets)
on N nodes, one run per codec, all in one invocation so the ratios compare.

For every codec it reports, per step (medians over the steps after the first):
  engine ms  time the daemon spent per step on the node's sum, the codec's encode,
             exchange and decode of every bucket (node 0's stats, sum over buckets)
  vs none    that time as a ratio to the exact exchange measured in the same run
  ratio      dense bytes / payload bytes, over the whole run
Usage (after building):
  tests/bench/bench_replay.py [--build build] [--nodes 2] [--workers 2] [--steps 6] [CODEC ...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import make_trace  # noqa: E402

CODECS = ["none", "fp16", "bf16", "powersgd:rank=4", "powersgd_unbiased:rank=4", "topk:density=0.01",
          "mstopk:density=0.01", "dgc:density=0.01", "redsync:density=0.01", "sidco:density=0.01",
          "threshold:lambda=0.01", "randomk:density=0.01", "randomblock:density=0.01", "signsgd",
          "signnorm", "onebit", "qsgd", "terngrad", "maxmin:bits=4"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("codecs", nargs="*", default=CODECS)
    a = ap.parse_args()
    replay = os.path.join(os.path.abspath(a.build), "deploy", "gcomp-replay")
    with tempfile.TemporaryDirectory(prefix="gcomp-bench-") as tmp:
        trace = os.path.join(tmp, "trace")
        make_trace.write_trace(trace, a.workers, a.steps, make_trace.preset_buckets("resnet"), seed=1)
        rows = []
        for codec in a.codecs:
            out = os.path.join(tmp, "out")
            env = dict(os.environ, GCOMP_LOG_LEVEL="warning")
            r = subprocess.run([replay, trace, "--out", out, "--nodes", str(a.nodes), "--codec", codec],
                               capture_output=True, text=True, env=env)
            if r.returncode:
                print(f"{codec}: replay failed:\n{r.stderr[-1500:]}", file=sys.stderr)
                return 1
            recs = [json.loads(l) for l in open(os.path.join(out, "stats.jsonl"))]
            per_step = {}
            for rec in recs:
                per_step.setdefault(rec["step"], 0.0)
                per_step[rec["step"]] += rec["t_sum_ms"] + rec["t_exchange_ms"]
            engine = statistics.median(v for s, v in per_step.items() if s > 0)
            ratio = sum(r["dense_bytes"] for r in recs) / sum(r["payload_bytes"] for r in recs)
            rows.append((codec, engine, ratio))
    base = rows[0][1] if rows[0][0] == "none" else None
    print(f"gcomp-replay, ResNet-18 ({a.workers} workers on {a.nodes} nodes, {a.steps} steps), "
          f"median engine time per step")
    print(f"{'codec':28} {'engine ms':>10} {'vs none':>8} {'ratio':>9}")
    for codec, engine, ratio in rows:
        rel = f"{engine / base:8.2f}" if base else f"{'':8}"
        print(f"{codec:28} {engine:10.2f} {rel} {ratio:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
