"""gcomp-plot: PNG plots of a job's statistics and policy decisions.

Usage::

    gcomp-plot STATS.jsonl [--decisions DECISIONS.jsonl] -o DIR

STATS.jsonl is what gcompd's --stats-file writes (one JSON object per step and bucket,
see the README's "Replay a gradient trace"); DECISIONS.jsonl what --decision-log writes
(one object per layer whose codec changes: step, bucket, layer, old, new, why). Written
to DIR (created if needed), with matplotlib's Agg backend:

- ``bytes.png``: dense and payload bytes per step (summed over the step's buckets);
- ``ratio.png``: the compression ratio per step, dense / payload bytes;
- ``times.png``: every phase time the records carry (each ``t_*_ms`` field: t_sum_ms,
  t_wait_ms, t_exchange_ms, t_total_ms, and any added later), summed over the step's
  buckets;
- ``decisions.png`` (with --decisions): per layer that is ever compressed, the codec
  parameter the policy chose over the steps: the first parameter of the codec spec
  ("powersgd:rank=2,..." -> rank 2; gcompd writes each codec's compression parameter
  first: rank, density, bits, levels, lambda), the codec named where it changes, and the
  steps without a parameter shaded (dense, codec none, or a codec without one, such as
  signsgd).

A file holding several nodes' records (stats written with --stats-file PATH without
{node}, or files put together) is plotted for its lowest node. Input that cannot be
plotted (a missing or empty file, a line that is not a JSON object or lacks a field)
is refused with a message naming the file and the line; exit status 1 (2 for bad
arguments).
"""

import argparse
import json
import math
import os
import sys

# Keys every codec takes; not a codec's own parameter.
COMMON_KEYS = ("ef", "min_elements")
_INT, _NUMBER, _TEXT = (int, "an integer"), ((int, float), "a number"), (str, "a string")
# The fields a record must have: name -> (types, what the message calls them).
STATS_FIELDS = {"step": _INT, "dense_bytes": _NUMBER, "payload_bytes": _NUMBER}
DECISION_FIELDS = {"step": _INT, "layer": _TEXT, "new": _TEXT}


class PlotError(Exception):
    """Input that cannot be plotted; the message names the file (and line)."""


