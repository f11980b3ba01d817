"""Nothing the tests start outlives the test process, also when it is killed with
SIGKILL (no finally runs): daemons under mpirun, their ranks, agent trainers and
gcomp-run with its daemons and trainers all die with it (helpers.popen)."""

import json
import os
import shutil
import signal
import subprocess
import time

from helpers import HERE, PYTHON, popen, proc_stat, processes_of_job, wait_for_files


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def test_sigkilled_test_process_leaves_nothing(build, tmp_path):
    out = tmp_path / "probe.json"
    log = open(tmp_path / "probe.log", "wb")
    probe = popen([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   os.path.join(HERE, "orphan_probe.py")],
                  stdout=log, stderr=subprocess.STDOUT, cwd=HERE,
                  env=build.env(GCOMP_BUILD_DIR=build.root, PROBE_OUT=out))
    started = {}
    try:
        wait_for_files([out], 120, probe, "the probe starting its processes")
        started = json.loads(out.read_text())
        before = [p for job in started["jobs"] for p in processes_of_job(job)]
        # Both jobs' mpirun and two daemons each, gcomp-run's two trainers.
        assert len(before) >= 8, before
        assert all(alive(p) for p in started["pids"])
        probe.send_signal(signal.SIGKILL)
        probe.wait()
        left = before
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = [p for job in started["jobs"] for p in processes_of_job(job)]
            left += [(p, "agent or gcomp-run") for p in started["pids"] if alive(p)]
            if not left:
                break
            time.sleep(0.1)
        assert not left, f"left behind by a SIGKILLed test process: {left}\n" + \
            (tmp_path / "probe.log").read_text()[-3000:]
    finally:
        probe.kill()
        log.close()
        if started:  # what the killed probe's own clean-up would have removed
            shutil.rmtree(started["dir"], ignore_errors=True)
