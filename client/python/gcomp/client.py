"""The trainer side of gcomp: Client, Bucket and Error (ctypes over libgcomp-client).

Typical use, inside a process started by ``gcomp-run`` (which sets the GCOMP_*
environment)::

    import gcomp
    with gcomp.Client() as client:
        bucket = client.register("b0", [("fc.weight", (10, 512)), ("fc.bias", (10,))])
        for step in range(steps):
            bucket.data[:] = gradients          # zero copy: shared memory
            bucket.submit(step)
            bucket.wait(timeout_ms=60000)
            mean = bucket.result.copy()         # the mean over every trainer of the job

or, copying in and out, ``mean = bucket.allreduce(gradients)``.

Threads: a Client may be used from several threads at once (one thread submits while
another waits in :meth:`Client.wait_any`); a given Bucket is submitted and waited for by
one thread at a time, and ``close()`` is called when no other thread uses the client.
The numpy views returned by ``Bucket.data`` and ``Bucket.result`` point into memory that
is unmapped by ``Client.close()`` and ``Bucket.unregister()``: do not use them after.
"""

import contextlib
import ctypes
import math
import threading
import time

import numpy as np

from . import _lib
from ._lib import Status

# gcomp_wait() is called in slices of this many milliseconds so that Ctrl-C (and other
# Python signal handlers) run while a trainer waits; GCOMP_TIMEOUT from one slice only
# means "not done yet" and the step stays in flight.
_WAIT_SLICE_MS = 500


def _slices(timeout_ms):
    """Timeouts (ms) for successive calls of a blocking library wait so that together they
    last timeout_ms (< 0: forever), each at most _WAIT_SLICE_MS; at least one call."""
    deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000.0
    while True:
        if deadline is None:
            yield _WAIT_SLICE_MS
            continue
        left_ms = max(0, int(math.ceil((deadline - time.monotonic()) * 1000.0)))
        yield min(_WAIT_SLICE_MS, left_ms)
        if time.monotonic() >= deadline:
            return


class Error(Exception):
    """A gcomp call failed.

    Attributes: ``code`` (a negative status, comparable with :class:`gcomp.Status`),
    ``name`` (``"GCOMP_TIMEOUT"``), ``message`` (the detailed text, the daemon's own
    when it sent one, else the library's short text for the code), ``what`` (the
    operation that failed, e.g. "registering bucket 'b0'", or None) and ``bucket`` (the
    :class:`Bucket` whose step failed, from :meth:`Client.wait_any`; else None).
    """

    def __init__(self, code, message=None, what=None, bucket=None):
        self.code = int(code)
        self.bucket = bucket
        try:
            self.name = _lib.err_name(self.code)
        except OSError:  # no library: fall back to the table in _lib
            status = self.status
            self.name = f"GCOMP_{status.name}" if isinstance(status, Status) else "GCOMP_UNKNOWN"
        if not message:
            try:
                message = _lib.strerror(self.code)
            except OSError:
                message = "unknown error"
        self.message = message
        self.what = what
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{self.name}: {message}")

    @property
    def status(self):
        """The code as a :class:`gcomp.Status` (or the plain int if unknown)."""
        try:
            return Status(self.code)
        except ValueError:
            return self.code


def _encode(text, what):
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    data = text.encode()
    if b"\0" in data:
        raise ValueError(f"{what} {text!r} contains a NUL byte")
    return data


