"""`pip install ./client/python` into a fresh virtual environment (seeing the system's
site packages, whose pip does the install; no network), then the installed copy against
a real daemon."""

import os
import shutil
import subprocess

from helpers import PYDIR, PYTHON

SCRIPT = """
import importlib.util, sys, numpy, gcomp
if importlib.util.find_spec("torch"):
    import gcomp.torch  # installed with the rest
c = gcomp.Client(socket=sys.argv[1], job_id=sys.argv[2], local_rank=0)
b = c.register("b", [("w", (2, 3))], exact=True)
print(gcomp.__file__, gcomp.__version__, b.allreduce(numpy.arange(6)).tolist())
"""


def test_pip_install_into_a_venv(build, start_daemons, tmp_path):
    # A copy of the sources: pip builds in the tree it is given.
    src = tmp_path / "src"
    shutil.copytree(PYDIR, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    res = subprocess.run([py, "-m", "pip", "install", "--no-index", "--no-build-isolation", str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr

    d = start_daemons([1])
    env = build.env()
    del env["PYTHONPATH"]  # the installed copy, not the source tree
    res = subprocess.run([py, "-c", SCRIPT, d.sock(0), d.job_id], capture_output=True, text=True,
                         timeout=120, env=env, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    path, version, values = res.stdout.split(" ", 2)
    assert path.startswith(str(venv)) and os.path.basename(os.path.dirname(path)) == "gcomp", path
    assert version == "0.1.0"
    assert values.strip() == "[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]"
