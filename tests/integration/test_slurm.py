"""gcomp-run under a real Slurm: a two-node cluster on this machine (Debian's slurm-wlm
and munge, two slurmd on their own ports), jobs submitted with sbatch.

The module starts munged, slurmctld and two slurmd (nodes n1 and n2) as processes of its
own, with every key, socket, state and spool file in a temporary directory, and stops
them afterwards. It is skipped, saying why, where they are not installed, where it does
not run as root (slurmd must), or where the cluster does not come up.
"""

import os
import re
import secrets
import shutil
import subprocess
import time

import pytest

from gcomp.launch import free_port
from helpers import PYTHON, SOURCE_ROOT, TRAINER, kill_session, live_pids, proc_environ
from test_run import assert_clean

SBATCH_SCRIPT = os.path.join(SOURCE_ROOT, "deploy", "slurm", "train.sbatch")
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "srun",
            "scancel")
NODES = ("n1", "n2")
DONE_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
               "PREEMPTED", "BOOT_FAIL", "DEADLINE")

SLURM_CONF = """\
ClusterName=gcomptest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge/socket
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool-%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
# PMIx keeps its per-step files here; one per node, as both nodes share this host.
TmpFS={dir}/tmp-%n
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
# The nodes claim more CPUs than this machine has; slurmd is told to believe it.
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=n1 NodeAddr=127.0.0.1 NodeHostname=localhost Port={port_n1} CPUs=4
NodeName=n2 NodeAddr=127.0.0.1 NodeHostname=localhost Port={port_n2} CPUs=4
PartitionName=test Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """munged + slurmctld + one slurmd per node, in `root`; stop() kills them all."""

    def __init__(self, root):
        self.root = str(root)
        self.procs = []
        self.conf = os.path.join(self.root, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        for k in [k for k in self.env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
            del self.env[k]  # the test may itself run inside some allocation
        # Slurm's daemons (and the slurmstepd each job step gets) are not gcomp's code:
        # in a sanitized run they go without the ASan preload, whose leak check at the
        # exit of a many-threaded slurmstepd could fail a job. A job's own processes get
        # the submitter's environment (sbatch --export=ALL): gcomp-run, gcompd and the
        # trainers are still checked.
        for k in ("LD_PRELOAD", "ASAN_OPTIONS", "LSAN_OPTIONS"):
            self.env.pop(k, None)
        for sub in ("munge", "state", *(f"spool-{n}" for n in NODES), *(f"tmp-{n}" for n in NODES)):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)
        key = os.path.join(self.root, "munge", "key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(secrets.token_bytes(1024))
        with open(self.conf, "w") as f:
            f.write(SLURM_CONF.format(dir=self.root, ctld_port=free_port(), port_n1=free_port(),
                                      port_n2=free_port()))
        munge = os.path.join(self.root, "munge")
        self._start("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                               f"--socket={munge}/socket", f"--pid-file={munge}/pid",
                               f"--log-file={munge}/log", f"--seed-file={munge}/seed"])
        self._wait(lambda: os.path.exists(f"{munge}/socket"), "munged did not create its socket")
        self._start("slurmctld", ["slurmctld", "-D", "-f", self.conf])
        for node in NODES:
            self._start(f"slurmd-{node}", ["slurmd", "-D", "-f", self.conf, "-N", node])
        self._wait(self._nodes_idle, "the nodes did not become idle")

    def _start(self, name, argv):
        log = open(os.path.join(self.root, f"{name}.out"), "wb")
        self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))
        log.close()

    def _wait(self, ready, what, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{what} ({', '.join(dead) + ' exited' if dead else 'timed out'})"
                                   f":\n{self.logs()}")
            time.sleep(0.2)

    def _nodes_idle(self):
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True,
                             text=True, env=self.env, timeout=30)
        states = dict(line.split() for line in res.stdout.splitlines() if line.strip())
        return all(states.get(n) == "idle" for n in NODES)

    def logs(self):
        text = []
        for name in sorted(os.listdir(self.root)):
            if name.endswith((".log", ".out")):
                with open(os.path.join(self.root, name), errors="replace") as f:
                    text.append(f"--- {name}\n{f.read()[-1500:]}")
        return "\n".join(text)

    def sbatch(self, *args, cwd, env=None, timeout=120.0):
        """Submit a job, wait for it to end; return (state, exit code, output)."""
        out = os.path.join(cwd, f"job-{secrets.token_hex(3)}.out")
        res = subprocess.run(["sbatch", "--parsable", "-o", out, *args], capture_output=True,
                             text=True, cwd=cwd, env=dict(env or os.environ, SLURM_CONF=self.conf),
                             timeout=60)
        assert res.returncode == 0, f"sbatch failed: {res.stderr}\n{self.logs()}"
        job = res.stdout.strip().split(";")[0]
        deadline = time.monotonic() + timeout
        while True:
            info = subprocess.run(["scontrol", "show", "job", job, "-o"], capture_output=True,
                                  text=True, env=self.env, timeout=30).stdout
            state = re.search(r"JobState=(\S+)", info)
            if state and state.group(1) in DONE_STATES:
                break
            if time.monotonic() > deadline:
                subprocess.run(["scancel", job], env=self.env, timeout=30)
                raise AssertionError(f"job {job} did not end within {timeout} s: {info}\n"
                                     f"{self.logs()}")
            time.sleep(0.3)
        with open(out, errors="replace") as f:
            output = f.read()
        return state.group(1), re.search(r" ExitCode=(\S+)", info).group(1), output

    def stop(self):
        """Cancel every job, stop the daemons, kill whatever of the cluster is left."""
        if self.procs:
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env,
                           capture_output=True, timeout=30)
            try:
                self._wait(lambda: not subprocess.run(
                    ["squeue", "-h"], capture_output=True, text=True, env=self.env,
                    timeout=30).stdout.strip(), "jobs still listed", timeout=15)
            except RuntimeError:
                pass  # killed below
        for p in self.procs:
            kill_session(p.pid)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_session(p.pid, grace=0)
        self.procs = []
        # slurmstepd leaves slurmd's session: what is left of the cluster (and of its
        # jobs) is found by the SLURM_CONF in its environment.
        conf = self.conf.encode()
        for pid in live_pids():
            if proc_environ(pid).get(b"SLURM_CONF") == conf:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def slurm(build, tmp_path_factory):
    missing = [p for p in PROGRAMS if not shutil.which(p)]
    if missing:
        pytest.skip(f"Slurm is not installed (no {', '.join(missing)}; deploy/install-deps.sh "
                    "installs slurm-wlm and munge)")
    if os.getuid() != 0:
        pytest.skip("the test's Slurm cluster needs root (slurmd starts the job steps)")
    root = tmp_path_factory.mktemp("slurm")
    cluster = None
    try:
        try:
            cluster = SlurmCluster(root)
        except RuntimeError as exc:
            pytest.skip(f"the Slurm test cluster did not start: {exc}")
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        for p in getattr(cluster, "procs", []):
            kill_session(p.pid, grace=0)


def gcomp_jobs(output):
    """(job id, job dir) of every gcomp-run -v in a job's output."""
    return sorted({(m.group(2), m.group(1))
                   for m in re.finditer(r"--dir (\S+) --job-id (\S+)", output)})


