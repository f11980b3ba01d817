"""gcomp-run: start the daemons and the trainers of one job, supervise them, clean up.

Usage::

    gcomp-run --nodes N --trainers-per-node T [--codec SPEC | --policy SPEC]
              [--stats-file PATH] [--timeout-ms MS] [--seed N] [--hostfile H]
              [--keep-going] [--verbose] -- COMMAND [ARG...]

Locally (no --hostfile) the N daemons run under one ``mpirun -np N`` on this machine
(several emulated nodes) and the launcher starts T copies of COMMAND per node itself.
With --hostfile the daemons run under ``mpirun --hostfile H --map-by ppr:1:node`` and
the trainers under a second ``mpirun --map-by ppr:T:node`` through a small shim
(``python -m gcomp.launch --trainer-shim``) that derives the GCOMP_* variables from
Open MPI's OMPI_COMM_WORLD_* ones.

Every trainer gets GCOMP_SOCKET, GCOMP_CTL, GCOMP_JOB_ID, GCOMP_RANK (global,
node-major), GCOMP_WORLD_SIZE, GCOMP_LOCAL_RANK, GCOMP_LOCAL_SIZE, GCOMP_NODE and
GCOMP_NODES; also PYTHONPATH (so ``import gcomp`` works) and GCOMP_LIBRARY.

Exit status: 0 when every trainer exited 0 and the daemons shut down cleanly; else the
status of the first process that failed (128 + signal number for a signal); 128 +
signal when the launcher itself was interrupted (SIGINT, SIGTERM, SIGHUP). Every
process it started (each in its own session) is killed before it returns, and the
job directory is removed.
"""

import argparse
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Longest unix socket path (sun_path is 108 bytes with the terminating NUL).
_SUN_PATH_MAX = 107
# Seconds between SIGTERM and SIGKILL when killing processes.
_KILL_GRACE_S = 3.0
# Seconds the daemons get to exit after a shutdown request.
_SHUTDOWN_TIMEOUT_S = 60.0
_POLL_S = 0.05


@dataclasses.dataclass
class Tools:
    """Where the programs a job needs are (filled in by the generated gcomp-run script)."""

    gcompd: str
    gcompctl: str
    library: str = None  # libgcomp-client.so, exported to trainers as GCOMP_LIBRARY
    pydir: str = None  # directory holding the gcomp package, prepended to PYTHONPATH
    python: str = sys.executable
    mpirun: str = "mpirun"


@dataclasses.dataclass
class Job:
    """One job: what to run and how the daemons are configured."""

    command: list
    trainers: list  # trainer count per node; len(trainers) == number of nodes
    codec: str = None
    policy: str = None
    stats_file: str = None
    timeout_ms: int = None
    seed: int = None
    hostfile: str = None
    keep_going: bool = False
    verbose: bool = False
    checkpoint: str = None  # save a checkpoint here when the trainers are done
    restore: str = None     # start the daemons from this checkpoint

    @property
    def nodes(self):
        return len(self.trainers)


class LaunchError(Exception):
    """The job could not be started as asked (bad arguments, missing programs...).

    ``status`` is the exit status gcomp-run ends with (2, or 126/127 like a shell when
    the trainer command cannot be run).
    """

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


def exit_status(returncode):
    """Shell-style exit status of a Popen returncode (128 + signal for a signal)."""
    return 128 - returncode if returncode < 0 else returncode


def describe(returncode):
    """Human text for a Popen returncode."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


def session_members(sid):
    """PIDs of the live processes whose session id is sid (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces and parentheses):
        # state ppid pgrp session ...
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != b"Z":
            pids.append(int(entry))
    return pids


def trainer_env(base, job_dir, job_id, trainers, node, local_rank):
    """The environment of one trainer: base plus the GCOMP_* variables of the contract."""
    env = dict(base)
    env.update({
        "GCOMP_SOCKET": os.path.join(job_dir, f"node{node}.sock"),
        "GCOMP_CTL": os.path.join(job_dir, f"node{node}.ctl"),
        "GCOMP_JOB_ID": job_id,
        "GCOMP_RANK": str(sum(trainers[:node]) + local_rank),
        "GCOMP_WORLD_SIZE": str(sum(trainers)),
        "GCOMP_LOCAL_RANK": str(local_rank),
        "GCOMP_LOCAL_SIZE": str(trainers[node]),
        "GCOMP_NODE": str(node),
        "GCOMP_NODES": str(len(trainers)),
    })
    return env


