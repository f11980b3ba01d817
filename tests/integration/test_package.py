"""What is installed: `pip install ./client/python` into a fresh virtual environment
(seeing the system's site packages, whose pip does the install; no network), used
against a real daemon; and the gcomp.pc that `meson install` puts down."""

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


PROGRAM = r"""
#include <gcomp.h>
#include <stdio.h>
int main(void) { puts(gcomp_err_name(GCOMP_TIMEOUT)); return 0; }
"""


def test_pkg_config_file_builds_a_program(build, tmp_path):
    # `meson install` into a staging directory; gcomp.pc must give working flags.
    dest = tmp_path / "dest"
    res = subprocess.run(["meson", "install", "-C", build.root, "--no-rebuild", "--destdir", str(dest)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    pcs = list(dest.rglob("pkgconfig/gcomp.pc"))
    assert len(pcs) == 1, pcs
    env = dict(os.environ, PKG_CONFIG_PATH=str(pcs[0].parent), PKG_CONFIG_SYSROOT_DIR=str(dest))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "gcomp"], capture_output=True,
                           text=True, env=env, check=True).stdout.split()
    assert "-lgcomp-client" in flags, flags
    (tmp_path / "p.c").write_text(PROGRAM)
    # A sanitized build's library needs the sanitizer runtimes at link time (the suite
    # preloads ASan when it runs sanitized: deploy/dev.sh test --sanitize); the compiler
    # itself runs without the preload (its own leaks are not ours).
    san = ["-fsanitize=address,undefined"] if "libasan" in os.environ.get("LD_PRELOAD", "") else []
    cc_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run(["cc", str(tmp_path / "p.c"), "-o", str(tmp_path / "p"), *flags, *san],
                   check=True, timeout=120, env=cc_env)
    libdir = next(f[2:] for f in flags if f.startswith("-L"))
    out = subprocess.run([str(tmp_path / "p")], capture_output=True, text=True, check=True,
                         env=dict(os.environ, LD_LIBRARY_PATH=libdir)).stdout
    assert out.strip() == "GCOMP_TIMEOUT"
