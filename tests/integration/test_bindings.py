"""The Python bindings themselves: error mapping, Client/Bucket behaviour, zero copy."""

import ctypes
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from helpers import PYTHON, run

import gcomp
from gcomp import _lib


def test_status_table_matches_library(build):
    for status in gcomp.Status:
        assert _lib.err_name(status) == f"GCOMP_{status.name}", status
        assert _lib.strerror(status) not in ("", "unknown error"), status
    assert _lib.strerror(-12345) == "unknown error"


def test_error_attributes(build):
    e = gcomp.Error(gcomp.Status.TIMEOUT)
    assert (e.code, e.name, e.message) == (-5, "GCOMP_TIMEOUT", "timed out")
    assert e.status is gcomp.Status.TIMEOUT
    e = gcomp.Error(-9, "bucket 'b0': shapes differ", what="registering")
    assert str(e) == "registering: GCOMP_MISMATCH: bucket 'b0': shapes differ"
    assert isinstance(e, Exception)


def test_library_not_found_is_clear(build):
    res = run([PYTHON, "-c", "import gcomp; gcomp.Client(socket='/x', job_id='j', local_rank=0)"],
              60, env=build.env(GCOMP_LIBRARY="/nonexistent/libgcomp-client.so"))
    assert res.returncode != 0
    assert "OSError" in res.stderr and "/nonexistent/libgcomp-client.so" in res.stderr, res.stderr


def test_missing_settings(build, monkeypatch):
    for var in ("GCOMP_SOCKET", "GCOMP_JOB_ID", "GCOMP_LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(gcomp.Error) as info:
        gcomp.Client()
    assert info.value.code == gcomp.Status.INVALID


def test_connect_timeout(build, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(gcomp.Error) as info:
        gcomp.Client(socket=str(tmp_path / "node0.sock"), job_id="j", local_rank=0,
                     connect_timeout_ms=300)
    assert info.value.code == gcomp.Status.TIMEOUT
    assert time.monotonic() - t0 < 5


def test_client_and_bucket(build, start_daemons):
    d = start_daemons([1])
    with gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0) as client:
        assert (client.node, client.nodes) == (0, 1)
        b = client.register("b0", [("w", (3, 4)), ("bias", 4)])
        assert b.numel == 16 and b.layers == [("w", (3, 4)), ("bias", (4,))]
        assert b.data.dtype == np.float32 and b.data.shape == (16,) and b.data.flags.writeable
        assert b.result.shape == (16,) and not b.result.flags.writeable
        with pytest.raises(ValueError):
            b.result[0] = 1.0
        # Zero copy: the views are the library's own regions.
        lib = _lib.load()
        assert b.data.ctypes.data == ctypes.cast(lib.gcomp_bucket_data(b._handle), ctypes.c_void_p).value
        assert b.result.ctypes.data == ctypes.cast(lib.gcomp_bucket_result(b._handle), ctypes.c_void_p).value
        views = b.layer_views()
        assert views["w"].shape == (3, 4) and views["bias"].shape == (4,)
        views["bias"][:] = 7.0
        assert np.all(b.data[12:] == 7.0)

        with pytest.raises(gcomp.Error) as info:
            client.register("b0", [("w", (3, 4)), ("bias", (4,))])
        assert info.value.code == gcomp.Status.INVALID and info.value.name == "GCOMP_INVALID"
        assert "b0" in info.value.message

        with pytest.raises(gcomp.Error) as info:
            b.wait(100)
        assert info.value.code == gcomp.Status.INVALID  # nothing submitted

        client.hint(0, lr=0.1, samples=32, epoch_end=True)
        for step in range(3):
            b.data[:] = np.arange(16, dtype=np.float32) * (step + 1)
            b.submit(step)
            if step == 0:
                with pytest.raises(gcomp.Error) as info:
                    b.submit(step + 1)
                assert info.value.code == gcomp.Status.BUSY
            b.wait(20000)
            # One trainer in the job: the mean is its own data.
            np.testing.assert_array_equal(b.result, np.arange(16, dtype=np.float32) * (step + 1))

    assert client.closed
    with pytest.raises(gcomp.Error) as info:
        b.data
    assert info.value.code == gcomp.Status.INVALID
    client.close()  # a second close does nothing


def test_invalid_layers_rejected_before_the_daemon(build, start_daemons):
    d = start_daemons([1])
    with gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0) as client:
        with pytest.raises(ValueError):
            client.register("empty", [])
        with pytest.raises(ValueError):
            client.register("deep", [("w", (1,) * 9)])
        with pytest.raises(TypeError):
            client.register("bad", ["w"])
        with pytest.raises(gcomp.Error) as info:
            client.register("zero", [("w", (4, 0))])
        assert info.value.code == gcomp.Status.INVALID and "zero" in info.value.message
        # The client is still usable after refused registrations.
        assert client.register("ok", [("w", (2,))]).numel == 2