class _Proc:
    """A started process, the leader of its own session, with a label for messages."""

    def __init__(self, label, argv, env, verbose):
        if verbose:
            print(f"gcomp-run: starting {label}: {' '.join(argv)}", file=sys.stderr)
        self.label = label
        try:
            self.popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        except OSError as exc:
            status = 127 if isinstance(exc, FileNotFoundError) else 126
            raise LaunchError(f"cannot start {label} ({argv[0]}): {exc.strerror}", status) from None

    @property
    def pid(self):
        return self.popen.pid

    def poll(self):
        return self.popen.poll()


class Launcher:
    """Runs one Job: start, supervise, shut down, clean up. Use :meth:`run`."""

    def __init__(self, job, tools, job_id=None):
        self.job = job
        self.tools = tools
        self.job_id = job_id or secrets.token_hex(8)
        self.job_dir = None
        self.daemons = None  # the mpirun of the daemons
        self.trainers = []  # local mode: one _Proc per trainer; hostfile: one mpirun
        self.helpers = []  # short-lived processes (gcompctl...), killed too if alive
        self._signal = None
        self._old_handlers = {}

    # ---- entry point ----

    def run(self):
        """Run the job and return the launcher's exit status."""
        self._check()
        self._install_signal_handlers()
        try:
            self._make_job_dir()
            self._start_daemons()
            self._start_trainers()
            return self._supervise()
        except _Interrupted:
            return self._interrupted_status()
        finally:
            self._kill_all()
            self._remove_job_dir()
            self._restore_signal_handlers()

    # ---- checks and set-up ----

    def _log(self, text):
        print(f"gcomp-run: {text}", file=sys.stderr, flush=True)

    def _check(self):
        job = self.job
        if not job.command:
            raise LaunchError("no trainer command given (put it after --)")
        if not job.trainers or any(t < 1 for t in job.trainers):
            raise LaunchError(f"every node needs at least one trainer, got {job.trainers}")
        if job.codec and job.policy:
            raise LaunchError("--codec and --policy exclude each other")
        if job.hostfile:
            if not os.path.isfile(job.hostfile):
                raise LaunchError(f"hostfile {job.hostfile}: no such file")
            if len(set(job.trainers)) != 1:
                raise LaunchError("with --hostfile every node runs the same number of "
                                  f"trainers (ppr:T:node), got {job.trainers}")
        for name, path in (("gcompd", self.tools.gcompd), ("gcompctl", self.tools.gcompctl)):
            if os.sep in path and not os.access(path, os.X_OK):
                raise LaunchError(f"{name} not found at {path} (is the project built?)")
            if os.sep not in path and not shutil.which(path):
                raise LaunchError(f"{name} ({path}) not found on PATH")
        if not shutil.which(self.tools.mpirun):
            raise LaunchError(f"{self.tools.mpirun} not found on PATH (Open MPI is needed)")

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self):
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    def _on_signal(self, signum, _frame):
        # Only note it: the supervisor loop (or the next start step) acts on it, so no
        # process is left half started and unrecorded.
        if self._signal is None:
            self._signal = signum

    def _check_signal(self):
        if self._signal is not None:
            raise _Interrupted()

    def _interrupted_status(self):
        self._log(f"interrupted by {signal.Signals(self._signal).name}, stopping the job")
        return 128 + self._signal

    def _make_job_dir(self):
        if self.job.hostfile:
            # Must be a path valid on every node; the daemons create it (0700).
            self.job_dir = os.path.join("/tmp", f"gcomp-{self.job_id}")
        else:
            self.job_dir = tempfile.mkdtemp(prefix=f"gcomp-{self.job_id}-")
        longest = os.path.join(self.job_dir, f"node{self.job.nodes - 1}.sock")
        if len(longest.encode()) > _SUN_PATH_MAX:
            raise LaunchError(f"job directory {self.job_dir} is too long for a unix socket "
                              f"path ({_SUN_PATH_MAX} bytes at most); set TMPDIR to a shorter one")

    def _mpirun_base(self):
        argv = [self.tools.mpirun]
        if os.getuid() == 0:
            argv.append("--allow-run-as-root")
        argv += ["--oversubscribe", "--bind-to", "none"]
        return argv

    def _env(self):
        """The launcher's environment plus what every child needs to find gcomp."""
        env = dict(os.environ)
        if self.tools.pydir:
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = self.tools.pydir + (os.pathsep + old if old else "")
        if self.tools.library and "GCOMP_LIBRARY" not in env:
            env["GCOMP_LIBRARY"] = self.tools.library
        return env

    def _start_daemons(self):
        job = self.job
        argv = self._mpirun_base()
        if job.hostfile:
            argv += ["--hostfile", job.hostfile, "--map-by", "ppr:1:node"]
        argv += ["-np", str(job.nodes), self.tools.gcompd,
                 "--dir", self.job_dir, "--job-id", self.job_id,
                 "--trainers", ",".join(str(t) for t in job.trainers)]
        if job.codec:
            argv += ["--codec", job.codec]
        if job.policy:
            argv += ["--policy", job.policy]
        if job.stats_file:
            argv += ["--stats-file", os.path.abspath(job.stats_file)]
        if job.timeout_ms is not None:
            argv += ["--timeout-ms", str(job.timeout_ms)]
        if job.seed is not None:
            argv += ["--seed", str(job.seed)]
        if job.restore:
            argv += ["--restore", os.path.abspath(job.restore)]
        self._check_signal()
        self.daemons = _Proc("the daemons (mpirun)", argv, self._env(), job.verbose)

    def _start_trainers(self):
        job = self.job
        env = self._env()
        if job.hostfile:
            per_node = job.trainers[0]
            argv = self._mpirun_base() + [
                "--hostfile", job.hostfile, "--map-by", f"ppr:{per_node}:node",
                "-np", str(job.nodes * per_node)]
            for var in ("PYTHONPATH", "GCOMP_LIBRARY", "GCOMP_CONNECT_TIMEOUT_MS"):
                if var in env:
                    argv += ["-x", var]
            argv += [self.tools.python, "-m", "gcomp.launch", "--trainer-shim",
                     "--dir", self.job_dir, "--job-id", self.job_id,
                     "--nodes", str(job.nodes), "--trainers-per-node", str(per_node),
                     "--", *job.command]
            self._check_signal()
            self.trainers.append(_Proc("the trainers (mpirun)", argv, env, job.verbose))
            return
        for node, count in enumerate(job.trainers):
            for local_rank in range(count):
                self._check_signal()
                tenv = trainer_env(env, self.job_dir, self.job_id, job.trainers, node, local_rank)
                label = f"trainer {tenv['GCOMP_RANK']} (node {node}, local rank {local_rank})"
                self.trainers.append(_Proc(label, job.command, tenv, job.verbose))

    # ---- supervision ----

    def _supervise(self):
        """Wait for the trainers; return the exit status (shutting the daemons down)."""
        pending = list(self.trainers)
        first_failure = None
        while pending:
            self._check_signal()
            for proc in list(pending):
                rc = proc.poll()
                if rc is None:
                    continue
                pending.remove(proc)
                if rc != 0:
                    self._log(f"{proc.label} {describe(rc)}")
                    if first_failure is None:
                        first_failure = exit_status(rc)
                    if not self.job.keep_going:
                        self._log("stopping the job")
                        return first_failure
            rc = self.daemons.poll()
            if rc is not None and pending:
                self._log(f"{self.daemons.label} {describe(rc)} while trainers were still "
                          "running; stopping the job")
                return exit_status(rc) or 1
            if pending:
                time.sleep(_POLL_S)
        if first_failure is None and self.job.checkpoint:
            rc, out = self._run_helper("gcompctl checkpoint save",
                                       self._ctl_argv("checkpoint", "save",
                                                      os.path.abspath(self.job.checkpoint)), 120.0)
            if rc != 0:
                self._log(f"gcompctl checkpoint save failed: {out.strip()}")
                first_failure = 1
        status = self._shutdown_daemons()
        return first_failure if first_failure is not None else status

    def _run_helper(self, label, argv, timeout_s, interruptible=True):
        """Run a short command in its own session; return (returncode, output).

        returncode is None when it timed out (it is killed then).
        """
        if interruptible:
            self._check_signal()
        if self.job.verbose:
            self._log(f"running {label}: {' '.join(argv)}")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.helpers.append(proc)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill_session(proc, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out.decode(errors="replace")
        return proc.returncode, out.decode(errors="replace")

    def _ctl_argv(self, *args):
        ctl = [self.tools.gcompctl, "--socket", os.path.join(self.job_dir, "node0.ctl"), *args]
        if self.job.hostfile:
            # node0.ctl lives on the first host of the hostfile: run gcompctl there.
            return self._mpirun_base() + ["--hostfile", self.job.hostfile,
                                          "--map-by", "ppr:1:node", "-np", "1", *ctl]
        return ctl

    def _shutdown_daemons(self):
        """Ask the daemons to shut down; return 0 if they all exited cleanly."""
        rc = self.daemons.poll()
        if rc is not None:
            self._log(f"{self.daemons.label} {describe(rc)} before the shutdown request")
            return exit_status(rc) or 1
        rc, out = self._run_helper("gcompctl shutdown", self._ctl_argv("shutdown"), 30.0)
        if rc != 0:
            what = "timed out" if rc is None else describe(rc)
            self._log(f"gcompctl shutdown {what}: {out.strip()}")
            return 1 if rc is None else (exit_status(rc) or 1)
        deadline = time.monotonic() + _SHUTDOWN_TIMEOUT_S
        while True:
            self._check_signal()
            rc = self.daemons.poll()
            if rc is not None:
                if rc != 0:
                    self._log(f"{self.daemons.label} {describe(rc)} after the shutdown request")
                return exit_status(rc)
            if time.monotonic() > deadline:
                self._log(f"the daemons did not exit within {_SHUTDOWN_TIMEOUT_S:.0f} s of "
                          "the shutdown request; killing them")
                return 1
            time.sleep(_POLL_S)

    # ---- clean-up ----

    def _all_procs(self):
        procs = [p.popen for p in self.trainers] + self.helpers
        if self.daemons is not None:
            procs.append(self.daemons.popen)
        return procs

    @staticmethod
    def _kill_session(popen, sig):
        """Send sig to popen's process group and to every process of its session."""
        targets = set(session_members(popen.pid))
        if popen.poll() is None:
            targets.add(popen.pid)
        for pid in targets:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _kill_all(self):
        """Terminate every process the job started (SIGTERM, then SIGKILL), and reap."""
        procs = self._all_procs()
        live = [p for p in procs if p.poll() is None]
        for p in live:
            # mpirun forwards SIGTERM to its ranks and exits; trainers get it directly.
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + _KILL_GRACE_S
        while any(p.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        # Whatever is left in the sessions (stuck processes, ranks mpirun left behind,
        # a trainer's own children) is killed outright.
        for _ in range(3):
            left = False
            for p in procs:
                if p.poll() is None or session_members(p.pid):
                    left = True
                    self._kill_session(p, signal.SIGKILL)
            for p in procs:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            if not left:
                break
            time.sleep(_POLL_S)

    def _remove_job_dir(self):
        if not self.job_dir:
            return
        shutil.rmtree(self.job_dir, ignore_errors=True)
        if self.job.hostfile and self.daemons is not None:
            # The daemons created the directory on every node: remove it there too.
            argv = self._mpirun_base() + [
                "--hostfile", self.job.hostfile, "--map-by", "ppr:1:node",
                "-np", str(self.job.nodes), "rm", "-rf", "--", self.job_dir]
            rc, out = self._run_helper("job directory clean-up", argv, 30.0, interruptible=False)
            if rc != 0:
                self._log(f"could not remove {self.job_dir} on every node: {out.strip()}")
            self._kill_all()


class _Interrupted(Exception):
    """The launcher got SIGINT/SIGTERM/SIGHUP."""


def run_job(job, tools, job_id=None):
    """Run a Job with the given Tools; return the exit status."""
    return Launcher(job, tools, job_id).run()


def parse_trainers(text, nodes):
    """'2' -> [2]*nodes; '2,1,1' -> [2, 1, 1] (must have `nodes` entries)."""
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--trainers-per-node: expected a count or a comma list of counts, got {text!r}") from None
    if len(counts) == 1:
        counts *= nodes
    if len(counts) != nodes:
        raise argparse.ArgumentTypeError(
            f"--trainers-per-node lists {len(counts)} counts for {nodes} nodes")
    if any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"--trainers-per-node: counts must be >= 1, got {text!r}")
    return counts


def _parser():
    p = argparse.ArgumentParser(
        prog="gcomp-run",
        description="Start gcompd on N (emulated or real) nodes and T trainers per node "
                    "running COMMAND; exit with the first failure's status.",
        epilog="Example: gcomp-run --nodes 2 --trainers-per-node 4 --codec topk:0.01 "
               "-- python train.py")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (daemons); default 1")
    p.add_argument("--trainers-per-node", default="1", metavar="T|T0,T1,...",
                   help="trainers per node, one count for all or one per node; default 1")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--codec", metavar="SPEC", help="static codec for every layer")
    mode.add_argument("--policy", metavar="SPEC", help="adaptive policy")
    p.add_argument("--stats-file", metavar="PATH",
                   help="daemon statistics (JSON lines); {node} in PATH = one file per node")
    p.add_argument("--timeout-ms", type=int, metavar="MS", help="daemon stall timeout")
    p.add_argument("--seed", type=int, help="daemon random seed")
    p.add_argument("--hostfile", metavar="H",
                   help="run on the hosts of an Open MPI hostfile (one daemon per host)")
    p.add_argument("--keep-going", action="store_true",
                   help="on a trainer failure let the other trainers finish instead of "
                        "stopping the job (the exit status is still the first failure's; "
                        "without effect with --hostfile, where mpirun stops the trainers)")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="when every trainer is done, save the daemons' state in DIR "
                        "(error feedback, codec and policy state) before shutting down")
    p.add_argument("--restore", metavar="DIR", help="start the daemons from a checkpoint")
    p.add_argument("-v", "--verbose", action="store_true", help="print the commands run")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the trainer command")
    return p


