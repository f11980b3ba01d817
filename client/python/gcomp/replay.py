"""gcomp-replay: feed a gradient trace through real daemons and real trainers.

Usage::

    gcomp-replay TRACE --out OUT [--nodes N] [--codec SPEC | --policy SPEC]
                 [--timeout-ms MS] [--seed N] [--wait-timeout-ms MS] [--verbose]

The trace's W workers are spread over N nodes (default N = W) in contiguous blocks:
node k runs workers [start_k, end_k), the first W % N nodes one more than the others.
Each worker is a trainer process (``python -m gcomp.replay --worker``) started by the
gcomp-run launcher code; it registers every bucket of the manifest and, for each step,
forwards that step's hints, loads its gradients into each bucket, submits, and waits.
Worker 0 writes what it received to OUT/s{step}/{bucket}.npy (flat float32, npy 1.0);
the daemons' per-step statistics go to OUT/stats.jsonl (node 0's --stats-file).

Exit status: 0 on success, 1 for an invalid trace or a failed replay (the message says
which file or process), 2 for bad arguments.
"""

import argparse
import os
import sys
import time

import numpy as np

from . import launch, trace


def spread(workers, nodes):
    """Trainer count per node: contiguous blocks, the first workers % nodes get one more."""
    if nodes < 1:
        raise ValueError(f"--nodes must be >= 1, got {nodes}")
    if nodes > workers:
        raise ValueError(f"--nodes {nodes} is more than the trace's {workers} workers "
                         "(every node needs at least one)")
    base, extra = divmod(workers, nodes)
    return [base + (1 if k < extra else 0) for k in range(nodes)]


def parse_steps(text, steps):
    """'A:B' -> (A, B) within 0..steps; None -> all steps."""
    if text is None:
        return 0, steps
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--steps must be A:B (integers), not {text!r}") from None
    if not 0 <= a < b <= steps:
        raise ValueError(f"--steps {text}: need 0 <= A < B <= {steps} (the trace's steps)")
    return a, b


def prepare_out(out, tr):
    """Create OUT and OUT/s{step}; remove a stale OUT/stats.jsonl. Returns the stats path."""
    os.makedirs(out, exist_ok=True)
    for step in range(tr.steps):
        os.makedirs(os.path.join(out, f"s{step}"), exist_ok=True)
    stats = os.path.join(out, "stats.jsonl")
    if os.path.exists(stats):
        os.remove(stats)
    return stats


def _parser():
    p = argparse.ArgumentParser(
        prog="gcomp-replay",
        description="Replay a gradient trace through real gcomp daemons and trainers; "
                    "write what the trainers received and the daemons' statistics.")
    p.add_argument("trace", metavar="TRACE", help="trace directory (with manifest.json)")
    p.add_argument("--out", required=True, metavar="OUT", help="output directory")
    p.add_argument("--nodes", type=int, help="number of nodes (default: the trace's workers)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--codec", metavar="SPEC", help="static codec for every layer")
    mode.add_argument("--policy", metavar="SPEC", help="adaptive policy")
    p.add_argument("--timeout-ms", type=int, metavar="MS", help="daemon stall timeout")
    p.add_argument("--seed", type=int, help="daemon random seed")
    p.add_argument("--wait-timeout-ms", type=int, default=120000, metavar="MS",
                   help="how long a worker waits for one bucket (default 120000)")
    p.add_argument("--steps", metavar="A:B",
                   help="replay only steps A..B-1 (with --restore, continue a checkpointed run)")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="after the last step, save the daemons' state in DIR")
    p.add_argument("--restore", metavar="DIR", help="start the daemons from a checkpoint")
    p.add_argument("--per-worker", action="store_true",
                   help="every worker also writes what it received to OUT/w{worker}/s{step}/"
                        "{bucket}.npy (to check that every node got the same result)")
    p.add_argument("--backward-ms", type=float, default=0.0, metavar="MS",
                   help="every worker sleeps MS per step as a backward pass would, spread "
                        "over the buckets: MS / buckets before each bucket's submit")
    p.add_argument("--forward-ms", type=float, default=0.0, metavar="MS",
                   help="every worker sleeps MS after a step's results, before the next "
                        "step (the forward pass and optimizer)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the commands run")
    return p


