#!/usr/bin/python3
"""A trainer for bench_link.py: ResNet-50's parameter shapes in four ~25 MB DDP-style
buckets (tests/tools/make_trace.py, 26 MiB cap). Each step it fills every bucket with a
fixed gradient, submits them all (as DDP does at the end of a backward pass without
overlap), waits for all, and times the step. Run under gcomp-run; global rank 0 prints
one JSON line: {"step_ms": median, "steps": n, "dense_bytes": per step}.

    link_trainer.py [--steps N] [--warmup W] [--compute-ms MS]

--compute-ms sleeps that long before the submits (a stand-in for forward/backward).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))

import gcomp  # noqa: E402
import make_trace  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compute-ms", type=float, default=0.0)
    a = ap.parse_args()
    rank = int(os.environ.get("GCOMP_RANK", "0"))
    buckets = make_trace.preset_buckets("resnet50", bucket_kb=26 * 1024)
    rng = np.random.default_rng(rank)
    with gcomp.Client() as client:
        regs = []
        for spec in buckets:
            b = client.register(spec["name"], spec["layers"])
            # A gradient with structure (decaying spectrum per layer) plus noise.
            g = np.empty(b.numel, np.float32)
            off = 0
            for _, shape in spec["layers"]:
                n = math.prod(shape)
                rows = shape[0]
                cols = n // rows
                u = rng.standard_normal((rows, 4)).astype(np.float32)
                v = rng.standard_normal((4, cols)).astype(np.float32)
                g[off:off + n] = (u @ v).ravel() * 0.1 + rng.standard_normal(n).astype(np.float32) * 0.01
                off += n
            regs.append((b, g))
        times = []
        for step in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            if a.compute_ms:
                time.sleep(a.compute_ms / 1e3)
            for b, g in regs:
                b.data[:] = g
                b.submit(step)
            for b, _ in regs:
                b.wait(600000)
            if step >= a.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    if rank == 0:
        dense = sum(4 * b.numel for b, _ in regs)
        print(json.dumps({"step_ms": statistics.median(times), "steps": a.steps,
                          "dense_bytes": dense}), flush=True)


if __name__ == "__main__":
    main()
