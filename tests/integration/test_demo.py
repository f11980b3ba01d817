"""examples/demo.c under gcomp-run: exact results with --exact and codec none, the
relative error reported per step for a lossy codec, and a policy switch while it runs."""

import os
import re
import subprocess

from test_run import assert_clean, job_of, stop_launcher

STEP = re.compile(r"\[(\d+)\] step +(\d+) .* relative error (\S+) +max \|error\| (\S+)(.*)")


def demo(build):
    return os.path.join(build.root, "examples", "gcomp-demo")


def steps_of(stdout, rank=0):
    """[(step, relative error, max error, verdict)] of a rank's step lines (None: any
    rank's)."""
    return [(int(m.group(2)), float(m.group(3)), float(m.group(4)), m.group(5).strip())
            for m in map(STEP.match, stdout.splitlines())
            if m and (rank is None or int(m.group(1)) == rank)]


def run_demo(build, *args, timeout=240):
    argv = [build.gcomp_run, "-v", "--nodes", "2", "--trainers-per-node", "1", *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         env=build.env(GCOMP_LOG_LEVEL="warning"))
    assert_clean(*job_of(res.stderr))
    return res


def test_exact(build):
    res = run_demo(build, "--codec", "none", "--", demo(build), "--exact", "3")
    assert res.returncode == 0, res.stdout + res.stderr
    steps = steps_of(res.stdout)
    assert [s[0] for s in steps] == [0, 1, 2], res.stdout
    assert all(rel < 1e-6 and verdict == "ok" for _, rel, _, verdict in steps), res.stdout


def test_lossy_codec_reports_error(build):
    res = run_demo(build, "--codec", "topk:density=0.01", "--", demo(build), "2")
    assert res.returncode == 0, res.stdout + res.stderr
    steps = steps_of(res.stdout)
    assert [s[0] for s in steps] == [0, 1], res.stdout
    assert all(rel > 1e-3 and verdict == "" for _, rel, _, verdict in steps), res.stdout


def test_exact_fails_on_lossy_codec(build):
    res = run_demo(build, "--codec", "topk:density=0.01", "--", demo(build), "--exact", "2")
    assert res.returncode == 1, res.stdout + res.stderr
    # Whichever rank exits first stops the job: its line says WRONG.
    assert steps_of(res.stdout, rank=None)[0][3] == "WRONG", res.stdout


def test_bad_argument(build):
    res = subprocess.run([demo(build), "--lossy"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "unknown argument '--lossy'" in res.stderr, res.stderr


def test_policy_switch_while_running(build):
    # Exact at first; after `gcompctl policy set` to Top-K the demo goes on, reporting
    # the error, and exits 0.
    argv = [build.gcomp_run, "-v", "--nodes", "2", "--trainers-per-node", "1", "--",
            demo(build), "12"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=build.env(GCOMP_LOG_LEVEL="warning"), start_new_session=True)
    try:
        # The job directory is in the daemon command line gcomp-run -v prints first.
        err, job_dir = [], None
        while job_dir is None:
            err.append(proc.stderr.readline())
            assert err[-1], f"gcomp-run ended early:\n{''.join(err)}"
            m = re.search(r"--dir (\S+)", err[-1])
            job_dir = m and m.group(1)
        lines = []
        while not any(line.startswith("[0] step   1 ") for line in lines):
            lines.append(proc.stdout.readline())
            assert lines[-1], f"gcomp-demo ended early:\n{''.join(lines)}{proc.stderr.read()}"
        ctl = subprocess.run([build.gcompctl, "--socket", os.path.join(job_dir, "node1.ctl"),
                              "policy", "set", "static:codec=topk:density=0.01"],
                             capture_output=True, text=True, timeout=60, env=build.env())
        assert ctl.returncode == 0, ctl.stdout + ctl.stderr
        m = re.search(r"step (\d+)", ctl.stdout)
        assert m, f"policy set does not name the step it applies from: {ctl.stdout}"
        switch = int(m.group(1))
        out, rest = proc.communicate(timeout=240)
    finally:
        stop_launcher(proc)
    stdout = "".join(lines) + out
    assert proc.returncode == 0, stdout + "".join(err) + rest
    steps = steps_of(stdout)
    assert [s[0] for s in steps] == list(range(12)), stdout
    assert switch < 12, (switch, stdout)
    for step, rel, _, _ in steps:
        assert (rel > 1e-3) == (step >= switch), f"step {step}, switch at {switch}:\n{stdout}"
    assert_clean(*job_of("".join(err) + rest))