class Client:
    """A connection to the node's gcompd.

    Arguments left as None come from the environment the launcher sets
    (GCOMP_SOCKET, GCOMP_JOB_ID, GCOMP_LOCAL_RANK, GCOMP_CONNECT_TIMEOUT_MS). The
    connection is retried until the daemon's socket is up or the connect timeout ends.
    Raises :class:`Error` (GCOMP_VERSION for a wrong job id, GCOMP_TIMEOUT when no
    daemon answered, GCOMP_INVALID for missing settings).
    """

    def __init__(self, socket=None, job_id=None, local_rank=None, connect_timeout_ms=None):
        self._handle = None  # first, so that close() works on a failed construction
        self._buckets = {}  # name -> Bucket
        self._by_handle = {}  # the library's bucket pointer -> Bucket
        self._cv = threading.Condition()  # guards _calls and _closing
        self._calls = 0  # threads inside a library call on this client
        self._closing = False
        lib = _lib.load()
        self._lib = lib
        opts = _lib.Options()
        opts.socket_path = _encode(str(socket), "socket") if socket is not None else None
        opts.job_id = _encode(job_id, "job_id") if job_id is not None else None
        opts.local_rank = -1 if local_rank is None else int(local_rank)
        opts.connect_timeout_ms = 0 if connect_timeout_ms is None else min(int(connect_timeout_ms), 2**31 - 1)
        if local_rank is not None and opts.local_rank < 0:
            raise ValueError(f"local_rank must be >= 0, got {local_rank}")
        handle = ctypes.c_void_p()
        rc = lib.gcomp_connect(ctypes.byref(opts), ctypes.byref(handle))
        if rc != 0:
            where = socket if socket is not None else "$GCOMP_SOCKET"
            detail = (lib.gcomp_last_error(None) or b"").decode(errors="replace")
            raise Error(rc, detail or None, what=f"connecting to gcompd at {where}")
        self._handle = handle
        self.node = lib.gcomp_node(handle)
        self.nodes = lib.gcomp_nodes(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        # Best effort at interpreter exit; close() explicitly or use a with block.
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self):
        """True once close() was called."""
        return self._handle is None

    def close(self):
        """Disconnect and unmap every bucket. Calling it again does nothing.

        Waits until no other thread is inside a library call on this client (a wait
        returns within its current slice, half a second, with GCOMP_INVALID).
        """
        with self._cv:
            if self._handle is None or self._closing:
                return
            self._closing = True
            while self._calls:
                self._cv.wait()
        for bucket in self._buckets.values():
            bucket._handle = None
        self._buckets.clear()
        self._by_handle.clear()
        self._lib.gcomp_disconnect(self._handle)
        self._handle = None

    @contextlib.contextmanager
    def _use(self):
        """Hold the client open for one library call (close() waits for it); yields the handle."""
        with self._cv:
            if self._handle is None or self._closing:
                raise Error(Status.INVALID, "the client is closed")
            self._calls += 1
        try:
            yield self._handle
        finally:
            with self._cv:
                self._calls -= 1
                if not self._calls:
                    self._cv.notify_all()

    def _error(self, rc, what, bucket=None):
        """An Error for status rc with the library's detailed message (this thread's)."""
        detail = self._lib.gcomp_last_error(self._handle) if self._handle else None
        return Error(rc, detail.decode(errors="replace") if detail else None, what, bucket)

    def last_error(self):
        """The detailed text of the client's last failure ("" if none)."""
        with self._use() as h:
            return (self._lib.gcomp_last_error(h) or b"").decode(errors="replace")

    def register(self, name, layers, exact=False):
        """Register a bucket and return its :class:`Bucket`.

        ``layers`` is a sequence of ``(layer_name, shape)`` pairs (float32, laid out back
        to back in order). Every trainer of the job must register the same buckets with
        the same layers (and the same ``exact``); a difference raises Error
        GCOMP_MISMATCH naming the bucket. Registering the same name twice raises
        GCOMP_INVALID. ``exact=True``: the bucket is always reduced dense and exactly,
        whatever the policy (parameter broadcasts, metrics).
        """
        layers = list(layers)
        if not layers:
            raise ValueError(f"bucket {name!r}: no layers")
        if len(layers) > _lib.MAX_LAYERS:
            raise ValueError(f"bucket {name!r}: {len(layers)} layers, at most {_lib.MAX_LAYERS}")
        arr = (_lib.Layer * len(layers))()
        keep = []  # the encoded names must live until the call returns
        specs = []
        for i, layer in enumerate(layers):
            try:
                lname, shape = layer
            except (TypeError, ValueError):
                raise TypeError(f"bucket {name!r}: layer {i} must be a (name, shape) pair, got {layer!r}") from None
            shape = (int(shape),) if isinstance(shape, int) else tuple(int(d) for d in shape)
            if len(shape) > _lib.MAX_DIMS:
                raise ValueError(f"bucket {name!r}, layer {lname!r}: {len(shape)} dimensions, at most {_lib.MAX_DIMS}")
            encoded = _encode(lname, f"bucket {name!r}: layer name")
            keep.append(encoded)
            arr[i].name = encoded
            arr[i].ndim = len(shape)
            for d, n in enumerate(shape):
                arr[i].shape[d] = n
            arr[i].dtype = _lib.FLOAT32
            specs.append((lname, shape))
        handle = ctypes.c_void_p()
        flags = _lib.BUCKET_EXACT if exact else 0
        with self._use() as h:
            rc = self._lib.gcomp_bucket_register_flags(h, _encode(name, "bucket name"), arr,
                                                       len(layers), flags, ctypes.byref(handle))
            if rc != 0:
                raise self._error(rc, f"registering bucket {name!r}")
            bucket = Bucket(self, handle, name, specs, bool(exact))
            self._buckets[name] = bucket
            self._by_handle[handle.value] = bucket
        return bucket

    def _forget(self, bucket):
        """Drop an unregistered bucket from the client's tables."""
        self._buckets.pop(bucket.name, None)
        self._by_handle.pop(bucket._handle.value, None)

    def wait_any(self, timeout_ms=-1):
        """Wait for the next step of any of this client's buckets to end; return its Bucket.

        Steps end in the order their completions arrived; ``timeout_ms < 0`` waits
        forever. Raises Error with ``bucket`` set when that bucket's step failed (the step
        is over, the bucket may be submitted again), Error GCOMP_TIMEOUT (``bucket`` None)
        when nothing ended in time, Error GCOMP_NOT_FOUND when no bucket is in flight.
        Safe to call while other threads submit.
        """
        done = ctypes.c_void_p()
        for chunk in _slices(timeout_ms):
            with self._use() as h:
                rc = self._lib.gcomp_wait_any(h, chunk, ctypes.byref(done))
                if rc == Status.TIMEOUT:
                    continue
                if not done.value:  # nothing in flight, or a call error
                    raise self._error(rc, "waiting for any bucket")
                bucket = self._by_handle.get(done.value)
                if bucket is None:
                    raise Error(Status.INTERNAL, f"the library returned an unknown bucket {done.value:#x}")
                if rc != 0:
                    raise self._error(rc, f"waiting for bucket {bucket.name!r}", bucket)
                return bucket
        raise Error(Status.TIMEOUT, f"no step completed in {timeout_ms} ms", "waiting for any bucket")

    def hint(self, step, lr=None, samples=None, epoch_end=False):
        """Send hints for ``step`` to the daemon's policy (no reply is awaited).

        ``lr``: learning rate used at this step; ``samples``: samples this trainer
        processed at this step; ``epoch_end``: this step ends an epoch. Only the given
        fields are sent.
        """
        hints = _lib.Hints(step=int(step))
        if lr is not None:
            hints.fields |= _lib.HINT_LR
            hints.lr = float(lr)
        if samples is not None:
            hints.fields |= _lib.HINT_SAMPLES
            hints.samples = int(samples)
        if epoch_end:
            hints.fields |= _lib.HINT_EPOCH_END
            hints.epoch_end = 1
        with self._use() as h:
            rc = self._lib.gcomp_hint(h, ctypes.byref(hints))
            if rc != 0:
                raise self._error(rc, f"sending hints for step {step}")

    def advice(self):
        """The policy's latest batch-size advice as a dict (batch_size, lr_scale, step),
        or None when the policy gives none. It arrives with every completed step."""
        a = _lib.Advice()
        with self._use() as h:
            rc = self._lib.gcomp_advice_get(h, ctypes.byref(a))
            if rc == Status.NOT_FOUND:
                return None
            if rc != 0:
                raise self._error(rc, "reading the batch-size advice")
        return {"batch_size": a.batch_size, "lr_scale": a.lr_scale, "step": a.step}


