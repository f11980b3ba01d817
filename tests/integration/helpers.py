"""Shared pieces of the integration tests: paths, daemons under mpirun, agent trainers.

Every process the tests start is started by :func:`popen` (or :func:`run`): the leader
of its own session, so ``kill_session`` ends it with everything it started (mpirun's
ranks included) when a test is done, which the fixtures in conftest.py do in their
finally; and tied to the test process by PR_SET_PDEATHSIG, so that it dies also when
the test process is killed outright (SIGKILL, a timeout) and no finally runs. mpirun's
ranks are tied to mpirun the same way (``setpriv --pdeathsig``). Launchers (gcomp-run,
gcomp-replay) get SIGTERM, on which they stop everything they started; the rest SIGKILL.
"""

import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
PYDIR = os.path.join(SOURCE_ROOT, "client", "python")
TOOLS_DIR = os.path.join(SOURCE_ROOT, "tests", "tools")
AGENT = os.path.join(HERE, "agent.py")
TRAINER = os.path.join(HERE, "trainer_mean.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# A trainer that imports torch, as a command's first words. Sanitized runs check it with
# ASan but without LeakSanitizer: LSan's stop-the-world tracer crashes now and then when a
# many-threaded torch process exits ("Tracer caught signal 11 ... LeakSanitizer has
# encountered a fatal error", google/sanitizers#1353), which fails the test without any
# leak. The client library's leaks still show in the other Python and C trainers.
TORCH_PYTHON = ([PYTHON] if "ASAN_OPTIONS" not in os.environ else
                ["env", f"ASAN_OPTIONS={os.environ['ASAN_OPTIONS']}:detect_leaks=0", PYTHON])

for _p in (PYDIR, TOOLS_DIR):
    if _p not in sys.path:
        sys.path.insert(0, _p)


class Build:
    """Paths into a build directory ($GCOMP_BUILD_DIR)."""

    def __init__(self, root):
        self.root = root
        self.gcompd = os.path.join(root, "daemon", "gcompd")
        self.gcompctl = os.path.join(root, "client", "gcompctl")
        self.library = os.path.join(root, "client", "libgcomp-client.so")
        self.gcomp_run = os.path.join(root, "deploy", "gcomp-run")
        self.gcomp_replay = os.path.join(root, "deploy", "gcomp-replay")

    def missing(self):
        return [p for p in (self.gcompd, self.gcompctl, self.library, self.gcomp_run,
                            self.gcomp_replay) if not os.path.exists(p)]

    def env(self, **extra):
        """The environment for gcomp processes started by the tests."""
        env = dict(os.environ)
        env["GCOMP_LIBRARY"] = self.library
        env["PYTHONPATH"] = PYDIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        for k in [k for k in env if k.startswith("GCOMP_") and k != "GCOMP_LIBRARY"
                  and k != "GCOMP_BUILD_DIR"]:
            del env[k]  # no job settings leak in from the test's own environment
        env.update({k: str(v) for k, v in extra.items()})
        return env


# A trainer command: connects, says so in a file of its own (READY_DIR/GCOMP_RANK), sleeps.
CONNECT_AND_SLEEP = ("import gcomp, os, time; c = gcomp.Client(); "
                     "open(os.path.join(os.environ['READY_DIR'], os.environ['GCOMP_RANK']), "
                     "'w').close(); time.sleep(300)")

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with(parent, sig):
    """A preexec_fn: the child gets sig when `parent` (the test process) dies."""
    def preexec():
        if _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)
    return preexec


def popen(argv, on_test_death=signal.SIGKILL, **kwargs):
    """subprocess.Popen(argv, **kwargs) as the leader of a new session that gets
    on_test_death when the test process dies (SIGTERM for launchers that clean up)."""
    return subprocess.Popen(argv, start_new_session=True,
                            preexec_fn=_die_with(os.getpid(), on_test_death), **kwargs)


