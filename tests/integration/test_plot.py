"""gcomp-plot: the parsing (unit tests on hand-written lines) and the plots of real jobs
(gcomp-replay of a synthetic trace under an adaptive policy, its stats and decision log)."""

import json
import os
import struct
import subprocess

import pytest

import make_trace
from gcomp import plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write(path, *lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def stat(step, bucket="b0", node=0, dense=400, payload=100, **times):
    return json.dumps({"step": step, "bucket": bucket, "node": node, "dense_bytes": dense,
                       "payload_bytes": payload, **times})


# ---- parsing ----

def test_step_totals_sum_buckets_and_take_every_phase(tmp_path):
    path = write(tmp_path / "s.jsonl",
                 stat(0, "b0", t_sum_ms=1.0, t_total_ms=3.0),
                 stat(0, "b1", dense=600, payload=50, t_sum_ms=0.5, t_total_ms=2.0),
                 "",
                 stat(1, "b0", t_sum_ms=2.0, t_total_ms=4.0, t_encode_ms=0.25),
                 stat(1, "b0", node=1, dense=9999, t_sum_ms=99.0))
    totals = plot.step_totals(plot.read_stats(path))
    assert totals["step"] == [0, 1]
    assert totals["dense_bytes"] == [1000, 400] and totals["payload_bytes"] == [150, 100]
    phases = totals["phases"]
    assert sorted(phases) == ["t_encode_ms", "t_sum_ms", "t_total_ms"]
    assert phases["t_sum_ms"] == [1.5, 2.0] and phases["t_total_ms"] == [5.0, 4.0]
    assert phases["t_encode_ms"][0] != phases["t_encode_ms"][0]  # NaN: not at step 0
    assert phases["t_encode_ms"][1] == 0.25


@pytest.mark.parametrize("lines,message", [
    ([], "empty (no JSON lines)"),
    (["", "  "], "empty (no JSON lines)"),
    ([stat(0), "{not json"], "line 2: not JSON"),
    ([stat(0), "[1, 2]"], "line 2: expected a JSON object, got list"),
    (['{"step": 0, "dense_bytes": 4}'], "line 1: no field 'payload_bytes'"),
    (['{"step": "0", "dense_bytes": 4, "payload_bytes": 4}'], "field 'step' is '0', not an integer"),
    (['{"step": 0, "dense_bytes": true, "payload_bytes": 4}'], "'dense_bytes' is True, not a number"),
    ([stat(0, t_wait_ms="slow")], "field 't_wait_ms' is 'slow', not a number"),
])
def test_bad_stats_are_refused(tmp_path, lines, message):
    path = write(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(plot.PlotError) as exc:
        plot.read_stats(path)
    assert str(exc.value).startswith(path) and message in str(exc.value), str(exc.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(plot.PlotError, match="nope.jsonl: No such file"):
        plot.read_stats(str(tmp_path / "nope.jsonl"))
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(plot.PlotError, match="bin: not text"):
        plot.read_stats(str(tmp_path / "bin"))


def test_bad_decisions_are_refused(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"step": 0, "layer": "fc", "new": "none"}',
                 '{"step": 1, "layer": "fc", "new": null}')
    with pytest.raises(plot.PlotError, match=r"d.jsonl line 2: field 'new' is None, not a string"):
        plot.read_decisions(path)


@pytest.mark.parametrize("spec,want", [
    ("powersgd:rank=2,warm_start=1,power_iters=1,min_compression_rate=2,residual=0,ef=1",
     ("powersgd", "rank", 2.0)),
    ("topk:density=0.01,ef=1", ("topk", "density", 0.01)),
    ("maxmin:bits=4,bucket=512,stochastic=0,ef=1", ("maxmin", "bits", 4.0)),
    ("none", ("none", None, None)),
    ("signsgd:ef=0", ("signsgd", None, None)),
    ("fp16:ef=0,min_elements=4096", ("fp16", None, None)),
])
def test_codec_param(spec, want):
    assert plot.codec_param(spec) == want


def test_layer_series_in_step_order():
    decisions = [{"step": 5, "layer": "a", "new": "powersgd:rank=1,ef=1"},
                 {"step": 0, "layer": "a", "new": "powersgd:rank=2,ef=1"},
                 {"step": 0, "layer": "b", "new": "none"}]
    assert plot.layer_series(decisions) == {
        "a": [(0, "powersgd", "rank", 2.0), (5, "powersgd", "rank", 1.0)],
        "b": [(0, "none", None, None)]}


# ---- real jobs ----

@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("trace") / "small")
    make_trace.write_trace(path, 2, 12, make_trace.preset_buckets("small"), seed=5)
    return path


def replay(build, trace, out, decisions, *args):
    res = subprocess.run([build.gcomp_replay, trace, "--out", str(out), "--nodes", "2", *args],
                         capture_output=True, text=True, timeout=240,
                         env=build.env(GCOMP_DECISION_LOG=str(decisions), GCOMP_LOG_LEVEL="warning"))
    assert res.returncode == 0, res.stderr
    return os.path.join(out, "stats.jsonl")


def png_size(path):
    """(width, height) of a PNG file; AssertionError if it is not one."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("policy", ["accordion:codec=powersgd:rank=2,low=2,high=1,interval=2",
                                    "lgreco:codec=powersgd:rank=4,alpha=1,interval=3"])
def test_plots_of_a_replay(build, trace, tmp_path, policy):
    decisions = tmp_path / "decisions.jsonl"
    stats = replay(build, trace, tmp_path / "out", decisions, "--policy", policy)
    pngs = tmp_path / "png"
    res = subprocess.run([build.root + "/deploy/gcomp-plot", stats, "--decisions", str(decisions),
                          "-o", str(pngs)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    names = ["bytes.png", "ratio.png", "times.png", "decisions.png"]
    assert res.stdout.split() == [str(pngs / n) for n in names], res.stdout
    for name in names:
        width, height = png_size(pngs / name)
        assert width > 200 and height > 200, (name, width, height)
    import matplotlib.image
    assert matplotlib.image.imread(str(pngs / "decisions.png")).ndim == 3
    # What decisions.png shows: compressed layers with a PowerSGD rank, others dense.
    series = plot.layer_series(plot.read_decisions(str(decisions)))
    ranks = {v for points in series.values() for _, codec, key, v in points if key == "rank"}
    assert ranks and ranks <= {1.0, 2.0, 3.0, 4.0}, series
    if policy.startswith("accordion"):
        assert ranks == {1.0, 2.0}, series  # high compression after the first interval
    totals = plot.step_totals(plot.read_stats(stats))
    assert totals["step"] == list(range(12))
    assert all(d > p for d, p in zip(totals["dense_bytes"], totals["payload_bytes"]))
    assert {"t_sum_ms", "t_exchange_ms", "t_total_ms"} <= set(totals["phases"])


@pytest.mark.parametrize("codec,want", [
    ("topk:density=0.05", ("topk", "density", 0.05)),
    ("powersgd:rank=3", ("powersgd", "rank", 3.0)),
    ("maxmin:bits=3", ("maxmin", "bits", 3.0)),
    ("qsgd:levels=15", ("qsgd", "levels", 15.0)),
    ("threshold:lambda=0.01", ("threshold", "lambda", 0.01)),
    ("signsgd", ("signsgd", None, None)),
])
def test_codec_param_of_the_daemons_specs(build, trace, tmp_path, codec, want):
    # The daemon writes a codec's compression parameter first in the specs it logs.
    decisions = tmp_path / "decisions.jsonl"
    replay(build, trace, tmp_path / "out", decisions, "--codec", codec, "--steps", "0:1")
    specs = {d["new"] for d in plot.read_decisions(str(decisions))} - {"none"}
    assert specs and {plot.codec_param(s) for s in specs} == {want}, specs


def test_command_line_errors(build, tmp_path):
    tool = build.root + "/deploy/gcomp-plot"
    res = subprocess.run([tool, str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "missing.jsonl: No such file" in res.stderr, res.stderr
    bad = write(tmp_path / "s.jsonl", stat(0), "garbage")
    res = subprocess.run([tool, bad, "-o", str(tmp_path / "o")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1 and f"{bad} line 2: not JSON" in res.stderr, res.stderr
    assert not (tmp_path / "o").exists(), "nothing is written for bad input"
    res = subprocess.run([tool, bad], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "-o" in res.stderr, res.stderr
