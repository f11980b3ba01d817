"""gcomp.torch: PyTorch training through gcompd.

Three ways in, each a few lines in a training script started by ``gcomp-run``:

- a DDP communication hook: ``model.register_comm_hook(None, gcomp.torch.ddp_comm_hook)``
  (``gcomp.torch.HookState(...)`` instead of None for options). DDP still needs a
  torch.distributed process group for its own set-up (:func:`init_process_group`);
  the gradients go through gcompd.
- a Horovod-style optimizer wrapper needing no process group at all:
  ``opt = gcomp.torch.DistributedOptimizer(opt, named_parameters=model.named_parameters())``
  with ``gcomp.torch.broadcast_parameters(model.state_dict(), root_rank=0)`` first.
- the plain bindings (:class:`gcomp.Client`, ``Bucket.allreduce``).

Gradients of any floating dtype and device are copied into the bucket's shared memory
as float32 (CUDA tensors are staged through host memory) and the mean is copied back
in the gradients' own dtype and device. A step that fails (daemon lost, a peer lost,
timeout) fails its future, and so the backward pass or ``step()``, with the gcomp
error and its message.

Threads: every client gets one waiter thread, started on first use, that sits in
gcomp_wait_any() and completes the futures of its buckets; it finishes the steps (the
copies back) on that thread. The training thread only copies in and submits.
"""

import atexit
import contextlib
import functools
import hashlib
import itertools
import math
import os
import threading
import time

import numpy as np
import torch

from .client import Client, Error
from ._lib import Status

#: Default longest wait for one bucket step, in milliseconds.
DEFAULT_TIMEOUT_MS = 300_000
# The waiter thread wakes at least this often (ms) to fail steps past their timeout.
_SLICE_MS = 500

_lock = threading.Lock()
_default_client = None
_completers = {}  # Client -> _Completer


def default_client():
    """The process's :class:`gcomp.Client`, connected from the launcher's environment
    (GCOMP_SOCKET, GCOMP_JOB_ID, GCOMP_LOCAL_RANK) on first use and closed at exit."""
    global _default_client
    with _lock:
        if _default_client is None or _default_client.closed:
            _default_client = Client()
        return _default_client


def _completer(client):
    with _lock:
        comp = _completers.get(client)
        if comp is None:
            comp = _completers[client] = _Completer(client)
        return comp


@atexit.register
def _shutdown():
    """Stop the waiter threads, then close the default client (if they stopped)."""
    with _lock:
        comps = list(_completers.values())
        _completers.clear()
    stopped = all([comp.close() for comp in comps])
    if _default_client is not None and stopped:
        _default_client.close()


class _Step:
    """A submitted step a future waits for: its future (None once failed by its timeout;
    the step stays in flight and its completion is dropped), what finishes it, its
    deadline (time.monotonic(); None: none) and the message of its timeout."""

    def __init__(self, future, finish, deadline, timeout_text):
        self.future, self.finish, self.deadline, self.timeout_text = future, finish, deadline, timeout_text


