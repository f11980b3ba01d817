"""The runner of the Python fuzz targets (fuzz_npy.py, fuzz_manifest.py).

A target imports the code under test inside ``with pyfuzz.instrumented(MODULES):`` and
calls ``main(test_one_input)``. Run plainly, ``python3 TARGET.py PATH...``
calls test_one_input once on every corpus file (PATH: files or directories), without
atheris, as ``meson test`` does; it fails if no corpus file was found. With ``--fuzz``
first, the remaining arguments go to atheris (libFuzzer's flags and corpus directories)
and MODULES (fully qualified names) were imported with atheris' coverage instrumentation.
test_one_input signals a failed check by raising: an exception that
escapes is a crash.
"""

import contextlib
import os
import sys

FUZZING = sys.argv[1:2] == ["--fuzz"]


def replay(test_one_input, paths):
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += [os.path.join(path, n) for n in sorted(os.listdir(path))
                      if not n.startswith(".") and os.path.isfile(os.path.join(path, n))]
        else:
            files.append(path)
    if not files:
        sys.exit(f"{sys.argv[0]}: no corpus file in {paths}")
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        try:
            test_one_input(data)
        except Exception:
            print(f"{sys.argv[0]}: corpus file {path} failed:", file=sys.stderr)
            raise
    print(f"{sys.argv[0]}: {len(files)} corpus files ran without a failed check")


def instrumented(modules):
    """Imports in this block are instrumented for atheris when fuzzing, only `modules`."""
    if not FUZZING:
        return contextlib.nullcontext()
    import atheris  # only for fuzzing: deploy/install-deps.sh --fuzz VENV installs it

    return atheris.instrument_imports(include=list(modules))


def main(test_one_input):
    if not FUZZING:
        replay(test_one_input, sys.argv[1:])
        return
    import atheris

    atheris.Setup([sys.argv[0]] + sys.argv[2:], test_one_input)
    atheris.Fuzz()
