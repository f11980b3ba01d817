"""Reliability and security rules (design.md section 8) against real daemons.

Daemons are started directly under mpirun (helpers.Daemons) and trainers are agent
processes (agent.py) so that a test can kill one at a precise point. Every wait has a
timeout; a reply that does not come in time fails the test as a hang.
"""

import os
import signal
import socket
import time

import pytest

import gcomp

WAIT_MS = 20000  # the trainers' wait timeout: errors must come before it


# ---- a minimal protobuf encoder for hand-made trainer messages (proto/gcomp.proto) ----

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(num, value):
    return varint(num << 3) + varint(value)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint((num << 3) | 2) + varint(len(data)) + data


def hello(job_id, local_rank=0, version=2):  # GCOMP_PROTOCOL_VERSION
    body = field_varint(1, version) + field_bytes(2, job_id) + field_varint(3, local_rank) \
        + field_varint(4, os.getpid())
    return field_bytes(1, body)  # TrainerMsg.hello


def register(bucket, layers):
    body = field_bytes(1, bucket)
    for name, shape in layers:
        layer = field_bytes(1, name) + field_bytes(2, b"".join(varint(d) for d in shape)) \
            + field_varint(3, 0)
        body += field_bytes(2, layer)
    return field_bytes(2, body)  # TrainerMsg.register


def submit(bucket_id, step):
    return field_bytes(3, field_varint(1, bucket_id) + field_varint(2, step))


def top_fields(data):
    """Decode the top-level fields of a message: [(number, wire type, value)]."""
    fields, i = [], 0

    def read_varint():
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = read_varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            fields.append((num, wt, read_varint()))
        elif wt == 2:
            n = read_varint()
            fields.append((num, wt, data[i:i + n]))
            i += n
        elif wt == 1:
            fields.append((num, wt, data[i:i + 8]))
            i += 8
        elif wt == 5:
            fields.append((num, wt, data[i:i + 4]))
            i += 4
        else:
            raise ValueError(f"wire type {wt}")
    return fields


def reply_status(packet):
    """The status of a DaemonMsg (Welcome, Registered or Complete), as a signed int."""
    (num, _, body), = top_fields(packet)
    status_field = 3 if num == 3 else 1  # Complete.status is field 3
    for fnum, wt, value in top_fields(body):
        if fnum == status_field and wt == 0:
            return value - (1 << 64) if value >= 1 << 63 else value
    return 0


def raw_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(10)
    s.connect(path)
    return s


def recv_or_close(s, timeout=5.0):
    """A reply packet, b"" if the daemon closed, or None if it said nothing in time."""
    s.settimeout(timeout)
    try:
        return s.recv(1 << 20)
    except socket.timeout:
        return None
    except (ConnectionResetError, BrokenPipeError):
        return b""


def say_hello(s, job_id):
    """Send a valid Hello on a raw connection and check that it is welcomed."""
    s.send(hello(job_id))
    r = recv_or_close(s)
    assert r, f"no Welcome for a valid hand-made Hello (got {r!r})"
    assert reply_status(r) == 0, f"valid hand-made Hello refused: {r!r}"


def assert_alive(d, node=0):
    res = d.gcompctl("status", node=node)
    assert res.returncode == 0, f"gcompctl status on node {node} failed ({res.returncode}): " \
                                f"{res.stdout}{res.stderr}\ndaemon log:\n{d.log()}"


def one_good_step(d, agents, node=0, step=0):
    """A normal trainer (local rank 0 of a 1-trainer node) completes a step correctly."""
    a = agents("good")
    a.ok("connect", socket=d.sock(node), job_id=d.job_id, local_rank=0, timeout_ms=10000)
    a.ok("register", name="g", layers=[["w", [5, 3]]])
    a.ok("fill", bucket="g", scale=2.0)
    a.ok("submit", bucket="g", step=step)
    a.ok("wait", bucket="g", timeout_ms=WAIT_MS, timeout=WAIT_MS / 1000 + 10)
    assert a.ok("check", bucket="g", scale=2.0)["match"]
    a.close()


def assert_failed_in_time(reply, who):
    assert not reply["ok"], f"{who}: the step succeeded, expected an error"
    assert reply["code"] != gcomp.Status.TIMEOUT, \
        f"{who}: no error within the wait timeout ({WAIT_MS} ms), only GCOMP_TIMEOUT: {reply}"