def test_wait_zero_polls_a_completed_step(build, start_daemons):
    # gcomp.h: wait returns GCOMP_TIMEOUT only when the step is "not done yet". With one
    # trainer the step is done well within a second, so a zero-timeout wait (a poll)
    # must see it.
    d = start_daemons([1])
    with gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0) as client:
        b = client.register("b0", [("w", (4,))])
        b.data[:] = 1.0
        b.submit(0)
        time.sleep(1.0)
        try:
            b.wait(0)
        except gcomp.Error as exc:
            b.wait(20000)  # end the step cleanly before failing
            pytest.fail(f"wait(0) on a step completed 1 s ago: {exc}")
        with pytest.raises(gcomp.Error) as again:
            b.wait(0)  # nothing in flight any more
        assert again.value.code == gcomp.Status.INVALID


def test_wait_timeout_keeps_the_step_in_flight(build, start_daemons):
    # Two trainers configured, only this one submits: the step cannot complete.
    d = start_daemons([2])
    with gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0) as client:
        b = client.register("b0", [("w", (4,))])
        b.submit(7)
        t0 = time.monotonic()
        with pytest.raises(gcomp.Error) as info:
            b.wait(1200)
        took = time.monotonic() - t0
        assert info.value.code == gcomp.Status.TIMEOUT
        assert 1.1 < took < 5, took
        assert "step 7" in info.value.message and "1200 ms" in info.value.message, info.value
        with pytest.raises(gcomp.Error) as info:
            b.submit(8)  # still in flight
        assert info.value.code == gcomp.Status.BUSY


# ---- protocol 2: allreduce, wait_any, threads, unregister, exact and split buckets ----

def _job(d, fn, timeout=60):
    """Run fn(rank, client) for every trainer of the job (node-major ranks, as the
    launcher numbers them), each in its own thread with its own Client; return the
    results in rank order. The clients are closed afterwards."""
    clients = [gcomp.Client(socket=d.sock(node), job_id=d.job_id, local_rank=lr)
               for node, t in enumerate(d.trainers) for lr in range(t)]
    results, errors = [None] * len(clients), []

    def run(rank):
        try:
            results[rank] = fn(rank, clients[rank])
        except BaseException as exc:  # reported below, with the rank
            errors.append((rank, exc))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(clients))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in threads), "a trainer thread hangs"
    finally:
        for c in clients:
            c.close()
    if errors:
        raise AssertionError(f"trainer {errors[0][0]} failed: {errors[0][1]!r}") from errors[0][1]
    return results


LAYERS = [("conv.weight", (4, 3, 2)), ("conv.bias", (4,)), ("fc.weight", (5, 6))]
NUMEL = 24 + 4 + 30


def test_allreduce_flat_and_per_layer(build, start_daemons):
    def train(rank, c):
        b = c.register("b0", LAYERS)
        out = []
        for step in range(3):
            flat = np.arange(NUMEL, dtype=np.float64) * (rank + 1) + step
            out.append(b.allreduce(flat))  # float64 in, float32 out
        per_layer = [np.full(shape, rank * 2.0) for _, shape in LAYERS]
        out.append(b.allreduce(per_layer))
        return b.step, out

    results = _job(start_daemons([2, 2]), train)
    mean_scale = np.mean([r + 1 for r in range(4)])
    for last_step, out in results:
        assert last_step == 3  # steps counted up from 0
        for step in range(3):
            assert out[step].dtype == np.float32 and out[step].shape == (NUMEL,)
            np.testing.assert_allclose(out[step], np.arange(NUMEL) * mean_scale + step, rtol=1e-6)
        assert [a.shape for a in out[3]] == [shape for _, shape in LAYERS]
        for a in out[3]:
            np.testing.assert_allclose(a, 3.0)  # mean of 0, 2, 4, 6


