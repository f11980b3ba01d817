"""gcomp-replay end to end: outputs equal the exact mean of the trace, stats.jsonl has
one well-formed record per step and bucket, and invalid traces are refused clearly."""

import json
import math
import os
import signal

import numpy as np
import pytest

import make_trace
from helpers import run

STEPS = 2
STATS_FIELDS = ("step", "bucket", "node", "nodes", "dense_bytes", "payload_bytes",
                "t_sum_ms", "t_exchange_ms", "t_total_ms", "layers")


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """W=4 and W=3 traces with 2-4 buckets of random sizes, plus the small CNN preset."""
    root = tmp_path_factory.mktemp("traces")
    made = {}
    for workers, seed in ((4, 11), (3, 12)):
        path = str(root / f"w{workers}")
        rng = np.random.default_rng(seed)
        make_trace.write_trace(path, workers, STEPS, make_trace.random_buckets(rng, nbuckets=3),
                               seed=seed)
        made[workers] = path
    made["small"] = str(root / "small")
    make_trace.write_trace(made["small"], 2, STEPS, make_trace.preset_buckets("small"), seed=3)
    return made


def replay(build, trace, out, *args, timeout=240):
    return run([build.gcomp_replay, trace, "--out", str(out), *args], timeout, signal.SIGTERM,
               env=build.env())


def check_outputs(trace, out, nodes):
    with open(os.path.join(trace, "manifest.json")) as f:
        manifest = json.load(f)
    workers = manifest["workers"]
    numel = {b["name"]: sum(math.prod(layer["shape"]) for layer in b["layers"])
             for b in manifest["buckets"]}
    for step in range(manifest["steps"]):
        for name in numel:
            path = os.path.join(out, f"s{step}", f"{name}.npy")
            assert os.path.exists(path), f"{path} missing"
            got = np.load(path)
            assert got.dtype == np.float32 and got.shape == (numel[name],), (path, got.dtype, got.shape)
            want = make_trace.exact_mean(trace, step, name, workers)
            assert np.allclose(got, want, rtol=1e-5, atol=1e-6), \
                f"{path}: max error {np.max(np.abs(got - want))}"

    stats_path = os.path.join(out, "stats.jsonl")
    assert os.path.exists(stats_path), "stats.jsonl missing"
    with open(stats_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    keys = sorted((r.get("step"), r.get("bucket")) for r in records)
    assert keys == sorted((s, n) for s in range(manifest["steps"]) for n in numel), \
        f"expected one record per step and bucket, got {keys}"
    layers_of = {b["name"]: [layer["name"] for layer in b["layers"]] for b in manifest["buckets"]}
    for r in records:
        missing = [k for k in STATS_FIELDS if k not in r]
        assert not missing, f"stats record lacks {missing}: {r}"
        assert r["node"] == 0 and r["nodes"] == nodes, r
        assert r["dense_bytes"] == 4 * numel[r["bucket"]], r
        assert r["payload_bytes"] == r["dense_bytes"], f"codec none must send dense bytes: {r}"
        for k in ("t_sum_ms", "t_exchange_ms", "t_total_ms"):
            assert isinstance(r[k], (int, float)) and r[k] >= 0, (k, r)
        assert [layer["name"] for layer in r["layers"]] == layers_of[r["bucket"]], r["layers"]
        assert all(layer["codec"] == "none" for layer in r["layers"]), r["layers"]


@pytest.mark.parametrize("workers,nodes", [(4, 1), (4, 2), (4, 3), (4, 4), (3, 1), (3, 2), (3, 3)])
def test_replay_is_exact(build, traces, tmp_path, workers, nodes):
    res = replay(build, traces[workers], tmp_path / "out", "--nodes", str(nodes), "--codec", "none")
    assert res.returncode == 0, f"gcomp-replay failed ({res.returncode}):\n{res.stderr}"
    check_outputs(traces[workers], tmp_path / "out", nodes)


def test_replay_default_nodes_small_cnn(build, traces, tmp_path):
    # Default --nodes = workers (2); the small CNN preset has 5 buckets.
    res = replay(build, traces["small"], tmp_path / "out", "--codec", "none")
    assert res.returncode == 0, res.stderr
    check_outputs(traces["small"], tmp_path / "out", 2)


def test_spread():
    from gcomp.replay import spread
    assert spread(4, 3) == [2, 1, 1]
    assert spread(3, 2) == [2, 1]
    assert spread(5, 5) == [1] * 5
    with pytest.raises(ValueError):
        spread(2, 3)


def _copy_trace(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return str(dst)


def test_invalid_traces(build, traces, tmp_path):
    src = traces[3]

    bad = _copy_trace(src, tmp_path / "format")
    path = os.path.join(bad, "manifest.json")
    m = json.load(open(path))
    m["format"] = "gcomp-trace/9"
    json.dump(m, open(path, "w"))
    res = replay(build, bad, tmp_path / "o1")
    assert res.returncode == 1 and "manifest.json" in res.stderr and "gcomp-trace/9" in res.stderr, res.stderr

    bad = _copy_trace(src, tmp_path / "missing")
    victim = os.path.join(bad, "w2", "s1", "b1.npy")
    os.remove(victim)
    res = replay(build, bad, tmp_path / "o2")
    assert res.returncode == 1 and victim in res.stderr and "missing" in res.stderr, res.stderr

    bad = _copy_trace(src, tmp_path / "size")
    victim = os.path.join(bad, "w1", "s0", "b0.npy")
    np.save(victim, np.zeros(np.load(victim).size + 1, dtype=np.float32))
    res = replay(build, bad, tmp_path / "o3")
    assert res.returncode == 1 and victim in res.stderr and "elements" in res.stderr, res.stderr

    bad = _copy_trace(src, tmp_path / "dtype")
    victim = os.path.join(bad, "w0", "s1", "b2.npy")
    np.save(victim, np.load(victim).astype(np.float64))
    res = replay(build, bad, tmp_path / "o4")
    assert res.returncode == 1 and victim in res.stderr and "float32" in res.stderr, res.stderr

    bad = _copy_trace(src, tmp_path / "shape")
    path = os.path.join(bad, "manifest.json")
    m = json.load(open(path))
    m["buckets"][0]["layers"][0]["shape"] = [0, 3]
    json.dump(m, open(path, "w"))
    res = replay(build, bad, tmp_path / "o5")
    assert res.returncode == 1 and "shape" in res.stderr and "b0" in res.stderr, res.stderr

    res = replay(build, src, tmp_path / "o6", "--nodes", "4")
    assert res.returncode == 2 and "more than the trace's 3 workers" in res.stderr, res.stderr

    res = replay(build, str(tmp_path / "nothing"), tmp_path / "o7")
    assert res.returncode == 1 and "manifest.json" in res.stderr, res.stderr
