"""gcomp-run: start the daemons and the trainers of one job, supervise them, clean up.

Usage::

    gcomp-run [--nodes N] [--trainers-per-node T] [--codec SPEC | --policy SPEC]
              [--launcher local|hostfile|slurm] [--hostfile H]
              [daemon settings: --stats-file, --decision-log, --log-level, --config, ...,
               --daemon-opt KEY=VALUE] [--keep-going] [--raw-output] [--verbose]
              -- COMMAND [ARG...]

Where the job runs (``--launcher``; by default ``hostfile`` with --hostfile, ``slurm``
inside a Slurm allocation (SLURM_JOB_ID set), else ``local``):

- ``local``: the N daemons run under one ``mpirun -np N`` on this machine (several
  emulated nodes) and the launcher starts T copies of COMMAND per node itself.
- ``hostfile``: one daemon per host of an Open MPI hostfile under ``mpirun --hostfile H
  --map-by ppr:1:node``; the trainers under a second ``mpirun --map-by ppr:T:node``
  through a small shim (``python -m gcomp.launch --trainer-shim``) that derives its
  ranks from Open MPI's OMPI_COMM_WORLD_* variables. N defaults to the hosts listed.
- ``slurm``: inside ``salloc``/``sbatch``: the daemons are one ``srun --mpi=pmix`` step
  with one task per node (``SLURM_MPI_TYPE`` in the environment replaces pmix), the
  trainers a second step of T tasks per node (the shim reads SLURM_PROCID, SLURM_LOCALID,
  SLURM_NODEID), both with ``--overlap``. N defaults to the allocation's nodes and T to
  SLURM_NTASKS_PER_NODE when that is set.

The launcher starts the daemons first and starts no trainer until every node's sockets
(DIR/node{k}.sock and .ctl in the job directory) exist; daemons that exit before that
(a bad spec or flag) end the job with status 2.

Daemon settings: --stats-file, --decision-log, --timeout-ms, --seed, --log-level,
--nonfinite, --config, --transport, --threads, --timeline, --metrics-listen and any
``--daemon-opt KEY=VALUE`` reach gcompd on every host as ``--KEY VALUE`` (the paths of
--stats-file, --decision-log, --config and --timeline made absolute). Every GCOMP_*
variable of the launcher's environment reaches the daemons and the trainers on every
host (``mpirun -x``, ``srun --export=ALL``), except the per-trainer ones below, which
the launcher sets.

Every trainer gets GCOMP_SOCKET, GCOMP_CTL, GCOMP_JOB_ID, GCOMP_RANK (global,
node-major), GCOMP_WORLD_SIZE, GCOMP_LOCAL_RANK, GCOMP_LOCAL_SIZE, GCOMP_NODE and
GCOMP_NODES; also PYTHONPATH (so ``import gcomp`` works) and GCOMP_LIBRARY. And
torchrun's variables, so ``torch.distributed.init_process_group("gloo")`` works as is:
RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (the same numbers as GCOMP_RANK,
GCOMP_WORLD_SIZE, GCOMP_LOCAL_RANK and GCOMP_LOCAL_SIZE), MASTER_ADDR (127.0.0.1
locally, else the first host) and MASTER_PORT (a port that was free on the launcher's
machine when it started). MASTER_ADDR and MASTER_PORT already in the launcher's
environment are kept.

Output: each line a trainer writes to stdout or stderr goes to the launcher's stdout or
stderr prefixed with the trainer's global rank (``[3] loss 0.12``), the lines of one
trainer's stream in their order, a last line without a newline completed. Locally the
launcher reads each trainer's pipes; elsewhere the shim frames each line of its trainer
as a record and the launcher tells the ranks apart by mpirun's --tag-output tags or
srun's --label labels (see RECORD_END). The daemons' own messages are not prefixed.
``--raw-output`` passes the trainers' output through untouched (and the shim execs the
trainer).

Exit status: 0 when every trainer exited 0 and the daemons shut down cleanly; 2 for bad
arguments or daemons that did not start; else the status of the first process that
failed (128 + signal number for a signal); 128 + signal when the launcher itself was
interrupted (SIGINT, SIGTERM, SIGHUP). Every process it started (each in its own
session) is killed before it returns, and the job directory is removed.
"""

import argparse
import dataclasses
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
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
# Seconds the daemons get to create their sockets.
_START_TIMEOUT_S = 120.0
# Seconds the output of the trainers may take to drain once they are gone.
_DRAIN_TIMEOUT_S = 10.0
_POLL_S = 0.05

# What the launcher sets for each trainer; never forwarded from its own environment.
TRAINER_VARS = ("GCOMP_SOCKET", "GCOMP_CTL", "GCOMP_JOB_ID", "GCOMP_RANK", "GCOMP_WORLD_SIZE",
                "GCOMP_LOCAL_RANK", "GCOMP_LOCAL_SIZE", "GCOMP_NODE", "GCOMP_NODES")
