"""Reading and validating gradient traces (format gcomp-trace/1, design.md section 5).

::

    TRACE/manifest.json   {"format": "gcomp-trace/1", "workers": W, "steps": S,
                           "buckets": [{"name": "b0", "layers": [{"name": "conv1.weight",
                                        "shape": [64, 3, 3, 3], "dtype": "float32"}]}],
                           "hints": [{"step": 0, "lr": 0.1, "epoch_end": false,
                                      "samples": 32}]}            (hints optional)
    TRACE/w{worker}/s{step}/{bucket}.npy   flat little-endian float32, the bucket's
                                           layers concatenated in manifest order

A trace recorded from a live job (``gcompctl trace start``) adds: "trainers_per_node"
(the job's trainers on each node: workers are numbered node-major, and gcomp-replay
replays on that many nodes by default), "first_step" (the job's step of trace step 0),
"recording" (true while it is being recorded), "complete" (false: it ended early or the
daemons stopped; "steps" counts the steps completely written) and "error" (why).

Every problem is reported as a :class:`TraceError` naming the file and what is wrong.
"""

import dataclasses
import json
import math
import os
import tokenize

import numpy as np
from numpy.lib import format as npy_format

FORMAT = "gcomp-trace/1"
MAX_NAME = 255
MAX_DIMS = 8
_HINT_KEYS = {"step", "lr", "epoch_end", "samples"}


class TraceError(Exception):
    """The trace is malformed; the message names the file and the problem."""


@dataclasses.dataclass
class BucketSpec:
    """One bucket of the manifest: its name, (layer name, shape) pairs and size."""

    name: str
    layers: list
    numel: int


@dataclasses.dataclass
class Trace:
    """A trace's manifest (validated) and where its files are."""

    path: str
    workers: int
    steps: int
    buckets: list
    hints: dict  # step -> {"lr": ..., "samples": ..., "epoch_end": ...}
    trainers_per_node: list = None  # recorded traces: trainers on each node of the job
    complete: bool = True           # recorded traces: false when it ended early
    error: str = None               # ... and why

    def npy_path(self, worker, step, bucket):
        """Path of the gradients of one worker, step and bucket (a BucketSpec or name)."""
        name = bucket.name if isinstance(bucket, BucketSpec) else bucket
        return os.path.join(self.path, f"w{worker}", f"s{step}", f"{name}.npy")

    def check_files(self):
        """Check that every .npy file of the trace exists and has the right header/size."""
        for worker in range(self.workers):
            for step in range(self.steps):
                for bucket in self.buckets:
                    check_npy(self.npy_path(worker, step, bucket), bucket)

    def read_into(self, worker, step, bucket, out):
        """Read one .npy file (checked) into the float32 array ``out`` (no temporary)."""
        path = self.npy_path(worker, step, bucket)
        offset = check_npy(path, bucket)
        with open(path, "rb") as f:
            f.seek(offset)
            want = bucket.numel * 4
            got = f.readinto(memoryview(out).cast("B")) if want else 0
        if got != want:
            raise TraceError(f"{path}: {got} bytes of data, expected {want}")


def _fail(path, text):
    raise TraceError(f"{path}: {text}")