def test_allreduce_refuses_what_does_not_fit(build, start_daemons):
    d = start_daemons([1])
    with gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0) as c:
        b = c.register("b0", LAYERS)
        with pytest.raises(ValueError, match=f"flat array of {NUMEL}"):
            b.allreduce(np.zeros(NUMEL + 1))
        with pytest.raises(ValueError, match="3 layers"):
            b.allreduce([np.zeros((4, 3, 2))])
        with pytest.raises(ValueError, match="'conv.bias'.*registered \\(4,\\)"):
            b.allreduce([np.zeros((4, 3, 2)), np.zeros(5), np.zeros((5, 6))])
        with pytest.raises(TypeError):
            b.allreduce(np.zeros(NUMEL, dtype=np.complex64))
        assert b.step is None  # nothing was submitted
        np.testing.assert_array_equal(b.allreduce(np.ones(NUMEL)), np.ones(NUMEL))


def test_wait_any_returns_completions_in_arrival_order(build, start_daemons):
    d = start_daemons([1])
    with gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0) as c:
        with pytest.raises(gcomp.Error) as info:
            c.wait_any(100)
        assert info.value.code == gcomp.Status.NOT_FOUND and info.value.bucket is None
        bs = [c.register(f"b{k}", [("w", (k + 1, 3))]) for k in range(3)]
        for k in (2, 0, 1):  # one trainer: each step completes at once, in this order
            bs[k].data[:] = k
            bs[k].submit(0)
            time.sleep(0.3)
        got = [c.wait_any(10000) for _ in range(3)]
        assert [b.name for b in got] == ["b2", "b0", "b1"]
        for k in range(3):
            np.testing.assert_array_equal(bs[k].result, k)
        with pytest.raises(gcomp.Error) as info:
            c.wait_any(0)
        assert info.value.code == gcomp.Status.NOT_FOUND
        bs[0].submit(1)  # wait_any ended those steps: the buckets may be submitted again
        assert c.wait_any(10000) is bs[0]


def test_wait_any_timeout_and_step_error(build, start_daemons):
    d = start_daemons([2])  # only local rank 0 submits: its steps cannot complete
    with gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0) as c:
        b = c.register("b0", [("w", (4,))])
        b.submit(5)
        t0 = time.monotonic()
        with pytest.raises(gcomp.Error) as info:
            c.wait_any(700)
        assert info.value.code == gcomp.Status.TIMEOUT and info.value.bucket is None
        assert 0.6 < time.monotonic() - t0 < 5
        with pytest.raises(gcomp.Error) as info:
            b.submit(6)
        assert info.value.code == gcomp.Status.BUSY  # still in flight after the timeout

        other = c.register("b1", [("w", (4,))])
        other.submit(3)
        other2 = gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=1)
        try:
            o = other2.register("b1", [("w", (4,))])
            o.submit(3)
            o.wait(10000)
            assert c.wait_any(10000) is other
            other.submit(2)  # steps of a bucket must increase: the daemon fails this one
            with pytest.raises(gcomp.Error) as info:
                c.wait_any(10000)
            assert info.value.code == gcomp.Status.STEP and info.value.bucket is other
            assert "b1" in info.value.message
        finally:
            other2.close()


def test_threads_submit_while_another_waits(build, start_daemons):
    # Per trainer: a waiter thread sits in wait_any while the trainer's main thread
    # submits buckets and registers new ones; two trainers on each of two nodes.
    steps, nb = 20, 4

    def train(rank, c):
        buckets = [c.register(f"b{k}", [("w", (50 + k,)), ("v", (3, k + 1))]) for k in range(nb)]
        free = {b.name: threading.Semaphore(1) for b in buckets}  # released when a step ends
        got, errors = [], []

        def waiter():
            try:
                while len(got) < steps * nb:
                    try:
                        b = c.wait_any(20000)
                    except gcomp.Error as exc:
                        if exc.code != gcomp.Status.NOT_FOUND:
                            raise
                        time.sleep(0.001)  # nothing submitted yet
                        continue
                    got.append((b.name, b.step, float(b.result[0])))
                    free[b.name].release()
            except BaseException as exc:
                errors.append(exc)
                for sem in free.values():
                    sem.release()

        w = threading.Thread(target=waiter)
        w.start()
        try:
            for step in range(steps):
                for b in buckets:
                    assert free[b.name].acquire(timeout=30), f"{b.name} step {step - 1} never ended"
                    if errors:
                        break
                    b.data[:] = rank + step
                    b.submit(step)
                if step == steps // 2:
                    # A registration while the waiter reads the socket.
                    assert c.register("extra", [("w", (7,))]).numel == 7
        finally:
            w.join(60)
        assert not w.is_alive() and not errors, errors
        return got

    results = _job(start_daemons([2, 2]), train, timeout=120)
    for got in results:
        assert len(got) == steps * nb
        assert sorted((n, s) for n, s, _ in got) == sorted((f"b{k}", s) for k in range(nb)
                                                            for s in range(steps))
        for _, step, value in got:
            assert value == pytest.approx(1.5 + step)  # mean of ranks 0..3, plus step


