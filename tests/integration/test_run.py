"""gcomp-run end to end: real daemons, Python trainers checking the mean, exit status
propagation, signals, and that nothing is left behind (processes, job directory)."""

import json
import os
import random
import re
import signal
import subprocess
import time

import pytest

from gcomp import launch
from helpers import (CONNECT_AND_SLEEP, PYTHON, TORCH_PYTHON, TRAINER, kill_session, popen,
                     processes_of_job, run as run_cmd, wait_for_files)


def run(build, args, trainer_args=(), timeout=240):
    """Run gcomp-run -v ... -- python trainer_mean.py ...; return (rc, stderr, job_id, job_dir)."""
    argv = [build.gcomp_run, "-v", *args, "--", PYTHON, TRAINER, *trainer_args]
    res = run_cmd(argv, timeout, signal.SIGTERM, env=build.env())
    job_id, job_dir = job_of(res.stderr)
    return res.returncode, res.stdout + res.stderr, job_id, job_dir


def stop_launcher(proc):
    """After a test: a gcomp-run still running (the test failed) gets SIGTERM and time to
    stop its job; its daemons and trainers are in sessions of their own, which killing
    gcomp-run's session outright would leave behind."""
    kill_session(proc.pid, grace=20)


def job_of(stderr):
    """The job id and directory from gcomp-run -v's daemon command line."""
    m = re.search(r"--dir (\S+) --job-id (\S+)", stderr)
    assert m, f"gcomp-run -v did not print the daemon command:\n{stderr}"
    return m.group(2), m.group(1)


def assert_clean(job_id, job_dir):
    """No process of the job is alive and its directory is gone."""
    # Reparented zombies may take a moment to be reaped, and a sanitized process its leak
    # check at exit (seconds on a loaded machine).
    deadline = time.monotonic() + 10
    while (left := processes_of_job(job_id)) and time.monotonic() < deadline:
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
        stop_launcher(proc)
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


def test_daemon_failure_status(build, tmp_path):
    # gcompd refuses an unknown codec at start-up: gcomp-run says so, exits 2 and starts
    # no trainer (the trainer would leave a file behind).
    marker = tmp_path / "trainer-ran"
    argv = [build.gcomp_run, "-v", "--nodes", "2", "--codec", "no-such-codec", "--",
            "sh", "-c", f"touch {marker}"]
    res = subprocess.run(argv, capture_output=True, text=True, env=build.env(), timeout=120)
    log = res.stdout + res.stderr
    assert res.returncode == 2, log
    assert "unknown codec 'no-such-codec'" in log, log  # gcompd's own message
    assert "the daemons (mpirun) exited" in log and "no trainer was started" in log, log
    assert not marker.exists(), "a trainer was started although the daemons had failed"
    assert_clean(*job_of(res.stderr))


def test_help_example_runs(build):
    # The example of --help is a job gcompd accepts (with `true` as the trainer).
    res = subprocess.run([build.gcomp_run, "--help"], capture_output=True, text=True,
                         env=build.env(), timeout=60)
    assert res.returncode == 0, res.stderr
    m = re.search(r"Example: gcomp-run (.*?) -- ", " ".join(res.stdout.split()))
    assert m, res.stdout
    res = subprocess.run([build.gcomp_run, "-v", *m.group(1).split(), "--", "true"],
                         capture_output=True, text=True, env=build.env(), timeout=120)
    assert res.returncode == 0, f"the --help example fails ({res.returncode}):\n{res.stderr}"
    assert_clean(*job_of(res.stderr))


def test_trainer_that_never_connects(build):
    # The trainers exit before the daemon is up: gcomp-run used to send the shutdown
    # request too early ("cannot connect") and exit 1.
    for _ in range(3):
        res = subprocess.run([build.gcomp_run, "-v", "--nodes", "1", "--", "true"],
                             capture_output=True, text=True, env=build.env(), timeout=120)
        assert res.returncode == 0, res.stderr
        assert_clean(*job_of(res.stderr))


def placement(tmp_path, mode, local="1", host="1"):
    """gcomp-run arguments for a job on 2 emulated nodes with `local` trainers per node
    (mode "local"), or on a one-line hostfile of this machine with `host` trainers."""
    if mode == "local":
        return ["--nodes", "2", "--trainers-per-node", local]
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=8\n")
    return ["--hostfile", str(hostfile), "--trainers-per-node", host]


# A trainer (rank 0) that prints the command line and the GCOMP_* environment of every
# gcompd process of its job.
INSPECT_DAEMONS = r'''
import json, os
if os.environ["RANK"] == "0":
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")[:-1]
            env = open(f"/proc/{pid}/environ", "rb").read().decode().split("\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "gcompd" and os.environ["GCOMP_JOB_ID"] in argv:
            found.append({"argv": argv, "env": dict(kv.split("=", 1) for kv in env
                                                    if kv.startswith("GCOMP_"))})
    print("DAEMONS", json.dumps(found))
'''