class _Completer:
    """Turns one client's bucket steps into torch futures.

    :meth:`submit` submits a step and returns its future; the waiter thread completes it
    from gcomp_wait_any(): with ``finish(bucket)`` (called on the waiter thread) once
    the mean is in the bucket's result region, or with the gcomp Error. A step not done
    within its timeout fails with GCOMP_TIMEOUT (its late completion is dropped).
    """

    def __init__(self, client):
        self.client = client
        self._cv = threading.Condition()
        self._pending = {}  # Bucket -> _Step
        self._closing = False
        self._thread = None

    def submit(self, bucket, step, finish, timeout_ms, device=None):
        devices = [device] if device is not None and device.type == "cuda" else None
        fut = torch.futures.Future(devices=devices)
        what = f"bucket {bucket.name!r} step {step}"
        with self._cv:
            # Under the lock, so the waiter never sees a step in flight it does not know.
            try:
                if self._closing:
                    raise Error(Status.SHUTDOWN, f"{what}: gcomp.torch is shutting down")
                bucket.submit(step)
            except Error as exc:
                fut.set_exception(exc)
                return fut
            deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000.0
            self._pending[bucket] = _Step(fut, finish, deadline, f"{what}: not complete after {timeout_ms} ms")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gcomp-waiter", daemon=True)
                self._thread.start()
            self._cv.notify()
        return fut

    def close(self, timeout=5.0):
        """Fail what is pending, stop the waiter; True if it stopped (the client is free)."""
        with self._cv:
            self._closing = True
            self._cv.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _run(self):
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    self._cv.wait()
                if self._closing:
                    self._fail_all(Error(Status.SHUTDOWN, "gcomp.torch is shutting down"))
                    return
            try:
                bucket, error = self.client.wait_any(_SLICE_MS), None
            except Error as exc:
                bucket, error = exc.bucket, exc
            if bucket is not None:
                self._complete(bucket, error)
            elif error.code == Status.TIMEOUT:
                self._expire()
            else:  # the client is unusable (closed, nothing in flight that we wait for)
                with self._cv:
                    self._fail_all(error)

    def _complete(self, bucket, error):
        with self._cv:
            step = self._pending.pop(bucket, None)
        if step is None or step.future is None:
            return  # failed by its timeout already
        if error is not None:
            step.future.set_exception(error)
            return
        try:
            value = step.finish(bucket)
        except BaseException as exc:  # reaches whoever waits on the future
            step.future.set_exception(exc)
            return
        step.future.set_result(value)

    def _expire(self):
        now = time.monotonic()
        with self._cv:
            for step in self._pending.values():
                if step.future is not None and step.deadline is not None and now >= step.deadline:
                    step.future.set_exception(Error(Status.TIMEOUT, step.timeout_text))
                    step.future = None

    def _fail_all(self, error):
        """Fail every pending future (under self._cv)."""
        for step in self._pending.values():
            if step.future is not None:
                step.future.set_exception(error)
        self._pending.clear()


# ---- copies between tensors and bucket regions ----

def _copy_in(region, tensor):
    """Write tensor (any float dtype, any device) into a float32 numpy region of its size."""
    torch.from_numpy(region).view(tensor.shape).copy_(tensor.detach())


def _copy_out(region, tensor):
    """Write a float32 numpy region into tensor (any float dtype, any device)."""
    tensor = tensor.detach()
    if tensor.device.type == "cpu" and tensor.dtype == torch.float32 and tensor.is_contiguous():
        np.copyto(tensor.numpy().reshape(-1), region)
    else:  # a copy first: torch does not take read-only arrays
        tensor.copy_(torch.from_numpy(region.copy()).view(tensor.shape))


def _layer_shape(tensor):
    return tuple(tensor.shape) or (1,)  # a 0-d tensor is a layer of one element


def _check_dense(tensor, what):
    if tensor.is_sparse:
        raise TypeError(f"{what}: sparse gradients are not supported by gcomp")
    if not tensor.is_floating_point():
        raise TypeError(f"{what}: gradient dtype {tensor.dtype} is not a floating type")


def _names_by_id(named_parameters):
    """{id(parameter): name} from named_parameters (pairs or a Module); DDP's "module."
    prefix is dropped so names match the model's own."""
    if named_parameters is None:
        return {}
    if isinstance(named_parameters, torch.nn.Module):
        named_parameters = named_parameters.named_parameters()
    names = {}
    for name, p in named_parameters:
        if not isinstance(name, str) or not isinstance(p, torch.Tensor):
            raise TypeError(f"named_parameters must give (name, tensor) pairs, got ({name!r}, {type(p).__name__})")
        names[id(p)] = name[len("module."):] if name.startswith("module.") else name
    return names


def _send_hints(client, step, optimizer, samples_per_step):
    """Hints for step: the learning rate of the optimizer's first group and the samples.

    A failure is not raised here: it can only be the connection's, and the submit that
    follows fails with it too and carries it to the step's future.
    """
    lr = optimizer.param_groups[0].get("lr") if optimizer is not None else None
    try:
        client.hint(step, lr=lr, samples=samples_per_step)
    except Error:
        pass


# ---- DDP communication hook ----

