#!/usr/bin/python3
"""A trainer for the gcomp-run tests: checks the job-wide mean against what it expects.

All trainers derive the same buckets (2-3 buckets of 1-3 layers with random shapes)
from --seed; each submits them in its own order every step, with data that depends on
its rank non-linearly:  data[j] = (rank + 1)**2 * (1 + (j % 7) / 4 + bucket) + step.
The mean over all W trainers is then  m2 * (1 + (j % 7) / 4 + bucket) + step  with
m2 = sum((r + 1)**2 for r < W) / W, which a partial or unweighted sum would miss.

Options to test the launcher: --fail-rank R --exit-code C (rank R exits with C at
once, before connecting), --kill-rank R (rank R kills itself with SIGKILL), and
--spawn-child (every trainer leaves a `sleep 300` child behind in its session).
Exit 0 when every result matches, 1 on a mismatch or a gcomp error (printed).
"""

import argparse
import math
import os
import signal
import subprocess
import sys

import numpy as np

import gcomp


def bucket_specs(seed):
    rng = np.random.default_rng(seed)
    specs = []
    for b in range(int(rng.integers(2, 4))):
        layers = []
        for i in range(int(rng.integers(1, 4))):
            ndim = int(rng.integers(1, 4))
            layers.append((f"l{b}.{i}", tuple(int(rng.integers(1, 40)) for _ in range(ndim))))
        specs.append((f"bucket{b}", layers))
    return specs


def base(numel, bucket):
    return 1.0 + (np.arange(numel) % 7) / 4.0 + bucket


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--fail-rank", type=int, default=-1)
    p.add_argument("--exit-code", type=int, default=3)
    p.add_argument("--kill-rank", type=int, default=-1)
    p.add_argument("--spawn-child", action="store_true")
    p.add_argument("--wait-timeout-ms", type=int, default=60000)
    args = p.parse_args()

    rank = int(os.environ["GCOMP_RANK"])
    world = int(os.environ["GCOMP_WORLD_SIZE"])
    node = int(os.environ["GCOMP_NODE"])
    nodes = int(os.environ["GCOMP_NODES"])
    if args.spawn_child:
        subprocess.Popen(["sleep", "300"])
    if rank == args.fail_rank:
        return args.exit_code
    if rank == args.kill_rank:
        os.kill(os.getpid(), signal.SIGKILL)

    specs = bucket_specs(args.seed)
    m2 = sum((r + 1) ** 2 for r in range(world)) / world
    order_rng = np.random.default_rng(1000 + rank)
    try:
        with gcomp.Client() as client:
            if (client.node, client.nodes) != (node, nodes):
                print(f"rank {rank}: client says node {client.node} of {client.nodes}, "
                      f"environment says {node} of {nodes}", file=sys.stderr)
                return 1
            buckets = [client.register(name, layers) for name, layers in specs]
            for b, (name, layers) in zip(buckets, specs):
                expected = sum(math.prod(s) for _, s in layers)
                if b.numel != expected:
                    print(f"rank {rank}: bucket {name} has {b.numel} elements, expected {expected}",
                          file=sys.stderr)
                    return 1
            for step in range(args.steps):
                for i in order_rng.permutation(len(buckets)):
                    b = buckets[i]
                    b.data[:] = (rank + 1) ** 2 * base(b.numel, i) + step
                    b.submit(step)
                for i in order_rng.permutation(len(buckets)):
                    b = buckets[i]
                    b.wait(args.wait_timeout_ms)
                    want = m2 * base(b.numel, i) + step
                    if not np.allclose(b.result, want, rtol=1e-5, atol=1e-6):
                        bad = int(np.argmax(np.abs(b.result - want)))
                        print(f"rank {rank}: step {step} bucket {b.name}: result[{bad}] = "
                              f"{b.result[bad]}, expected {want[bad]}", file=sys.stderr)
                        return 1
    except gcomp.Error as exc:
        print(f"rank {rank}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