def main(argv=None, tools=None):
    """Entry point of gcomp-run; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--trainer-shim"]:
        return trainer_shim(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.nodes < 1:
        parser.error(f"--nodes must be >= 1, got {args.nodes}")
    try:
        trainers = parse_trainers(args.trainers_per_node, args.nodes)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if not command:
        parser.error("no trainer command given (put it after --)")
    job = Job(command=command, trainers=trainers, codec=args.codec, policy=args.policy,
              stats_file=args.stats_file, timeout_ms=args.timeout_ms, seed=args.seed,
              hostfile=args.hostfile, keep_going=args.keep_going, verbose=args.verbose,
              checkpoint=args.checkpoint, restore=args.restore)
    tools = tools or default_tools()
    try:
        return run_job(job, tools)
    except LaunchError as exc:
        print(f"gcomp-run: {exc}", file=sys.stderr)
        return exc.status


def default_tools():
    """Tools from the environment (GCOMPD, GCOMPCTL, GCOMP_LIBRARY) or the PATH."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return Tools(gcompd=os.environ.get("GCOMPD", "gcompd"),
                 gcompctl=os.environ.get("GCOMPCTL", "gcompctl"),
                 library=os.environ.get("GCOMP_LIBRARY"), pydir=here)


def trainer_shim(argv):
    """``python -m gcomp.launch --trainer-shim``: run under mpirun for hostfile jobs.

    Derives the GCOMP_* variables from OMPI_COMM_WORLD_* (ranks are mapped node-major
    with ppr:T:node, so rank // T is the node) and execs the trainer command.
    """
    p = argparse.ArgumentParser(prog="gcomp.launch --trainer-shim")
    p.add_argument("--dir", required=True)
    p.add_argument("--job-id", required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--trainers-per-node", type=int, required=True)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    per_node = args.trainers_per_node
    try:
        rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
        size = int(os.environ["OMPI_COMM_WORLD_SIZE"])
        local_rank = int(os.environ["OMPI_COMM_WORLD_LOCAL_RANK"])
        local_size = int(os.environ["OMPI_COMM_WORLD_LOCAL_SIZE"])
    except (KeyError, ValueError) as exc:
        print(f"gcomp trainer shim: not started by Open MPI's mpirun ({exc} missing or bad)",
              file=sys.stderr)
        return 2
    node = rank // per_node
    if (size != args.nodes * per_node or local_size != per_node
            or local_rank != rank % per_node):
        print(f"gcomp trainer shim: rank {rank} of {size} has local rank {local_rank} of "
              f"{local_size}; expected {per_node} trainers on each of {args.nodes} nodes "
              "mapped node-major (does the hostfile list each host once?)", file=sys.stderr)
        return 2
    env = trainer_env(os.environ, args.dir, args.job_id, [per_node] * args.nodes, node, local_rank)
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"gcomp trainer shim: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
