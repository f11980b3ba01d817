"""A node that stops (SIGSTOP) or dies (SIGKILL) in the middle of a data collective is
detected and named within the timeout, like one that stops during the negotiation."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import HERE, PYTHON


def namespace_works():
    if not shutil.which("unshare") or not shutil.which("tc"):
        return "unshare or tc (iproute2) is not installed"
    r = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up && tc qdisc add dev lo "
                        "root tbf rate 1gbit burst 1mb latency 50ms"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"no private network namespace here: {r.stderr.strip()}"


@pytest.mark.parametrize("sig", ["STOP", "KILL"])
def test_node_hit_during_the_exchange_is_named(build, sig):
    why = namespace_works()
    if why:
        pytest.skip(why)
    timeout_ms = 3000
    r = subprocess.run(["unshare", "-n", PYTHON, os.path.join(HERE, "stall_scenario.py"),
                        "100mbit", str(timeout_ms), sig], capture_output=True, text=True,
                       timeout=180, env=build.env(GCOMP_BUILD_DIR=build.root))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert not res["ok"], res
    assert "node 1 stopped answering" in res["message"], res
    if sig == "STOP":
        assert res["name"] == "GCOMP_STALL", res
        assert "during the exchange of bucket 'big' step 0" in res["message"], res
        # Named within the timeout plus the liveness check (at most 2 s) and some slack.
        assert res["elapsed_s"] < timeout_ms / 1000 + 2 + 3, res
    else:
        # A dead node is named at once: mpirun takes the job down, or the exchange fails.
        assert res["name"] == "GCOMP_PEER_LOST", res
        assert res["elapsed_s"] < 5, res