@pytest.mark.parametrize("mode", ["local", "hostfile"])
def test_daemon_settings_reach_every_daemon(build, tmp_path, mode):
    argv = [build.gcomp_run, "-v", *placement(tmp_path, mode), "--log-level", "warning", "--nonfinite", "skip",
            "--decision-log", "decisions.jsonl", "--daemon-opt", "timeout-ms=45000",
            "--daemon-opt", "cycle-ms=3", "--", PYTHON, "-c", INSPECT_DAEMONS]
    # GCOMP_SEED must reach the daemons; GCOMP_RANK is the launcher's to set per trainer.
    res = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env=build.env(GCOMP_SEED="77", GCOMP_RANK="99"))
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("[0] DAEMONS ")]
    assert len(lines) == 1, res.stdout
    daemons = json.loads(lines[0][len("[0] DAEMONS "):])
    assert len(daemons) == (2 if mode == "local" else 1), daemons
    for d in daemons:
        opts = dict(zip(d["argv"], d["argv"][1:]))
        assert opts["--log-level"] == "warning" and opts["--nonfinite"] == "skip", d["argv"]
        assert opts["--decision-log"] == str(tmp_path / "decisions.jsonl"), d["argv"]
        assert opts["--timeout-ms"] == "45000" and opts["--cycle-ms"] == "3", d["argv"]
        assert d["env"].get("GCOMP_SEED") == "77", d["env"]
        assert "GCOMP_RANK" not in d["env"], d["env"]
    if mode == "hostfile":
        # What crosses to other hosts is named with mpirun -x.
        daemon_cmd = next(line for line in res.stderr.splitlines() if "starting the daemons" in line)
        assert "-x GCOMP_SEED" in daemon_cmd and "GCOMP_RANK" not in daemon_cmd, daemon_cmd
    assert_clean(*job_of(res.stderr))


def test_daemon_flags_are_passed_through(build, tmp_path):
    # --threads and --timeline go to gcompd as they are (paths made absolute), whether
    # or not this gcompd knows them yet: it then refuses them itself.
    res = subprocess.run([build.gcomp_run, "-v", "--threads", "2", "--timeline", "tl.json",
                          "--", "true"], capture_output=True, text=True, cwd=tmp_path,
                         env=build.env(), timeout=120)
    daemon_cmd = next(line for line in res.stderr.splitlines() if "starting the daemons" in line)
    assert f"--threads 2 --timeline {tmp_path / 'tl.json'}" in daemon_cmd, daemon_cmd
    assert res.returncode == 0 or (res.returncode == 2 and "gcompd:" in res.stderr), res.stderr
    assert_clean(*job_of(res.stderr))


@pytest.mark.parametrize("opt,message", [
    ("log-level", "expected KEY=VALUE"), ("Log-Level=debug", "lower-case words"),
    ("dir=/tmp/x", "set by gcomp-run"), ("job-id=abc", "set by gcomp-run")])
def test_bad_daemon_opt(build, opt, message):
    res = subprocess.run([build.gcomp_run, "--daemon-opt", opt, "--", "true"],
                         capture_output=True, text=True, env=build.env(), timeout=60)
    assert res.returncode == 2 and message in res.stderr, res.stderr


@pytest.mark.parametrize("args,message", [
    (["--launcher", "hostfile"], "--hostfile and --launcher hostfile go together"),
    (["--launcher", "local", "--hostfile", "/etc/hostname"], "go together"),
    (["--launcher", "slurm"], "not inside a Slurm allocation"),
    (["--hostfile", "/nonexistent/hosts"], "hostfile /nonexistent/hosts: No such file"),
    (["--hostfile", "HOSTFILE", "--nodes", "3"], "3 nodes asked for, but the hostfile"),
    (["--hostfile", "HOSTFILE", "--trainers-per-node", "1,2"], "the same number of trainers")])
