"""gcomp-run end to end: real daemons, Python trainers checking the mean, exit status
propagation, signals, and that nothing is left behind (processes, job directory)."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from helpers import (CONNECT_AND_SLEEP, PYTHON, TRAINER, kill_session, popen, processes_of_job,
                     run as run_cmd, wait_for_files)


def run(build, args, trainer_args=(), timeout=240):
    """Run gcomp-run -v ... -- python trainer_mean.py ...; return (rc, stderr, job_id, job_dir)."""
    argv = [build.gcomp_run, "-v", *args, "--", PYTHON, TRAINER, *trainer_args]
    res = run_cmd(argv, timeout, signal.SIGTERM, env=build.env())
    job_id, job_dir = job_of(res.stderr)
    return res.returncode, res.stdout + res.stderr, job_id, job_dir


def job_of(stderr):
    """The job id and directory from gcomp-run -v's daemon command line."""
    m = re.search(r"--dir (\S+) --job-id (\S+)", stderr)
    assert m, f"gcomp-run -v did not print the daemon command:\n{stderr}"
    return m.group(2), m.group(1)


def assert_clean(job_id, job_dir):
    """No process of the job is alive and its directory is gone."""
    left = []
    for _ in range(20):  # reparented zombies may take a moment to be reaped
        left = processes_of_job(job_id)
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"processes left behind by job {job_id}: {left}"
    assert not os.path.exists(job_dir), f"job directory {job_dir} was not removed"


@pytest.mark.parametrize("nodes,trainers", [(2, "3"), (3, "1"), (3, "2"), (3, "2,1,2")])
def test_mean_across_nodes(build, nodes, trainers):
    rc, log, job_id, job_dir = run(build, ["--nodes", str(nodes), "--trainers-per-node", trainers,
                                           "--codec", "none"],
                                   ["--seed", str(nodes * 10 + len(trainers)), "--steps", "3"])
    assert rc == 0, f"gcomp-run exited {rc}:\n{log}"
    assert_clean(job_id, job_dir)


def test_trainer_exit_status_propagates(build):
    # Rank 1 exits 3 before connecting; the others block in their first wait and must
    # be killed, along with the `sleep 300` every trainer leaves in its session.
    rc, log, job_id, job_dir = run(build, ["--nodes", "2", "--trainers-per-node", "2"],
                                   ["--fail-rank", "1", "--exit-code", "3", "--spawn-child"])
    assert rc == 3, f"expected exit status 3, got {rc}:\n{log}"
    assert "exited with status 3" in log
    assert_clean(job_id, job_dir)


def test_trainer_signal_status(build):
    rc, log, job_id, job_dir = run(build, ["--nodes", "1", "--trainers-per-node", "2"],
                                   ["--kill-rank", "0"])
    assert rc == 128 + signal.SIGKILL, f"expected {128 + signal.SIGKILL}, got {rc}:\n{log}"
    assert_clean(job_id, job_dir)


def test_success_leaves_nothing(build):
    rc, log, job_id, job_dir = run(build, ["--nodes", "2", "--trainers-per-node", "1"],
                                   ["--steps", "1", "--spawn-child"])
    assert rc == 0, log
    assert_clean(job_id, job_dir)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_launcher_signal_kills_everything(build, sig, tmp_path):
    argv = [build.gcomp_run, "-v", "--nodes", "2", "--trainers-per-node", "1", "--",
            PYTHON, "-c", CONNECT_AND_SLEEP]
    proc = popen(argv, signal.SIGTERM, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 env=build.env(READY_DIR=tmp_path))
    try:
        # Both trainers connected (so both daemons run) before the signal.
        wait_for_files([tmp_path / "0", tmp_path / "1"], 60, proc, "trainers connecting")
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        kill_session(proc.pid, grace=0)
    assert proc.returncode == 128 + sig, f"exit {proc.returncode}:\n{err}"
    assert took < 20, f"gcomp-run took {took:.1f} s to stop"
    assert_clean(*job_of(err))


def test_stats_file_per_node(build, tmp_path):
    pattern = str(tmp_path / "stats-{node}.jsonl")
    rc, log, job_id, job_dir = run(build, ["--nodes", "2", "--trainers-per-node", "1",
                                           "--codec", "none", "--stats-file", pattern],
                                   ["--steps", "2", "--seed", "5"])
    assert rc == 0, log
    for node in range(2):
        path = tmp_path / f"stats-{node}.jsonl"
        assert path.exists(), f"{path} missing; files: {os.listdir(tmp_path)}"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert records, f"{path} is empty"
        assert {r["node"] for r in records} == {node}, records[:2]
        assert {r["step"] for r in records} == {0, 1}


def test_bad_arguments(build):
    res = run_cmd([build.gcomp_run, "--nodes", "2", "--trainers-per-node", "1,2,3", "--", "true"],
                  60, signal.SIGTERM, env=build.env())
    assert res.returncode == 2 and "3 counts for 2 nodes" in res.stderr, res.stderr
    res = run_cmd([build.gcomp_run, "--nodes", "1"], 60, signal.SIGTERM, env=build.env())
    assert res.returncode == 2 and "no trainer command" in res.stderr, res.stderr
    res = run_cmd([build.gcomp_run, "--codec", "none", "--policy", "static", "--", "true"],
                  60, signal.SIGTERM, env=build.env())
    assert res.returncode == 2, res.stderr


def test_missing_command(build):
    res = run_cmd([build.gcomp_run, "-v", "--nodes", "1", "--", "/nonexistent/trainer"],
                  120, signal.SIGTERM, env=build.env())
    assert res.returncode == 127, res.stderr
    assert "/nonexistent/trainer" in res.stderr
    assert_clean(*job_of(res.stderr))


def test_hostfile_mode_single_host(build, tmp_path):
    # One host only (this machine): the daemons and the trainers run under their own
    # mpirun each, the trainers through the OMPI_COMM_WORLD_* shim.
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=8\n")
    rc, log, job_id, job_dir = run(build, ["--hostfile", str(hostfile), "--nodes", "1",
                                           "--trainers-per-node", "3", "--codec", "none"],
                                   ["--seed", "8", "--steps", "2"])
    assert rc == 0, log
    assert job_dir == f"/tmp/gcomp-{job_id}"
    assert_clean(job_id, job_dir)


def test_daemon_failure_status(build):
    # gcompd refuses an unknown codec at start-up: mpirun fails, the trainers (blocked
    # in connect) are killed and gcomp-run exits with mpirun's non-zero status.
    rc, log, job_id, job_dir = run(build, ["--nodes", "2", "--codec", "no-such-codec"])
    assert rc not in (0, None), log
    assert "no-such-codec" in log and "the daemons (mpirun) exited" in log, log
    assert_clean(job_id, job_dir)