def run(argv, timeout, on_test_death=signal.SIGKILL, **kwargs):
    """subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    through popen(); whatever is left of its session afterwards is killed."""
    proc = popen(argv, on_test_death, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc.pid, grace=0)
        proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def wait_for_files(paths, timeout, proc=None, what="files"):
    """Wait until every path exists; AssertionError after timeout or if proc exits first."""
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode} before "
                                 f"{[p for p in paths if not os.path.exists(p)]} appeared")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {[p for p in paths if not os.path.exists(p)]} did "
                                 f"not appear within {timeout} s")
        time.sleep(0.05)


def transport_missing(build, name):
    """None if gcompd has the data transport `name` built in, else why not (for a skip)."""
    out = subprocess.run([build.gcompd, "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    line = [ln for ln in out.split("transports (")[-1].splitlines() if ln.split()[:1] == [name]]
    if not line:
        return f"gcompd knows no transport '{name}'"
    if "(not built in)" in line[0]:
        return f"this build has no {name} data plane (gcompd --help: {line[0].strip()})"
    return None


def mpirun_base():
    argv = ["mpirun"]
    if os.getuid() == 0:
        argv.append("--allow-run-as-root")
    return argv + ["--oversubscribe", "--bind-to", "none"]


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def proc_environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return {}


def proc_stat(pid):
    """(state, session) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[3])


def live_pids():
    """PIDs of the live (not zombie) processes, this one excluded."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            st = proc_stat(int(entry))
            if st and st[0] != "Z":
                yield int(entry)


def processes_of_job(job_id):
    """Live processes that belong to a job: the id in their command line or environment."""
    needle = job_id.encode()
    found = []
    for pid in live_pids():
        if any(needle in arg for arg in proc_cmdline(pid)) or \
                proc_environ(pid).get(b"GCOMP_JOB_ID") == needle:
            found.append((pid, b" ".join(proc_cmdline(pid)).decode(errors="replace")))
    return found


def session_pids(sid):
    """Live members of a session."""
    return [p for p in live_pids() if (proc_stat(p) or ("", None))[1] == sid]


def kill_session(sid, grace=2.0):
    """SIGTERM the session's process group leader, then SIGKILL every member."""
    try:
        os.killpg(sid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not session_pids(sid):
            return
        time.sleep(0.05)
    for p in session_pids(sid):
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Daemons:
    """gcompd on `nodes` emulated nodes under one mpirun, started directly (no launcher)."""

    def __init__(self, build, trainers, codec="none", timeout_ms=None, extra=(), logdir=None,
                 env=None):
        """env: variables for the daemons (UCX_TLS...), passed through mpirun (-x)."""
        self.build = build
        self.trainers = list(trainers)
        self.nodes = len(self.trainers)
        self.dir = tempfile.mkdtemp(prefix="gct-", dir="/tmp")
        self.job_id = "test-" + secrets.token_hex(6)
        self.logpath = os.path.join(logdir or self.dir, f"daemons-{self.job_id}.log")
        env = {k: str(v) for k, v in (env or {}).items()}
        argv = mpirun_base() + [a for k in env for a in ("-x", k)]
        argv += ["-np", str(self.nodes), "setpriv", "--pdeathsig", "KILL", "--",
                                build.gcompd, "--dir", self.dir,
                                "--job-id", self.job_id,
                                "--trainers", ",".join(map(str, self.trainers))]
        if codec:
            argv += ["--codec", codec]
        if timeout_ms is not None:
            argv += ["--timeout-ms", str(timeout_ms)]
        argv += list(extra)
        self.argv = argv
        self._log = open(self.logpath, "wb")
        self.proc = popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                          stderr=subprocess.STDOUT, env=build.env(**env))

    def sock(self, node=0):
        return os.path.join(self.dir, f"node{node}.sock")

    def ctl(self, node=0):
        return os.path.join(self.dir, f"node{node}.ctl")

    def wait_ready(self, timeout=30.0):
        """Wait until every node's sockets exist; fail with the daemons' log if not."""
        deadline = time.monotonic() + timeout
        paths = [self.sock(k) for k in range(self.nodes)] + [self.ctl(k) for k in range(self.nodes)]
        while not all(os.path.exists(p) for p in paths):
            if self.proc.poll() is not None:
                raise AssertionError(f"gcompd exited with {self.proc.returncode} before its "
                                     f"sockets appeared:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"gcompd sockets did not appear in {timeout} s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self):
        if not self._log.closed:
            self._log.flush()
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return "(no log)"

    def gcompctl(self, *args, node=0, timeout=20):
        """Run gcompctl against one node's control socket."""
        return run([self.build.gcompctl, "--socket", self.ctl(node), *args], timeout,
                   env=self.build.env())

    def daemon_pids(self):
        """{node: pid} of the gcompd processes of this job."""
        pids = {}
        for pid in session_pids(self.proc.pid):
            if any(os.path.basename(a) == b"gcompd" for a in proc_cmdline(pid)[:1]):
                rank = proc_environ(pid).get(b"OMPI_COMM_WORLD_RANK")
                if rank is not None:
                    pids[int(rank)] = pid
        return pids

    def shutdown(self, timeout=30):
        """gcompctl shutdown, then wait for mpirun; returns (ctl result, mpirun status)."""
        res = self.gcompctl("shutdown")
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        return res, rc

    def kill(self):
        """Kill mpirun and every daemon (whole session); remove the socket directory."""
        try:
            kill_session(self.proc.pid)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            kill_session(self.proc.pid, grace=0)
        finally:
            self._log.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    close = kill


class Agent:
    """A trainer process (agent.py) driven by JSON commands; see agent.py."""

    def __init__(self, build, name="agent", logdir=None):
        self.name = name
        self.errpath = os.path.join(logdir or tempfile.gettempdir(), f"{name}-{secrets.token_hex(3)}.err")
        self._err = open(self.errpath, "wb")
        self.proc = popen([PYTHON, AGENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=self._err, env=build.env())
        self._buf = b""

    def send(self, op, **args):
        self.proc.stdin.write((json.dumps(dict(op=op, **args)) + "\n").encode())
        self.proc.stdin.flush()

    def recv(self, timeout=30.0):
        """The next reply; AssertionError if none comes within timeout (a hang)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no reply within {timeout} s (hang?); "
                                     f"stderr: {self.stderr()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"{self.name} exited ({self.proc.wait()}) without "
                                         f"replying; stderr: {self.stderr()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, op, timeout=30.0, **args):
        self.send(op, **args)
        return self.recv(timeout)

    def ok(self, op, timeout=30.0, **args):
        """call() that asserts success."""
        reply = self.call(op, timeout, **args)
        assert reply["ok"], f"{self.name} {op} {args}: {reply}"
        return reply

    def stderr(self):
        self._err.flush()
        with open(self.errpath, errors="replace") as f:
            return f.read()[-3000:]

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_session(self.proc.pid, grace=0)

    def close(self):
        self.kill()
        kill_session(self.proc.pid, grace=0)
        for f in (self.proc.stdin, self.proc.stdout, self._err):
            try:
                f.close()
            except OSError:
                pass
        try:
            os.remove(self.errpath)
        except OSError:
            pass



def connect_agents(d, agents, trainers, layers, bucket="b0"):
    """Agents for trainers[node] trainers on each node of daemons d, connected, each
    having registered `bucket` with `layers`; in node order."""
    ags = []
    for node, count in enumerate(trainers):
        for rank in range(count):
            ag = agents(f"n{node}r{rank}")
            ag.ok("connect", socket=d.sock(node), job_id=d.job_id, local_rank=rank,
                  timeout_ms=10000)
            ag.ok("register", name=bucket, layers=layers)
            ags.append(ag)
    return ags
