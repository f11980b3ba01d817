#!/usr/bin/python3
"""Slow-link benchmark: one step of data-parallel training's communication on ResNet-50's
parameter shapes (four ~25 MB buckets), 2 emulated nodes x 1 trainer, measured in one run
for a shaped loopback (tbf, default 1gbit) and an unshaped one:

  MPI_Allreduce of the same bytes | gcomp none | gcomp PowerSGD rank 4 | gcomp Top-K 1% |
  gcomp perfmodel (candidates none, powersgd:rank=4, topk:density=0.01) |
  gcomp none (ucx) | gcomp powersgd:rank=4 (ucx) (when built: the UCX data plane on TCP
  over the same loopback, UCX_TLS=tcp,self UCX_NET_DEVICES=lo) |
  PyTorch DDP (gloo) | DDP + its PowerSGD hook rank 4 (one DDP bucket)

Everything runs inside a private network namespace (run this under `unshare -n`, as
`deploy/dev.sh bench-link` does): its loopback is shaped with tc, and MPI is forced
onto TCP over it (OMPI_MCA_btl=tcp,self), so every byte between the "nodes" crosses the
shaped link. Prints a table of the median step time in ms and the ratios the goals
are stated in.

    bench_link.py [--build build] [--rate 1gbit] [--steps 10] [--skip-torch]
"""
import argparse
import json
import os
import secrets
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PYTHON = "/usr/bin/python3"
MB = 102.228128  # ResNet-50's 25,557,032 float32 parameters
# Unmeasured steps before perfmodel's: its own warm-up (5 dense steps), the codec probe,
# the steps its decisions take to apply, and its measured check (2 iterations to settle,
# 5 measured: where compression measures slower it goes back to dense), so its row is
# its steady state.
PERFMODEL_WARMUP = 20


def shape(rate):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], stderr=subprocess.DEVNULL)
    if rate != "unshaped":
        subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate,
                        "burst", "1mb", "latency", "50ms"], check=True)


def last_json(out):
    # gcomp-run prefixes its trainers' lines with their rank ("[0] ").
    lines = [l.split("] ", 1)[-1] for l in out.splitlines()]
    lines = [l for l in lines if l.startswith("{")]
    if not lines:
        raise RuntimeError("no result line in:\n" + out[-3000:])
    return json.loads(lines[-1])


def run(cmd, env, timeout=1800):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def mpi_row(b, env, steps):
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    out = run(["mpirun", *root, "--oversubscribe", "--bind-to", "none", "-np", "2",
               f"{b}/tests/bench/bench_allreduce", str(steps), f"{MB:.6f}"], env)
    return last_json(out)["mpi_ms"]


def has_ucx(b):
    """Whether gcompd has the UCX data plane built in (gcompd --help lists it)."""
    out = subprocess.run([f"{b}/daemon/gcompd", "--help"], stdout=subprocess.PIPE,
                         text=True).stdout
    return any(l.split()[:1] == ["ucx"] and "(not built in)" not in l for l in out.splitlines())


def gcomp_row(b, env, steps, mode, spec, warmup=3, transport=()):
    out = run([f"{b}/deploy/gcomp-run", "--nodes", "2", "--trainers-per-node", "1", mode, spec,
               *transport, "--", PYTHON, os.path.join(HERE, "link_trainer.py"), "--steps", str(steps),
               "--warmup", str(warmup)], env)
    return last_json(out)["step_ms"]


