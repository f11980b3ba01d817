"""fuzz_manifest: the trace manifest parser (gcomp.trace.load) on any bytes as
TRACE/manifest.json.

Checked: every manifest is either refused with a TraceError (what gcomp-replay reports
as "invalid trace") or accepted; an accepted one keeps the promises trace.load makes:
counts are integers >= 1, bucket names are unique and their .npy paths stay inside the
trace's w{worker}/s{step}/ directories, layer names are unique non-empty strings of at
most MAX_NAME bytes without NUL, shapes have at most MAX_DIMS dimensions >= 1, a
bucket's numel is the sum of its layers' sizes, hints name steps of the trace, and a
recorded trace's trainers_per_node (if any) are counts >= 1 adding up to the workers. Run
by pyfuzz (see there).
"""

import math
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyfuzz  # noqa: E402

with pyfuzz.instrumented(["gcomp.trace", "json", "json.decoder"]):
    from gcomp import trace

TRACE_DIR = tempfile.mkdtemp(prefix="fuzz-manifest-")
MANIFEST = os.path.join(TRACE_DIR, "manifest.json")


def is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def check_trace(tr):
    assert is_count(tr.workers) and is_count(tr.steps), (tr.workers, tr.steps)
    names = [b.name for b in tr.buckets]
    assert names and len(set(names)) == len(names), names
    for b in tr.buckets:
        path = tr.npy_path(tr.workers - 1, tr.steps - 1, b)
        assert os.path.dirname(os.path.normpath(path)) == \
            os.path.join(TRACE_DIR, f"w{tr.workers - 1}", f"s{tr.steps - 1}"), path
        assert os.path.basename(path) == b.name + ".npy", path
        lnames = [name for name, _ in b.layers]
        assert lnames and len(set(lnames)) == len(lnames), lnames
        for name, shape in b.layers:
            assert isinstance(name, str) and name and "\0" not in name, name
            assert len(name.encode()) <= trace.MAX_NAME, name
            assert len(shape) <= trace.MAX_DIMS and all(is_count(d) for d in shape), shape
        assert b.numel == sum(math.prod(s) for _, s in b.layers), b
    assert all(isinstance(s, int) and 0 <= s < tr.steps for s in tr.hints), tr.hints
    if tr.trainers_per_node is not None:
        assert all(is_count(t) for t in tr.trainers_per_node), tr.trainers_per_node
        assert sum(tr.trainers_per_node) == tr.workers, tr.trainers_per_node
    assert isinstance(tr.complete, bool) and (tr.error is None or isinstance(tr.error, str))


def test_one_input(data):
    with open(MANIFEST, "wb") as f:
        f.write(data)
    try:
        tr = trace.load(TRACE_DIR)
    except trace.TraceError:
        return
    check_trace(tr)


if __name__ == "__main__":
    try:
        pyfuzz.main(test_one_input)
    finally:
        shutil.rmtree(TRACE_DIR)
