"""The Python bindings themselves: error mapping, Client/Bucket behaviour, zero copy."""

import ctypes
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