def ddp_row(env, steps, powersgd):
    port = str(20000 + secrets.randbelow(20000))
    procs = []
    for rank in range(2):
        e = dict(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE="2",
                 OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([PYTHON, os.path.join(HERE, "ddp_bench.py"), "--steps",
                                       str(steps), "--powersgd", str(powersgd)], env=e,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (o, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"ddp_bench failed: {err[-3000:]}")
    return last_json(outs[0][0])["step_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--json", help="also write the numbers here")
    a = ap.parse_args()
    b = os.path.abspath(a.build)
    env = dict(os.environ, OMPI_MCA_pml="ob1", OMPI_MCA_btl="tcp,self",
               OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
               GCOMP_LOG_LEVEL="warning")
    try:
        import torch  # noqa: F401
        have_torch = not a.skip_torch
    except ImportError:
        have_torch = False
    rows = [("MPI_Allreduce of the same bytes", lambda s: mpi_row(b, env, s)),
            ("gcomp none", lambda s: gcomp_row(b, env, s, "--codec", "none")),
            ("gcomp powersgd:rank=4", lambda s: gcomp_row(b, env, s, "--codec", "powersgd:rank=4")),
            ("gcomp topk:density=0.01", lambda s: gcomp_row(b, env, s, "--codec", "topk:density=0.01")),
            ("gcomp perfmodel", lambda s: gcomp_row(
                b, env, s, "--policy", "perfmodel:candidate=none,candidate=powersgd:rank=4,"
                "candidate=topk:density=0.01", warmup=PERFMODEL_WARMUP))]
    if has_ucx(b):
        # UCX on TCP over the shaped loopback, like MPI above.
        uenv = dict(env, UCX_TLS="tcp,self", UCX_NET_DEVICES="lo")
        ucx = ("--transport", "ucx")
        rows += [("gcomp none (ucx)", lambda s: gcomp_row(b, uenv, s, "--codec", "none",
                                                          transport=ucx)),
                 ("gcomp powersgd:rank=4 (ucx)", lambda s: gcomp_row(
                     b, uenv, s, "--codec", "powersgd:rank=4", transport=ucx))]
    else:
        print("(no UCX data plane in this build: no ucx rows)", file=sys.stderr)
    if have_torch:
        rows += [("PyTorch DDP (gloo)", lambda s: ddp_row(env, s, 0)),
                 ("DDP + PowerSGD hook rank 4", lambda s: ddp_row(env, s, 4))]
    rates = [a.rate, "unshaped"] if a.rate != "unshaped" else ["unshaped"]
    res = {}
    for rate in rates:
        shape(rate)
        for name, fn in rows:
            try:
                res[(rate, name)] = fn(a.steps)
            except RuntimeError as exc:
                if not name.startswith(("PyTorch", "DDP")):
                    raise
                # torch 1.13's gloo sometimes fails inside the PowerSGD hook (an
                # EnforceNotMet on a message length): reported, not measured.
                res[(rate, name)] = float("nan")
                print(f"  {rate:>9} {name:<34} failed: {str(exc).strip().splitlines()[-1]}",
                      file=sys.stderr, flush=True)
                continue
            print(f"  {rate:>9} {name:<34} {res[(rate, name)]:10.1f} ms", file=sys.stderr, flush=True)
    print(f"\nper step, median of {a.steps}, ms (2 nodes x 1 trainer, ResNet-50 shapes, "
          f"{MB:.0f} MB of gradients)")
    print(f"{'':34}" + "".join(f"{r:>12}" for r in rates))
    for name, _ in rows:
        print(f"{name:34}" + "".join(f"{res[(r, name)]:12.1f}" for r in rates))
    for r in rates:
        mpi, none, psgd = (res[(r, n)] for n in ("MPI_Allreduce of the same bytes", "gcomp none",
                                                  "gcomp powersgd:rank=4"))
        line = (f"{r}: PowerSGD/MPI_Allreduce = 1/{mpi / psgd:.1f}; none/MPI_Allreduce = "
                f"{none / mpi:.2f}")
        if have_torch:
            line += f"; DDP PowerSGD hook / gcomp PowerSGD = {res[(r, 'DDP + PowerSGD hook rank 4')] / psgd:.1f}x"
        best = min(res[(r, n)] for n in ("gcomp none", "gcomp powersgd:rank=4", "gcomp topk:density=0.01"))
        line += f"; perfmodel / best static = {res[(r, 'gcomp perfmodel')] / best:.2f}"
        if (r, "gcomp none (ucx)") in res:
            line += (f"; none ucx/mpi = {res[(r, 'gcomp none (ucx)')] / none:.2f}, powersgd "
                     f"ucx/mpi = {res[(r, 'gcomp powersgd:rank=4 (ucx)')] / psgd:.2f}")
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{r}|{n}": v for (r, n), v in res.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