def _check_name(path, what, name):
    if not isinstance(name, str) or not name:
        _fail(path, f"{what} must be a non-empty string, got {name!r}")
    try:
        encoded = name.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") from the JSON
        _fail(path, f"{what} {name!r} is not valid Unicode text")
    if len(encoded) > MAX_NAME or "\0" in name:
        _fail(path, f"{what} {name!r} is longer than {MAX_NAME} bytes or holds a NUL")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def load(path):
    """Load and validate TRACE/manifest.json; return a :class:`Trace`.

    Checks the format string, the counts, bucket and layer names (bucket names are file
    names, so no '/'), shapes and dtypes, and the optional hints. Does not open the
    .npy files (see :meth:`Trace.check_files`).
    """
    mpath = os.path.join(path, "manifest.json")
    try:
        with open(mpath, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise TraceError(f"{mpath}: no such file (is {path} a gcomp trace?)") from None
    except (OSError, ValueError) as exc:
        raise TraceError(f"{mpath}: cannot read it: {exc}") from None
    except RecursionError:
        raise TraceError(f"{mpath}: cannot read it: JSON nested too deeply") from None
    if not isinstance(manifest, dict):
        _fail(mpath, "expected a JSON object")
    if manifest.get("format") != FORMAT:
        _fail(mpath, f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("recording") is True:
        _fail(mpath, "the trace is still being recorded (gcompctl trace status tells how far "
                     "it is; a daemon that died while recording leaves it so)")
    error = manifest.get("error")
    if error is not None and not isinstance(error, str):
        _fail(mpath, f"'error' must be a string or null, got {error!r}")
    if manifest.get("steps") == 0 and error:
        _fail(mpath, f"no step was recorded completely: {error}")
    complete = manifest.get("complete", True)
    if not isinstance(complete, bool):
        _fail(mpath, f"'complete' must be true or false, got {complete!r}")
    for key in ("workers", "steps"):
        value = manifest.get(key)
        if not _is_int(value) or value < 1:
            _fail(mpath, f"{key!r} must be an integer >= 1, got {value!r}")
    per_node = manifest.get("trainers_per_node")
    if per_node is not None and (not isinstance(per_node, list) or not per_node
                                 or not all(_is_int(t) and t >= 1 for t in per_node)
                                 or sum(per_node) != manifest["workers"]):
        _fail(mpath, f"'trainers_per_node' must be a list of integers >= 1 adding up to the "
                     f"{manifest['workers']} workers, got {per_node!r}")
    buckets_json = manifest.get("buckets")
    if not isinstance(buckets_json, list) or not buckets_json:
        _fail(mpath, "'buckets' must be a non-empty list")
    buckets, seen = [], set()
    for i, b in enumerate(buckets_json):
        if not isinstance(b, dict):
            _fail(mpath, f"buckets[{i}] must be an object")
        name = b.get("name")
        _check_name(mpath, f"buckets[{i}].name", name)
        if "/" in name or name in (".", ".."):
            _fail(mpath, f"bucket name {name!r} cannot be used as a file name")
        if name in seen:
            _fail(mpath, f"bucket {name!r} appears twice")
        seen.add(name)
        layers_json = b.get("layers")
        if not isinstance(layers_json, list) or not layers_json:
            _fail(mpath, f"bucket {name!r}: 'layers' must be a non-empty list")
        layers, layer_names = [], set()
        for j, layer in enumerate(layers_json):
            where = f"bucket {name!r} layers[{j}]"
            if not isinstance(layer, dict):
                _fail(mpath, f"{where} must be an object")
            lname = layer.get("name")
            _check_name(mpath, f"{where}.name", lname)
            if lname in layer_names:
                _fail(mpath, f"bucket {name!r}: layer {lname!r} appears twice")
            layer_names.add(lname)
            shape = layer.get("shape")
            if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                    or not all(_is_int(d) and d >= 1 for d in shape)):
                _fail(mpath, f"bucket {name!r} layer {lname!r}: shape must be a list of at "
                             f"most {MAX_DIMS} integers >= 1, got {shape!r}")
            dtype = layer.get("dtype", "float32")
            if dtype != "float32":
                _fail(mpath, f"bucket {name!r} layer {lname!r}: dtype {dtype!r} is not "
                             "supported (only float32)")
            layers.append((lname, tuple(shape)))
        numel = sum(math.prod(shape) for _, shape in layers)
        buckets.append(BucketSpec(name, layers, numel))
    hints = {}
    hints_json = manifest.get("hints", [])
    if not isinstance(hints_json, list):
        _fail(mpath, "'hints' must be a list")
    for i, h in enumerate(hints_json):
        if not isinstance(h, dict):
            _fail(mpath, f"hints[{i}] must be an object")
        unknown = set(h) - _HINT_KEYS
        if unknown:
            _fail(mpath, f"hints[{i}]: unknown keys {sorted(unknown)} (known: {sorted(_HINT_KEYS)})")
        step = h.get("step")
        if not _is_int(step) or not 0 <= step < manifest["steps"]:
            _fail(mpath, f"hints[{i}].step must be an integer in [0, {manifest['steps']}), got {step!r}")
        if step in hints:
            _fail(mpath, f"hints[{i}]: a second hint for step {step}")
        lr = h.get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))
                               or not math.isfinite(lr)):
            _fail(mpath, f"hints[{i}].lr must be a finite number, got {lr!r}")
        samples = h.get("samples")
        if samples is not None and (not _is_int(samples) or samples < 0):
            _fail(mpath, f"hints[{i}].samples must be an integer >= 0, got {samples!r}")
        epoch_end = h.get("epoch_end", False)
        if not isinstance(epoch_end, bool):
            _fail(mpath, f"hints[{i}].epoch_end must be true or false, got {epoch_end!r}")
        hints[step] = {"lr": lr, "samples": samples, "epoch_end": epoch_end}
    return Trace(path=path, workers=manifest["workers"], steps=manifest["steps"],
                 buckets=buckets, hints=hints, trainers_per_node=per_node,
                 complete=complete, error=error)


def check_npy(path, bucket):
    """Check one .npy file against its bucket; return the offset of its data.

    It must exist, be an .npy file of version 1.0 (2.0 is accepted too), hold a flat
    little-endian float32 array of bucket.numel elements, and be exactly that long.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise TraceError(f"{path}: missing (bucket {bucket.name!r} needs one file per "
                         "worker and step)") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot open it: {exc.strerror}") from None
    with f:
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            else:
                _fail(path, f"npy format version {version[0]}.{version[1]} is not supported (1.0)")
        except (ValueError, SyntaxError, tokenize.TokenError) as exc:
            # numpy parses the header with Python's tokenizer: a malformed one raises
            # its errors too.
            raise TraceError(f"{path}: not a valid .npy file: {exc}") from None
        offset = f.tell()
        size = os.fstat(f.fileno()).st_size
    if dtype != np.dtype("<f4"):
        _fail(path, f"dtype is {dtype.str}, expected little-endian float32 (<f4)")
    if len(shape) != 1:
        _fail(path, f"shape is {shape}, expected a flat array of {bucket.numel} elements")
    if shape[0] != bucket.numel:
        _fail(path, f"holds {shape[0]} elements, bucket {bucket.name!r} has {bucket.numel} "
                    f"(layers {', '.join(f'{n}{list(s)}' for n, s in bucket.layers)})")
    if size - offset != bucket.numel * 4:
        _fail(path, f"truncated or padded: {size - offset} bytes of data, expected {bucket.numel * 4}")
    return offset