LAUNCHERS = ("local", "hostfile", "slurm")
# gcompd settings gcomp-run takes as flags of its own and passes on as --KEY VALUE:
# (key, help, whether the value is a path made absolute before it is passed).
DAEMON_FLAGS = (
    ("log-level", "daemon log level: error, warning, info, debug", False),
    ("nonfinite", "non-finite gradients: fail or skip", False),
    ("decision-log", "policy decisions as JSON lines; {node} = one file per node", True),
    ("config", "daemon config file (key = value lines)", True),
    ("transport", "transport between the daemons", False),
    ("threads", "daemon worker threads", False),
    ("timeline", "Chrome trace / Perfetto JSON of every step's phases; {node} = one file "
                 "per node (else node 0 only)", True),
    ("metrics-listen", "serve Prometheus metrics at http://HOST:PORT/metrics from every "
                       "daemon (HOST numeric; PORT+node: node k on PORT+k, as several nodes "
                       "on one host need; PORT 0: a free port each, logged)", False),
)
# gcompd settings that gcomp-run itself gives: not allowed in --daemon-opt.
_OWN_KEYS = ("dir", "job-id", "trainers")
_KEY = re.compile(r"[a-z][a-z0-9-]*\Z")


@dataclasses.dataclass
class Tools:
    """Where the programs a job needs are (filled in by the generated gcomp-run script)."""

    gcompd: str
    gcompctl: str
    library: str = None  # libgcomp-client.so, exported to trainers as GCOMP_LIBRARY
    pydir: str = None  # directory holding the gcomp package, prepended to PYTHONPATH
    python: str = sys.executable
    mpirun: str = "mpirun"
    srun: str = "srun"
    scontrol: str = "scontrol"


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
    launcher: str = "local"  # one of LAUNCHERS
    hostfile: str = None
    hosts: list = None  # hostfile/slurm: the hosts, the first len(trainers) are used
    daemon_opts: list = dataclasses.field(default_factory=list)  # [(key, value)]: --key value
    keep_going: bool = False
    raw_output: bool = False
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


def free_port():
    """A TCP port that is free on this machine now (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def trainer_env(base, job_dir, job_id, trainers, node, local_rank, master):
    """The environment of one trainer: base plus the GCOMP_* variables of the contract
    and torchrun's (master = (MASTER_ADDR, MASTER_PORT))."""
    rank = sum(trainers[:node]) + local_rank
    env = dict(base)
    env.update({
        "GCOMP_SOCKET": os.path.join(job_dir, f"node{node}.sock"),
        "GCOMP_CTL": os.path.join(job_dir, f"node{node}.ctl"),
        "GCOMP_JOB_ID": job_id,
        "GCOMP_RANK": str(rank),
        "GCOMP_WORLD_SIZE": str(sum(trainers)),
        "GCOMP_LOCAL_RANK": str(local_rank),
        "GCOMP_LOCAL_SIZE": str(trainers[node]),
        "GCOMP_NODE": str(node),
        "GCOMP_NODES": str(len(trainers)),
        "RANK": str(rank),
        "WORLD_SIZE": str(sum(trainers)),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(trainers[node]),
        "MASTER_ADDR": master[0],
        "MASTER_PORT": str(master[1]),
    })
    return env


def forwarded_vars(env):
    """The variables a remote launch must carry to every host: PYTHONPATH and every
    GCOMP_* variable except the per-trainer ones."""
    return [k for k in sorted(env) if (k.startswith("GCOMP_") and k not in TRAINER_VARS)
            or k == "PYTHONPATH"]


