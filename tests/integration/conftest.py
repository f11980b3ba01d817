"""Fixtures of the integration tests: the build to test, daemons, agent trainers.

The build directory comes from $GCOMP_BUILD_DIR (meson test sets it). Without it, or
without mpirun, the tests are skipped; a build directory that lacks gcompd, gcompctl,
the client library or the launcher scripts is a failure, not a skip.
"""

import os
import shutil

import pytest

from helpers import Agent, Build, Daemons


def _cleanup(things):
    """Close (kill) every Daemons/Agent even if one of them fails; then re-raise the first error."""
    first = None
    for thing in things:
        try:
            thing.close()
        except Exception as exc:  # keep cleaning up the others
            first = first or exc
    if first:
        raise first


@pytest.fixture(scope="session")
def build():
    root = os.environ.get("GCOMP_BUILD_DIR")
    if not root:
        pytest.skip("GCOMP_BUILD_DIR is not set (run through `meson test` or set it to a build dir)")
    if not shutil.which("mpirun"):
        pytest.skip("mpirun is not installed")
    b = Build(root)
    missing = b.missing()
    if missing:
        pytest.fail(f"the build directory {root} lacks: {', '.join(missing)}")
    # gcomp.Client in the test process itself finds the library through this.
    os.environ["GCOMP_LIBRARY"] = b.library
    return b


@pytest.fixture
def start_daemons(build, tmp_path):
    """start_daemons([T0, T1, ...], codec=..., timeout_ms=...) -> ready Daemons; all killed after the test."""
    started = []

    def start(trainers, **kwargs):
        d = Daemons(build, trainers, logdir=str(tmp_path), **kwargs)
        started.append(d)
        return d.wait_ready()

    try:
        yield start
    finally:
        _cleanup(started)


@pytest.fixture
def agents(build, tmp_path):
    """agents(name) -> a new Agent trainer process; all killed after the test."""
    made = []

    def make(name="agent"):
        a = Agent(build, name, logdir=str(tmp_path))
        made.append(a)
        return a

    try:
        yield make
    finally:
        _cleanup(made)