class HookState:
    """Options of :func:`ddp_comm_hook`, passed as the ``state`` of ``register_comm_hook``.

    ``client``: the :class:`gcomp.Client` to use (None: :func:`default_client`);
    ``timeout_ms``: longest wait for one bucket; ``named_parameters``: the model (or its
    ``named_parameters()``) so that gcomp layers carry the parameters' names (for
    per-layer overrides and statistics; else they are ``bucket{i}.param{j}``);
    ``optimizer`` and ``samples_per_step``: sent as hints (learning rate, samples) with
    every step; ``prefix``: start of the gcomp bucket names (unique per model: by default
    ``ddp0``, ``ddp1``... in the order the states are made, the same on every rank).
    """

    _count = itertools.count()

    def __init__(self, client=None, timeout_ms=DEFAULT_TIMEOUT_MS, named_parameters=None,
                 optimizer=None, samples_per_step=None, prefix=None):
        self.client = client
        self.timeout_ms = int(timeout_ms)
        self.optimizer = optimizer
        self.samples_per_step = samples_per_step
        self.prefix = prefix or f"ddp{next(HookState._count)}"
        self.iteration = 0  # the gcomp step of every bucket this iteration
        self._names = _names_by_id(named_parameters)
        self._buckets = {}  # DDP bucket index -> gcomp Bucket
        self._used = set()  # DDP bucket indices seen this iteration
        self._hinted = -1  # the last iteration hints were sent for

    def _bucket(self, client, index, layers):
        """The gcomp bucket for DDP bucket `index` with these layers: a bucket whose
        layers changed (DDP rebuilds its buckets after the first iteration) is
        unregistered and one with the new layers (and a new name) registered."""
        digest = hashlib.sha1(repr(layers).encode()).hexdigest()[:12]
        name = f"{self.prefix}.{index}.{digest}"
        b = self._buckets.get(index)
        if b is None or b.name != name:
            if b is not None:
                del self._buckets[index]
                b.unregister()
            b = self._buckets[index] = client.register(name, layers)
        self._used.add(index)
        return b

    def _end_iteration(self):
        """After the last bucket of an iteration: unregister the buckets DDP no longer has."""
        self.iteration += 1
        self._used, used = set(), self._used
        for index in [i for i in self._buckets if i not in used]:
            self._buckets.pop(index).unregister()

    def reduce(self, bucket):
        """The hook's work for one DDP GradBucket; returns its future (failed with the
        gcomp Error when registering or submitting fails)."""
        buf = bucket.buffer()
        index = bucket.index()
        layers = [(self._names.get(id(p), f"bucket{index}.param{j}"), _layer_shape(p))
                  for j, p in enumerate(bucket.parameters())]
        _check_dense(buf, f"DDP bucket {index}")
        numel = sum(math.prod(shape) for _, shape in layers)
        if numel != buf.numel():
            raise ValueError(f"DDP bucket {index}: its buffer has {buf.numel()} elements, its "
                             f"parameters {numel}")
        step = self.iteration
        try:
            if self.client is None:
                self.client = default_client()
            b = self._bucket(self.client, index, layers)
            if bucket.is_last():
                self._end_iteration()
        except Error as exc:
            fut = torch.futures.Future()
            fut.set_exception(exc)
            return fut
        if self._hinted != step:
            self._hinted = step
            _send_hints(self.client, step, self.optimizer, self.samples_per_step)
        _copy_in(b.data, buf)

        def finish(done):
            _copy_out(done.result, buf)
            return buf

        return _completer(self.client).submit(b, step, finish, self.timeout_ms, buf.device)


_default_state = None


def ddp_comm_hook(state, bucket):
    """DDP communication hook that averages each gradient bucket through gcompd.

    ``model.register_comm_hook(None, gcomp.torch.ddp_comm_hook)``: state None uses one
    :class:`HookState` per process with the default client (one DDP model per process;
    give each model its own HookState otherwise). DDP's layer boundaries become the gcomp
    bucket's layers, so per-layer codecs and policies apply. Returns a
    ``torch.futures.Future`` holding the averaged bucket buffer; a failed step fails
    it with the gcomp Error.
    """
    global _default_state
    if state is None:
        with _lock:
            if _default_state is None:
                _default_state = HookState()
        state = _default_state
    elif not isinstance(state, HookState):
        raise TypeError(f"ddp_comm_hook: state must be None or a gcomp.torch.HookState, "
                        f"got {type(state).__name__}")
    return state.reduce(bucket)


