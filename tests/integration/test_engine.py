"""The engine's pipeline, lanes, worker pool and data-plane choice, on real daemons."""

import json
import os
import random
import subprocess

import numpy as np
import pytest

import gcomp

from helpers import mpirun_base, transport_missing


def clients(d, trainers):
    """One in-process client per trainer slot of every node, node-major."""
    out = []
    for node, count in enumerate(trainers):
        for r in range(count):
            out.append(gcomp.Client(socket=d.sock(node), job_id=d.job_id, local_rank=r))
    return out


def bucket_layers(k):
    """Bucket k's layers: a few shapes, some large enough to be compressed."""
    rng = random.Random(k)
    layers = []
    for j in range(rng.randint(1, 4)):
        if rng.random() < 0.5:
            layers.append((f"b{k}.l{j}.w", (rng.randint(8, 80), rng.randint(16, 120))))
        else:
            layers.append((f"b{k}.l{j}.b", (rng.randint(1, 300),)))
    return layers


def run_steps(cs, nbuckets, steps, seed):
    """Every trainer registers nbuckets buckets and, per step, fills and submits them in
    its own random order, then waits for all. Returns {(trainer, bucket): [results]} and
    the inputs {(trainer, bucket, step): data}."""
    buckets = [[c.register(f"bucket{k:03d}", bucket_layers(k)) for k in range(nbuckets)] for c in cs]
    results, inputs = {}, {}
    for step in range(steps):
        for t, row in enumerate(buckets):
            order = list(range(nbuckets))
            random.Random(seed * 1000 + step * 10 + t).shuffle(order)
            for k in order:
                b = row[k]
                data = np.random.default_rng([seed, step, t, k]).standard_normal(b.numel).astype(np.float32)
                inputs[(t, k, step)] = data
                b.data[:] = data
                b.submit(step)
        for t, row in enumerate(buckets):
            order = list(range(nbuckets))
            random.Random(seed * 7 + step * 3 + t).shuffle(order)
            for k in order:
                row[k].wait(60000)
                results.setdefault((t, k), []).append(row[k].result.copy())
    return results, inputs


@pytest.mark.parametrize("lanes,threads,transport", [(4, 0, "mpi"), (1, 1, "mpi"), (7, 3, "mpi"),
                                                     (7, 0, "ucx")])
def test_many_buckets_out_of_order_are_exact(build, start_daemons, tmp_path, lanes, threads,
                                             transport):
    why = transport_missing(build, transport)
    if why:
        pytest.skip(why)
    trainers = [2, 2]
    stats = tmp_path / "stats-{node}.jsonl"
    d = start_daemons(trainers, codec="none",
                      extra=["--lanes", str(lanes), "--threads", str(threads),
                             "--stats-file", str(stats), "--transport", transport])
    cs = clients(d, trainers)
    try:
        nb, steps = 40, 3
        results, inputs = run_steps(cs, nb, steps, seed=lanes)
        T = len(cs)
        for k in range(nb):
            for step in range(steps):
                mean = np.mean([inputs[(t, k, step)] for t in range(T)], axis=0, dtype=np.float64)
                for t in range(T):
                    np.testing.assert_allclose(results[(t, k)][step], mean, rtol=1e-5, atol=1e-6)
    finally:
        for c in cs:
            c.close()
    d.shutdown()
    lines = [json.loads(line) for line in open(tmp_path / "stats-0.jsonl")]
    assert len(lines) == 40 * 3
    assert {rec["lane"] for rec in lines} == set(range(min(lanes, 40)))
    for key in ("t_encode_ms", "t_collective_ms", "t_decode_ms", "t_prep_ms", "t_wait_ms"):
        assert all(rec[key] >= 0 for rec in lines), key


@pytest.mark.parametrize("codec,transport", [("topk:density=0.1", "mpi"), ("powersgd:rank=2", "mpi"),
                                             ("signsgd", "mpi"), ("dgc:density=0.05", "mpi"),
                                             ("dgc:density=0.05", "ucx")])
def test_many_buckets_same_result_on_every_node(build, start_daemons, codec, transport):
    """Lossy codecs with several groups and phases per bucket, many buckets in flight:
    every trainer of every node gets the same bytes, every step."""
    why = transport_missing(build, transport)
    if why:
        pytest.skip(why)
    trainers = [1, 2]
    d = start_daemons(trainers, codec=codec + ",min_elements=64",
                      extra=["--transport", transport])
    cs = clients(d, trainers)
    try:
        results, _ = run_steps(cs, 24, 3, seed=5)
        for k in range(24):
            for step in range(3):
                ref = results[(0, k)][step]
                assert np.all(np.isfinite(ref))
                for t in range(1, len(cs)):
                    np.testing.assert_array_equal(results[(t, k)][step], ref)
    finally:
        for c in cs:
            c.close()


def test_transports_not_built_and_unknown(build):
    base = mpirun_base() + ["-np", "1", build.gcompd, "--job-id", "x", "--dir", "/tmp/gcomp-notbuilt"]
    r = subprocess.run(base + ["--transport", "nccl"], capture_output=True, text=True, timeout=60,
                       env=build.env())
    assert r.returncode != 0
    assert "not built in" in r.stderr + r.stdout
    r = subprocess.run(base + ["--transport", "carrier-pigeon"], capture_output=True, text=True,
                       timeout=60, env=build.env())
    assert r.returncode != 0
    assert "unknown transport 'carrier-pigeon'" in r.stderr
    assert "mpi" in r.stderr and "nccl" in r.stderr
    help_text = subprocess.run([build.gcompd, "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    assert "nccl" in help_text and "(not built in)" in help_text
    assert "--threads" in help_text and "--lanes" in help_text


@pytest.mark.parametrize("flag,value", [("--threads", "-1"), ("--threads", "x"), ("--lanes", "0")])
def test_bad_engine_flags(build, flag, value):
    r = subprocess.run([build.gcompd, "--job-id", "x", flag, value], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2
    assert flag in r.stderr


def test_checkpoint_of_another_version_is_refused(build, start_daemons, tmp_path):
    trainers = [1, 1]
    d = start_daemons(trainers, codec="topk:density=0.5,min_elements=0")
    cs = clients(d, trainers)
    try:
        bs = [c.register("b", [("w", (16, 16))]) for c in cs]
        for b in bs:
            b.data[:] = 1.0
            b.submit(0)
        for b in bs:
            b.wait(30000)
    finally:
        for c in cs:
            c.close()
    ckpt = tmp_path / "ckpt"
    r = d.gcompctl("checkpoint", "save", str(ckpt), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    d.shutdown()
    raw = bytearray((ckpt / "node0.ckpt").read_bytes())
    assert raw[:4] == b"GCKP"
    raw[4] = 9  # format version 9
    (ckpt / "node0.ckpt").write_bytes(bytes(raw))
    r = subprocess.run(mpirun_base() + ["-np", "2", build.gcompd, "--job-id", "r",
                                        "--dir", str(tmp_path / "sock"), "--restore", str(ckpt)],
                       capture_output=True, text=True, timeout=60, env=build.env())
    assert r.returncode != 0
    assert "format version 9" in r.stderr and "reads versions 1..1" in r.stderr, r.stderr
