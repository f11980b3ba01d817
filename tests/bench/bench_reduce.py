#!/usr/bin/python3
"""Reduction benchmark: gcomp's exact path against its baselines, measured in one run.

  1. reduction: gcomp (N daemons, 1 trainer each, codec none) vs MPI_Allreduce of the
     same bytes on N ranks, on the MPI data plane and (when built) on the UCX one
     (--transport ucx, UCX's default transports unless UCX_TLS says otherwise);
  2. handoff: gcomp on one node with one trainer (submit -> daemon -> result) vs a
     memcpy of the bucket in the trainer.

Prints a table with both ratios per bucket size. Usage (after building):
  tests/bench/bench_reduce.py [--build build] [--nodes 2] [--iters 10] [--sizes 1 4 16 64 256]
"""
import argparse
import json
import os
import subprocess
import sys


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env, text=True).stdout
    return {r["mb"]: r for r in (json.loads(l) for l in out.splitlines() if l.startswith("{"))}


def has_ucx(build):
    """Whether gcompd has the UCX data plane built in (gcompd --help lists it)."""
    out = subprocess.run([f"{build}/daemon/gcompd", "--help"], stdout=subprocess.PIPE,
                         text=True).stdout
    return any(l.split()[:1] == ["ucx"] and "(not built in)" not in l for l in out.splitlines())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16, 64, 256])
    a = ap.parse_args()
    b = os.path.abspath(a.build)
    sizes = [f"{s:g}" for s in a.sizes]
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    mpi = run_json(["mpirun", *root, "--oversubscribe", "-np", str(a.nodes),
                    f"{b}/tests/bench/bench_allreduce", str(a.iters), *sizes])
    run = [f"{b}/deploy/gcomp-run", "--raw-output", "--trainers-per-node", "1", "--"]
    trainer = [f"{b}/tests/bench/bench_trainer", str(a.iters), *sizes]
    multi = run_json([run[0], "--nodes", str(a.nodes), *run[1:], *trainer])
    ucx = (run_json([run[0], "--nodes", str(a.nodes), "--transport", "ucx", *run[1:], *trainer])
           if has_ucx(b) else None)
    single = run_json([run[0], "--nodes", "1", *run[1:], *trainer])

    print(f"gcomp exact reduction, {a.nodes} nodes x 1 trainer, median of {a.iters} "
          f"(ratios < 1 are faster than the baseline)")
    if not ucx:
        print("(no UCX data plane in this build: no gcomp none (ucx) column)")
    print(f"{'MB':>6} | {'MPI_Allreduce ms':>16} {'gcomp ms':>10} {'ratio':>6} | "
          + (f"{'gcomp none (ucx) ms':>19} {'ratio':>6} | " if ucx else "")
          + f"{'memcpy ms':>9} {'handoff ms':>10} {'ratio':>6}")
    for s in a.sizes:
        m, g, h = mpi[s], multi[s], single[s]
        u = (f"{ucx[s]['gcomp_ms']:19.3f} {ucx[s]['gcomp_ms'] / m['mpi_ms']:6.2f} | "
             if ucx else "")
        print(f"{s:6g} | {m['mpi_ms']:16.3f} {g['gcomp_ms']:10.3f} {g['gcomp_ms'] / m['mpi_ms']:6.2f} | "
              f"{u}{h['memcpy_ms']:9.3f} {h['gcomp_ms']:10.3f} {h['gcomp_ms'] / h['memcpy_ms']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
