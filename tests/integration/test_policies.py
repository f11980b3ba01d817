"""Adaptive policies through real daemons (gcomp-replay on 2 nodes): every node decides
the same at the same step, the decision log and stats name every layer's codec and
parameters, and each policy reacts where its paper says it should."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from test_codecs import load, numel, replay, stats, write_trace

LAYERS = {"b0": [("conv.weight", (64, 32, 3, 3)), ("conv.bias", (64,)), ("fc.weight", (128, 256))]}


def decisions(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def run_policy(build, tmp_path, grads, policy, name, hints=None, env=None, layers=LAYERS, nodes=2):
    """Replay with the policy; return (out dir, node 0's decisions, node 1's decisions)."""
    trace = write_trace(str(tmp_path / f"trace-{name}"), grads, layers)
    if hints:
        with open(os.path.join(trace, "manifest.json")) as f:
            manifest = json.load(f)
        manifest["hints"] = hints
        with open(os.path.join(trace, "manifest.json"), "w") as f:
            json.dump(manifest, f)
    out = tmp_path / f"out-{name}"
    logs = tmp_path / f"dl-{name}-{{node}}.jsonl"
    r = replay(build, trace, out, "--nodes", str(nodes), "--policy", policy,
               env={"GCOMP_DECISION_LOG": str(logs), **(env or {})})
    assert r.returncode == 0, r.stderr[-3000:]
    per_node = [decisions(str(logs).replace("{node}", str(k))) for k in range(nodes)]
    return out, per_node


def gaussian(workers, steps, scale_of_step, seed=0, layers=LAYERS):
    rng = np.random.default_rng(seed)
    return [[{b: (rng.standard_normal(sum(numel(s) for _, s in ls)) * scale_of_step(st)).astype(np.float32)
              for b, ls in layers.items()} for st in range(steps)] for _ in range(workers)]


POLICIES = ["static:codec=topk:density=0.01,override=fc.*@powersgd:rank=2,start_iter=2",
            "accordion:codec=powersgd:rank=1,low=2,high=1,interval=2",
            "adaqs:codec=topk:density=0.01,start=0.01,max=0.08",
            "gravac:codec=topk:density=0.1,min=10,max=1000,window=3",
            "lgreco:codec=powersgd:rank=4,interval=6",
            "perfmodel:candidate=topk:density=0.01,warmup=2,probe=2"]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.split(":")[0])
def test_every_node_decides_the_same(build, tmp_path, policy):
    grads = gaussian(2, 12, lambda s: 1.0 / (1 + s // 4), seed=3)
    hints = [{"step": s, "lr": 0.1 if s < 8 else 0.01, "samples": 32, "epoch_end": s % 4 == 3}
             for s in range(12)]
    out, (d0, d1) = run_policy(build, tmp_path, grads, policy, "p", hints=hints)
    assert d0, "no decision logged"
    assert d0 == d1, "the nodes decided differently"
    # Every layer got a first decision at the first step; the stats agree with the log.
    first = {d["layer"] for d in d0 if d["old"] is None}
    assert first == {n for n, _ in LAYERS["b0"]}
    recs = stats(out)
    assert len(recs) == 12
    current = {}
    by_step = {}
    for d in d0:
        by_step.setdefault(d["step"], []).append(d)
    for rec in recs:
        for d in by_step.get(rec["step"], []):
            current[d["layer"]] = d["new"]
        for layer in rec["layers"]:
            spec = current[layer["name"]]
            assert layer["codec"] == spec.split(":")[0], (rec["step"], layer, spec)
            # Parameters appear under their spec names ("rank": 2).
            for kv in spec.split(":", 1)[1].split(",") if ":" in spec else []:
                k, v = kv.split("=")
                assert float(layer[k]) == float(v), (layer, spec)


def test_lgreco_low_rank_layer_gets_a_lower_rank(build, tmp_path):
    # conv.weight's gradients have rank 1, fc.weight's rank 8 (plus noise): at the window's
    # end L-GreCo gives conv a lower rank than fc and never sends more than rank 4 would.
    # The rank changes while PowerSGD runs (handover=direct): the engine must remake the
    # codec state for the new rank (it used to keep the old one and abort the job).
    rng = np.random.default_rng(1)
    layers = {"b0": [("conv.weight", (64, 288)), ("fc.weight", (128, 256))]}
    bases = {name: (rng.standard_normal((n, r)), rng.standard_normal((m, r)))
             for name, n, m, r in (("conv", 64, 288, 1), ("fc", 128, 256, 8))}

    def lowrank(name):
        # A fixed rank-r subspace with fresh coefficients each step: rank <= r over a window.
        u, v = bases[name]
        r = u.shape[1]
        return (u @ rng.standard_normal((r, r)) @ v.T + 1e-4 * rng.standard_normal((u.shape[0], v.shape[0]))).ravel()

    grads = [[{"b0": np.concatenate([lowrank("conv"), lowrank("fc")]).astype(np.float32)}
              for _ in range(10)] for _ in range(2)]
    out, (d0, d1) = run_policy(build, tmp_path, grads,
                               "lgreco:codec=powersgd:rank=4,interval=4,handover=direct", "lg",
                               layers=layers)
    assert d0 == d1
    last = {}
    for d in d0:
        last[d["layer"]] = d["new"]
    rank = {k: int(v.split("rank=")[1].split(",")[0]) for k, v in last.items()}
    assert rank["conv.weight"] < rank["fc.weight"], rank
    recs = stats(out)
    uniform = 4 * 4 * ((64 + 288) + (128 + 256))
    assert all(r["payload_bytes"] <= uniform for r in recs[5:]), [r["payload_bytes"] for r in recs]
    assert recs[-1]["payload_bytes"] < uniform