def read_jsonl(path, fields):
    """The JSON objects of a JSON-lines file, each checked to have `fields` (name ->
    (types, description)); t_*_ms fields must be numbers too. Blank lines are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as exc:
        raise PlotError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise PlotError(f"{path}: not text ({exc.reason})") from None
    records = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PlotError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise PlotError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        phases = {k: _NUMBER for k in rec if k.startswith("t_") and k.endswith("_ms")}
        for name, (kind, what) in {**fields, **phases}.items():
            if name not in rec:
                raise PlotError(f"{where}: no field {name!r}")
            if not isinstance(rec[name], kind) or isinstance(rec[name], bool):
                raise PlotError(f"{where}: field {name!r} is {rec[name]!r}, not {what}")
        records.append(rec)
    if not records:
        raise PlotError(f"{path}: empty (no JSON lines)")
    return records


def read_stats(path):
    return read_jsonl(path, STATS_FIELDS)


def read_decisions(path):
    return read_jsonl(path, DECISION_FIELDS)


def lowest_node(records):
    """The records of the lowest node present (all of them when none has a node)."""
    nodes = {r.get("node") for r in records if r.get("node") is not None}
    if len(nodes) <= 1:
        return records
    first = min(nodes)
    return [r for r in records if r.get("node") == first]


def step_totals(records):
    """Per step (ascending): {"step": [...], "dense_bytes": [...], "payload_bytes": [...],
    "phases": {t_*_ms: [...]}}, summed over the step's buckets; a phase a record lacks
    counts 0 for it, a phase no record of a step has is NaN there."""
    records = lowest_node(records)
    steps = sorted({r["step"] for r in records})
    index = {s: i for i, s in enumerate(steps)}
    phases = sorted({k for r in records for k in r if k.startswith("t_") and k.endswith("_ms")})
    out = {"step": steps, "dense_bytes": [0.0] * len(steps), "payload_bytes": [0.0] * len(steps),
           "phases": {p: [math.nan] * len(steps) for p in phases}}
    for r in records:
        i = index[r["step"]]
        out["dense_bytes"][i] += r["dense_bytes"]
        out["payload_bytes"][i] += r["payload_bytes"]
        for p in phases:
            if p in r:
                old = out["phases"][p][i]
                out["phases"][p][i] = r[p] if math.isnan(old) else old + r[p]
    return out


def codec_param(spec):
    """(codec, key, value) of a decision's codec spec: its first parameter that is not
    one every codec takes ("powersgd:rank=2,ef=1" -> ("powersgd", "rank", 2.0));
    key and value None for a codec without one ("none", "signsgd:ef=1")."""
    name, _, rest = spec.partition(":")
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key in COMMON_KEYS:
            continue
        try:
            return name, key, float(value)
        except ValueError:
            continue
    return name, None, None


def layer_series(decisions):
    """{layer: [(step, codec, key, value), ...]} in step order, from the decision log."""
    series = {}
    for d in sorted(decisions, key=lambda d: d["step"]):
        series.setdefault(d["layer"], []).append((d["step"], *codec_param(d["new"])))
    return series


# ---- the plots ----

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_stats(totals, out_dir, title):
    """bytes.png, ratio.png and times.png; returns their paths."""
    plt = _pyplot()
    steps = totals["step"]
    written = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, totals["dense_bytes"], marker=".", label="dense bytes")
    ax.plot(steps, totals["payload_bytes"], marker=".", label="payload bytes")
    ax.set(xlabel="step", ylabel="bytes per step (all buckets)", title=f"{title}: bytes")
    ax.set_yscale("log")
    ax.legend()
    written.append(_save(fig, out_dir, "bytes.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ratio = [d / p if p else math.nan for d, p in zip(totals["dense_bytes"], totals["payload_bytes"])]
    ax.plot(steps, ratio, marker=".", color="tab:green")
    ax.set(xlabel="step", ylabel="dense / payload bytes", title=f"{title}: compression ratio")
    written.append(_save(fig, out_dir, "ratio.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for phase, values in totals["phases"].items():
        ax.plot(steps, values, marker=".", label=phase)
    ax.set(xlabel="step", ylabel="ms per step (sum over buckets)", title=f"{title}: phase times")
    if totals["phases"]:
        ax.legend()
    written.append(_save(fig, out_dir, "times.png"))
    plt.close(fig)
    return written


def plot_decisions(series, last_step, out_dir, title):
    """decisions.png: one panel per layer that is ever compressed; returns its path."""
    plt = _pyplot()
    layers = [name for name, points in series.items() if any(p[2] for p in points)]
    dense_only = len(series) - len(layers)
    rows = max(1, len(layers))
    fig, axes = plt.subplots(rows, 1, figsize=(8, 1.6 * rows + 1.2), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], layers):
        points = series[name]
        ends = [p[0] for p in points[1:]] + [max(last_step, points[-1][0]) + 1]
        keys = sorted({p[2] for p in points if p[2]})
        xs = [p[0] for p in points] + [ends[-1]]
        ys = [p[3] if p[2] else math.nan for p in points]
        ax.plot(xs, ys + ys[-1:], drawstyle="steps-post", color="tab:blue")
        previous = None
        for (step, codec, key, value), end in zip(points, ends):
            if key is None:
                ax.axvspan(step, end, color="0.85", lw=0)
            if codec != previous:  # name the codec where it changes
                ax.text(step, 0.9, f" {'dense' if codec == 'none' else codec}", fontsize=7,
                        transform=ax.get_xaxis_transform(), va="top")
            previous = codec
        ax.set_ylabel(f"{'/'.join(keys)}", fontsize=8)
        ax.set_title(name, fontsize=9, loc="left")
    if not layers:
        axes[0, 0].text(0.5, 0.5, "no layer was ever compressed", ha="center",
                        transform=axes[0, 0].transAxes)
    axes[-1, 0].set_xlabel("step")
    note = f" ({dense_only} layer(s) always dense not shown)" if dense_only and layers else ""
    fig.suptitle(f"{title}: codec parameter per layer{note}", fontsize=10)
    path = _save(fig, out_dir, "decisions.png")
    plt.close(fig)
    return path


def build_parser():
    p = argparse.ArgumentParser(
        prog="gcomp-plot",
        description="Plot a gcomp job's statistics (--stats-file) and policy decisions "
                    "(--decision-log) as PNG files.")
    p.add_argument("stats", metavar="STATS.jsonl", help="statistics, JSON lines")
    p.add_argument("--decisions", metavar="DECISIONS.jsonl", help="policy decisions, JSON lines")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="directory for the PNGs")
    return p


def main(argv=None):
    """Entry point of gcomp-plot; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        stats = read_stats(args.stats)
        decisions = read_decisions(args.decisions) if args.decisions else None
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as exc:
            raise PlotError(f"{args.out}: {exc.strerror}") from None
    except PlotError as exc:
        print(f"gcomp-plot: {exc}", file=sys.stderr)
        return 1
    totals = step_totals(stats)
    title = os.path.basename(args.stats)
    written = plot_stats(totals, args.out, title)
    if decisions is not None:
        written.append(plot_decisions(layer_series(decisions), totals["step"][-1], args.out,
                                      os.path.basename(args.decisions)))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
