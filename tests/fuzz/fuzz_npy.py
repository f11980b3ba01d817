"""fuzz_npy: the trace .npy reader (gcomp.trace.check_npy and Trace.read_into) on any
bytes, as the file of a bucket of NUMEL elements.

Checked: every file is either refused with a TraceError or accepted; an accepted file
is exactly what numpy's own np.load reads as a flat little-endian float32 array of
NUMEL elements, and read_into gives its data bit for bit. Run by pyfuzz (see there).
"""

import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyfuzz  # noqa: E402

with pyfuzz.instrumented(["gcomp.trace"]):  # numpy, imported before, is not instrumented
    from gcomp import trace

NUMEL = 6  # the bucket's size: the seeds (make_corpus.py) are mostly files of 6 floats
BUCKET = trace.BucketSpec("b0", [("w", (2, 3))], NUMEL)
TRACE_DIR = tempfile.mkdtemp(prefix="fuzz-npy-")
TR = trace.Trace(path=TRACE_DIR, workers=1, steps=1, buckets=[BUCKET], hints={})
PATH = TR.npy_path(0, 0, BUCKET)
os.makedirs(os.path.dirname(PATH))


def test_one_input(data):
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        offset = trace.check_npy(PATH, BUCKET)
    except trace.TraceError:
        return
    assert offset + 4 * NUMEL == len(data), (offset, len(data))
    want = np.load(PATH, allow_pickle=False)
    assert want.dtype == np.dtype("<f4") and want.shape == (NUMEL,), (want.dtype, want.shape)
    got = np.full(NUMEL, np.nan, dtype=np.float32)
    TR.read_into(0, 0, BUCKET, got)
    assert got.tobytes() == want.tobytes()


if __name__ == "__main__":
    try:
        pyfuzz.main(test_one_input)
    finally:
        shutil.rmtree(TRACE_DIR)
