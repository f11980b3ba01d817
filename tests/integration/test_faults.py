"""Fault injection: SIGKILL and SIGSTOP of a trainer and of a daemon, at registration,
in the middle of a step and between steps, on 2 nodes x 2 trainers. For each case every
other trainer gets an error that names the cause within a stated bound, nothing of the
job is left behind, and where the daemon survives a trainer can take the lost slot
again. docs/RELIABILITY.md has the table of these cases and their outcomes.

Bounds (TIMEOUT_MS is the daemons' --timeout-ms): a killed trainer is noticed at once
(its socket closes); a stopped trainer, or a trainer that never registers, fails the
step after TIMEOUT_MS; a stopped daemon is named after TIMEOUT_MS plus a liveness check
of at most 2 s; a killed daemon takes the job down (mpirun) and is named to the other
node's trainers at once. Every case allows 10 s of slack on this 2-core machine.
"""

import os
import signal
import time

import pytest

import gcomp

from helpers import processes_of_job
from test_failures import WAIT_MS

TIMEOUT_MS = 3000
SLACK_S = 10
LAYERS = [["w", [512, 1024]], ["b", [1024]]]  # 2 MB: a step with a real exchange

# (what, signal, when) -> the expected status and text for the other trainers.
CASES = [
    ("trainer", "KILL", "registration"),
    ("trainer", "STOP", "registration"),
    ("trainer", "KILL", "mid-step"),
    ("trainer", "STOP", "mid-step"),
    ("trainer", "KILL", "between"),
    ("trainer", "STOP", "between"),
    ("daemon", "KILL", "registration"),
    ("daemon", "STOP", "registration"),
    ("daemon", "KILL", "mid-step"),
    ("daemon", "STOP", "mid-step"),
    ("daemon", "KILL", "between"),
    ("daemon", "STOP", "between"),
]


def start(start_daemons, agents):
    d = start_daemons([2, 2], codec="powersgd:rank=2", timeout_ms=TIMEOUT_MS)
    t = {}
    for node in range(2):
        for rank in range(2):
            a = agents(f"n{node}r{rank}")
            a.ok("connect", socket=d.sock(node), job_id=d.job_id, local_rank=rank, timeout_ms=10000)
            t[(node, rank)] = a
    return d, t


def register(t, who):
    for k in who:
        t[k].send("register", name="b0", layers=LAYERS)
    for k in who:
        r = t[k].recv()
        assert r["ok"], (k, r)


def submit(t, who, step):
    for k in who:
        t[k].ok("fill", bucket="b0", scale=1.0 + k[0] + 2 * k[1])
        t[k].ok("submit", bucket="b0", step=step)


def waits(t, who, timeout_s):
    for k in who:
        t[k].send("wait", bucket="b0", timeout_ms=WAIT_MS)
    return {k: t[k].recv(timeout=timeout_s) for k in who}


@pytest.mark.parametrize("what,sig,when", CASES, ids=["-".join(c) for c in CASES])
def test_fault(build, start_daemons, agents, what, sig, when):
    d, t = start(start_daemons, agents)
    everyone = list(t)
    victim = (1, 1) if what == "trainer" else None
    others = [k for k in everyone if k != victim] if what == "trainer" else [k for k in everyone if k[0] == 0]
    signo = signal.SIGKILL if sig == "KILL" else signal.SIGSTOP

    def hit():
        if what == "trainer":
            t[victim].kill(signo) if sig == "KILL" else os.kill(t[victim].proc.pid, signo)
        else:
            os.kill(d.daemon_pids()[1], signo)

    step = 0
    if when == "registration":
        register(t, [k for k in everyone if k != (1, 1)])
        hit()  # (1, 1) never registers; a daemon dies while its trainers register
        submit(t, others, 0)
    else:
        register(t, everyone)
        if when == "between":
            submit(t, everyone, 0)
            assert all(r["ok"] for r in waits(t, everyone, 60).values())
            step = 1
            hit()
            submit(t, others, step)
        else:  # mid-step: the others' data is in, the exchange or the wait for the victim runs
            submit(t, others, 0)
            time.sleep(0.2)
            hit()
    t0 = time.monotonic()
    bound = TIMEOUT_MS / 1000 + 2 + SLACK_S
    replies = waits(t, others, bound + 30)
    for k, r in replies.items():
        assert not r["ok"], f"{k}: the step succeeded after the {what} was hit"
        assert r["code"] != gcomp.Status.TIMEOUT, f"{k}: only its own deadline: {r}"
        assert r["elapsed"] < bound, f"{k}: error after {r['elapsed']:.1f} s: {r}"
    msgs = " | ".join(r["message"] for r in replies.values())
    print(f"{what}-{sig}-{when}: after <= {max(r['elapsed'] for r in replies.values()):.1f} s: "
          f"{sorted(set(r['name'] for r in replies.values()))} {msgs}")
    if what == "trainer":
        assert "local rank 1" in msgs and "node 1" in msgs, msgs
        if sig == "KILL":
            assert "disconnected" in msgs or "not connected" in msgs, msgs
        else:  # stopped: a stall, never taken for a bucket-name mismatch
            assert all(r["code"] == gcomp.Status.STALL for r in replies.values()), replies
            assert "stopped?" in msgs and "different bucket names" not in msgs, msgs
        # The daemons survived: a trainer takes the slot again, the job goes on.
        if sig == "STOP":
            t[victim].kill(signal.SIGKILL)
        again = agents("again")
        again.ok("connect", socket=d.sock(1), job_id=d.job_id, local_rank=1, timeout_ms=10000)
        again.ok("register", name="b0", layers=LAYERS)
        t[victim] = again
        submit(t, everyone, step + 1)
        assert all(r["ok"] for r in waits(t, everyone, 60).values())
        assert d.proc.poll() is None
    else:
        assert "node 1" in msgs, msgs
        # The job goes down by itself (mpirun aborts it) and leaves no process behind.
        if sig == "STOP":
            pass  # the stalled node is killed by mpirun's abort (SIGKILL works on it)
        try:
            d.proc.wait(timeout=60)
        except Exception:
            pytest.fail(f"mpirun still runs 60 s after a daemon was {sig}ed: {d.log()}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and [p for p in processes_of_job(d.job_id)
                                               if "agent.py" not in p[1]]:
            time.sleep(0.2)
        left = [p for p in processes_of_job(d.job_id) if "agent.py" not in p[1]]
        assert not left, f"left behind: {left}"
    assert time.monotonic() - t0 < 120
