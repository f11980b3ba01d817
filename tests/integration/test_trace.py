"""gcompctl trace start/stop on a live 2-node job, and gcomp-replay of what it recorded:
the files hold exactly what every trainer submitted from the same step on every node,
the replay with codec none gives the live job's results bit for bit, --compare prints
its table, --buckets and trace stop limit the recording, bad requests get clear errors,
and a recording cut short by the daemons stopping is marked partial."""

import json
import os
import signal
import time

import numpy as np
import pytest

from agent import seeded
from helpers import run

TRAINERS = [2, 1]  # node 0: workers 0, 1; node 1: worker 2
# Layers large enough to be compressed (small ones always go dense).
LAYOUTS = {"b0": [["conv.weight", [32, 16, 3, 3]], ["conv.bias", [32]]],
           "b1": [["fc.weight", [64, 256]], ["fc.bias", [64]]]}


def seed_of(worker, step, bucket):
    return 1000 * worker + 10 * step + int(bucket[1:])


def lr_of(step):
    return 0.1 * 0.5 ** step


class Job:
    """A live job: the daemons and one agent per trainer, node-major."""

    def __init__(self, start_daemons, agents, tmp_path, codec="none"):
        self.d = start_daemons(TRAINERS, codec=codec)
        self.tmp = tmp_path
        self.agents = []
        for node, count in enumerate(TRAINERS):
            for local in range(count):
                a = agents(f"w{len(self.agents)}")
                a.ok("connect", socket=self.d.sock(node), job_id=self.d.job_id,
                     local_rank=local, timeout_ms=10000)
                for name, layers in LAYOUTS.items():
                    a.ok("register", name=name, layers=layers)
                self.agents.append(a)
        self.results = tmp_path / "live"
        self.results.mkdir()

    def steps(self, first, last):
        """Run steps first..last-1; worker 0 saves what it got back."""
        for s in range(first, last):
            for w, a in enumerate(self.agents):
                a.ok("hint", step=s, lr=lr_of(s), samples=32 + w, epoch_end=s % 4 == 3)
                for name in LAYOUTS:
                    a.ok("fill_seeded", bucket=name, seed=seed_of(w, s, name))
                    a.ok("submit", bucket=name, step=s)
            for a in self.agents:
                for name in LAYOUTS:
                    a.ok("wait", bucket=name, timeout_ms=20000)
            for name in LAYOUTS:
                self.agents[0].ok("save", bucket=name, path=str(self.results / f"{name}-{s}.npy"))

    def ctl(self, *args, node=0):
        return self.d.gcompctl(*args, node=node)

    def status(self, node=0):
        r = self.ctl("--json", "trace", "status", node=node)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_state(self, state, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            st = [self.status(k) for k in range(len(TRAINERS))]
            if all(s["state"] == state for s in st):
                return st
            assert time.monotonic() < deadline, f"trace state {st}, expected {state}\n{self.d.log()}"
            time.sleep(0.1)


def numel(layers):
    return sum(int(np.prod(shape)) for _, shape in layers)


def replay(build, *args, timeout=240):
    return run([build.gcomp_replay, *map(str, args)], timeout, signal.SIGTERM, env=build.env())


@pytest.fixture
def recorded(build, start_daemons, agents, tmp_path):
    """A live job recording 3 steps from mid-run (asked on node 1): (job, trace dir, from)."""
    job = Job(start_daemons, agents, tmp_path)
    job.steps(0, 2)
    tdir = tmp_path / "trace"
    r = job.ctl("trace", "start", str(tdir), "--steps", "3", node=1)
    assert r.returncode == 0, r.stderr
    assert "recording steps 2..4" in r.stdout, r.stdout
    job.steps(2, 7)
    st = job.wait_state("finished")
    assert [s["from_step"] for s in st] == [2, 2] and all(s["complete"] == 3 for s in st), st
    return job, tdir, 2


def test_recording_holds_what_every_trainer_submitted(recorded):
    job, tdir, first = recorded
    with open(tdir / "manifest.json") as f:
        m = json.load(f)
    assert m["format"] == "gcomp-trace/1" and m["workers"] == 3 and m["steps"] == 3, m
    assert m["complete"] is True and m["recording"] is False and m["error"] is None, m
    assert m["first_step"] == first and m["trainers_per_node"] == TRAINERS, m
    assert [b["name"] for b in m["buckets"]] == list(LAYOUTS)
    for b in m["buckets"]:
        assert [[x["name"], x["shape"]] for x in b["layers"]] == LAYOUTS[b["name"]]
        assert all(x["dtype"] == "float32" for x in b["layers"])
    # Local rank 0 of node 0's hints, renumbered from the trace's first step (the client
    # sends epoch_end only when it is true).
    assert [{"epoch_end": False, **h} for h in m["hints"]] == \
        [{"step": k, "lr": lr_of(first + k), "samples": 32, "epoch_end": (first + k) % 4 == 3}
         for k in range(3)], m["hints"]
    for w in range(3):
        assert sorted(os.listdir(tdir / f"w{w}")) == ["s0", "s1", "s2"]
        for k in range(3):
            for name, layers in LAYOUTS.items():
                got = np.load(tdir / f"w{w}" / f"s{k}" / f"{name}.npy")
                want = seeded(numel(layers), seed_of(w, first + k, name))
                assert got.dtype == np.dtype("<f4") and np.array_equal(got, want), (w, k, name)
    # gcomp's own reader accepts it.
    from gcomp import trace
    tr = trace.load(str(tdir))
    tr.check_files()
    assert tr.trainers_per_node == TRAINERS and tr.complete


def test_replay_with_codec_none_is_bit_identical(build, recorded, tmp_path):
    job, tdir, first = recorded
    out = tmp_path / "replayed"
    res = replay(build, tdir, "--out", out, "--codec", "none")
    assert res.returncode == 0, res.stderr
    for k in range(3):
        for name in LAYOUTS:
            got = np.load(out / f"s{k}" / f"{name}.npy")
            live = np.load(job.results / f"{name}-{first + k}.npy")
            assert got.tobytes() == live.tobytes(), f"step {k} bucket {name} differs from the live run"


def test_compare_prints_its_table(build, recorded, tmp_path):
    job, tdir, first = recorded
    res = replay(build, tdir, "--compare", "none", "topk:density=0.01", "powersgd:rank=2",
                 "--per-layer")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["spec"])
    assert lines[head].split() == ["spec", "bytes/step", "ratio", "error"], res.stdout
    rows = {line.split()[0]: line.split() for line in lines[head + 1:head + 4]}
    assert set(rows) == {"none", "topk:density=0.01", "powersgd:rank=2"}, res.stdout
    assert float(rows["none"][-2]) == 1.0, res.stdout
    assert float(rows["topk:density=0.01"][-2]) > 10 and float(rows["powersgd:rank=2"][-2]) > 1
    assert "conv.weight" in res.stdout and "b1/fc.bias" in res.stdout, res.stdout

    res = replay(build, tdir, "--compare", "none", "topk:density=0.01", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    none, topk = out["results"]
    dense = 4 * sum(numel(layers) for layers in LAYOUTS.values())
    assert none["ratio"] == 1.0 and none["bytes_per_step"] == dense, none
    # Codec none's result is the mean in float32: off the float64 mean by rounding only.
    assert none["error"] < 1e-6 and all(x["error"] < 1e-6 for x in none["layers"]), none
    assert 0.5 < topk["error"] <= 1.0 + 1e-6 and topk["ratio"] > 10, topk
    assert [x["layer"] for x in topk["layers"]] == ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]

    bad = replay(build, tdir, "--compare", "policy:")
    assert bad.returncode == 2 and "'policy:' needs a policy spec" in bad.stderr, bad.stderr


