"""Every wait has an end, resources are bounded, writes never disconnect a slow reader,
and refusals say why (the reliability issue's list), against real daemons."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

import gcomp

from helpers import Daemons, mpirun_base, proc_stat
from test_failures import WAIT_MS, connect_all, hello


def t_connect(agent, d, node, rank):
    agent.ok("connect", socket=d.sock(node), job_id=d.job_id, local_rank=rank, timeout_ms=10000)


def wait_reply(agent, timeout_ms=WAIT_MS):
    agent.send("wait", bucket="b0", timeout_ms=timeout_ms)
    return agent.recv(timeout=timeout_ms / 1000 + 15)


def test_slot_that_never_registers_fails_the_step_on_time(build, start_daemons, agents):
    # Local rank 1 connects but registers another bucket (or dies before registering):
    # rank 0's step needs every slot; it fails within --timeout-ms naming the slot.
    d = start_daemons([2], timeout_ms=1500)
    a, b = agents("a"), agents("b")
    t_connect(a, d, 0, 0)
    t_connect(b, d, 0, 1)
    a.ok("register", name="b0", layers=[["w", [16, 16]]])
    b.ok("register", name="other", layers=[["w", [16, 16]]])
    a.ok("fill", bucket="b0", scale=1.0)
    a.ok("submit", bucket="b0", step=0)
    t0 = time.monotonic()
    r = wait_reply(a)
    assert not r["ok"] and r["code"] == gcomp.Status.MISMATCH, r
    assert "local rank 1 (registered other buckets)" in r["message"] and "b0" in r["message"], r
    assert time.monotonic() - t0 < 1.5 + 2.0
    b.kill()
    a.ok("submit", bucket="b0", step=1)
    r = wait_reply(a)
    assert not r["ok"] and r["code"] == gcomp.Status.PEER_LOST, r
    assert "local rank 1 (not connected)" in r["message"], r


def test_bucket_names_that_differ_between_nodes_fail_everywhere(build, start_daemons, agents):
    d = start_daemons([1, 1], timeout_ms=1500)
    a, b = agents("a"), agents("b")
    t_connect(a, d, 0, 0)
    t_connect(b, d, 1, 0)
    a.ok("register", name="b0", layers=[["w", [8]]])
    b.ok("register", name="b0-renamed", layers=[["w", [8]]])
    a.ok("fill", bucket="b0", scale=1.0)
    a.ok("submit", bucket="b0", step=0)
    b.ok("fill", bucket="b0-renamed", scale=1.0)
    b.ok("submit", bucket="b0-renamed", step=0)
    a.send("wait", bucket="b0", timeout_ms=WAIT_MS)
    b.send("wait", bucket="b0-renamed", timeout_ms=WAIT_MS)
    ra, rb = a.recv(timeout=WAIT_MS / 1000 + 10), b.recv(timeout=WAIT_MS / 1000 + 10)
    for r, mine, theirs in ((ra, "b0", "b0-renamed"), (rb, "b0-renamed", "b0")):
        assert not r["ok"] and r["code"] == gcomp.Status.MISMATCH, r
        assert f"bucket '{mine}' step 0" in r["message"] and "did not submit it" in r["message"], r
        assert f"'{theirs}'" in r["message"], r  # what the other node holds


def test_mismatched_layers_within_a_node_fail_the_others_too(build, start_daemons, agents):
    d = start_daemons([2])
    a, b = agents("a"), agents("b")
    t_connect(a, d, 0, 0)
    t_connect(b, d, 0, 1)
    a.ok("register", name="b0", layers=[["w", [4, 4]]])
    a.ok("fill", bucket="b0", scale=1.0)
    a.ok("submit", bucket="b0", step=0)
    a.send("wait", bucket="b0", timeout_ms=WAIT_MS)
    time.sleep(0.2)
    r = b.call("register", name="b0", layers=[["w", [4, 5]]])
    assert not r["ok"] and r["code"] == gcomp.Status.MISMATCH, r
    r = a.recv(timeout=WAIT_MS / 1000 + 10)  # the waiting trainer is told too, at once
    assert not r["ok"] and r["code"] == gcomp.Status.MISMATCH, r
    assert "[4, 4] vs [4, 5]" in r["message"], r
    assert r["elapsed"] < 5, r


def test_thousands_of_buckets_completing_at_once(build, start_daemons):
    """A full socket send buffer queues completions; it never closes the session."""
    d = start_daemons([1, 1], codec="randomk:density=0.5,min_elements=0")
    cs = [gcomp.Client(socket=d.sock(n), job_id=d.job_id, local_rank=0) for n in range(2)]
    try:
        nb = 3000
        bs = [[c.register(f"b{k}", [(f"l{k}", (4, 4))]) for k in range(nb)] for c in cs]
        for step in range(2):
            for row in bs:
                for b in row:
                    b.data[:] = 1.0
                    b.submit(step)
            time.sleep(0.5)  # let every completion arrive before anyone reads
            for row in bs:
                for b in row:
                    b.wait(60000)
        assert "closing" not in d.log(), d.log()
    finally:
        for c in cs:
            c.close()


def test_limits_on_buckets_and_memory(build, start_daemons, agents):
    d = start_daemons([1], extra=("--max-buckets", "5"))
    a = agents("a")
    t_connect(a, d, 0, 0)
    # A bucket the daemon cannot map is refused at registration (2^32 elements: 16 GiB
    # per region), naming the limit.
    r = a.call("register", name="huge", layers=[["w", [65536, 65536]]])
    assert not r["ok"] and r["code"] == gcomp.Status.LIMIT, r
    assert "bytes of shared memory" in r["message"], r
    for k in range(5):
        a.ok("register", name=f"b{k}", layers=[["w", [4]]])
    r = a.call("register", name="b5", layers=[["w", [4]]])
    assert not r["ok"] and r["code"] == gcomp.Status.LIMIT and "--max-buckets 5" in r["message"], r


def test_max_bytes_and_unregister_frees(build, start_daemons):
    d = start_daemons([1], extra=("--max-bytes", "1m"))
    with gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0) as c:
        pid = d.daemon_pids()[0]
        fds0 = len(os.listdir(f"/proc/{pid}/fd"))
        b = c.register("a", [("w", (256, 512))])  # 512 KiB x 2 regions: all of it
        with pytest.raises(gcomp.Error) as info:
            c.register("b", [("w", (256, 256))])
        assert info.value.code == gcomp.Status.LIMIT and "--max-bytes" in info.value.message
        assert len(os.listdir(f"/proc/{pid}/fd")) >= fds0 + 2
        lib = gcomp._lib.load()
        lib.gcomp_bucket_unregister.argtypes = [gcomp._lib.ctypes.c_void_p]
        assert lib.gcomp_bucket_unregister(b._handle) == 0
        del c._buckets["a"]
        deadline = time.monotonic() + 5
        while len(os.listdir(f"/proc/{pid}/fd")) > fds0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(os.listdir(f"/proc/{pid}/fd")) <= fds0, "the bucket's memory was not freed"
        c.register("b", [("w", (256, 512))])  # room again


def test_connection_without_hello_is_closed(build, start_daemons):
    d = start_daemons([1], extra=("--hello-timeout-ms", "300"))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(d.sock(0))
    s.settimeout(5)
    t0 = time.monotonic()
    assert s.recv(1024) == b""  # closed by the daemon
    assert time.monotonic() - t0 < 3
    # The daemon logs before it closes, but its stderr reaches the log through mpirun's
    # forwarding, which may come later than the close.
    deadline = time.monotonic() + 5
    while "sent no hello within 300 ms" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "sent no hello within 300 ms" in d.log()
    s.close()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_does_not_spin(build, tmp_path):
    if not subprocess.run(["which", "prlimit"], capture_output=True).returncode == 0:
        pytest.skip("prlimit (util-linux) is not installed")
    d = Daemons(build, [1], logdir=str(tmp_path))
    try:
        d.wait_ready()
        pid = d.daemon_pids()[0]
        # A few descriptors more than it holds now: the first buckets take the rest.
        limit = len(os.listdir(f"/proc/{pid}/fd")) + 8
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={limit}:{limit}"], check=True)
        with gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0) as c:
            refused = None
            for k in range(limit):
                try:
                    c.register(f"b{k}", [("w", (4,))])
                except gcomp.Error as exc:
                    refused = exc
                    break
            assert refused is not None and "shared memory" in refused.message, refused
            socks = []
            for _ in range(5):  # connections beyond the limit are refused, not spun on
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                s.connect(d.sock(0))
                socks.append(s)
            t0, c0 = time.monotonic(), cpu_seconds(pid)
            time.sleep(1.5)
            used = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
            assert used < 0.3, f"the daemon used {used:.0%} of a core with no descriptors left"
            assert "out of file descriptors" in d.log()
            for s in socks:
                s.close()
    finally:
        d.kill()


def test_lost_buckets_are_reported_once(build, start_daemons):
    """2,000 buckets of a lost trainer cost nothing while the job waits."""
    d = start_daemons([1, 1])
    c = gcomp.Client(socket=d.sock(1), job_id=d.job_id, local_rank=0)
    for k in range(2000):
        c.register(f"b{k}", [("w", (2,))])
    c.close()  # the trainer goes; its buckets wait for it
    time.sleep(1.0)
    pids = d.daemon_pids()
    t0, c0 = time.monotonic(), sum(cpu_seconds(p) for p in pids.values())
    time.sleep(2.0)
    used = (sum(cpu_seconds(p) for p in pids.values()) - c0) / (time.monotonic() - t0)
    assert used < 0.15, f"the idle daemons used {used:.0%} of a core"


def test_other_uid_is_denied_with_a_reason(build, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a daemon as another uid")
    sockdir = f"/tmp/gct-nobody-{os.getpid()}"
    env = build.env()
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "mpirun",
            "--oversubscribe", "-np", "1", build.gcompd, "--job-id", "nob", "--dir", sockdir]
    log = open(tmp_path / "nobody.log", "wb")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(f"{sockdir}/node0.sock"):
            assert p.poll() is None, open(tmp_path / "nobody.log").read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(gcomp.Error) as info:
            gcomp.Client(socket=f"{sockdir}/node0.sock", job_id="nob", local_rank=0,
                         connect_timeout_ms=5000)
        assert info.value.code == gcomp.Status.DENIED, info.value
        assert "uid 0 may not use this daemon (it runs as uid 65534)" in info.value.message
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        subprocess.run(["rm", "-rf", sockdir])


def test_shutdown_gives_trainers_shutdown(build, start_daemons, agents):
    d = start_daemons([1])
    a = agents("a")
    t_connect(a, d, 0, 0)
    a.ok("register", name="b0", layers=[["w", [4]]])
    res, rc = d.shutdown()
    assert rc == 0, res
    a.ok("fill", bucket="b0", scale=1.0)
    r = a.call("submit", bucket="b0", step=0)
    if r["ok"]:
        r = a.call("wait", bucket="b0", timeout_ms=5000)
    assert not r["ok"] and r["code"] == gcomp.Status.SHUTDOWN, r
    assert "shutting down" in r["message"], r


def test_killed_daemon_is_named_to_the_other_nodes_trainers(build, start_daemons, agents):
    d = start_daemons([1, 1], timeout_ms=30000)
    t = connect_all(d, agents, [("a", 0, 0), ("b", 1, 0)])
    t["a"].ok("fill", bucket="b0", scale=1.0)
    t["a"].ok("submit", bucket="b0", step=0)
    t["a"].send("wait", bucket="b0", timeout_ms=WAIT_MS)
    time.sleep(0.3)
    os.kill(d.daemon_pids()[1], signal.SIGKILL)
    r = t["a"].recv(timeout=WAIT_MS / 1000 + 10)
    assert not r["ok"] and r["code"] == gcomp.Status.PEER_LOST, r
    assert "node 1 stopped answering" in r["message"], r


def test_json_and_arguments_refused_clearly(build, start_daemons, agents):
    d = start_daemons([1])
    a = agents("a")
    t_connect(a, d, 0, 0)
    a.ok("hint", step=0, lr=float("nan"))
    time.sleep(0.2)
    out = d.gcompctl("status", "--json")  # --json after the command counts too
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)  # valid JSON: a NaN hint is null
    assert status["hints"]["lr"] is None
    for args, needle in ((["",], "empty command"), (["checkpoint", "save", ""], "not empty"),
                         (["policy", "set", ""], "not empty")):
        r = d.gcompctl(*args)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)
    for flag, needle in ((["--codec", ""], "empty spec"),
                         (["--codec", "topk:density=0.1,density=0.2"], "given twice"),
                         (["--policy", "static:codec=none,start_iter=1,start_iter=2"], "given twice")):
        r = subprocess.run([build.gcompd, "--job-id", "x", *flag], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and needle in r.stderr, (flag, r.stderr)
