#!/usr/bin/python3
"""Write the seed corpora of every fuzz target into tests/fuzz/corpus/TARGET/, with the
inputs of the bugs the fuzzers found (fixed; kept as regression seeds).

    tests/fuzz/make_corpus.py [BUILD]      (BUILD: a build directory, default ./build)

The C targets' files come from BUILD/tests/fuzz/fuzz-seeds (make_seeds.c: packed
protobuf messages, payloads made by each codec's encode(), checkpoints written by the
policies', codecs' and gcompd's own save functions); the Python targets' seeds are
written here: .npy files of a 6-element bucket (fuzz_npy.py) and trace manifests
(fuzz_manifest.py), valid ones and ones with one thing wrong. The old files are removed
first; the output is the same on every run, so a diff shows what a change of a format did.
"""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from numpy.lib import format as npy_format

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
C_TARGETS = ("fuzz_messages", "fuzz_codecs", "fuzz_checkpoint")


def npy_bytes(array, version=None):
    buf = io.BytesIO()
    npy_format.write_array(buf, np.asarray(array), version=version, allow_pickle=False)
    return buf.getvalue()


def npy_seeds():
    six = np.array([0.5, -1.0, 0.0, 3.25, -0.0, 1e-8], dtype="<f4")
    good = npy_bytes(six, (1, 0))
    return {
        "v1-6floats.npy": good,
        "v2-6floats.npy": npy_bytes(six, (2, 0)),
        "v3-6floats.npy": npy_bytes(six, (3, 0)),
        "nonfinite.npy": npy_bytes(np.array([np.nan, np.inf, -np.inf, 1, 2, 3], dtype="<f4")),
        "float64.npy": npy_bytes(six.astype("<f8")),
        "big-endian.npy": npy_bytes(six.astype(">f4")),
        "2d-2x3.npy": npy_bytes(six.reshape(2, 3)),
        "fortran-3x2.npy": npy_bytes(np.asfortranarray(six.reshape(3, 2))),
        "5floats.npy": npy_bytes(six[:5]),
        "truncated.npy": good[:-4],
        "padded.npy": good + b"\0\0\0\0",
        "bad-magic.npy": b"\x93NUMPZ" + good[6:],
    }


def manifest_seeds():
    layers = [{"name": "conv1.weight", "shape": [4, 3, 3, 3], "dtype": "float32"},
              {"name": "conv1.bias", "shape": [4]}]
    base = {"format": "gcomp-trace/1", "workers": 2, "steps": 3,
            "buckets": [{"name": "b0", "layers": layers}]}

    def variant(**changes):
        m = json.loads(json.dumps(base))
        m.update(changes)
        return m

    fc = {"name": "fc", "layers": [{"name": "fc.w", "shape": [10, 8]}]}
    two = [{"name": "b0", "layers": layers}, fc]

    def one_layer(**layer):
        return [{"name": "b0", "layers": [dict(name="w", **layer)]}]

    seeds = {
        "minimal.json": base,
        "two-buckets.json": variant(buckets=two),
        "hints.json": variant(hints=[{"step": 0, "lr": 0.1, "samples": 32},
                                     {"step": 2, "epoch_end": True}]),
        "bad-format.json": variant(format="gcomp-trace/2"),
        "zero-workers.json": variant(workers=0),
        "bool-steps.json": variant(steps=True),
        "duplicate-bucket.json": variant(buckets=[two[0], two[0]]),
        "slash-in-bucket.json": variant(buckets=[{"name": "../b0", "layers": layers}]),
        "zero-dim.json": variant(buckets=one_layer(shape=[4, 0])),
        "nine-dims.json": variant(buckets=one_layer(shape=[1] * 9)),
        "float16.json": variant(buckets=one_layer(shape=[4], dtype="float16")),
        "hint-out-of-range.json": variant(hints=[{"step": 3, "lr": 0.1}]),
        "hint-unknown-key.json": variant(hints=[{"step": 1, "momentum": 0.9}]),
        # What gcompctl trace writes when a recording ends early (daemon/trace.c).
        "recorded-partial.json": {
            "format": "gcomp-trace/1", "workers": 3, "steps": 2, "recording": False,
            "complete": False,
            "error": "node 1: writing /t/w2/s2/b0.npy failed: No space left on device",
            "first_step": 40, "trainers_per_node": [2, 1],
            "buckets": [{"name": "b0", "layers": [{"name": "fc.weight", "shape": [4, 8],
                                                   "dtype": "float32"}]}],
            "hints": [{"step": 0, "lr": 0.1, "samples": 32}, {"step": 1, "epoch_end": True}]},
    }
    out = {name: json.dumps(m, sort_keys=True).encode() for name, m in seeds.items()}
    out["not-an-object.json"] = b"[1, 2, 3]"
    out["not-json.json"] = b'{"format": "gcomp-trace/1", "workers": '
    return out


def manifest_regressions():
    """Manifests on which trace.load once raised something other than TraceError (the
    replay died with a traceback instead of "invalid trace"); fixed, kept as seeds."""
    name = b'{"format": "gcomp-trace/1", "workers": 1, "steps": 1, "buckets": ' \
           b'[{"name": "\\ud800", "layers": [{"name": "w", "shape": [1]}]}]}'
    return {
        # A lone surrogate in a name: UnicodeEncodeError from _check_name's encode().
        "surrogate-bucket-name.json": name,
        # Deeply nested JSON: RecursionError from json.load.
        "deep-nesting.json": b"[" * 5000,
    }


def npy_regressions():
    """.npy files on which check_npy once raised something other than TraceError."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (6, "
    header += b" " * (63 - len(header)) + b"\n"
    return {
        # An unclosed parenthesis in the header: numpy's header parser raises
        # tokenize.TokenError, which check_npy did not catch (it caught ValueError).
        "unclosed-header.npy": b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header,
    }


def write(target, seeds, root=CORPUS):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    generator = os.path.join(build, "tests", "fuzz", "fuzz-seeds")
    if not os.access(generator, os.X_OK):
        sys.exit(f"make_corpus: {generator} not found: build first (ninja -C {build})")
    shutil.rmtree(CORPUS, ignore_errors=True)
    subprocess.run([generator, CORPUS], check=True)
    write("fuzz_npy", npy_seeds())
    write("fuzz_manifest", manifest_seeds())
    write("fuzz_npy", npy_regressions())
    write("fuzz_manifest", manifest_regressions())
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print(f"corpus/{target}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()