def test_buckets_glob_stop_and_errors(build, start_daemons, agents, tmp_path):
    job = Job(start_daemons, agents, tmp_path)
    job.steps(0, 1)
    afile = tmp_path / "a-file"
    afile.write_text("x")
    r = job.ctl("trace", "start", str(afile / "sub"))
    assert r.returncode == 1 and "cannot create the directory" in r.stderr \
        and str(afile / "sub") in r.stderr, r.stderr
    r = job.ctl("trace", "start", str(tmp_path / "t0"), "--buckets", "nothing*")
    assert r.returncode == 1 and "no registered bucket matches 'nothing*'" in r.stderr \
        and "'b0'" in r.stderr, r.stderr
    r = job.ctl("trace", "start", str(tmp_path / "t0"), "--steps", "zero")
    assert r.returncode == 2 and "--steps needs an integer >= 1" in r.stderr, r.stderr
    r = job.ctl("trace", "stop")
    assert r.returncode == 1 and "no trace is being recorded" in r.stderr, r.stderr

    tdir = tmp_path / "only-b1"
    r = job.ctl("trace", "start", str(tdir), "--buckets", "b1")
    assert r.returncode == 0 and "until gcompctl trace stop" in r.stdout, r.stderr
    r = job.ctl("trace", "start", str(tmp_path / "t2"), node=1)
    assert r.returncode == 1 and "already recording into" in r.stderr and str(tdir) in r.stderr, r.stderr
    job.steps(1, 3)
    r = job.ctl("trace", "stop", node=1)
    assert r.returncode == 0 and "stops before step 3" in r.stdout, r.stdout + r.stderr
    job.steps(3, 4)
    st = job.wait_state("finished")
    assert all(s["complete"] == 2 for s in st), st
    m = json.load(open(tdir / "manifest.json"))
    assert m["steps"] == 2 and [b["name"] for b in m["buckets"]] == ["b1"], m
    assert m["complete"] is True and m["error"] is None, m  # the stop set its end
    for w in range(3):
        assert sorted(os.listdir(tdir / f"w{w}")) == ["s0", "s1"]
        assert os.listdir(tdir / f"w{w}" / "s0") == ["b1.npy"]
    r = job.ctl("trace", "start", str(tdir))
    assert r.returncode == 1 and "already holds a trace" in r.stderr, r.stderr


def test_daemons_stopping_mark_the_trace_partial(build, start_daemons, agents, tmp_path):
    job = Job(start_daemons, agents, tmp_path)
    tdir = tmp_path / "cut"
    r = job.ctl("trace", "start", str(tdir), "--steps", "10")
    assert r.returncode == 0, r.stderr
    job.steps(0, 2)
    deadline = time.monotonic() + 10
    while not all(job.status(k)["written"] == 2 for k in range(2)):
        assert time.monotonic() < deadline, [job.status(k) for k in range(2)]
        time.sleep(0.1)
    time.sleep(0.5)  # node 1's progress reaches the coordinator with its next report
    res, rc = job.d.shutdown()
    assert rc == 0, job.d.log()
    m = json.load(open(tdir / "manifest.json"))
    assert m["recording"] is False and m["complete"] is False and m["steps"] == 2, m
    assert "stopped while recording" in m["error"], m
    from gcomp import trace
    assert trace.load(str(tdir)).steps == 2