def test_sbatch_two_nodes(build, slurm, tmp_path):
    # deploy/slurm/train.sbatch as it is: 2 nodes x 2 trainers from the allocation, the
    # mean checked by every trainer, one stats file per node.
    trainer = (f"echo NODEINFO $RANK $GCOMP_NODE $LOCAL_RANK $MASTER_ADDR $SLURMD_NODENAME; "
               f"{PYTHON} -c 'print(\"L\" * 5000)'; exec {PYTHON} {TRAINER} --steps 3 --seed 21")
    env = build.env(GCOMP_RUN=build.gcomp_run, GCOMP_LOG_LEVEL="warning",
                    GCOMP_RUN_ARGS=f"-v --codec none --stats-file {tmp_path}/stats-{{node}}.jsonl")
    state, code, out = slurm.sbatch("--nodes=2", "--ntasks-per-node=2", SBATCH_SCRIPT,
                                    "sh", "-c", trainer, cwd=str(tmp_path), env=env)
    assert (state, code) == ("COMPLETED", "0:0"), f"{state} {code}:\n{out}\n{slurm.logs()}"
    assert "--mpi=pmix" in out and "starting the trainers (srun)" in out, out
    # GCOMP_LOG_LEVEL=warning reached both daemons (srun --export=ALL): no info lines.
    assert not re.search(r"gcompd\[node \d\] info", out), out
    # [RANK] NODEINFO RANK GCOMP_NODE LOCAL_RANK MASTER_ADDR SLURMD_NODENAME
    info = sorted(re.findall(r"^\[(\d+)\] NODEINFO (\d+) (\d+) (\d+) (\S+) (\S+)$", out, re.M))
    assert info == [("0", "0", "0", "0", "n1", "n1"), ("1", "1", "0", "1", "n1", "n1"),
                    ("2", "2", "1", "0", "n1", "n2"), ("3", "3", "1", "1", "n1", "n2")], out
    # A line longer than srun's 1 KiB pieces comes out whole.
    assert sorted(re.findall(r"^\[(\d+)\] L{5000}$", out, re.M)) == ["0", "1", "2", "3"], out
    for node in (0, 1):
        stats = (tmp_path / f"stats-{node}.jsonl").read_text().splitlines()
        assert stats and all(f'"node":{node}' in line.replace(" ", "") for line in stats), stats
    [(job_id, job_dir)] = gcomp_jobs(out)
    assert_clean(job_id, job_dir)


def test_sbatch_daemon_failure(build, slurm, tmp_path):
    # gcomp-run finds the allocation by itself (no --launcher); a bad codec stops it
    # before any trainer starts, with gcompd's message and status 2.
    marker = tmp_path / "trainer-ran"
    state, code, out = slurm.sbatch(
        "--nodes=2", "--ntasks-per-node=1",
        f"--wrap={build.gcomp_run} -v --codec no-such-codec -- touch {marker}",
        cwd=str(tmp_path), env=build.env())
    assert (state, code) == ("FAILED", "2:0"), f"{state} {code}:\n{out}"
    assert "unknown codec 'no-such-codec'" in out and "no trainer was started" in out, out
    assert "starting the daemons (srun)" in out, out
    assert not marker.exists()
    [(job_id, job_dir)] = gcomp_jobs(out)
    assert_clean(job_id, job_dir)


def test_sbatch_trainer_failure(build, slurm, tmp_path):
    # Rank 2 (on n2) exits 3; srun stops the other trainers, gcomp-run exits 3 and
    # cleans up on both nodes.
    env = build.env(GCOMP_RUN=build.gcomp_run, GCOMP_RUN_ARGS="-v")
    state, code, out = slurm.sbatch("--nodes=2", "--ntasks-per-node=2", SBATCH_SCRIPT,
                                    PYTHON, TRAINER, "--fail-rank", "2", "--exit-code", "3",
                                    cwd=str(tmp_path), env=env)
    assert (state, code) == ("FAILED", "3:0"), f"{state} {code}:\n{out}"
    assert "the first trainer to fail ended with status 3" in out, out
    [(job_id, job_dir)] = gcomp_jobs(out)
    assert_clean(job_id, job_dir)