def read_hostfile(path):
    """The hosts of an Open MPI hostfile, in order, each once (comments and blank lines
    skipped)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise LaunchError(f"hostfile {path}: {exc.strerror}") from None
    hosts = []
    for line in lines:
        words = line.split("#", 1)[0].split()
        if words and words[0] not in hosts:
            hosts.append(words[0])
    if not hosts:
        raise LaunchError(f"hostfile {path} lists no host")
    return hosts


def job_hosts(launcher, hostfile, tools):
    """The hosts a job may use: None for --launcher local, the hostfile's, or those of
    the Slurm allocation."""
    if launcher not in LAUNCHERS:
        raise LaunchError(f"--launcher must be one of {', '.join(LAUNCHERS)}, not {launcher!r}")
    if bool(hostfile) != (launcher == "hostfile"):
        raise LaunchError("--hostfile and --launcher hostfile go together")
    if launcher == "local":
        return None
    return read_hostfile(hostfile) if launcher == "hostfile" else slurm_hosts(tools)


def check_daemon_key(key):
    """LaunchError unless key can be passed to gcompd as --KEY VALUE by gcomp-run."""
    if not _KEY.match(key):
        raise LaunchError(f"daemon setting {key!r}: keys are lower-case words with dashes, "
                          "as in gcompd --help (e.g. log-level)")
    if key in _OWN_KEYS:
        raise LaunchError(f"daemon setting {key!r} is set by gcomp-run itself")


def slurm_hosts(tools, env=None):
    """The hosts of the Slurm allocation this process runs in, in Slurm's order."""
    env = os.environ if env is None else env
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not env.get("SLURM_JOB_ID") or not nodelist:
        raise LaunchError("--launcher slurm: not inside a Slurm allocation (SLURM_JOB_ID or "
                          "SLURM_JOB_NODELIST is not set); run gcomp-run from salloc or sbatch")
    try:
        res = subprocess.run([tools.scontrol, "show", "hostnames", nodelist],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(f"cannot run {tools.scontrol} to list the allocation's hosts: {exc}") from None
    hosts = res.stdout.split()
    if res.returncode != 0 or not hosts:
        raise LaunchError(f"{tools.scontrol} show hostnames {nodelist} failed: "
                          f"{res.stderr.strip() or 'no host'}")
    return hosts


# ---- trainer output: one line at a time, each prefixed with its trainer's rank ----

class _Stream:
    """One of the launcher's output streams (stdout or stderr), written a whole line at
    a time; a closed stream (a reader that went away) drops what follows."""

    def __init__(self, stream):
        self.stream = stream
        self.broken = False

    def write(self, line):
        if self.broken:
            return
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            self.broken = True


class _Lines:
    """Splits a byte stream into lines; line() gets each with its newline (a last line
    without one gets one at close)."""

    def __init__(self, out):
        self.out = out
        self.buf = b""

    def feed(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.line(line + b"\n")

    def close(self):
        if self.buf:
            self.line(self.buf + b"\n")
            self.buf = b""

    def line(self, line):
        self.out.write(line)


class _Prefixed(_Lines):
    """The output of one local trainer: each line prefixed with ``[RANK] ``."""

    def __init__(self, out, rank):
        super().__init__(out)
        self.prefix = b"[%d] " % rank

    def line(self, line):
        self.out.write(self.prefix + line)


# ---- remote trainers' output: framed by the shim, told apart by mpirun's tags or srun's labels ----
#
# Neither launcher keeps lines whole: mpirun --tag-output tags each chunk a rank wrote, but
# chunks of different ranks interleave inside lines and (Open MPI 4.1) it drops bytes of
# chunks holding many lines; srun --label splits lines longer than 1 KiB. So the shim
# (trainer_shim) frames the trainer's output: every line becomes a record, the line with
# \x1f, \x1e and [ escaped (so that no output looks like a tag), ended by RECORD_END: \x1e
# alone for mpirun (newline-free output, which mpirun forwards whole), \x1e and a newline
# for srun (which forwards lines). The launcher takes the bytes of each rank (after
# mpirun's tags, or after srun's labels with srun's newlines dropped) and cuts them into
# records at \x1e.
RECORD_END = {"mpirun": b"\x1e", "srun": b"\x1e\n"}
_ESCAPES = ((b"\x1f", b"\x1f0"), (b"\x1e", b"\x1f1"), (b"[", b"\x1f2"))
_ESCAPED = re.compile(rb"\x1f([012])")


def encode_line(line):
    """A line (without its newline) as a record's text: no \x1e, [ or newline."""
    for raw, escaped in _ESCAPES:
        line = line.replace(raw, escaped)
    return line


def decode_record(text):
    """The line of a record's text (encode_line undone)."""
    return _ESCAPED.sub(lambda m: _ESCAPES[int(m.group(1))][0], text)


class _Records:
    """The framed output of one remote trainer stream: each record written as
    ``[RANK] line``; text left at close (a shim that died, or its own raw error
    message) as one more line."""

    def __init__(self, out, rank):
        self.out = out
        self.prefix = b"[%s] " % rank
        self.buf = b""

    def feed(self, data):
        self.buf += data
        *records, self.buf = self.buf.split(b"\x1e")
        for record in records:
            self.out.write(self.prefix + decode_record(record) + b"\n")

    def close(self):
        if self.buf.strip(b"\n"):
            self.out.write(self.prefix + decode_record(self.buf.strip(b"\n")) + b"\n")
        self.buf = b""


_SRUN_LABEL = re.compile(rb" *(\d+): ")
# srun's report of how a task ended: "srun: error: HOST: task 2: Exited with exit code 3"
# or "...: tasks 0-1: Terminated" (strsignal's name of the signal).
_SRUN_TASK_END = re.compile(rb"srun: error: \S+: tasks? [\d,-]+: (.+?)\s*\Z")
_SRUN_EXIT = re.compile(rb"Exited with exit code (\d+)\Z")
_SIGNAL_STATUS = {signal.strsignal(s).encode(): 128 + s for s in signal.Signals
                  if signal.strsignal(s)}


class _SrunLabels(_Lines):
    """The output of ``srun --label`` over the shims' records: the text of ``R: text``
    lines goes to rank R's records (srun's newlines dropped); srun's own lines pass
    unchanged. srun's exit status is the highest of its tasks' (the ones it killed after
    the first failure included), so the first task end srun reports is kept as
    ``first_failure``: that task's exit status (128 + signal for a signal)."""

    first_failure = None

    def __init__(self, out):
        super().__init__(out)
        self.ranks = {}

    def line(self, line):
        m = _SRUN_LABEL.match(line)
        if m:
            rank = m.group(1)
            if rank not in self.ranks:
                self.ranks[rank] = _Records(self.out, rank)
            self.ranks[rank].feed(line[m.end():].rstrip(b"\n"))
            return
        end = _SRUN_TASK_END.match(line) if self.first_failure is None else None
        if end:
            code = _SRUN_EXIT.match(end.group(1))
            self.first_failure = int(code.group(1)) if code else _SIGNAL_STATUS.get(end.group(1))
        self.out.write(line)

    def close(self):
        super().close()
        for records in self.ranks.values():
            records.close()


_MPI_TAG = re.compile(rb"\[\d+,(\d+)\]<std(?:out|err|diag)>:")
# The start of a tag that a read may have cut off at the end of the data so far.
_MPI_TAG_START = re.compile(rb"\[(?:\d+(?:,(?:\d+(?:\](?:<[a-z]*>?)?)?)?)?)?\Z")


class _MpiTags:
    """The output of ``mpirun --tag-output`` over the shims' records.

    mpirun writes each chunk a rank wrote after a tag (``[JOB,RANK]<stdout>:``), chunks
    of different ranks interleaved. The shims' output has no newline but the one that
    ends it, so the text after a tag is that rank's up to the next tag or newline; text
    after a newline and before the next tag is mpirun's own, passed on line by line.
    """

    def __init__(self, out):
        self.out = out
        self.pending = b""  # data not parsed yet (a tag may be cut off)
        self.owner = None  # rank (bytes) the next text belongs to; None: mpirun's own
        self.ranks = {}  # rank -> its _Records
        self.own = _Lines(out)  # mpirun's own lines

    def feed(self, data, final=False):
        buf = self.pending + data
        pos = 0
        while True:
            m = _MPI_TAG.search(buf, pos)
            end = m.start() if m else len(buf)
            if not m and not final:
                cut = _MPI_TAG_START.search(buf, pos)
                if cut:
                    end = cut.start()
            self._text(buf[pos:end])
            if not m:
                break
            self.owner = m.group(1)
            pos = m.end()
        self.pending = buf[end:]

    def _text(self, text):
        if self.owner is None:
            self.own.feed(text)
            return
        mine, newline, rest = text.partition(b"\n")
        if self.owner not in self.ranks:
            self.ranks[self.owner] = _Records(self.out, self.owner)
        self.ranks[self.owner].feed(mine)
        if newline:  # the end of the rank's stream
            self.ranks.pop(self.owner).close()
            self.owner = None
            self.own.feed(rest)

    def close(self):
        self.feed(b"", final=True)
        for records in self.ranks.values():
            records.close()
        self.ranks.clear()
        self.own.close()


class _OutputPump:
    """Copies the trainers' pipes to their sinks on a thread of its own, until every
    pipe is closed (its writers gone)."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.thread = threading.Thread(target=self._run, name="gcomp-run output", daemon=True)

    def add(self, pipe, sink):
        """Register a pipe before start()."""
        self.selector.register(pipe, selectors.EVENT_READ, sink)

    def start(self):
        if not self.thread.is_alive() and self.thread.ident is None:
            self.thread.start()

    def _run(self):
        while self.selector.get_map():
            for key, _ in self.selector.select():
                data = os.read(key.fd, 65536)
                if data:
                    key.data.feed(data)
                    continue
                self.selector.unregister(key.fileobj)
                key.fileobj.close()
                key.data.close()

    def drain(self, timeout_s):
        """Wait until every pipe is drained; False if some were still open at timeout."""
        self.start()
        self.thread.join(timeout_s)
        return not self.thread.is_alive()


# ---- where the processes run: one class per --launcher ----

def _mpirun_base(tools, env_vars=()):
    argv = [tools.mpirun]
    if os.getuid() == 0:
        argv.append("--allow-run-as-root")
    argv += ["--oversubscribe", "--bind-to", "none"]
    for var in env_vars:
        argv += ["-x", var]
    return argv


class _Local:
    """Every node on this machine: the daemons under one mpirun, the trainers started by
    the launcher itself."""

    remote = False

    def __init__(self, job, tools, env):
        self.job, self.tools = job, tools

    def master_addr(self):
        return "127.0.0.1"

    def daemons(self, argv):
        return _mpirun_base(self.tools) + ["-np", str(self.job.nodes)] + argv

    def first_node(self, argv):
        return argv


class _Hostfile:
    """One node per host of an Open MPI hostfile, everything started by mpirun."""

    remote = True

    def __init__(self, job, tools, env):
        self.job = job
        self.base = _mpirun_base(tools, forwarded_vars(env)) + ["--hostfile", job.hostfile]

    def master_addr(self):
        return self.job.hosts[0]

    def each_node(self, argv, nodes=None):
        """argv once on each of the first `nodes` hosts (default: the job's nodes)."""
        return self.base + ["--map-by", "ppr:1:node", "-np", str(nodes or self.job.nodes)] + argv

    def daemons(self, argv):
        return self.each_node(argv)

    def first_node(self, argv):
        return self.each_node(argv, 1)

    def trainers(self, argv, labelled):
        per_node = self.job.trainers[0]
        return self.base + (["--tag-output"] if labelled else []) + [
            "--map-by", f"ppr:{per_node}:node", "-np", str(self.job.nodes * per_node)] + argv

    records = "mpirun"  # how the shim frames the trainers' output (RECORD_END)

    @staticmethod
    def labels(out):
        return _MpiTags(out)


class _Slurm:
    """One node per host of the Slurm allocation; every process is an srun step on the
    first `nodes` hosts (--overlap: the steps share the allocation's CPUs)."""

    remote = True

    def __init__(self, job, tools, env):
        self.job, self.tools = job, tools
        # srun reads SLURM_MPI_TYPE itself; without it the daemons use PMIx, which
        # Debian's (and most) Open MPI and Slurm builds share.
        self.mpi = [] if env.get("SLURM_MPI_TYPE") else ["--mpi=pmix"]

    def master_addr(self):
        return self.job.hosts[0]

    def _step(self, nodes, per_node, *extra):
        return [self.tools.srun, "--overlap", "--export=ALL", "--distribution=block",
                f"--nodes={nodes}", f"--ntasks={nodes * per_node}",
                f"--ntasks-per-node={per_node}",
                "--nodelist=" + ",".join(self.job.hosts[:nodes]), *extra]

    def each_node(self, argv):
        return self._step(self.job.nodes, 1) + argv

    def daemons(self, argv):
        return self._step(self.job.nodes, 1, *self.mpi, "--kill-on-bad-exit=1") + argv

    def first_node(self, argv):
        return self._step(1, 1) + argv

    def trainers(self, argv, labelled):
        return self._step(self.job.nodes, self.job.trainers[0],
                          *(["--label"] if labelled else []),
                          f"--kill-on-bad-exit={0 if self.job.keep_going else 1}") + argv

    records = "srun"

    @staticmethod
    def labels(out):
        return _SrunLabels(out)


_HOSTS = {"local": _Local, "hostfile": _Hostfile, "slurm": _Slurm}


class _Proc:
    """A started process, the leader of its own session, with a label for messages.
    With capture, its stdout and stderr are pipes (``popen.stdout``/``popen.stderr``)."""

    def __init__(self, label, argv, env, verbose, capture=False):
        if verbose:
            print(f"gcomp-run: starting {label}: {' '.join(argv)}", file=sys.stderr, flush=True)
        self.label = label
        pipe = subprocess.PIPE if capture else None
        try:
            self.popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                          stdout=pipe, stderr=pipe, start_new_session=True)
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
        self.hosts = None  # a _Local, _Hostfile or _Slurm
        self.job_dir = None
        self.daemons = None  # the mpirun/srun of the daemons
        self.trainers = []  # local mode: one _Proc per trainer; else one mpirun/srun
        self.helpers = []  # short-lived processes (gcompctl...), killed too if alive
        self.output = _OutputPump()
        self.trainer_errors = None  # remote: the sink of the trainers' launcher's stderr
        self.stdout = _Stream(sys.stdout.buffer)
        self.stderr = _Stream(sys.stderr.buffer)
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
            self._wait_daemons_ready()
            self._start_trainers()
            return self._supervise()
        except _Interrupted:
            return self._interrupted_status()
        finally:
            self._kill_all()
            if not self.output.drain(_DRAIN_TIMEOUT_S):
                self._log("some trainer output was still open after the job ended; not all of it was shown")
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
        for key, _ in job.daemon_opts:
            check_daemon_key(key)
        if job.hosts is None:
            job.hosts = job_hosts(job.launcher, job.hostfile, self.tools)
        if job.launcher != "local":
            where = (f"the hostfile {job.hostfile}" if job.launcher == "hostfile"
                     else "the Slurm allocation")
            if job.nodes > len(job.hosts):
                raise LaunchError(f"{job.nodes} nodes asked for, but {where} has "
                                  f"{len(job.hosts)} host(s): {', '.join(job.hosts)}")
            if len(set(job.trainers)) != 1:
                raise LaunchError(f"with --launcher {job.launcher} every node runs the same "
                                  f"number of trainers, got {job.trainers}")
        for name, path in (("gcompd", self.tools.gcompd), ("gcompctl", self.tools.gcompctl)):
            if os.sep in path and not os.access(path, os.X_OK):
                raise LaunchError(f"{name} not found at {path} (is the project built?)")
            if os.sep not in path and not shutil.which(path):
                raise LaunchError(f"{name} ({path}) not found on PATH")
        needed = [self.tools.srun] if job.launcher == "slurm" else [self.tools.mpirun]
        for prog in needed:
            if not shutil.which(prog):
                raise LaunchError(f"{prog} not found on PATH (needed by --launcher {job.launcher})")
        self.hosts = _HOSTS[job.launcher](job, self.tools, self._env())

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
        if self.hosts.remote:
            # Must be a path valid on every node; the daemons create it (0700).
            self.job_dir = os.path.join("/tmp", f"gcomp-{self.job_id}")
        else:
            self.job_dir = tempfile.mkdtemp(prefix=f"gcomp-{self.job_id}-")
        longest = os.path.join(self.job_dir, f"node{self.job.nodes - 1}.sock")
        if len(longest.encode()) > _SUN_PATH_MAX:
            raise LaunchError(f"job directory {self.job_dir} is too long for a unix socket "
                              f"path ({_SUN_PATH_MAX} bytes at most); set TMPDIR to a shorter one")

    def _env(self):
        """The launcher's environment, less the per-trainer variables, plus what every
        child needs to find gcomp."""
        env = {k: v for k, v in os.environ.items() if k not in TRAINER_VARS}
        if self.tools.pydir:
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = self.tools.pydir + (os.pathsep + old if old else "")
        if self.tools.library and "GCOMP_LIBRARY" not in env:
            env["GCOMP_LIBRARY"] = self.tools.library
        return env

    def _gcompd_argv(self):
        job = self.job
        argv = [self.tools.gcompd, "--dir", self.job_dir, "--job-id", self.job_id,
                "--trainers", ",".join(str(t) for t in job.trainers)]
        settings = [("codec", job.codec), ("policy", job.policy),
                    ("stats-file", job.stats_file and os.path.abspath(job.stats_file)),
                    ("timeout-ms", job.timeout_ms), ("seed", job.seed),
                    ("restore", job.restore and os.path.abspath(job.restore))]
        for key, value in settings + list(job.daemon_opts):
            if value is not None:
                argv += [f"--{key}", str(value)]
        return argv

    def _start_daemons(self):
        argv = self.hosts.daemons(self._gcompd_argv())
        self._check_signal()
        what = "mpirun" if self.job.launcher != "slurm" else "srun"
        self.daemons = _Proc(f"the daemons ({what})", argv, self._env(), self.job.verbose)

    def _wait_daemons_ready(self):
        """Return once every node's sockets exist; LaunchError (status 2) if the daemons
        exit first or take longer than _START_TIMEOUT_S."""
        paths = [os.path.join(self.job_dir, f"node{k}.{kind}")
                 for k in range(self.job.nodes) for kind in ("sock", "ctl")]
        probe = None
        if self.hosts.remote:
            # The sockets are on the hosts: a check runs on each (gcomp.launch --wait-sockets).
            probe = self._start_helper("the daemon readiness check", self.hosts.each_node(
                [self.tools.python, "-m", "gcomp.launch", "--wait-sockets", self.job_dir,
                 "--timeout", str(_START_TIMEOUT_S)]))
        deadline = time.monotonic() + _START_TIMEOUT_S + (30.0 if probe else 0.0)
        while True:
            self._check_signal()
            rc = self.daemons.poll()
            if rc is not None:
                raise LaunchError(f"{self.daemons.label} {describe(rc)} before every node's "
                                  "sockets existed (their messages are above); no trainer "
                                  "was started")
            if probe is None and all(os.path.exists(p) for p in paths):
                return
            if probe is not None and probe.poll() is not None:
                out = probe.communicate()[0].decode(errors="replace").strip()
                if probe.returncode == 0:
                    return
                raise LaunchError(f"the daemon readiness check {describe(probe.returncode)}: {out}")
            if time.monotonic() > deadline:
                missing = [p for p in paths if not os.path.exists(p)]
                raise LaunchError(f"the daemons did not create their sockets within "
                                  f"{_START_TIMEOUT_S:.0f} s (missing: {', '.join(missing)})")
            time.sleep(_POLL_S)

    def _master(self, env):
        """(MASTER_ADDR, MASTER_PORT) for the trainers: the environment's, else chosen."""
        return (env.get("MASTER_ADDR") or self.hosts.master_addr(),
                env.get("MASTER_PORT") or free_port())

    def _start_trainers(self):
        job = self.job
        env = self._env()
        master = self._master(env)
        capture = not job.raw_output
        if self.hosts.remote:
            argv = self.hosts.trainers([
                self.tools.python, "-m", "gcomp.launch", "--trainer-shim",
                "--dir", self.job_dir, "--job-id", self.job_id, "--nodes", str(job.nodes),
                "--trainers-per-node", str(job.trainers[0]),
                "--master-addr", master[0], "--master-port", str(master[1]),
                *(["--records", self.hosts.records] if capture else []),
                "--", *job.command], capture)
            self._check_signal()
            what = "mpirun" if job.launcher == "hostfile" else "srun"
            proc = _Proc(f"the trainers ({what})", argv, env, job.verbose, capture)
            self.trainers.append(proc)
            if capture:
                self.trainer_errors = self.hosts.labels(self.stderr)
                self.output.add(proc.popen.stdout, self.hosts.labels(self.stdout))
                self.output.add(proc.popen.stderr, self.trainer_errors)
        else:
            for node, count in enumerate(job.trainers):
                for local_rank in range(count):
                    self._check_signal()
                    tenv = trainer_env(env, self.job_dir, self.job_id, job.trainers, node,
                                       local_rank, master)
                    rank = int(tenv["GCOMP_RANK"])
                    label = f"trainer {rank} (node {node}, local rank {local_rank})"
                    proc = _Proc(label, job.command, tenv, job.verbose, capture)
                    self.trainers.append(proc)
                    if capture:
                        self.output.add(proc.popen.stdout, _Prefixed(self.stdout, rank))
                        self.output.add(proc.popen.stderr, _Prefixed(self.stderr, rank))
        self.output.start()

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
                    status = self._failure_status(proc, rc)
                    if first_failure is None:
                        first_failure = status
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

    def _failure_status(self, proc, rc):
        """Log a trainer process's failure; return the exit status it stands for (for
        srun: that of the first task that failed, from srun's report of it)."""
        self._log(f"{proc.label} {describe(rc)}")
        first = None
        if self.trainer_errors is not None and self.output.drain(_DRAIN_TIMEOUT_S):
            first = getattr(self.trainer_errors, "first_failure", None)
        if first is None or first == exit_status(rc):
            return exit_status(rc)
        self._log(f"the first trainer to fail ended with status {first}")
        return first

    def _start_helper(self, label, argv, interruptible=True):
        """Start a short command in its own session, its output (both streams) piped."""
        if interruptible:
            self._check_signal()
        if self.job.verbose:
            self._log(f"running {label}: {' '.join(argv)}")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)
        self.helpers.append(proc)
        return proc

    def _run_helper(self, label, argv, timeout_s, interruptible=True):
        """Run a short command in its own session; return (returncode, output).

        returncode is None when it timed out (it is killed then).
        """
        proc = self._start_helper(label, argv, interruptible)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill_session(proc, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out.decode(errors="replace")
        return proc.returncode, out.decode(errors="replace")

    def _ctl_argv(self, *args):
        # node0.ctl lives on the first host: gcompctl runs there.
        return self.hosts.first_node(
            [self.tools.gcompctl, "--socket", os.path.join(self.job_dir, "node0.ctl"), *args])

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
            # mpirun and srun forward SIGTERM to their ranks and exit; trainers get it directly.
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
        if self.hosts.remote and self.daemons is not None:
            # The daemons created the directory on every node: remove it there too.
            rc, out = self._run_helper("job directory clean-up", self.hosts.each_node(
                ["rm", "-rf", "--", self.job_dir]), 30.0, interruptible=False)
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


def parse_daemon_opt(text):
    """'KEY=VALUE' -> (KEY, VALUE) for --daemon-opt."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--daemon-opt {text!r}: expected KEY=VALUE, such as "
                                         "log-level=debug (gcompd --help lists the keys)")
    try:
        check_daemon_key(key)
    except LaunchError as exc:
        raise argparse.ArgumentTypeError(f"--daemon-opt {text!r}: {exc}") from None
    return key, value


def build_parser():
    """gcomp-run's command-line parser."""
    p = argparse.ArgumentParser(
        prog="gcomp-run",
        description="Start gcompd on N (emulated or real) nodes and T trainers per node "
                    "running COMMAND; exit with the first failure's status.",
        epilog="Example: gcomp-run --nodes 2 --trainers-per-node 4 --codec topk:density=0.01 "
               "-- python train.py")
    p.add_argument("--nodes", type=int,
                   help="number of nodes (daemons); default 1 locally, every host of the "
                        "hostfile or of the Slurm allocation")
    p.add_argument("--trainers-per-node", metavar="T|T0,T1,...",
                   help="trainers per node, one count for all or one per node; default 1 "
                        "(under Slurm: SLURM_NTASKS_PER_NODE when set)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--codec", metavar="SPEC", help="static codec for every layer")
    mode.add_argument("--policy", metavar="SPEC", help="adaptive policy")
    p.add_argument("--launcher", choices=LAUNCHERS,
                   help="where the job runs: this machine, the hosts of --hostfile, or the "
                        "Slurm allocation; default hostfile with --hostfile, slurm when "
                        "SLURM_JOB_ID is set, else local")
    p.add_argument("--hostfile", metavar="H",
                   help="run on the hosts of an Open MPI hostfile (one daemon per host)")
    p.add_argument("--stats-file", metavar="PATH",
                   help="daemon statistics (JSON lines); {node} in PATH = one file per node")
    p.add_argument("--timeout-ms", type=int, metavar="MS", help="daemon stall timeout")
    p.add_argument("--seed", type=int, help="daemon random seed")
    for key, text, _ in DAEMON_FLAGS:
        p.add_argument(f"--{key}", metavar="VALUE", help=text)
    p.add_argument("--daemon-opt", action="append", default=[], metavar="KEY=VALUE",
                   type=parse_daemon_opt,
                   help="any gcompd setting, passed to every daemon as --KEY VALUE (repeatable)")
    p.add_argument("--keep-going", action="store_true",
                   help="on a trainer failure let the other trainers finish instead of "
                        "stopping the job (the exit status is still the first failure's; "
                        "without effect with --launcher hostfile, where mpirun stops them)")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="when every trainer is done, save the daemons' state in DIR "
                        "(error feedback, codec and policy state) before shutting down")
    p.add_argument("--restore", metavar="DIR", help="start the daemons from a checkpoint")
    p.add_argument("--raw-output", action="store_true",
                   help="pass the trainers' output through as it is, without the [RANK] "
                        "prefix on each line")
    p.add_argument("-v", "--verbose", action="store_true", help="print the commands run")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the trainer command")
    return p


def main(argv=None, tools=None):
    """Entry point of gcomp-run; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--trainer-shim"]:
        return trainer_shim(argv[1:])
    if argv[:1] == ["--wait-sockets"]:
        return wait_sockets(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no trainer command given (put it after --)")
    launcher = args.launcher or ("hostfile" if args.hostfile else
                                 "slurm" if os.environ.get("SLURM_JOB_ID") else "local")
    tools = tools or default_tools()
    try:
        hosts = job_hosts(launcher, args.hostfile, tools)
        nodes = args.nodes if args.nodes is not None else len(hosts) if hosts else 1
        if nodes < 1:
            parser.error(f"--nodes must be >= 1, got {nodes}")
        per_node = args.trainers_per_node or (
            launcher == "slurm" and os.environ.get("SLURM_NTASKS_PER_NODE")) or "1"
        try:
            trainers = parse_trainers(per_node, nodes)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
        daemon_opts = []
        for key, _, is_path in DAEMON_FLAGS:
            value = getattr(args, key.replace("-", "_"))
            if value is not None:
                daemon_opts.append((key, os.path.abspath(value) if is_path else value))
        job = Job(command=command, trainers=trainers, codec=args.codec, policy=args.policy,
                  stats_file=args.stats_file, timeout_ms=args.timeout_ms, seed=args.seed,
                  launcher=launcher, hostfile=args.hostfile, hosts=hosts,
                  daemon_opts=daemon_opts + args.daemon_opt, keep_going=args.keep_going,
                  raw_output=args.raw_output, verbose=args.verbose,
                  checkpoint=args.checkpoint, restore=args.restore)
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


def task_ids(env):
    """(rank, size, local rank) of this task, from Open MPI's OMPI_COMM_WORLD_* or
    Slurm's SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID variables."""
    for names in (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
                  ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID")):
        if names[0] in env:
            try:
                return tuple(int(env[n]) for n in names)
            except (KeyError, ValueError):
                raise LaunchError(f"{', '.join(names)} must all be set to integers, got "
                                  f"{[env.get(n) for n in names]}") from None
    raise LaunchError("not started by mpirun or srun (neither OMPI_COMM_WORLD_RANK nor "
                      "SLURM_PROCID is set)")


def trainer_shim(argv):
    """``python -m gcomp.launch --trainer-shim``: one trainer under mpirun or srun.

    Derives the GCOMP_* (and torchrun's) variables from the task's ranks (mapped
    node-major, T per node, so rank // T is the node) and execs the trainer command; with
    --records mpirun|srun it runs it as a child instead and frames its output (see
    RECORD_END), and exits as the trainer did.
    """
    p = argparse.ArgumentParser(prog="gcomp.launch --trainer-shim")
    p.add_argument("--dir", required=True)
    p.add_argument("--job-id", required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--trainers-per-node", type=int, required=True)
    p.add_argument("--master-addr", required=True)
    p.add_argument("--master-port", type=int, required=True)
    p.add_argument("--records", choices=sorted(RECORD_END))
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    end = RECORD_END.get(args.records)

    def fail(message, status):
        line = f"gcomp trainer shim: {message}".encode()
        _write_all(2, encode_line(line) + end if end else line + b"\n")
        return status

    per_node = args.trainers_per_node
    try:
        rank, size, local_rank = task_ids(os.environ)
    except LaunchError as exc:
        return fail(str(exc), 2)
    node = rank // per_node
    if size != args.nodes * per_node or local_rank != rank % per_node:
        return fail(f"rank {rank} of {size} has local rank {local_rank}; expected {per_node} "
                    f"trainers on each of {args.nodes} nodes mapped node-major (does the "
                    "hostfile list each host once?)", 2)
    env = trainer_env(os.environ, args.dir, args.job_id, [per_node] * args.nodes, node,
                      local_rank, (args.master_addr, args.master_port))
    try:
        if not end:
            os.execvpe(command[0], command, env)
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        return fail(f"cannot run {command[0]}: {exc.strerror}",
                    127 if isinstance(exc, FileNotFoundError) else 126)
    # The signals mpirun or srun send reach the trainer (also when sent to the shim
    # alone); the shim stays to forward its last output and its exit status.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    _frame_output(child, end, args.records == "mpirun")
    rc = child.wait()
    if rc < 0:  # die of the same signal, so that mpirun and srun report it
        signal.signal(-rc, signal.SIG_DFL)
        os.kill(os.getpid(), -rc)
    return rc


def _write_all(fd, data):
    """Write all of data to fd; a reader that went away drops it."""
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def _frame_output(child, end, end_marker):
    """Copy the child's stdout and stderr to the shim's (fd 1 and 2) as records ended by
    `end` (a last line without a newline too), and a newline after each stream with
    end_marker; until both pipes close, or 2 s after the child exited (a grandchild may
    keep them open)."""
    streams = [[child.stdout, 1, b""], [child.stderr, 2, b""]]  # pipe, fd, partial line
    selector = selectors.DefaultSelector()
    for stream in streams:
        selector.register(stream[0], selectors.EVENT_READ, stream)
    deadline = None
    while selector.get_map():
        if deadline is None and child.poll() is not None:
            deadline = time.monotonic() + 2.0
        left = 0.2 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in selector.select(left):
            stream = key.data
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fileobj)
                continue
            *lines, stream[2] = (stream[2] + data).split(b"\n")
            _write_all(stream[1], b"".join(encode_line(line) + end for line in lines))
    for pipe, fd, rest in streams:
        _write_all(fd, (encode_line(rest) + end if rest else b"") + (b"\n" if end_marker else b""))
        pipe.close()


def wait_sockets(argv):
    """``python -m gcomp.launch --wait-sockets DIR``: under mpirun or srun, one task per
    node; exit 0 once this node's daemon sockets (DIR/node{rank}.sock and .ctl) exist,
    1 if they do not within --timeout seconds."""
    p = argparse.ArgumentParser(prog="gcomp.launch --wait-sockets")
    p.add_argument("dir")
    p.add_argument("--timeout", type=float, default=_START_TIMEOUT_S)
    args = p.parse_args(argv)
    try:
        node = task_ids(os.environ)[0]
    except LaunchError as exc:
        print(f"gcomp readiness check: {exc}", file=sys.stderr)
        return 2
    paths = [os.path.join(args.dir, f"node{node}.{kind}") for kind in ("sock", "ctl")]
    deadline = time.monotonic() + args.timeout
    while not all(os.path.exists(path) for path in paths):
        if time.monotonic() > deadline:
            print(f"gcomp readiness check on {socket.gethostname()}: "
                  f"{' and '.join(paths)} did not appear within {args.timeout:.0f} s",
                  file=sys.stderr)
            return 1
        time.sleep(_POLL_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