# ---- Horovod-style optimizer ----

class _OptBucket:
    """One gcomp bucket of DistributedOptimizer: its parameters and their regions."""

    def __init__(self, gbucket, params):
        self.gbucket = gbucket
        self.params = params
        self.inputs, self.results, offset = [], [], 0
        for p in params:
            n = p.numel()
            self.inputs.append(gbucket.data[offset:offset + n])
            self.results.append(gbucket.result[offset:offset + n])
            offset += n


class DistributedOptimizer(torch.optim.Optimizer):
    """Wrap an optimizer so that gradients are averaged through gcompd (Horovod's API).

    ``named_parameters``: the model's ``named_parameters()`` (names for the gcomp layers;
    else ``param.{i}``); every parameter of the optimizer that requires grad must be
    among them. Parameters go into buckets of about ``bucket_cap_mb`` MB in reverse
    order (as DDP does: the last layers' gradients are ready first); a bucket is submitted
    as soon as backward has produced all its gradients, on the autograd thread.
    :meth:`step` waits for every bucket (:meth:`synchronize`), then steps the wrapped
    optimizer. The learning rate of the first param group, the step number and
    ``samples_per_step`` (if given) are sent as hints with every step. No
    torch.distributed process group is needed; start every rank from the same
    parameters with :func:`broadcast_parameters`.

    ``param_groups``, ``state``, ``state_dict()`` and ``load_state_dict()`` are the
    wrapped optimizer's; ``zero_grad()`` passes through. One backward pass per step (a
    second gradient for a parameter before step() raises); a parameter that got no
    gradient in a step is reduced as zeros (and gets a zero gradient), like Horovod.
    """

    _count = itertools.count()

    def __init__(self, optimizer, named_parameters=None, client=None, bucket_cap_mb=25,
                 timeout_ms=DEFAULT_TIMEOUT_MS, samples_per_step=None, prefix=None):
        # torch.optim.Optimizer.__init__ is not called: the state is the wrapped one's.
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"DistributedOptimizer wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        self.optimizer = optimizer
        self.client = client or default_client()
        self.timeout_ms = int(timeout_ms)
        self.samples_per_step = samples_per_step
        params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        if len({id(p) for p in params}) != len(params):
            raise ValueError("the optimizer holds a parameter twice")
        names = _names_by_id(named_parameters)
        if named_parameters is None:
            names = {id(p): f"param.{i}" for i, p in enumerate(params)}
        else:
            missing = [p for p in params if id(p) not in names]
            if missing:
                raise ValueError(f"named_parameters lacks {len(missing)} of the optimizer's "
                                 f"parameters (the first has shape {tuple(missing[0].shape)})")
            if len(set(names.values())) != len(names):
                raise ValueError("named_parameters has duplicate names")
            order = {pid: i for i, pid in enumerate(names)}  # the model's order
            params.sort(key=lambda p: order[id(p)])
        self._names = names
        prefix = prefix or f"opt{next(DistributedOptimizer._count)}"
        self._buckets = []
        self._bucket_of = {}  # id(parameter) -> bucket index
        cap = bucket_cap_mb * 2**20
        group, size = [], 0
        for p in reversed(params):
            if group and size + 4 * p.numel() > cap:
                self._add_bucket(prefix, group)
                group, size = [], 0
            group.append(p)
            size += 4 * p.numel()
        if group:
            self._add_bucket(prefix, group)
        self._lock = threading.Lock()
        self._step = 0  # the gcomp step of every bucket
        self._ready = [0] * len(self._buckets)  # gradients ready per bucket this step
        self._seen = set()  # ids of the parameters whose gradient is ready
        self._futures = {}  # bucket index -> future, this step
        self._synced = False  # synchronize() ran since the last gradient
        self._accumulators = []  # keep the AccumulateGrad nodes (and so the hooks) alive
        with torch.enable_grad():
            for p in params:
                acc = p.expand_as(p).grad_fn.next_functions[0][0]
                acc.register_hook(functools.partial(self._grad_ready, p))
                self._accumulators.append(acc)

    def _add_bucket(self, prefix, params):
        k = len(self._buckets)
        layers = [(self._names[id(p)], _layer_shape(p)) for p in params]
        self._buckets.append(_OptBucket(self.client.register(f"{prefix}.{k}", layers), params))
        for p in params:
            self._bucket_of[id(p)] = k

    # The wrapped optimizer's state, seen through this one.
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group):
        raise NotImplementedError("DistributedOptimizer: add the parameter group to the "
                                  "optimizer before wrapping it")

    def __repr__(self):
        return f"gcomp.torch.DistributedOptimizer({self.optimizer!r})"

    def _grad_ready(self, p, *_):
        """AccumulateGrad hook: p.grad is final for this backward pass (autograd thread)."""
        with self._lock:
            if id(p) in self._seen:
                raise RuntimeError(f"gcomp DistributedOptimizer: parameter {self._names[id(p)]!r} "
                                   "got a second gradient before step(); call step() (or "
                                   "synchronize()) after every backward pass")
            self._seen.add(id(p))
            self._synced = False
            k = self._bucket_of[id(p)]
            self._ready[k] += 1
            if self._ready[k] == len(self._buckets[k].params):
                self._submit(k)

    def _submit(self, k):
        """Copy bucket k's gradients in and submit it (under self._lock)."""
        if not self._futures:
            _send_hints(self.client, self._step, self.optimizer, self.samples_per_step)
        b = self._buckets[k]
        for p, region in zip(b.params, b.inputs):
            _check_dense(p.grad, f"parameter {self._names[id(p)]!r}")
            _copy_in(region.reshape(_layer_shape(p)), p.grad)

        def finish(_):
            for p, region in zip(b.params, b.results):
                _copy_out(region, p.grad)

        self._futures[k] = _completer(self.client).submit(b.gbucket, self._step, finish,
                                                          self.timeout_ms, b.params[0].device)

    def synchronize(self):
        """Submit the buckets backward did not complete (missing gradients as zeros) and
        wait for all of this step's; the gradients then hold the mean over every trainer.
        Raises the first bucket's error (gcomp.Error) after every bucket ended."""
        with self._lock:
            for k, b in enumerate(self._buckets):
                if k not in self._futures:
                    for p in b.params:
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                    self._submit(k)
            futures = list(self._futures.values())
        errors = []
        for fut in futures:
            try:
                fut.wait()
            except Exception as exc:  # every bucket ends before the step does
                errors.append(exc)
        with self._lock:
            self._futures.clear()
            self._ready = [0] * len(self._buckets)
            self._seen.clear()
            self._step += 1
            self._synced = True
        if errors:
            raise errors[0]

    def step(self, closure=None):
        """Wait for the averaged gradients (unless synchronize() just did), then step."""
        if not self._synced:
            self.synchronize()
        self._synced = False
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none=False):
        """The wrapped optimizer's zero_grad; refused while gradients are being reduced."""
        with self._lock:
            if self._futures:
                raise RuntimeError("gcomp DistributedOptimizer: zero_grad() while gradients are "
                                   "being reduced; call step() or synchronize() first")
        self.optimizer.zero_grad(set_to_none)


