"""gcomp-replay: feed a gradient trace through real daemons and real trainers.

Usage::

    gcomp-replay TRACE --out OUT [--nodes N] [--codec SPEC | --policy SPEC]
                 [--timeout-ms MS] [--seed N] [--wait-timeout-ms MS] [--verbose]
    gcomp-replay TRACE --compare SPEC [SPEC ...] [--out OUT] [--per-layer] [--json]

The trace's W workers are spread over N nodes in contiguous blocks: node k runs workers
[start_k, end_k), the first W % N nodes one more than the others. N defaults to W, or for
a trace recorded from a live job (gcompctl trace start) to the job's own nodes with its
trainers per node, so that codec none gives the live job's results bit for bit.

``--compare`` replays the trace once per SPEC (a codec spec such as
``topk:density=0.01``, or ``policy:`` and a policy spec such as
``policy:accordion:codec=powersgd:rank=1``) into OUT/{i} (OUT defaults to a temporary
directory, removed afterwards) and prints one line per SPEC: the bytes node 0 sent per
step (the stats' payload_bytes), the compression ratio (dense / sent) and the relative
L2 error of worker 0's result against the exact mean of the workers' gradients
(computed in float64 from the trace), over every step and layer; ``--per-layer`` adds
the error per layer, ``--json`` prints all of it as one JSON object instead.
Each worker is a trainer process (``python -m gcomp.replay --worker``) started by the
gcomp-run launcher code; it registers every bucket of the manifest and, for each step,
forwards that step's hints, loads its gradients into each bucket, submits, and waits.
Worker 0 writes what it received to OUT/s{step}/{bucket}.npy (flat float32, npy 1.0);
the daemons' per-step statistics go to OUT/stats.jsonl (node 0's --stats-file).

Exit status: 0 on success, 1 for an invalid trace or a failed replay (the message says
which file or process), 2 for bad arguments.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
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
    p.add_argument("--out", metavar="OUT",
                   help="output directory (required, except with --compare)")
    p.add_argument("--nodes", type=int, help="number of nodes (default: the trace's workers)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--codec", metavar="SPEC", help="static codec for every layer")
    mode.add_argument("--policy", metavar="SPEC", help="adaptive policy")
    mode.add_argument("--compare", nargs="+", metavar="SPEC",
                      help="replay once per SPEC (a codec spec, or policy:SPEC) and print "
                           "bytes sent, ratio and error against the exact mean")
    p.add_argument("--per-layer", action="store_true",
                   help="with --compare: also the error of every layer")
    p.add_argument("--json", action="store_true",
                   help="with --compare: print the results as JSON")
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
    if args.out is None and not args.compare:
        parser.error("--out OUT is required (except with --compare)")
    if (args.per_layer or args.json) and not args.compare:
        parser.error("--per-layer and --json go with --compare")
    if args.compare and (args.checkpoint or args.restore):
        parser.error("--compare replays from the start: not with --checkpoint or --restore")
    try:
        tr = trace.load(args.trace)
        tr.check_files()
    except trace.TraceError as exc:
        print(f"gcomp-replay: invalid trace: {exc}", file=sys.stderr)
        return 1
    if not tr.complete:
        print(f"gcomp-replay: {args.trace} is a partial trace: {tr.steps} complete steps "
              f"({tr.error or 'it ended early'})", file=sys.stderr)
    try:
        if args.nodes is None and tr.trainers_per_node:
            trainers = list(tr.trainers_per_node)
        else:
            trainers = spread(tr.workers, args.nodes if args.nodes is not None else tr.workers)
        first, last = parse_steps(args.steps, tr.steps)
        for name in ("backward_ms", "forward_ms"):
            if not getattr(args, name) >= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, not "
                                 f"{getattr(args, name)}")
        specs = [parse_compare_spec(spec) for spec in args.compare or []]
    except ValueError as exc:
        parser.error(str(exc))
    tools = tools or launch.default_tools()
    if not args.compare:
        return replay_into(args, tr, trainers, first, last, args.out, args.codec, args.policy,
                           tools)
    root = args.out or tempfile.mkdtemp(prefix="gcomp-compare-")
    try:
        outs = []
        for i, (text, codec, policy) in enumerate(specs):
            out = os.path.join(root, str(i))
            status = replay_into(args, tr, trainers, first, last, out, codec, policy, tools)
            if status:
                print(f"gcomp-replay: --compare {text}: the replay failed (see the messages "
                      "above)", file=sys.stderr)
                return status
            outs.append(out)
        try:
            results = compare(tr, [s[0] for s in specs], outs, first, last)
        except (OSError, ValueError, trace.TraceError) as exc:
            print(f"gcomp-replay: reading the replays' results: {exc}", file=sys.stderr)
            return 1
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps({"trace": os.path.abspath(args.trace), "workers": tr.workers,
                          "nodes": len(trainers), "steps": last - first,
                          "results": results}, indent=1))
    else:
        print_table(tr, trainers, last - first, results, args.per_layer)
    return 0


def parse_compare_spec(text):
    """'policy:SPEC' -> (text, None, SPEC); a codec spec -> (text, text, None)."""
    if not text or text.isspace():
        raise ValueError("--compare: an empty SPEC")
    if text.startswith("policy:"):
        policy = text[len("policy:"):]
        if not policy:
            raise ValueError(f"--compare {text!r}: 'policy:' needs a policy spec after it "
                             "(e.g. policy:accordion:codec=powersgd:rank=1)")
        return text, None, policy
    return text, text, None


def replay_into(args, tr, trainers, first, last, out, codec, policy, tools):
    """One replay of steps first..last-1 into out; returns the exit status."""
    try:
        stats = prepare_out(out, tr)
    except OSError as exc:
        print(f"gcomp-replay: cannot prepare {out}: {exc}", file=sys.stderr)
        return 1
    command = [tools.python, "-m", "gcomp.replay", "--worker", os.path.abspath(args.trace),
               "--out", os.path.abspath(out),
               "--wait-timeout-ms", str(args.wait_timeout_ms)] + \
              (["--per-worker"] if args.per_worker else []) + \
              ["--steps", f"{first}:{last}", "--backward-ms", str(args.backward_ms),
               "--forward-ms", str(args.forward_ms)]
    job = launch.Job(command=command, trainers=trainers, codec=codec,
                     policy=policy, stats_file=stats, timeout_ms=args.timeout_ms,
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


def _relative(err2, ref2):
    if ref2 > 0:
        return math.sqrt(err2 / ref2)
    return 0.0 if err2 == 0 else math.inf


def compare(tr, texts, outs, first, last):
    """Bytes, ratio and relative L2 errors (overall, per layer) of each replay in outs
    against the exact mean of the trace's workers (float64)."""
    n = len(outs)
    err2 = [[[0.0] * len(b.layers) for b in tr.buckets] for _ in range(n)]
    ref2 = [[0.0] * len(b.layers) for b in tr.buckets]
    for step in range(first, last):
        for bi, bucket in enumerate(tr.buckets):
            exact = np.zeros(bucket.numel, dtype=np.float64)
            buf = np.empty(bucket.numel, dtype=np.float32)
            for w in range(tr.workers):
                tr.read_into(w, step, bucket, buf)
                exact += buf
            exact /= tr.workers
            got = [np.load(os.path.join(out, f"s{step}", f"{bucket.name}.npy")).astype(np.float64)
                   for out in outs]
            for g, out in zip(got, outs):
                if g.shape != exact.shape:
                    raise ValueError(f"{out}/s{step}/{bucket.name}.npy holds {g.size} elements, "
                                     f"the bucket has {exact.size}")
            off = 0
            for li, (_, shape) in enumerate(bucket.layers):
                size = math.prod(shape)
                ref = exact[off:off + size]
                ref2[bi][li] += float(np.dot(ref, ref))
                for k in range(n):
                    d = got[k][off:off + size] - ref
                    err2[k][bi][li] += float(np.dot(d, d))
                off += size
    results = []
    for k, (text, out) in enumerate(zip(texts, outs)):
        payload = dense = 0
        with open(os.path.join(out, "stats.jsonl")) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    payload += rec["payload_bytes"]
                    dense += rec["dense_bytes"]
        layers = []
        for bi, bucket in enumerate(tr.buckets):
            for li, (name, _) in enumerate(bucket.layers):
                layers.append({"bucket": bucket.name, "layer": name,
                               "error": _relative(err2[k][bi][li], ref2[bi][li])})
        total_err = sum(sum(row) for row in err2[k])
        total_ref = sum(sum(row) for row in ref2)
        results.append({"spec": text, "bytes_per_step": payload / (last - first),
                        "dense_bytes_per_step": dense / (last - first),
                        "ratio": dense / payload if payload else math.inf,
                        "error": _relative(total_err, total_ref), "layers": layers})
    return results