def connect_all(d, agents, layout):
    """layout: [(name, node, local_rank)] -> {name: Agent} connected with bucket b0 registered."""
    made = {}
    for name, node, rank in layout:
        a = agents(name)
        a.send("connect", socket=d.sock(node), job_id=d.job_id, local_rank=rank, timeout_ms=10000)
        made[name] = a
    for name, a in made.items():
        r = a.recv()
        assert r["ok"], f"{name} connect: {r}"
    # Registration may wait for the node's other trainers: send all, then collect.
    for a in made.values():
        a.send("register", name="b0", layers=[["w", [64]], ["v", [8, 8]]])
    for name, a in made.items():
        r = a.recv()
        assert r["ok"], f"{name} register: {r}"
    return made


def test_trainer_killed_mid_step(build, start_daemons, agents):
    d = start_daemons([2, 1], timeout_ms=5000)
    t = connect_all(d, agents, [("a0", 0, 0), ("a1", 0, 1), ("b", 1, 0)])
    for name in ("a0", "b"):
        t[name].ok("fill", bucket="b0", scale=1.0)
        t[name].ok("submit", bucket="b0", step=0)
    t["a0"].send("wait", bucket="b0", timeout_ms=WAIT_MS)
    t["b"].send("wait", bucket="b0", timeout_ms=WAIT_MS)
    time.sleep(0.5)
    t["a1"].kill(signal.SIGKILL)  # registered, never submits: the step cannot complete
    for name in ("a0", "b"):
        assert_failed_in_time(t[name].recv(timeout=WAIT_MS / 1000 + 10), name)
    assert_alive(d, 0)
    assert_alive(d, 1)


def test_daemon_killed(build, start_daemons, agents):
    d = start_daemons([1, 1], timeout_ms=3000)
    t = connect_all(d, agents, [("a", 0, 0), ("b", 1, 0)])
    t["b"].ok("fill", bucket="b0", scale=1.0)
    t["b"].ok("submit", bucket="b0", step=0)
    t["b"].send("wait", bucket="b0", timeout_ms=WAIT_MS)  # blocked: node 0 has not submitted
    time.sleep(0.5)
    pids = d.daemon_pids()
    assert set(pids) == {0, 1}, f"gcompd processes found: {pids}"
    os.kill(pids[1], signal.SIGKILL)
    r = t["b"].recv(timeout=WAIT_MS / 1000 + 10)
    assert_failed_in_time(r, "trainer of the killed daemon")
    # Node 0's trainer must not hang either (its daemon may be gone too: mpirun aborts
    # the job when a rank dies).
    t["a"].ok("fill", bucket="b0", scale=1.0)
    t["a"].send("submit", bucket="b0", step=0)
    r = t["a"].recv()
    if r["ok"]:
        r = t["a"].call("wait", bucket="b0", timeout_ms=WAIT_MS, timeout=WAIT_MS / 1000 + 10)
    assert_failed_in_time(r, "trainer of the surviving node")


def test_mismatch_within_a_node(build, start_daemons, agents):
    d = start_daemons([2])
    a, b = agents("a"), agents("b")
    a.ok("connect", socket=d.sock(0), job_id=d.job_id, local_rank=0, timeout_ms=10000)
    b.ok("connect", socket=d.sock(0), job_id=d.job_id, local_rank=1, timeout_ms=10000)
    a.send("register", name="b0", layers=[["w", [4, 4]]])
    time.sleep(0.3)
    b.send("register", name="b0", layers=[["w", [4, 5]]])
    replies = [a.recv(), b.recv()]
    errors = [r for r in replies if not r["ok"]]
    if not errors:  # the daemon may check when the step runs instead
        for x in (a, b):
            x.ok("fill", bucket="b0", scale=1.0)
            x.ok("submit", bucket="b0", step=0)
        errors = [x.call("wait", bucket="b0", timeout_ms=WAIT_MS, timeout=WAIT_MS / 1000 + 10)
                  for x in (a, b)]
        assert not any(r["ok"] for r in errors), f"mismatched step succeeded: {errors}"
    assert any(r["code"] == gcomp.Status.MISMATCH and "b0" in r["message"] and "5" in r["message"]
               for r in errors), f"expected GCOMP_MISMATCH naming b0 and the shape: {errors}"
    assert_alive(d)


