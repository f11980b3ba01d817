"""The UCX data plane (--transport ucx) on loopback, against the MPI data plane.

- Exact means (codec none, integer-valued data, 4 trainers in all so the 1/4 scaling is
  exact) on 2 and 3 nodes, over UCX_TLS=tcp and over shared memory (posix,sysv,self):
  bit-identical to the MPI data plane's result and to the exact mean. Buckets from one
  element (fewer elements than nodes) to 24 MB (more ring segments than the transport
  keeps in flight), in place and out of place, on several lanes at once.
- Codecs: allgatherv (topk), allreduce phases (powersgd), fp16/bf16 allreduces: the
  same bytes as with --transport mpi on 2 nodes (a + b either way), close on 3 nodes.
- A daemon killed (SIGKILL) or stopped (SIGSTOP) while its UCX transfer is on the wire
  (loopback shaped to 100 Mbit/s): the other node's trainer gets an error within the
  timeout, never a hang (naming node 1, except when mpirun takes the job down first).

Skipped, with the reason, when the build has no UCX data plane.
"""

import json
import os
import subprocess

import numpy as np
import pytest

import gcomp

from helpers import HERE, PYTHON, mpirun_base, transport_missing
from test_stall import namespace_works

TLS = {"tcp": {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "lo"},
       "shm": {"UCX_TLS": "posix,sysv,self"}}

# name -> layers: 1 element, a few elements, a mid-sized one, 24 MB.
BUCKETS = {"tiny": [("b", (1,))],
           "small": [("w", (3, 5)), ("b", (2,))],
           "mid": [("w", (300, 257)), ("b", (300,))],
           "big": [("w", (3000, 2000))]}
STEPS = 2


@pytest.fixture(scope="module")
def ucx(build):
    why = transport_missing(build, "ucx")
    if why:
        pytest.skip(why)


def data(node, rank, bucket, step, n):
    """Integer-valued gradients: every sum of them is exact in any order."""
    seed = [node, rank, sorted(BUCKETS).index(bucket), step]
    return np.random.default_rng(seed).integers(-1000, 1000, n).astype(np.float32)


def run_job(start_daemons, trainers, transport, codec="none", env=None, lanes=4):
    """Every trainer submits every bucket for STEPS steps; returns
    {(node, rank, bucket): [result per step]}."""
    d = start_daemons(trainers, codec=codec, env=env,
                      extra=["--transport", transport, "--lanes", str(lanes)])
    cs = [(node, r, gcomp.Client(socket=d.sock(node), job_id=d.job_id, local_rank=r))
          for node, count in enumerate(trainers) for r in range(count)]
    out = {}
    try:
        bs = [(node, r, {name: c.register(name, layers) for name, layers in BUCKETS.items()})
              for node, r, c in cs]
        for step in range(STEPS):
            for node, r, row in bs:
                for name, b in row.items():
                    b.data[:] = data(node, r, name, step, b.numel)
                    b.submit(step)
            for node, r, row in bs:
                for name, b in row.items():
                    b.wait(60000)
                    out.setdefault((node, r, name), []).append(b.result.copy())
    finally:
        for _, _, c in cs:
            c.close()
    res, rc = d.shutdown()
    assert rc == 0, d.log()
    assert "transport " + transport in d.log(), d.log()
    return out


def exact_mean(trainers, bucket, step, n):
    total = sum(data(node, r, bucket, step, n).astype(np.float64)
                for node, count in enumerate(trainers) for r in range(count))
    return (total / sum(trainers)).astype(np.float32)


_mpi_results = {}


def mpi_result(start_daemons, trainers, codec):
    key = (tuple(trainers), codec)
    if key not in _mpi_results:
        _mpi_results[key] = run_job(start_daemons, trainers, "mpi", codec)
    return _mpi_results[key]


@pytest.mark.parametrize("tls", sorted(TLS))
@pytest.mark.parametrize("trainers", [[2, 2], [2, 1, 1]], ids=["2nodes", "3nodes"])
def test_exact_mean_bit_identical_to_mpi(build, ucx, start_daemons, trainers, tls):
    got = run_job(start_daemons, trainers, "ucx", env=TLS[tls])
    ref = mpi_result(start_daemons, trainers, "none")
    for (node, r, name), steps in got.items():
        for step, res in enumerate(steps):
            want = exact_mean(trainers, name, step, res.size)
            np.testing.assert_array_equal(res, want, err_msg=f"{node}/{r} {name} step {step}")
            assert res.tobytes() == ref[(node, r, name)][step].tobytes(), (node, r, name, step)