def _size(nbytes):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def print_table(tr, trainers, steps, results, per_layer):
    """The --compare table (and the per-layer one)."""
    numel = sum(b.numel for b in tr.buckets)
    print(f"{tr.path}: {tr.workers} workers on {len(trainers)} nodes, {steps} steps, "
          f"{len(tr.buckets)} buckets, {numel} parameters; error: relative L2 against the "
          "exact mean")
    width = max([len("spec")] + [len(r["spec"]) for r in results])
    print(f"{'spec':<{width}}  {'bytes/step':>12}  {'ratio':>8}  {'error':>9}")
    for r in results:
        print(f"{r['spec']:<{width}}  {_size(r['bytes_per_step']):>12}  {r['ratio']:>8.2f}  "
              f"{r['error']:>9.2e}")
    if not per_layer:
        return
    names = [f"{x['bucket']}/{x['layer']}" for x in results[0]["layers"]]
    lw = max(len("layer"), *(len(x) for x in names))
    cols = [max(9, len(r["spec"])) for r in results]
    print()
    print(f"{'layer':<{lw}}  " + "  ".join(f"{r['spec']:>{c}}" for r, c in zip(results, cols)))
    for i, name in enumerate(names):
        print(f"{name:<{lw}}  " + "  ".join(f"{r['layers'][i]['error']:>{c}.2e}"
                                            for r, c in zip(results, cols)))


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