def test_bad_placement(build, tmp_path, args, message):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two hosts\nlocalhost slots=4\n\n127.0.0.1 slots=4 # this one too\n")
    args = [str(hostfile) if a == "HOSTFILE" else a for a in args]
    env = {k: v for k, v in build.env().items() if not k.startswith("SLURM_")}
    res = subprocess.run([build.gcomp_run, *args, "--", "true"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 2 and message in res.stderr, res.stderr


# A trainer whose output must come out whole: many lines (some flushed, some not), a
# 100 kB line, stderr lines, and a last line without a newline.
CHATTY = r'''
import os, sys
r = os.environ["RANK"]
for i in range(300):
    print(f"out {r} {i}", flush=i % 7 == 0)
print("B" * 100000, flush=True)
for i in range(50):
    print(f"err {r} {i}", file=sys.stderr, flush=True)
sys.stdout.write(f"last {r}")
'''


def lines_by_rank(text):
    """{rank: [line, ...]} of the [RANK]-prefixed lines of text."""
    got = {}
    for line in text.split("\n"):  # not splitlines(): it splits at \x1e and \x1f too
        m = re.match(r"\[(\d+)\] (.*)\Z", line, re.S)
        if m:
            got.setdefault(int(m.group(1)), []).append(m.group(2))
    return got


@pytest.mark.parametrize("mode", ["local", "hostfile"])
def test_output_is_prefixed_with_rank(build, tmp_path, mode):
    where = placement(tmp_path, mode, local="2", host="3")
    res = subprocess.run([build.gcomp_run, "-v", *where, "--", PYTHON, "-c", CHATTY],
                         capture_output=True, text=True, env=build.env(), timeout=120)
    assert res.returncode == 0, res.stderr
    out, err = lines_by_rank(res.stdout), lines_by_rank(res.stderr)
    ranks = range(4 if mode == "local" else 3)
    assert sorted(out) == list(ranks) and sorted(err) == list(ranks), (sorted(out), sorted(err))
    for r in ranks:
        assert out[r] == [f"out {r} {i}" for i in range(300)] + ["B" * 100000, f"last {r}"], \
            f"rank {r}: stdout lines lost, cut or out of order"
        assert err[r] == [f"err {r} {i}" for i in range(50)], f"rank {r}: stderr lines"
    assert all(re.match(r"\[\d+\] ", line) for line in res.stdout.splitlines()), res.stdout[:2000]
    assert_clean(*job_of(res.stderr))


def test_output_of_a_failing_trainer_is_kept(build, tmp_path):
    # Rank 0 prints and sleeps; rank 1, once rank 0 has printed, prints and exits 3, and
    # rank 0 gets killed. What both wrote before is all there.
    marker = tmp_path / "rank0-printed"
    code = ("import os, sys, time; r = int(os.environ['RANK']); print('before', r, flush=True); "
            "sys.stdout.write('partial'); sys.stdout.flush(); m = sys.argv[1]\n"
            "if r == 0:\n    open(m, 'w').close(); time.sleep(300)\n"
            "while not os.path.exists(m): time.sleep(0.05)\n"
            "sys.exit(3)")
    res = subprocess.run([build.gcomp_run, "-v", "--nodes", "2", "--", PYTHON, "-c", code,
                          str(marker)], capture_output=True, text=True, env=build.env(), timeout=120)
    assert res.returncode == 3, res.stderr
    got = lines_by_rank(res.stdout)
    assert got == {0: ["before 0", "partial"], 1: ["before 1", "partial"]}, res.stdout
    assert_clean(*job_of(res.stderr))


def test_raw_output(build):
    res = subprocess.run([build.gcomp_run, "-v", "--raw-output", "--nodes", "2", "--",
                          PYTHON, "-c", "print('plain')"], capture_output=True, text=True,
                         env=build.env(), timeout=120)
    assert res.returncode == 0, res.stderr
    # As the trainers wrote it, no prefix (and nothing keeps their lines apart).
    assert res.stdout.count("plain") == 2 and res.stdout.count("\n") == 2, res.stdout
    assert "[" not in res.stdout, res.stdout


# torch.distributed from the launcher's variables alone (env:// rendezvous, gloo).
TORCH_TRAINER = r'''
import json, os
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print("TORCH", json.dumps({"rank": dist.get_rank(), "world": dist.get_world_size(),
                           "sum": t.item(), "env": {k: os.environ[k] for k in (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "GCOMP_RANK", "GCOMP_WORLD_SIZE", "GCOMP_LOCAL_RANK", "GCOMP_LOCAL_SIZE")}}), flush=True)
dist.destroy_process_group()
'''


@pytest.mark.parametrize("mode", ["local", "hostfile"])
def test_torch_distributed_env(build, tmp_path, mode):
    where = placement(tmp_path, mode, local="2,1", host="2")
    res = subprocess.run([build.gcomp_run, "-v", *where, "--", *TORCH_PYTHON, "-c", TORCH_TRAINER],
                         capture_output=True, text=True, env=build.env(), timeout=240)
    assert res.returncode == 0, res.stderr
    reports = [json.loads(line.split("TORCH ", 1)[1]) for line in res.stdout.splitlines()
               if "TORCH " in line]
    world = 3 if mode == "local" else 2
    local = {0: (0, 2), 1: (1, 2), 2: (0, 1)} if mode == "local" else {0: (0, 2), 1: (1, 2)}
    assert sorted(r["rank"] for r in reports) == list(range(world)), res.stdout
    assert len({(r["env"]["MASTER_ADDR"], r["env"]["MASTER_PORT"]) for r in reports}) == 1
    for r in reports:
        env = r["env"]
        assert r["world"] == world and r["sum"] == world * (world + 1) / 2, r
        assert (env["RANK"], env["WORLD_SIZE"]) == (str(r["rank"]), str(world)), r
        assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == \
            (env["GCOMP_RANK"], env["GCOMP_WORLD_SIZE"], env["GCOMP_LOCAL_RANK"],
             env["GCOMP_LOCAL_SIZE"]), r
        assert (int(env["LOCAL_RANK"]), int(env["LOCAL_WORLD_SIZE"])) == local[r["rank"]], r
        assert env["MASTER_ADDR"] == ("127.0.0.1" if mode == "local" else "localhost"), r
    assert_clean(*job_of(res.stderr))


# ---- the output parsers, on their own ----

class _Collect:
    def __init__(self):
        self.data = b""

    def write(self, line):
        assert line.endswith(b"\n"), line  # whole lines only
        self.data += line


def _feed_in_pieces(sink, data, seed):
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 40)
        sink.feed(data[pos:pos + n])
        pos += n
    sink.close()


def framed_lines(rng, rank):
    """Lines a trainer might print (brackets, tabs, the framing bytes themselves, a
    long one) and its shim's framing of them for mpirun and for srun."""
    lines = [f"rank {rank} line {i} [1,0]<stdout>: \t" + "w" * rng.randint(0, 30)
             for i in range(15)] + ["x\x1ey\x1f0z\x1f", "L" * 5000, f"tail {rank}"]
    encoded = [launch.encode_line(line.encode()) for line in lines]
    return lines, {mode: b"".join(e + end for e in encoded) for mode, end in launch.RECORD_END.items()}


def chunks_of(rng, data, most):
    pos, out = 0, []
    while pos < len(data):
        n = rng.randint(1, most)
        out.append(data[pos:pos + n])
        pos += n
    return out


@pytest.mark.parametrize("seed", range(20))
def test_mpi_tag_reassembly(seed):
    # Three shims' framed output (ended by the newline that ends a stream) cut into
    # chunks at random places, tagged and interleaved as mpirun --tag-output writes
    # them, with mpirun's own lines after a stream's end, read in random pieces.
    rng = random.Random(seed)
    lines, chunks = {}, {}
    for r in range(3):
        lines[r], framed = framed_lines(rng, r)
        chunks[r] = chunks_of(rng, framed["mpirun"] + b"\n", 300)
    stream, own = b"", b"-----\nmpirun noticed something\n"
    while any(chunks.values()):
        r = rng.choice([r for r in chunks if chunks[r]])
        stream += b"[1,%d]<stdout>:" % r + chunks[r].pop(0)
        if stream.endswith(b"\n"):
            stream += own
    out = _Collect()
    _feed_in_pieces(launch._MpiTags(out), stream, seed)
    got = lines_by_rank(out.data.decode())
    for r in lines:
        assert got[r] == lines[r], f"rank {r}"
    assert out.data.decode().count("mpirun noticed something\n") == 3


@pytest.mark.parametrize("seed", range(10))
def test_srun_label_reassembly(seed):
    # srun --label forwards the shims' records line by line, lines over 1 KiB in 1 KiB
    # labelled pieces, lines of different tasks interleaved; srun's own lines between.
    rng = random.Random(seed)
    lines, pending = {}, {}
    for r in (0, 1, 10):
        lines[r], framed = framed_lines(rng, r)
        pending[r] = [b"%2d: %s\n" % (r, line[i:i + 1024]) for line in framed["srun"].split(b"\n")[:-1]
                      for i in range(0, len(line), 1024)]
    stream = b""
    while any(pending.values()):
        r = rng.choice([r for r in pending if pending[r]])
        stream += pending[r].pop(0)
        if rng.random() < 0.05:
            stream += b"srun: error: n1: task 9: Exited with exit code 4\n"
    out = _Collect()
    sink = launch._SrunLabels(out)
    _feed_in_pieces(sink, stream, seed)
    got = lines_by_rank(out.data.decode())
    for r in lines:
        assert got[r] == lines[r], f"rank {r}"
    assert sink.first_failure in (None, 4)


def test_srun_first_failure():
    sink = launch._SrunLabels(_Collect())
    sink.feed(b"srun: error: n2: task 2: Exited with exit code 3\n"
              b"srun: error: n1: tasks 0-1: Terminated\n")
    assert sink.first_failure == 3
    killed = launch._SrunLabels(_Collect())
    killed.feed(b"srun: error: n1: task 0: Killed\nsrun: error: n2: task 1: Exited with exit code 1\n")
    assert killed.first_failure == 128 + signal.SIGKILL