def _stuck_waiter(d):
    """A client with a step that cannot complete (local rank 1 never submits) and a thread
    in wait_any on it: (client, bucket, thread, {"error": the Error it got})."""
    c = gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0)
    b = c.register("b0", [("w", (4,))])
    b.submit(0)
    result = {}

    def waiter():
        try:
            c.wait_any(30000)
        except gcomp.Error as exc:
            result["error"] = exc

    w = threading.Thread(target=waiter)
    w.start()
    time.sleep(0.3)
    return c, b, w, result


def test_wait_any_daemon_killed(build, start_daemons):
    d = start_daemons([2])
    c, b, w, result = _stuck_waiter(d)
    with c:
        t0 = time.monotonic()
        for pid in d.daemon_pids().values():
            os.kill(pid, signal.SIGKILL)
        w.join(20)
        assert not w.is_alive(), "wait_any hangs after the daemon died"
        assert time.monotonic() - t0 < 10
        err = result["error"]
        assert err.code == gcomp.Status.DAEMON_LOST and err.bucket is b, err
        with pytest.raises(gcomp.Error) as info:
            b.submit(1)
        assert info.value.code == gcomp.Status.DAEMON_LOST


def test_unregister_and_register_other_layers(build, start_daemons):
    def train(rank, c):
        b = c.register("b0", LAYERS)
        first = b.allreduce(np.full(NUMEL, rank + 1.0))
        b.submit(1)
        with pytest.raises(gcomp.Error) as busy:
            b.unregister()  # in flight: refused, the bucket stays usable
        assert busy.value.code == gcomp.Status.BUSY
        b.wait(20000)
        b.unregister()
        with pytest.raises(gcomp.Error) as gone:
            b.data
        assert gone.value.code == gcomp.Status.INVALID and "unregistered" in gone.value.message
        with pytest.raises(gcomp.Error):
            b.unregister()
        # The name again, with other layers (and exact this time).
        b2 = c.register("b0", [("w", (3, 3))], exact=True)
        return first, b2.allreduce(np.full(9, rank * 10.0), step=7), b2.step

    for first, second, step in _job(start_daemons([1, 1]), train):
        np.testing.assert_array_equal(first, 1.5)
        np.testing.assert_array_equal(second, 5.0)
        assert step == 7


def test_exact_bucket_ignores_the_codec(build, start_daemons):
    rng = np.random.default_rng(3)
    values = [rng.standard_normal(64 * 64).astype(np.float32) for _ in range(2)]

    def train(rank, c):
        exact = c.register("exact", [("w", (64, 64))], exact=True)
        lossy = c.register("lossy", [("w", (64, 64))])
        assert exact.exact and not lossy.exact
        return exact.allreduce(values[rank]), lossy.allreduce(values[rank])

    mean = (values[0] + values[1]) * np.float32(0.5)
    for exact, lossy in _job(start_daemons([1, 1], codec="topk:density=0.01"), train):
        np.testing.assert_array_equal(exact, mean)  # 1/2 is exact: bit for bit
        assert np.count_nonzero(lossy) < 0.1 * lossy.size  # Top-K 1% keeps few elements


def test_registration_in_parts_across_nodes(build, start_daemons):
    # 4096 layers with 100-byte names are ~4 packets; both nodes compare the layouts.
    specs = [(f"layer{i:04d}." + "n" * 85 + ".weight", (2, i % 3 + 1)) for i in range(gcomp.MAX_LAYERS)]
    assert min(len(n) for n, _ in specs) >= 100
    numel = sum(a * b for _, (a, b) in specs)

    def train(rank, c):
        if rank == 0:
            with pytest.raises(ValueError):
                c.register("toomany", specs + [("one", (1,))])
        return c.register("big", specs).allreduce(np.arange(numel, dtype=np.float32) * (rank + 1))

    for r in _job(start_daemons([1, 1]), train):
        np.testing.assert_allclose(r, np.arange(numel) * 1.5, rtol=1e-6)


def test_close_while_another_thread_waits(build, start_daemons):
    c, _, w, result = _stuck_waiter(start_daemons([2]))
    t0 = time.monotonic()
    c.close()  # waits for the waiter to leave the library, which then fails
    assert time.monotonic() - t0 < 3
    w.join(10)
    assert not w.is_alive()
    assert result["error"].code == gcomp.Status.INVALID and "closed" in result["error"].message