@pytest.mark.parametrize("codec", ["topk:density=0.01", "powersgd:rank=2", "fp16", "bf16"])
def test_codecs_bit_identical_to_mpi_on_2_nodes(build, ucx, start_daemons, codec):
    trainers = [1, 1]
    got = run_job(start_daemons, trainers, "ucx", codec, env=TLS["tcp"])
    ref = mpi_result(start_daemons, trainers, codec)
    for key, steps in got.items():
        for step, res in enumerate(steps):
            assert np.all(np.isfinite(res)), (key, step)
            assert res.tobytes() == ref[key][step].tobytes(), (codec, key, step)


@pytest.mark.parametrize("codec", ["topk:density=0.01", "powersgd:rank=2"])
def test_codecs_on_3_nodes_match_mpi(build, ucx, start_daemons, codec):
    """Allgatherv on 3 nodes is exact movement (the same bytes; the dense 1-D layers' sums are
    exact with 4 trainers); PowerSGD's float sums on 3 nodes are added in the ring's order,
    so they agree with MPI's to rounding."""
    trainers = [2, 1, 1]
    got = run_job(start_daemons, trainers, "ucx", codec, env=TLS["shm"])
    ref = mpi_result(start_daemons, trainers, codec)
    for key, steps in got.items():
        for step, res in enumerate(steps):
            same_node0 = got[(0, 0, key[2])][step]
            assert np.all(np.isfinite(res)), (key, step)
            assert res.tobytes() == same_node0.tobytes(), (key, step)  # every node alike
            if codec.startswith("topk"):
                assert res.tobytes() == ref[key][step].tobytes(), (key, step)
            else:
                np.testing.assert_allclose(res, ref[key][step], rtol=1e-4, atol=1e-2)


def test_ucx_tls_is_honoured_and_a_bad_one_fails_cleanly(build, ucx, tmp_path):
    """UCX_TLS reaches UCX: transports this machine lacks make start-up fail on every node
    with a message naming ucp_init and UCX_TLS (it once crashed in the clean-up)."""
    r = subprocess.run(mpirun_base() + ["-x", "UCX_TLS", "-np", "2", build.gcompd, "--job-id",
                                        "x", "--dir", str(tmp_path / "s"), "--transport", "ucx"],
                       capture_output=True, text=True, timeout=60,
                       env=build.env(UCX_TLS="rc_verbs"))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Segmentation fault" not in out and "signal" not in out, out
    assert "transport ucx: ucp_init:" in out and "UCX_TLS=rc_verbs" in out, out


@pytest.mark.parametrize("sig", ["KILL", "STOP"])
def test_node_hit_during_a_ucx_transfer_is_named(build, ucx, sig):
    why = namespace_works()
    if why:
        pytest.skip(why)
    timeout_ms = 3000
    r = subprocess.run(["unshare", "-n", PYTHON, os.path.join(HERE, "stall_scenario.py"),
                        "100mbit", str(timeout_ms), sig, "ucx"], capture_output=True,
                       text=True, timeout=180, env=build.env(GCOMP_BUILD_DIR=build.root))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert not res["ok"], res
    assert "transport ucx" in res["log"], res["log"]
    if sig == "STOP":
        assert "node 1 stopped answering" in res["message"], res
        assert res["name"] == "GCOMP_STALL", res
        assert res["elapsed_s"] < timeout_ms / 1000 + 2 + 3, res
    else:
        # A dead node: UCX fails the transfer (the peer is named), or, when MPI's control
        # plane notices first, mpirun takes the job down and node 0's trainer loses its
        # daemon. Either way an error at once, never a hang.
        assert res["name"] in ("GCOMP_PEER_LOST", "GCOMP_DAEMON_LOST"), res
        if res["name"] == "GCOMP_PEER_LOST":
            assert "node 1 stopped answering" in res["message"], res
        assert res["elapsed_s"] < 5, res
