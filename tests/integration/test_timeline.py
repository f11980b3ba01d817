"""gcompd --timeline through real daemons on 2 nodes: each node's file is a Chrome trace
(strict JSON once the daemon exits, a loadable prefix while it runs) with every phase of
every bucket step, in order, on tracks whose spans nest, and policy switches as instant
events; gcomp-run forwards --timeline; a path that cannot be opened stops start-up with
an error naming it."""

import json
import os
import signal

from helpers import PYTHON, TRAINER, Daemons, run, connect_agents

EPS = 0.01  # us: ts and dur are printed with 3 decimals
LAYERS = [["w", [128, 128]], ["bias", [128]]]


def load_timeline(path):
    with open(path) as f:
        events = json.load(f)  # strict JSON: the closing "]" is there
    assert isinstance(events, list) and events
    return events


def spans(events):
    return [e for e in events if e.get("ph") == "X"]


def end(e):
    return e["ts"] + e["dur"]


def check_events(events, node):
    """What every timeline holds, whatever the codec."""
    meta = {(e["name"], e["tid"]): e["args"] for e in events if e.get("ph") == "M"}
    assert meta[("process_name", 0)] == {"name": f"gcompd node {node}"}
    assert meta[("thread_name", 0)] == {"name": "lane 0"}
    for e in events:
        assert e["pid"] == node, e
        assert e["ph"] in ("X", "i", "M"), e
    for e in spans(events):
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
        assert isinstance(e["args"]["bucket"], str) and isinstance(e["args"]["step"], int), e
        assert ("thread_name", e["tid"]) in meta, f"track {e['tid']} has no name"
    # Perfetto needs the spans of one track to nest: each next one starts after the
    # last open one ends, or ends inside it.
    by_track = {}
    for e in spans(events):
        by_track.setdefault(e["tid"], []).append(e)
    for tid, es in by_track.items():
        es.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_ = []
        for e in es:
            while open_ and end(open_[-1]) <= e["ts"] + EPS:
                open_.pop()
            assert not open_ or end(e) <= end(open_[-1]) + EPS, \
                f"track {tid}: {e} overlaps {open_[-1]} without nesting"
            open_.append(e)


def by_step(events):
    steps = {}
    for e in spans(events):
        steps.setdefault((e["args"]["bucket"], e["args"]["step"]), []).append(e)
    return steps


def check_order(es):
    """The phases of one bucket step on one node, in their order."""
    first = {}
    for e in es:
        first.setdefault(e["name"], e)
    names = {e["name"] for e in es}
    for need in ("wait", "sum", "negotiate", "collective", "result"):
        assert need in names, (need, es)
    wait, summ, neg, res = first["wait"], first["sum"], first["negotiate"], first["result"]
    assert end(wait) <= summ["ts"] + EPS
    assert end(summ) <= neg["ts"] + EPS
    started = end(neg)
    for e in es:
        if e["name"] not in ("wait", "sum", "negotiate"):
            assert e["ts"] + EPS >= started, (e, neg)
    if "prepare" in names:
        assert e_before(first["prepare"], [e for e in es if e["name"] == "encode"
                                           and e["args"]["codec"] != "none"])
    if "collect" in names and "prepare" in names:
        assert end(first["prepare"]) <= first["collect"]["ts"] + EPS
    if "collect" in names:
        assert e_before(first["collect"], [e for e in es if e["name"] == "encode"
                                           and e["args"]["codec"] != "none"])
    # One exchange's stages in order, and the result after every one of them.
    per_xchg = {}
    for e in es:
        if e["name"] in ("encode", "collective", "decode"):
            per_xchg.setdefault(e["tid"], []).append(e)
            assert end(e) <= res["ts"] + EPS, (e, res)
    for tid, xs in per_xchg.items():
        order = [e["name"] for e in sorted(xs, key=lambda e: e["ts"])]
        assert order in (["collective"], ["encode", "collective", "decode"],
                         ["encode", "collective", "collective", "decode"]), order
        xs.sort(key=lambda e: e["ts"])
        for a, b in zip(xs, xs[1:]):
            assert end(a) <= b["ts"] + EPS, (a, b)
    if "statistics" in names:
        st = first["statistics"]
        assert res["ts"] <= st["ts"] + EPS and end(st) <= end(res) + EPS, (st, res)
    if "observe" in names:
        ob = first["observe"]
        assert res["ts"] <= ob["ts"] + EPS and end(ob) <= end(res) + EPS, (ob, res)


def e_before(a, later):
    return all(end(a) <= b["ts"] + EPS for b in later)


def steps(ags, first, last):
    for s in range(first, last):
        for ag in ags:
            ag.ok("hint", step=s, lr=0.1, samples=32)
            ag.ok("fill", bucket="b0", scale=1.0 + s)
            ag.ok("submit", bucket="b0", step=s)
        for ag in ags:
            ag.ok("wait", bucket="b0", timeout_ms=30000)