def main(argv=None, tools=None):
    """Entry point of gcomp-replay; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        tr = trace.load(args.trace)
        tr.check_files()
    except trace.TraceError as exc:
        print(f"gcomp-replay: invalid trace: {exc}", file=sys.stderr)
        return 1
    try:
        trainers = spread(tr.workers, args.nodes if args.nodes is not None else tr.workers)
        first, last = parse_steps(args.steps, tr.steps)
        for name in ("backward_ms", "forward_ms"):
            if not getattr(args, name) >= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, not "
                                 f"{getattr(args, name)}")
    except ValueError as exc:
        parser.error(str(exc))
    try:
        stats = prepare_out(args.out, tr)
    except OSError as exc:
        print(f"gcomp-replay: cannot prepare {args.out}: {exc}", file=sys.stderr)
        return 1
    tools = tools or launch.default_tools()
    command = [tools.python, "-m", "gcomp.replay", "--worker", os.path.abspath(args.trace),
               "--out", os.path.abspath(args.out),
               "--wait-timeout-ms", str(args.wait_timeout_ms)] + \
              (["--per-worker"] if args.per_worker else []) + \
              ["--steps", f"{first}:{last}", "--backward-ms", str(args.backward_ms),
               "--forward-ms", str(args.forward_ms)]
    job = launch.Job(command=command, trainers=trainers, codec=args.codec,
                     policy=args.policy, stats_file=stats, timeout_ms=args.timeout_ms,
                     seed=args.seed, verbose=args.verbose, checkpoint=args.checkpoint,
                     restore=args.restore)
    try:
        status = launch.run_job(job, tools)
    except launch.LaunchError as exc:
        print(f"gcomp-replay: {exc}", file=sys.stderr)
        return exc.status
    if status != 0:
        print(f"gcomp-replay: the replay failed (status {status})", file=sys.stderr)
        return status
    return 0


def worker_main(argv):
    """One replay worker (a trainer started by the launcher; GCOMP_RANK = worker)."""
    p = argparse.ArgumentParser(prog="gcomp.replay --worker")
    p.add_argument("trace")
    p.add_argument("--out", required=True)
    p.add_argument("--wait-timeout-ms", type=int, default=120000)
    p.add_argument("--per-worker", action="store_true")
    p.add_argument("--steps", required=True)
    p.add_argument("--backward-ms", type=float, default=0.0)
    p.add_argument("--forward-ms", type=float, default=0.0)
    args = p.parse_args(argv)
    worker = int(os.environ.get("GCOMP_RANK", "-1"))
    try:
        first, last = (int(v) for v in args.steps.split(":"))
        run_worker(args.trace, args.out, worker, args.wait_timeout_ms, args.per_worker,
                   range(first, last), args.backward_ms, args.forward_ms)
    except (trace.TraceError, OSError, ValueError) as exc:
        print(f"gcomp-replay worker {worker}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # gcomp.Error and anything unexpected: say who failed
        print(f"gcomp-replay worker {worker}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def run_worker(trace_dir, out, worker, wait_timeout_ms, per_worker=False, steps=None,
               backward_ms=0.0, forward_ms=0.0):
    """Replay every step of one worker; worker 0 writes the results (every worker
    writes its own too with per_worker). backward_ms / forward_ms: the compute a
    training step would do, slept (see --backward-ms, --forward-ms)."""
    from .client import Client  # needs the library: only the workers load it

    tr = trace.load(trace_dir)
    if not 0 <= worker < tr.workers:
        raise ValueError(f"GCOMP_RANK {worker} is not a worker of the trace (0..{tr.workers - 1})")
    with Client() as client:
        buckets = [(spec, client.register(spec.name, spec.layers)) for spec in tr.buckets]
        for step in steps if steps is not None else range(tr.steps):
            hint = tr.hints.get(step)
            if hint:
                client.hint(step, **hint)
            for spec, bucket in buckets:
                tr.read_into(worker, step, spec, bucket.data)
                if backward_ms > 0:
                    time.sleep(backward_ms / len(buckets) / 1e3)
                bucket.submit(step)
            for spec, bucket in buckets:
                bucket.wait(wait_timeout_ms)
                if worker == 0:
                    np.save(os.path.join(out, f"s{step}", f"{spec.name}.npy"), bucket.result)
                if per_worker:
                    mine = os.path.join(out, f"w{worker}", f"s{step}")
                    os.makedirs(mine, exist_ok=True)
                    np.save(os.path.join(mine, f"{spec.name}.npy"), bucket.result)
            if forward_ms > 0:
                time.sleep(forward_ms / 1e3)


if __name__ == "__main__":
    sys.exit(main())
