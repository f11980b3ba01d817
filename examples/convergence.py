#!/usr/bin/python3
"""The convergence experiment: examples/train_fmnist.py on 4 emulated nodes (one trainer
each) with every codec and policy of the table below, 3 seeds each, plus PyTorch DDP
over gloo with and without its PowerSGD hook as peers; writes docs/CONVERGENCE.md and
its plots (docs/convergence/*.png). Run it with `deploy/dev.sh experiment`.

    convergence.py --build BUILD [--out docs] [--steps 500] [--seeds 0,1,2] [--only LABEL,...]

Every run writes the example's progress points (JSON lines), node 0's --stats-file
(payload bytes per step and bucket) and --decision-log (the policies' choices) into a
temporary directory, removed at the end; --work DIR keeps them there (with runs.json).
"""

import argparse
import itertools
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_fmnist import payload_bytes  # noqa: E402  (one reading of the stats records)

NODES = 4
# label, gcomp-run options (None: a PyTorch DDP peer, gcompd unused), train_fmnist options.
CONFIGS = [
    ("none", ["--codec", "none"], []),
    ("powersgd rank 1", ["--codec", "powersgd:rank=1"], []),
    ("powersgd rank 2", ["--codec", "powersgd:rank=2"], []),
    ("accordion", ["--policy", "accordion:codec=powersgd:rank=2,low=2,high=1,interval=50"], []),
    ("gravac", ["--policy", "gravac:codec=topk,min=10,max=1000,eps=0.7,window=100"], []),
    ("lgreco", ["--policy", "lgreco:codec=powersgd:rank=2,alpha=1,interval=100"], []),
    ("topk 1%", ["--codec", "topk:density=0.01"], []),
    ("perfmodel", ["--policy", "perfmodel:candidate=powersgd:rank=2,candidate=topk:density=0.01"], []),
    ("DDP (gloo)", None, []),
    ("DDP + PowerSGD rank 1", None, ["--powersgd-rank", "1"]),
    ("DDP + PowerSGD rank 2", None, ["--powersgd-rank", "2"]),
]
ADAPTIVE = ["accordion", "gravac", "lgreco", "perfmodel"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slug(label):
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def run_one(build, work, label, gcomp_args, train_args, seed, steps):
    """One training job; returns its record (progress points, bytes per step, decisions)."""
    base = os.path.join(work, f"{slug(label)}-s{seed}")
    files = {k: f"{base}.{k}.jsonl" for k in ("log", "stats", "decisions")}
    ddp = gcomp_args is None
    argv = [os.path.join(build, "deploy", "gcomp-run"), "--nodes", str(NODES), "--seed", str(seed + 1)]
    argv += ["--codec", "none"] if ddp else gcomp_args + ["--stats-file", files["stats"]]
    argv += ["--", "/usr/bin/python3", os.path.join(HERE, "train_fmnist.py"),
             "--mode", "ddp" if ddp else "hook", "--steps", str(steps), "--seed", str(seed),
             "--log", files["log"]] + train_args
    if not ddp:
        argv += ["--stats-file", files["stats"]]
    env = dict(os.environ, MASTER_PORT=str(free_port()), GCOMP_LOG_LEVEL="warning")
    if not ddp:
        env["GCOMP_DECISION_LOG"] = files["decisions"]
    t0 = time.monotonic()
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    job_s = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{label} seed {seed}: gcomp-run exited {res.returncode}:\n{res.stdout[-4000:]}")
    points = read_jsonl(files["log"])
    by_step = {}  # step -> gradient payload bytes (node 0, all buckets)
    if not ddp:
        for r in read_jsonl(files["stats"]):
            by_step[r["step"]] = by_step.get(r["step"], 0) + payload_bytes(r)
    per_step = sorted(by_step.items())
    decisions = read_jsonl(files["decisions"]) if os.path.exists(files["decisions"]) else []
    total = sum(by_step.values()) if not ddp else points[-1]["bytes"]
    print(f"  {label:24s} seed {seed}: final acc {points[-1]['test_acc']:.4f}, "
          f"{total / 1e6:8.2f} MB, train {points[-1]['elapsed_s']:.1f} s, job {job_s:.1f} s", flush=True)
    return {"label": label, "seed": seed, "points": points, "per_step": per_step,
            "bytes": total, "train_s": points[-1]["elapsed_s"], "job_s": job_s,
            "decisions": decisions, "argv": argv}


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs):
    """Per label: accuracies (final, best), bytes, times over the seeds."""
    rows = {}
    for label, *_ in CONFIGS:
        rs = [r for r in runs if r["label"] == label]
        if not rs:
            continue
        rows[label] = {
            "final": mean_std([r["points"][-1]["test_acc"] for r in rs]),
            "best": mean_std([max(p["test_acc"] for p in r["points"]) for r in rs]),
            "bytes": statistics.mean(r["bytes"] for r in rs),
            "train_s": statistics.mean(r["train_s"] for r in rs),
            "job_s": statistics.mean(r["job_s"] for r in rs),
            "seeds": len(rs),
        }
    return rows