# ---- broadcast ----

_broadcasts = {}  # Client -> broadcasts it made (their buckets' names)
# Most layers and elements in one broadcast bucket (the rest go into further buckets).
_BCAST_LAYERS = 4000
_BCAST_ELEMENTS = 1 << 26


def _env_int(name):
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        raise ValueError(f"{name} is not set to a number (gcomp-run sets it; or pass it)") from None


def _named_tensors(params):
    if isinstance(params, dict):
        items = list(params.items())
    else:
        items = [(f"tensor{i}", x) if isinstance(x, torch.Tensor) else tuple(x)
                 for i, x in enumerate(params)]
    for name, t in items:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"broadcast_parameters: {name!r} is a {type(t).__name__}, not a tensor")
    return [(str(name), t) for name, t in items if t.numel() > 0]


def broadcast_parameters(params, root_rank=0, client=None, timeout_ms=DEFAULT_TIMEOUT_MS,
                         rank=None, world_size=None):
    """Make every rank's tensors bitwise equal to root_rank's, in place.

    ``params``: a state_dict, ``named_parameters()`` pairs, or a list of tensors (any
    dtype and device). Goes through an exact bucket: root contributes its values times
    the world size, every other rank zeros, so the mean is root's value. To come back bit
    for bit (the daemon scales by a rounded 1/world, and float32 cannot hold every dtype)
    the tensors' bytes travel as 16-bit integers (8-bit beyond 256 trainers), which the
    float32 mean holds exactly up to a rounding that rint undoes. ``rank`` and
    ``world_size`` default to GCOMP_RANK and GCOMP_WORLD_SIZE; a world layer checks that
    they match the job. Every rank calls it with the same tensor names and shapes.
    """
    rank = _env_int("GCOMP_RANK") if rank is None else int(rank)
    world = _env_int("GCOMP_WORLD_SIZE") if world_size is None else int(world_size)
    if not 0 <= root_rank < world:
        raise ValueError(f"root_rank {root_rank} is not a rank of a job of {world} trainers")
    client = client or default_client()
    unit = np.uint16 if world <= 256 else np.uint8
    tensors = _named_tensors(params)
    with _lock:
        number = _broadcasts[client] = _broadcasts.get(client, -1) + 1
    groups, group, size = [], [], 0
    for name, t in tensors:
        n = -(-t.numel() * t.element_size() // np.dtype(unit).itemsize)
        if group and (len(group) >= _BCAST_LAYERS or size + n > _BCAST_ELEMENTS):
            groups.append(group)
            group, size = [], 0
        group.append((name, t, n))
        size += n
    groups.append(group)
    for g, group in enumerate(groups):
        layers = [("gcomp.world", (1,))] + [(name, (n,)) for name, _, n in group]
        b = client.register(f"gcomp.broadcast{number}.{g}", layers, exact=True)
        try:
            _broadcast_group(b, group, root_rank, rank, world, unit, timeout_ms)
        except BaseException:
            with contextlib.suppress(Error):  # the step may still be in flight (BUSY)
                b.unregister()
            raise
        b.unregister()


def _broadcast_group(b, group, root_rank, rank, world, unit, timeout_ms):
    """One bucket of broadcast_parameters: [world check] + one layer per tensor."""
    regions = b._split(b.data)
    regions[0][:] = world if rank == root_rank else 0
    for (_, t, n), region in zip(group, regions[1:]):
        if rank == root_rank:
            raw = t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy()
            words = np.zeros(n * np.dtype(unit).itemsize, np.uint8)
            words[:raw.size] = raw
            np.multiply(words.view(unit), world, out=region, dtype=np.float32)
        else:
            region[:] = 0
    b.submit(0)
    b.wait(timeout_ms)
    results = b._split(b.result)
    check = float(results[0][0])
    if abs(check - 1.0) > 1e-3:
        raise ValueError(f"broadcast_parameters: the job does not agree on the ranks "
                         f"(world size {world}, root_rank {root_rank}: the world check "
                         f"came back {check}, not 1; exactly one trainer must be the root)")
    if rank != root_rank:
        with torch.no_grad():
            for (_, t, n), result in zip(group, results[1:]):
                raw = np.rint(result).astype(unit).view(np.uint8)[:t.numel() * t.element_size()]
                t.copy_(torch.from_numpy(raw.copy()).view(t.dtype).view(t.shape))


# ---- process group for DDP ----

def init_process_group(backend="gloo", **kwargs):
    """torch.distributed.init_process_group() for a trainer started by gcomp-run.

    RANK, WORLD_SIZE and LOCAL_RANK default to GCOMP_RANK, GCOMP_WORLD_SIZE and
    GCOMP_LOCAL_RANK, MASTER_ADDR to 127.0.0.1; MASTER_PORT must be set. Only DDP's own
    set-up goes through this group when the gcomp hook is registered.
    """
    for var, src in (("RANK", "GCOMP_RANK"), ("WORLD_SIZE", "GCOMP_WORLD_SIZE"),
                     ("LOCAL_RANK", "GCOMP_LOCAL_RANK")):
        if var not in os.environ:
            if src not in os.environ:
                raise ValueError(f"neither {var} nor {src} is set (start the job with gcomp-run)")
            os.environ[var] = os.environ[src]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        raise ValueError("MASTER_PORT is not set: pick a free port for torch.distributed")
    torch.distributed.init_process_group(backend, **kwargs)
