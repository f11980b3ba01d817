#!/usr/bin/python3
"""A trainer process driven by the tests, one JSON command per line on stdin.

Each command gets exactly one JSON reply line on stdout: ``{"ok": true, ...}`` or, when
a gcomp call failed, ``{"ok": false, "code": -9, "name": "GCOMP_MISMATCH", "message":
"...", "elapsed": 0.01}``. Tests start several agents, send them commands in the order
a scenario needs and kill them at precise points (see helpers.Agent).

Commands (``op`` and its arguments):

- ``connect`` socket, job_id, local_rank, timeout_ms: make the Client (-> node, nodes)
- ``register`` name, layers ([[name, shape], ...]) -> numel
- ``fill`` bucket, scale: data[i] = scale * (1 + i % 13)
- ``fill_seeded`` bucket, seed: data = :func:`seeded` (numel, seed)
- ``save`` bucket, path: np.save(path, result) (float32, npy 1.0)
- ``submit`` bucket, step
- ``wait`` bucket, timeout_ms -> elapsed
- ``check`` bucket, scale: compare result with scale * (1 + i % 13) -> maxerr
- ``hint`` step, lr, samples, epoch_end
- ``advice`` -> the policy's batch-size advice (or None)
- ``close``; ``exit``
"""

import json
import sys
import time

import numpy as np

import gcomp


def pattern(numel, scale):
    """The data the tests use: scale * (1 + i % 13), float32."""
    return (scale * (1.0 + np.arange(numel) % 13)).astype(np.float32)


def seeded(numel, seed):
    """Gaussian float32 data from a seed (the tests know what each trainer submitted)."""
    return np.random.default_rng(seed).standard_normal(numel).astype(np.float32)


def main():
    client = None
    buckets = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("op")
        t0 = time.monotonic()
        reply = {"ok": True}
        try:
            if op == "connect":
                client = gcomp.Client(socket=cmd.get("socket"), job_id=cmd.get("job_id"),
                                      local_rank=cmd.get("local_rank"),
                                      connect_timeout_ms=cmd.get("timeout_ms"))
                reply.update(node=client.node, nodes=client.nodes)
            elif op == "register":
                b = client.register(cmd["name"], [(n, tuple(s)) for n, s in cmd["layers"]])
                buckets[cmd["name"]] = b
                reply["numel"] = b.numel
            elif op == "fill":
                b = buckets[cmd["bucket"]]
                b.data[:] = pattern(b.numel, cmd["scale"])
            elif op == "fill_seeded":
                b = buckets[cmd["bucket"]]
                b.data[:] = seeded(b.numel, cmd["seed"])
            elif op == "save":
                np.save(cmd["path"], buckets[cmd["bucket"]].result)
            elif op == "submit":
                buckets[cmd["bucket"]].submit(cmd["step"])
            elif op == "wait":
                buckets[cmd["bucket"]].wait(cmd.get("timeout_ms", -1))
            elif op == "check":
                b = buckets[cmd["bucket"]]
                expected = pattern(b.numel, cmd["scale"])
                reply["maxerr"] = float(np.max(np.abs(b.result - expected)))
                reply["match"] = bool(np.allclose(b.result, expected, rtol=1e-5, atol=1e-6))
            elif op == "hint":
                client.hint(cmd["step"], lr=cmd.get("lr"), samples=cmd.get("samples"),
                            epoch_end=cmd.get("epoch_end", False))
            elif op == "advice":
                reply["advice"] = client.advice()
            elif op == "close":
                client.close()
            elif op == "exit":
                break
            else:
                reply = {"ok": False, "name": "bad op", "message": f"unknown op {op!r}"}
        except gcomp.Error as exc:
            reply = {"ok": False, "code": exc.code, "name": exc.name, "message": exc.message}
        reply["elapsed"] = time.monotonic() - t0
        print(json.dumps(reply), flush=True)
    if client is not None:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
