"""Run by test_orphans.py as a pytest process of its own, which that test then kills with
SIGKILL: starts what a test starts (daemons under mpirun, an agent trainer, a gcomp-run
job with two trainers), writes the two job ids, the pids of the agent and gcomp-run and
the daemons' socket directory to $PROBE_OUT once all of them run, and sleeps. Not a test by itself: its name does not
match test_*.py."""

import json
import os
import re
import signal
import subprocess
import time

from helpers import CONNECT_AND_SLEEP, PYTHON, popen, wait_for_files


def test_start_everything_then_sleep(build, start_daemons, agents, tmp_path):
    d = start_daemons([1, 1])
    a = agents("probe")
    a.ok("connect", socket=d.sock(0), job_id=d.job_id, local_rank=0, timeout_ms=10000)
    ready = tmp_path / "ready"
    ready.mkdir()
    trainer = CONNECT_AND_SLEEP
    job = popen([build.gcomp_run, "-v", "--nodes", "2", "--", PYTHON, "-c", trainer],
                signal.SIGTERM, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                env=build.env(READY_DIR=ready))
    line = ""
    while "--job-id" not in line:
        line = job.stderr.readline()
        assert line, "gcomp-run -v exited without printing the daemons' command"
    run_job = re.search(r"--job-id (\S+)", line).group(1)
    wait_for_files([ready / "0", ready / "1"], 60, job, "gcomp-run's trainers connecting")
    with open(os.environ["PROBE_OUT"] + ".tmp", "w") as f:
        json.dump({"jobs": [d.job_id, run_job], "pids": [a.proc.pid, job.pid], "dir": d.dir}, f)
    os.rename(os.environ["PROBE_OUT"] + ".tmp", os.environ["PROBE_OUT"])
    time.sleep(300)