@pytest.mark.parametrize("difference", ["shape", "layer name", "layer count"])
def test_mismatch_across_nodes(build, start_daemons, agents, difference):
    d = start_daemons([1, 1], timeout_ms=5000)
    other = {"shape": [["w", [4, 5]]], "layer name": [["x", [4, 4]]],
             "layer count": [["w", [4, 4]], ["extra", [2]]]}[difference]
    a, b = agents("a"), agents("b")
    a.ok("connect", socket=d.sock(0), job_id=d.job_id, local_rank=0, timeout_ms=10000)
    b.ok("connect", socket=d.sock(1), job_id=d.job_id, local_rank=0, timeout_ms=10000)
    outcome = {}
    for name, x, layers in (("a", a, [["w", [4, 4]]]), ("b", b, other)):
        r = x.call("register", name="b0", layers=layers)
        if not r["ok"]:
            outcome[name] = r
    for name, x in (("a", a), ("b", b)):
        if name not in outcome:
            x.ok("fill", bucket="b0", scale=1.0)
            r = x.call("submit", bucket="b0", step=0)
            if r["ok"]:
                x.send("wait", bucket="b0", timeout_ms=WAIT_MS)
            else:
                outcome[name] = r
    for name, x in (("a", a), ("b", b)):
        if name not in outcome:
            outcome[name] = x.recv(timeout=WAIT_MS / 1000 + 10)
    for name, r in outcome.items():
        assert_failed_in_time(r, f"trainer {name}")
        assert r["code"] == gcomp.Status.MISMATCH and "b0" in r["message"], \
            f"trainer {name}: expected GCOMP_MISMATCH naming bucket b0, got {r}"
    assert_alive(d, 0)
    assert_alive(d, 1)


def test_malformed_and_oversized_packets(build, start_daemons, agents):
    d = start_daemons([1])
    path = d.sock(0)

    # Garbage instead of a Hello.
    s = raw_connect(path)
    s.send(b"\xff\x01garbage\x00\x80\x80\x80" * 20)
    recv_or_close(s)
    s.close()
    assert_alive(d)

    # An oversized packet (over the 128 KiB limit) before and after a Hello.
    for with_hello in (False, True):
        s = raw_connect(path)
        if with_hello:
            say_hello(s, d.job_id)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        try:
            s.send(b"\x0a" * (150 * 1024))
        except OSError:
            pass  # the daemon may already have closed the connection
        recv_or_close(s)
        s.close()
        assert_alive(d)

    # After a valid Hello: undecodable bytes, then absurd registrations, an unknown
    # bucket id and fds the daemon did not ask for, each on its own connection.
    attacks = {
        "undecodable": b"\x12\xff\xff\xff\xff\x0f" + b"\x00" * 10,
        "numel overflow": register("huge", [("w", [1 << 40, 1 << 40])]),
        "2^40 elements": register("big", [("w", [1 << 20, 1 << 20])]),
        "too many dims": register("deep", [("w", [1] * 9)]),
        "negative dim": register("neg", [("w", [4, -1])]),
        "too many layers": register("many", [(f"l{i}", [1]) for i in range(5000)]),
        "unknown bucket": submit(12345, 0),
        "second hello": hello("x"),
        "empty": b"",
    }
    for what, packet in attacks.items():
        s = raw_connect(path)
        say_hello(s, d.job_id)
        s.send(packet)
        r = recv_or_close(s)
        if r:  # an answer must be an error, never a registration of nonsense
            assert reply_status(r) != 0, f"{what}: the daemon accepted it: {r!r}"
        s.close()
        assert_alive(d)

    s = raw_connect(path)
    say_hello(s, d.job_id)
    r_fd, w_fd = os.pipe()
    try:
        socket.send_fds(s, [register("fds", [("w", [4])])], [r_fd, w_fd])
    finally:
        os.close(r_fd)
        os.close(w_fd)
    recv_or_close(s)
    s.close()
    assert_alive(d)

    one_good_step(d, agents)


def test_wrong_job_id_refused(build, start_daemons, agents):
    d = start_daemons([1])
    with pytest.raises(gcomp.Error) as info:
        gcomp.Client(socket=d.sock(0), job_id="not-" + d.job_id, local_rank=0,
                     connect_timeout_ms=5000)
    assert info.value.code == gcomp.Status.VERSION, info.value
    # The daemon's reason reaches the caller (gcomp_last_error(NULL) after connect).
    assert "is not this daemon's job" in info.value.message, info.value
    # A wrong protocol version too (hand-made Hello).
    s = raw_connect(d.sock(0))
    s.send(hello(d.job_id, version=99))
    r = recv_or_close(s)
    assert r is not None, "no answer to a Hello with protocol version 99"
    if r:
        assert reply_status(r) == gcomp.Status.VERSION, r
    s.close()
    # A local rank the node does not have.
    with pytest.raises(gcomp.Error):
        gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=5, connect_timeout_ms=5000)
    one_good_step(d, agents)