class Bucket:
    """A registered bucket (created by :meth:`Client.register`).

    ``data``: writable float32 view of this trainer's input region (write the step's
    gradients here); ``result``: read-only float32 view of the node's result region
    (the job-wide mean after a successful wait); ``numel``: number of elements;
    ``layers``: the registered ``(name, shape)`` pairs; ``exact``: registered exact;
    ``step``: the step last submitted (None before the first).
    """

    def __init__(self, client, handle, name, layers, exact=False):
        self._client = client
        self._handle = handle
        self.name = name
        self.layers = layers
        self.exact = exact
        lib = client._lib
        self.numel = int(lib.gcomp_bucket_numel(handle))
        self._step = None  # the step last submitted
        self._data = self._view(lib.gcomp_bucket_data(handle), writable=True)
        self._result = self._view(lib.gcomp_bucket_result(handle), writable=False)

    def _view(self, ptr, writable):
        if self.numel == 0:
            arr = np.empty(0, dtype=np.float32)
        else:
            if not ptr:
                raise Error(Status.INTERNAL, f"bucket {self.name!r}: the library returned a NULL region")
            arr = np.ctypeslib.as_array(ptr, shape=(self.numel,))
        arr.flags.writeable = writable
        return arr

    def _check_open(self):
        if self._handle is None:
            raise Error(Status.INVALID, f"bucket {self.name!r}: the client is closed or the "
                                        "bucket unregistered")

    @contextlib.contextmanager
    def _use(self):
        """The client held open for one library call on this bucket; yields the handle."""
        with self._client._use():
            self._check_open()
            yield self._handle

    @property
    def data(self):
        """The input region as a writable float32 array (zero copy)."""
        self._check_open()
        return self._data

    @property
    def result(self):
        """The result region as a read-only float32 array (zero copy)."""
        self._check_open()
        return self._result

    def layer_views(self, region="data"):
        """Return {layer name: array reshaped to the layer's shape} over ``data`` or ``result``."""
        flat = self.data if region == "data" else self.result
        return {lname: view for (lname, _), view in zip(self.layers, self._split(flat))}

    def submit(self, step):
        """Submit the gradients in ``data`` for ``step`` (asynchronous).

        Steps of a bucket must increase. Raises Error GCOMP_BUSY when the previous step
        was not waited for.
        """
        with self._use() as h:
            # Set first: another thread may see the step end (wait_any) before the call returns.
            previous, self._step = self._step, int(step)
            rc = self._client._lib.gcomp_submit(h, self._step)
            if rc != 0:
                self._step = previous
                raise self._client._error(rc, f"submitting bucket {self.name!r} step {step}")

    def wait(self, timeout_ms=-1):
        """Wait until the submitted step completes; ``timeout_ms < 0`` waits forever.

        Returns when ``result`` holds the mean. Raises Error GCOMP_TIMEOUT when the step
        is not done in time (it stays in flight: wait again), or another Error when the
        step failed (then the bucket may be submitted again).
        """
        for chunk in _slices(timeout_ms):
            with self._use() as h:
                rc = self._client._lib.gcomp_wait(h, chunk)
                if rc == 0:
                    return
                if rc != Status.TIMEOUT:
                    raise self._client._error(rc, f"waiting for bucket {self.name!r}")
        # The library's text would name the last slice's timeout, not ours.
        raise Error(Status.TIMEOUT, f"bucket {self.name!r} step {self._step}: not complete "
                                    f"after {timeout_ms} ms", f"waiting for bucket {self.name!r}")

    @property
    def step(self):
        """The step last submitted (None before the first submit)."""
        return self._step

    def allreduce(self, values, step=None, timeout_ms=-1):
        """Copy ``values`` in, submit, wait, and return the job-wide mean (a copy).

        ``values``: the bucket's layers concatenated as one flat array of ``numel``
        elements, or a list with one array per layer in the layer's shape (any real
        dtype; converted to float32). Returns a flat float32 array, or a list of per-layer
        arrays when given a list. ``step`` defaults to the step after the last one
        submitted (0 at first). Raises ValueError/TypeError for values that do not fit
        the bucket, and Error as :meth:`submit` and :meth:`wait` do.
        """
        data = self.data
        per_layer = isinstance(values, (list, tuple))
        if per_layer:
            if len(values) != len(self.layers):
                raise ValueError(f"bucket {self.name!r}: {len(values)} arrays for "
                                 f"{len(self.layers)} layers")
            for (lname, shape), view, value in zip(self.layers, self._split(data), values):
                value = np.asarray(value)
                if value.shape != shape:
                    raise ValueError(f"bucket {self.name!r}, layer {lname!r}: shape "
                                     f"{value.shape}, registered {shape}")
                np.copyto(view, value, casting="same_kind")
        else:
            value = np.asarray(values)
            if value.shape != (self.numel,):
                raise ValueError(f"bucket {self.name!r}: expected a flat array of {self.numel} "
                                 f"elements (or a list of per-layer arrays), got shape {value.shape}")
            np.copyto(data, value, casting="same_kind")
        if step is None:
            step = 0 if self._step is None else self._step + 1
        self.submit(step)
        self.wait(timeout_ms)
        if per_layer:
            return [view.copy() for view in self._split(self.result)]
        return self.result.copy()

    def _split(self, flat):
        """Views of a flat region, one per layer, in the layers' shapes."""
        views, offset = [], 0
        for _, shape in self.layers:
            n = math.prod(shape)
            views.append(flat[offset:offset + n].reshape(shape))
            offset += n
        return views

    def unregister(self):
        """Unregister the bucket: the daemon frees it once every trainer of the node has,
        and the name may be registered again (with other layers too). The bucket (and its
        ``data``/``result`` views) must not be used afterwards. Raises Error GCOMP_BUSY
        when a submitted step was not waited for (the bucket stays usable)."""
        with self._use() as h:
            rc = self._client._lib.gcomp_bucket_unregister(h)
            if rc != 0:
                raise self._client._error(rc, f"unregistering bucket {self.name!r}")
            self._client._forget(self)
            self._handle = None
