"""Protocol 2 on the daemon side: unregistering buckets, exact buckets, registrations
that span several packets. The clients are made in this process; the new C calls are
reached through ctypes directly."""

import ctypes

import numpy as np
import pytest

import gcomp
from gcomp import _lib


def lib():
    lib = _lib.load()
    lib.gcomp_bucket_unregister.restype = ctypes.c_int
    lib.gcomp_bucket_unregister.argtypes = [ctypes.c_void_p]
    lib.gcomp_bucket_register_flags.restype = ctypes.c_int
    lib.gcomp_bucket_register_flags.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(_lib.Layer), ctypes.c_size_t,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
    return lib


EXACT = 1


def layers(specs):
    arr = (_lib.Layer * len(specs))()
    keep = []
    for i, (name, shape) in enumerate(specs):
        keep.append(name.encode())
        arr[i].name = keep[-1]
        arr[i].ndim = len(shape)
        for d, n in enumerate(shape):
            arr[i].shape[d] = n
    return arr, keep


def register(client, name, specs, flags=0):
    """A raw bucket handle (c_void_p) or the status code."""
    arr, keep = layers(specs)
    h = ctypes.c_void_p()
    rc = lib().gcomp_bucket_register_flags(client._handle, name.encode(), arr, len(specs), flags,
                                           ctypes.byref(h))
    return h if rc == 0 else rc


def step(lib_, handles, values, step_no, timeout_ms=30000):
    """Write values[i] into bucket i (all of numel n), submit all, wait all; results."""
    out = []
    for h, v in zip(handles, values):
        n = lib_.gcomp_bucket_numel(h)
        np.ctypeslib.as_array(lib_.gcomp_bucket_data(h), shape=(n,))[:] = v
        assert lib_.gcomp_submit(h, step_no) == 0
    for h in handles:
        assert lib_.gcomp_wait(h, timeout_ms) == 0
        n = lib_.gcomp_bucket_numel(h)
        out.append(np.ctypeslib.as_array(lib_.gcomp_bucket_result(h), shape=(n,)).copy())
    return out


def clients(d, node=0, count=1):
    return [gcomp.Client(socket=d.sock(node), job_id=d.job_id, local_rank=r) for r in range(count)]


def test_unregister_then_register_other_layers(build, start_daemons):
    d = start_daemons([2, 1], codec="topk:density=0.5")
    L = lib()
    cs = clients(d, 0, 2) + clients(d, 1, 1)
    try:
        hs = [register(c, "b", [("w", (64, 32))]) for c in cs]
        assert all(isinstance(h, ctypes.c_void_p) for h in hs), hs
        step(L, hs, [1.0, 2.0, 3.0], 0)
        # Busy while in flight: the handle stays valid.
        assert L.gcomp_submit(hs[0], 1) == 0
        assert L.gcomp_bucket_unregister(hs[0]) == gcomp.Status.BUSY
        assert b"not waited" in L.gcomp_last_error(cs[0]._handle)
        # The other trainers give up on step 1: the pending step fails for node 0's
        # submitter, naming who left.
        assert L.gcomp_bucket_unregister(hs[1]) == 0
        assert L.gcomp_wait(hs[0], 30000) == gcomp.Status.PEER_LOST
        assert b"unregistered" in L.gcomp_last_error(cs[0]._handle)
        for h in (hs[0], hs[2]):
            assert L.gcomp_bucket_unregister(h) == 0
        # The name comes back with another layout on every node; the coordinator forgot
        # the old one.
        hs = [register(c, "b", [("w", (8, 8)), ("v", (5,))]) for c in cs]
        assert all(isinstance(h, ctypes.c_void_p) for h in hs), hs
        res = step(L, hs, [1.0, 2.0, 6.0], 5)
        for r in res:
            assert r.shape == (69,)
            np.testing.assert_allclose(r[64:], 3.0)  # the dense 1-D layer is exact
        out = d.gcompctl("status")
        assert out.returncode == 0 and "buckets: 1" in out.stdout, out.stdout
    finally:
        for c in cs:
            c.close()


def test_unregister_on_one_node_fails_the_other_nodes_step(build, start_daemons):
    d = start_daemons([1, 1], timeout_ms=20000)
    L = lib()
    c0, c1 = clients(d, 0)[0], clients(d, 1)[0]
    try:
        h0, h1 = register(c0, "b", [("w", (10,))]), register(c1, "b", [("w", (10,))])
        step(L, [h0, h1], [1.0, 3.0], 0)
        assert L.gcomp_submit(h1, 1) == 0
        assert L.gcomp_bucket_unregister(h0) == 0
        assert L.gcomp_wait(h1, 15000) == gcomp.Status.PEER_LOST
        assert b"unregistered on node 0" in L.gcomp_last_error(c1._handle)
    finally:
        c0.close()
        c1.close()


def test_exact_bucket_is_never_compressed(build, start_daemons):
    d = start_daemons([1, 1], codec="signsgd")
    L = lib()
    cs = clients(d, 0) + clients(d, 1)
    try:
        exact = [register(c, "params", [("w", (64, 64))], EXACT) for c in cs]
        lossy = [register(c, "grads", [("w", (64, 64))]) for c in cs]
        vals = [0.25, 1.5]
        e = step(L, exact, vals, 0)
        g = step(L, lossy, vals, 0)
        for r in e:
            np.testing.assert_array_equal(r, np.float32(np.mean(vals)))
        assert not np.allclose(g[0], np.mean(vals))  # signsgd gives signs, not the mean
        # Flags must agree between trainers and nodes.
        assert register(cs[0], "x", [("w", (4,))], EXACT) is not None
        rc = register(cs[0], "bad", [("w", (4,))], 1 << 5)
        assert rc == gcomp.Status.INVALID
    finally:
        for c in cs:
            c.close()


def test_exact_flag_mismatch_between_nodes(build, start_daemons):
    d = start_daemons([1, 1], timeout_ms=20000)
    L = lib()
    c0, c1 = clients(d, 0)[0], clients(d, 1)[0]
    try:
        h0 = register(c0, "b", [("w", (10,))], EXACT)
        h1 = register(c1, "b", [("w", (10,))], 0)
        for h in (h0, h1):
            assert L.gcomp_submit(h, 0) == 0
        for c, h in ((c0, h0), (c1, h1)):
            assert L.gcomp_wait(h, 15000) == gcomp.Status.MISMATCH
            assert b"exact" in L.gcomp_last_error(c._handle)
    finally:
        c0.close()
        c1.close()


def test_registration_of_4096_layers_with_long_names(build, start_daemons):
    d = start_daemons([1])
    L = lib()
    (c,) = clients(d)
    try:
        specs = [(f"model.encoder.layer.{i:05d}." + "x" * 70 + ".weight", (3,)) for i in range(4096)]
        assert all(len(n) >= 100 for n, _ in specs)
        h = register(c, "big", specs)
        assert isinstance(h, ctypes.c_void_p), h
        (r,) = step(L, [h], [2.0], 0)
        assert r.shape == (3 * 4096,) and np.all(r == 2.0)
        assert register(c, "toomany", [("w", (1,))] * 4097) == gcomp.Status.INVALID
    finally:
        c.close()