def test_compressed_phases_and_policy_switches(tmp_path, start_daemons, agents):
    tmpl = str(tmp_path / "tl-{node}.json")
    trainers = [2, 1]
    d = start_daemons(trainers, codec=None,
                      extra=("--policy", "static:codec=topk:density=0.01,start_iter=2",
                             "--timeline", tmpl))
    ags = connect_agents(d, agents, trainers, LAYERS)
    steps(ags, 0, 4)
    # While the daemons run, each file is a prefix Perfetto loads: every finished step
    # is there (flushed) and only the closing bracket is missing.
    for node in range(2):
        with open(tmpl.format(node=node)) as f:
            text = f.read()
        assert text.startswith("[\n") and not text.rstrip().endswith("]")
        partial = json.loads(text + "\n]")
        assert {e["args"]["step"] for e in spans(partial) if e["name"] == "result"} == {0, 1, 2, 3}
    r = d.gcompctl("policy", "set", "adaqs:codec=topk:density=0.01,start=0.01,max=0.08")
    assert r.returncode == 0, r.stderr
    switched_at = int(r.stdout.split("applies from step ")[1].split()[0])
    steps(ags, 4, 8)
    res, rc = d.shutdown()
    assert rc == 0, d.log()

    for node in range(2):
        events = load_timeline(tmpl.format(node=node))
        check_events(events, node)
        per_step = by_step(events)
        assert sorted(s for _, s in per_step) == list(range(8))
        for (bucket, step), es in per_step.items():
            assert bucket == "b0"
            check_order(es)
            names = {e["name"] for e in es}
            if step >= 2:  # w is sent with topk from start_iter on
                assert {"prepare", "encode", "collective", "decode"} <= names, (step, names)
                enc = [e for e in es if e["name"] == "encode" and e["args"]["codec"] == "topk"]
                assert enc and all(e["args"]["bytes"] > 0 for e in enc), es
                coll = [e for e in es if e["name"] == "collective"]
                assert all(e["args"]["bytes"] > 0 and "phase" in e["args"] for e in coll)
            else:  # dense: straight from the local sum into the result
                assert not names & {"prepare", "encode", "decode"}, (step, names)
            if step >= switched_at:  # adaqs collects statistics and observes each step
                assert {"collect", "statistics", "observe"} <= names, (step, names)
            else:
                assert not names & {"collect", "statistics", "observe"}, (step, names)
        instants = [e for e in events if e.get("ph") == "i"]
        assert all(e["s"] == "p" and e["ts"] >= 0 for e in instants)
        pol = [e["args"] for e in instants if e["name"] == "policy switch"]
        assert pol == [{"old": "static:codec=topk:density=0.01,start_iter=2",
                        "new": "adaqs:codec=topk:density=0.01,start=0.01,max=0.08",
                        "from_step": switched_at, "epoch": pol[0]["epoch"], "origin": 0}], pol
        codec = [e["args"] for e in instants if e["name"] == "codec switch"]
        w = [c for c in codec if c["layer"] == "w"]
        assert w[0]["step"] == 0 and w[0]["old"] is None
        assert any(c["step"] == 2 and c["new"].startswith("topk") for c in w), w


def test_dense_phases(tmp_path, start_daemons, agents):
    tmpl = str(tmp_path / "dense-{node}.json")
    d = start_daemons([1, 1], codec="none", extra=("--timeline", tmpl))
    ags = connect_agents(d, agents, [1, 1], LAYERS)
    steps(ags, 0, 3)
    res, rc = d.shutdown()
    assert rc == 0, d.log()
    for node in range(2):
        events = load_timeline(tmpl.format(node=node))
        check_events(events, node)
        per_step = by_step(events)
        assert sorted(per_step) == [("b0", 0), ("b0", 1), ("b0", 2)]
        for es in per_step.values():
            check_order(es)
            assert {e["name"] for e in es} == {"wait", "sum", "negotiate", "collective", "result"}
            coll = [e for e in es if e["name"] == "collective"]
            assert [c["args"]["codec"] for c in coll] == ["none"]
            assert coll[0]["args"]["bytes"] == (128 * 128 + 128) * 4


def test_without_node_only_node_0_writes(tmp_path, start_daemons, agents):
    path = str(tmp_path / "only0.json")
    d = start_daemons([1, 1], codec="none", extra=("--timeline", path))
    ags = connect_agents(d, agents, [1, 1], LAYERS)
    steps(ags, 0, 1)
    res, rc = d.shutdown()
    assert rc == 0, d.log()
    check_events(load_timeline(path), 0)
    assert os.listdir(tmp_path).count("only0.json") == 1


def test_gcomp_run_forwards_timeline(build, tmp_path):
    # A relative path: gcomp-run makes it absolute for every daemon. (codec none: the
    # trainers check the exact mean.)
    argv = [build.gcomp_run, "--nodes", "2", "--codec", "none",
            "--timeline", "run-{node}.json", "--", PYTHON, TRAINER, "--steps", "3"]
    res = run(argv, 240, signal.SIGTERM, env=build.env(), cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    for node in range(2):
        events = load_timeline(str(tmp_path / f"run-{node}.json"))
        check_events(events, node)
        names = {e["name"] for e in spans(events)}
        assert {"wait", "sum", "negotiate", "collective", "result"} <= names
        for es in by_step(events).values():
            check_order(es)


def test_bad_path_fails_at_start_up(build, tmp_path):
    bad = "/nonexistent-gcomp-dir/tl-{node}.json"
    d = Daemons(build, [1, 1], extra=("--timeline", bad), logdir=str(tmp_path))
    try:
        rc = d.proc.wait(timeout=60)
        log = d.log()
        assert rc != 0, log
        for node in range(2):
            assert (f"timeline file /nonexistent-gcomp-dir/tl-{node}.json: No such file or "
                    "directory") in log, log
        assert "start-up failed" in log
        assert not os.path.exists(d.sock(0))
    finally:
        d.close()