def plot(runs, rows, outdir, name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    fig, (ax_acc, ax_bytes) = plt.subplots(1, 2, figsize=(13, 5))
    for i, label in enumerate(rows):
        color = plt.cm.tab20(i % 20)
        style = "--" if label.startswith("DDP") else "-"
        rs = [r for r in runs if r["label"] == label]
        steps = [p["step"] for p in rs[0]["points"]]
        acc = [statistics.mean(r["points"][k]["test_acc"] for r in rs) for k in range(len(steps))]
        ax_acc.plot(steps, acc, style, color=color, marker="o", ms=3, label=label)
        r0 = rs[0]
        if r0["per_step"]:
            xs = [s + 1 for s, _ in r0["per_step"]]  # stats steps count from 0, the example's from 1
            cum = [b / 1e6 for b in itertools.accumulate(b for _, b in r0["per_step"])]
        else:
            xs, cum = steps, [p["bytes"] / 1e6 for p in r0["points"]]
        ax_bytes.plot(xs, cum, style, color=color, label=label)
    ax_acc.set(xlabel="step", ylabel="test accuracy (mean over seeds)", title="Test accuracy")
    ax_acc.set_ylim(0.6, None)
    ax_bytes.set(xlabel="step", ylabel="MB sent by node 0 (seed 0)", yscale="log", title="Bytes sent")
    ax_acc.legend(fontsize=8)
    ax_acc.grid(alpha=0.3)
    ax_bytes.grid(alpha=0.3)
    fig.tight_layout()
    paths["curves"] = os.path.join(outdir, f"{name}-curves.png")
    fig.savefig(paths["curves"], dpi=110)
    plt.close(fig)

    adaptive = [lab for lab in ADAPTIVE if lab in rows]
    if adaptive:
        fig, axes = plt.subplots(len(adaptive), 1, figsize=(11, 3.2 * len(adaptive)), squeeze=False)
        for ax, label in zip(axes[:, 0], adaptive):
            r0 = next(r for r in runs if r["label"] == label and r["seed"] == min(
                x["seed"] for x in runs if x["label"] == label))
            plot_decisions(ax, r0, r0["points"][-1]["step"])
            ax.set_title(f"{label}: chosen setting per layer (seed {r0['seed']}, --decision-log)")
        fig.tight_layout()
        paths["decisions"] = os.path.join(outdir, f"{name}-decisions.png")
        fig.savefig(paths["decisions"], dpi=110)
        plt.close(fig)
    return paths


def knob(spec):
    """(codec, value of its compression knob or None) of a spec like 'powersgd:rank=2,ef=1'."""
    codec, _, rest = spec.partition(":")
    keys = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
    for k in ("rank", "density", "bits", "levels"):
        if k in keys:
            return codec, k, float(keys[k])
    return codec, None, None


def plot_decisions(ax, run, last_step):
    """Step functions of every compressed layer's setting over the steps."""
    series = {}
    for d in run["decisions"]:
        series.setdefault(d["layer"], []).append((d["step"], d["new"]))
    specs = {spec for s in series.values() for _, spec in s}
    parsed = {spec: knob(spec) for spec in specs}
    kinds = {(c, k) for c, k, _ in parsed.values() if c != "none"}
    numeric = len(kinds) == 1 and None not in {k for _, k in kinds}
    if not kinds:
        ax.text(0.5, 0.8, "every layer stayed dense (none)", transform=ax.transAxes, ha="center")
    if numeric:
        ((codec, key),) = kinds
        ax.set_ylabel(f"{codec} {key}")
        value = {spec: (parsed[spec][2] if parsed[spec][0] != "none" else math.nan) for spec in specs}
        if key == "density":
            ax.set_yscale("log")
    else:  # the codec itself changes: one row per spec
        order = sorted(specs)
        value = {spec: order.index(spec) for spec in specs}
        ax.set_yticks(range(len(order)), order, fontsize=7)
    compressed = {layer for layer, changes in series.items()
                  if any(parsed[spec][0] != "none" for _, spec in changes)}
    shown = [(layer, changes) for layer, changes in sorted(series.items())
             if not compressed or layer in compressed]  # else too small for the codec: dense
    for k, (layer, changes) in enumerate(shown):
        xs, ys = [], []
        for (step, spec), nxt in zip(changes, changes[1:] + [(last_step, None)]):
            xs += [step, nxt[0]]
            ys += [value[spec]] * 2
        # Thick to thin, so that layers with the same choices stay visible.
        ax.plot(xs, ys, label=layer, lw=1.5 + 2.5 * (len(shown) - 1 - k), alpha=0.75)
    ax.set_xlabel("step")
    ax.set_xlim(0, last_step)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def fmt(ms, digits=4):
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def findings(rows):
    """Sentences computed from the table: which settings kept the accuracy, at what bytes."""
    lines = []
    if "none" not in rows:
        return lines
    ref_mean, ref_std = rows["none"]["final"]
    tol = max(2 * ref_std, 0.005)
    ref_bytes = rows["none"]["bytes"]
    kept = [(lab, r) for lab, r in rows.items()
            if lab != "none" and not lab.startswith("DDP") and r["final"][0] >= ref_mean - tol]
    lost = [(lab, r) for lab, r in rows.items()
            if lab != "none" and not lab.startswith("DDP") and r["final"][0] < ref_mean - tol]
    lines.append(f"Reference: `none` ends at {ref_mean:.4f} final test accuracy (± {ref_std:.4f} "
                 f"over seeds); \"kept the accuracy\" below means a mean final accuracy no lower "
                 f"than {ref_mean - tol:.4f} (two standard deviations of `none`, at least 0.5 points).")
    for lab, r in sorted(kept, key=lambda x: x[1]["bytes"]):
        saving = (f" ({ref_bytes / r['bytes']:.1f}x less)" if r["bytes"] < 0.99 * ref_bytes
                  else ": it sent as much")
        lines.append(f"- **{lab}** kept it ({r['final'][0]:.4f}) at {r['bytes'] / ref_bytes:.1%} of "
                     f"`none`'s bytes{saving}.")
    for lab, r in sorted(lost, key=lambda x: x[1]["bytes"]):
        lines.append(f"- **{lab}** did not ({r['final'][0]:.4f}, {r['final'][0] - ref_mean:+.4f}) at "
                     f"{r['bytes'] / ref_bytes:.1%} of the bytes.")
    if "powersgd rank 2" in rows:
        low = rows["powersgd rank 2"]
        for lab in ("accordion", "lgreco"):
            if lab in rows:
                r = rows[lab]
                lines.append(f"- Against its low-compression setting, powersgd rank 2 "
                             f"({low['final'][0]:.4f}, {low['bytes'] / 1e6:.2f} MB), **{lab}** reached "
                             f"{r['final'][0]:.4f} ({r['final'][0] - low['final'][0]:+.4f}) with "
                             f"{r['bytes'] / low['bytes']:.1%} of its bytes.")
    return lines


def write_doc(rows, runs, paths, args, path, wall_s):
    rel = lambda p: os.path.relpath(p, os.path.dirname(path))  # noqa: E731
    ref_bytes = rows["none"]["bytes"] if "none" in rows else None
    out = ["# Convergence: Fashion-MNIST through gcomp", "",
           f"Written by `deploy/dev.sh experiment` (examples/convergence.py, {wall_s / 60:.0f} min "
           f"on this machine); every number below comes from that run.", "",
           "## Setup", "",
           f"- `examples/train_fmnist.py`: a CNN of 105k parameters (two 5x5 convolutions, 8 and "
           f"16 channels, two dense layers; the 128 x 784 layer holds 95%), SGD with momentum "
           f"0.9, learning rate 0.05, tenfold lower from step {args.steps * 3 // 4}; "
           f"{args.steps} steps of 32 images per trainer.",
           f"- {NODES} emulated nodes on one 2-core machine (`gcomp-run --nodes {NODES}`), one "
           f"trainer each, so 128 images a step; gcomp rows go through DDP with "
           f"`gcomp.torch.ddp_comm_hook` (one bucket after DDP's rebuild). PyTorch DDP rows run "
           f"over gloo; their PowerSGD hook starts at step 2 (its minimum), with one DDP bucket "
           f"(torch 1.13's hook deadlocks on gloo with several).",
           f"- Seeds {', '.join(map(str, args.seed_list))} (data order, initial weights, the "
           f"daemons' shared random seed). Test accuracy on all 10,000 test images every 100 steps "
           f"and at the end.",
           "- Bytes: what node 0 put into the exchange, summed over the steps: the daemons' "
           "`payload_bytes` (`--stats-file`, per step and bucket) for gcomp; for DDP the tensors "
           "handed to allreduce (every gradient, or what torch's PowerSGD hook passes to "
           "`all_reduce`). The same measure: one node's contribution, not the ring's traffic.",
           "- Time: the training loop (steps and evaluations) of rank 0, mean over seeds; start-up "
           "(launch, imports, data) is not in it. The machine is shared by other work, so times "
           "are noisy and emulated nodes share memory bandwidth: nothing here measures a network.",
           "", "## Results", "",
           "| setting | final test acc | best test acc | MB sent | bytes vs none | train s |",
           "|---|---|---|---|---|---|"]
    specs = {label: (" ".join(g) if g else "DDP " + " ".join(t)).strip() for label, g, t in CONFIGS}
    for label, r in rows.items():
        ratio = f"{r['bytes'] / ref_bytes:.3f}" if ref_bytes else "-"
        out.append(f"| {label} | {fmt(r['final'])} | {fmt(r['best'])} | {r['bytes'] / 1e6:.2f} | "
                   f"{ratio} | {r['train_s']:.1f} |")
    out += ["", "Mean ± standard deviation over the seeds. Specs:", ""]
    out += [f"- {label}: `{specs[label]}`" for label in rows]
    out += ["", "## What held", ""] + findings(rows)
    out += ["", "## Plots", "", f"![test accuracy and bytes per step]({rel(paths['curves'])})", ""]
    if "decisions" in paths:
        out += ["Each adaptive policy's choice per layer over the steps, from node 0's "
                "`--decision-log` (layers a codec never compresses, biases and the first "
                "convolution, are left out):", "",
                f"![policy decisions]({rel(paths['decisions'])})", ""]
    out += ["## Caveats", "",
            "- Fashion-MNIST, a small CNN and a short run, three seeds: the table says how each "
            "setting trains this model in this many steps and what it sends; it does not rank "
            "the methods for larger models or longer training, and differences smaller than the "
            "seeds' spread mean nothing.",
            "- The policies' parameters are scaled down to a run of this length (Accordion "
            "interval 50 steps, GraVAC window 100, L-GreCo interval 100); the papers use epochs "
            "and windows of hundreds or thousands of steps.",
            "- perfmodel decides from measured latency, bandwidth and codec times: between "
            "emulated nodes that share memory the exchange is nearly free, so it keeps (or "
            "returns to) dense exchange where compression would not shorten the step.",
            ""]
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", required=True)
    p.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs"))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--only", help="comma-separated labels to run (default: all)")
    p.add_argument("--work", help="keep the runs' files here")
    p.add_argument("--name", default="CONVERGENCE")
    args = p.parse_args()
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    only = set(args.only.split(",")) if args.only else None
    configs = [c for c in CONFIGS if only is None or c[0] in only]
    if only and len(configs) != len(only):
        p.error(f"unknown labels in --only; known: {', '.join(c[0] for c in CONFIGS)}")
    work = args.work or tempfile.mkdtemp(prefix="gcomp-convergence-")
    os.makedirs(work, exist_ok=True)
    plots = os.path.join(args.out, "convergence")
    os.makedirs(plots, exist_ok=True)
    t0 = time.monotonic()
    runs = []
    try:
        for label, gcomp_args, train_args in configs:
            for seed in args.seed_list:
                runs.append(run_one(args.build, work, label, gcomp_args, train_args, seed, args.steps))
        rows = summarise(runs)
        paths = plot(runs, rows, plots, slug(args.name.lower()))
        doc = os.path.join(args.out, f"{args.name}.md")
        write_doc(rows, runs, paths, args, doc, time.monotonic() - t0)
        with open(os.path.join(work, "runs.json"), "w") as f:
            json.dump(runs, f)
        print(f"wrote {doc} and {plots}/ in {(time.monotonic() - t0) / 60:.1f} min")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
