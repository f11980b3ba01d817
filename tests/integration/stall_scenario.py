#!/usr/bin/python3
"""Run inside a private network namespace (test_stall.py starts it with unshare -n):
shape the loopback, start 2 daemons whose MPI uses TCP over it, start a large exchange
and stop (SIGSTOP) or kill (SIGKILL) node 1's daemon while the data is on the wire.
Prints one JSON line: what node 0's trainer got and how long it took.

    stall_scenario.py RATE TIMEOUT_MS STOP|KILL [TRANSPORT]

With TRANSPORT ucx the data plane is UCX on TCP over the same loopback (UCX_TLS=tcp,self,
UCX_NET_DEVICES=lo); the control plane stays MPI."""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import Build, Daemons  # noqa: E402

import gcomp  # noqa: E402


def main():
    rate, timeout_ms, sig = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    transport = sys.argv[4] if len(sys.argv) > 4 else "mpi"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst",
                    "256kb", "latency", "50ms"], check=True)
    os.environ.update(OMPI_MCA_pml="ob1", OMPI_MCA_btl="tcp,self", OMPI_MCA_btl_tcp_if_include="lo",
                      OMPI_MCA_oob_tcp_if_include="lo")
    build = Build(os.environ["GCOMP_BUILD_DIR"])
    env = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "lo"} if transport == "ucx" else None
    d = Daemons(build, [1, 1], codec="none", timeout_ms=timeout_ms,
                extra=["--transport", transport], env=env)
    result = {}
    try:
        d.wait_ready(60)
        c0 = gcomp.Client(socket=d.sock(0), job_id=d.job_id, local_rank=0)
        c1 = gcomp.Client(socket=d.sock(1), job_id=d.job_id, local_rank=0)
        n = 16 << 20  # 64 MB: seconds on the shaped link
        b0 = c0.register("big", [("w", (n // 1024, 1024))])
        b1 = c1.register("big", [("w", (n // 1024, 1024))])
        b0.data[:] = 1.0
        b1.data[:] = 3.0
        b0.submit(0)
        b1.submit(0)
        time.sleep(1.0)  # decided and on the wire by now
        pids = d.daemon_pids()
        os.kill(pids[1], signal.SIGSTOP if sig == "STOP" else signal.SIGKILL)
        t0 = time.monotonic()
        try:
            b0.wait(4 * timeout_ms + 30000)
            result = {"ok": True}
        except gcomp.Error as exc:
            result = {"ok": False, "name": exc.name, "message": exc.message}
        result["elapsed_s"] = time.monotonic() - t0
        result["log"] = d.log()[-4000:]
        try:
            os.kill(pids[1], signal.SIGCONT)
        except ProcessLookupError:
            pass
    finally:
        d.kill()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
