"""gcompd --metrics-listen through real daemons on 2 nodes, scraped with a real HTTP
client (urllib) while they run: the Prometheus text parses (every sample `name{labels}
value`, families declared by # HELP and # TYPE), the counters agree with the stats file,
the histograms count every step with cumulative buckets, the codec gauge names the
codec of each layer, the trainers gauge the trainers; `gcompctl stats --prometheus`
prints the same families; other paths are 404, other methods 405, malformed or
oversized requests 400; PORT+node gives each node its port; a port in use or an
address that is not numeric stops start-up with an error naming it; gcomp-run forwards
--metrics-listen."""

import json
import os
import re
import signal
import socket
import urllib.error
import urllib.request

import pytest

from helpers import PYTHON, TRAINER, Daemons, run, connect_agents

LAYERS = [["w", [128, 128]], ["bias", [128]]]  # bias: under min_elements, sent dense
PHASES = ("wait", "sum", "prepare", "collect", "encode", "collective", "decode")
SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\} (\S+)\Z')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|\Z)')


def unescape(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse(text):
    """Prometheus text -> ({family: type}, [(name, {label: value}, float)]); asserts the
    format on the way."""
    assert text.endswith("\n")
    types, samples, helped = {}, [], set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name in helped and name not in types, line
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, raw, value = m.groups()
        labels, pos = {}, 0
        while pos < len(raw):
            lm = LABEL.match(raw, pos)
            assert lm, f"bad labels in {line!r}"
            labels[lm.group(1)] = unescape(lm.group(2))
            pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)\Z", "", name) if name not in types else name
        assert family in types, f"{name} before its # TYPE"
        assert name.startswith("gcomp_"), name
        samples.append((name, labels, float(value)))
    return types, samples


def values(samples, name, **labels):
    return [v for n, ls, v in samples
            if n == name and all(ls.get(k) == str(want) for k, want in labels.items())]


def one(samples, name, **labels):
    vs = values(samples, name, **labels)
    assert len(vs) == 1, (name, labels, vs)
    return vs[0]


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        body = r.read()
        assert int(r.headers["Content-Length"]) == len(body)
        return body.decode()


def metrics_url(d, node):
    res = d.gcompctl("--json", "status", node=node)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["metrics"]


def raw_request(url, data):
    """Send bytes as they are (what no HTTP client sends) and return the status line."""
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply.split(b"\r\n", 1)[0].decode()


def check_histogram(samples, name, count, **labels):
    buckets = [(ls["le"], v) for n, ls, v in samples if n == name + "_bucket"
               and all(ls.get(k) == str(w) for k, w in labels.items())]
    assert buckets and buckets[-1][0] == "+Inf", buckets
    les = [float(le) for le, _ in buckets]
    assert les == sorted(les)
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name} {labels}: not cumulative: {buckets}"
    assert counts[-1] == count == one(samples, name + "_count", **labels)
    return one(samples, name + "_sum", **labels)


def steps(ags, first, last):
    for s in range(first, last):
        for ag in ags:
            ag.ok("fill", bucket="b0", scale=1.0 + s)
            ag.ok("submit", bucket="b0", step=s)
        for ag in ags:
            ag.ok("wait", bucket="b0", timeout_ms=30000)


def test_scrape_a_running_job(tmp_path, start_daemons, agents):
    trainers, nsteps = [2, 1], 5
    stats = str(tmp_path / "stats-{node}.jsonl")
    d = start_daemons(trainers, codec="topk:density=0.01",
                      extra=("--metrics-listen", "127.0.0.1:0", "--stats-file", stats))
    urls = [metrics_url(d, k) for k in range(2)]
    for u in urls:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", u), u
    assert urls[0] != urls[1]
    assert all(f"metrics on {u}" in d.log() for u in urls), d.log()
    ags = connect_agents(d, agents, trainers, LAYERS)
    steps(ags, 0, nsteps)

    scraped = {}
    for node, url in enumerate(urls):  # while the daemons run and the trainers are connected
        types, samples = parse(scrape(url))
        scraped[node] = (types, samples)
        assert all(ls["node"] == str(node) for _, ls, _ in samples)
        assert types["gcomp_step_seconds"] == types["gcomp_phase_seconds"] == "histogram"
        assert types["gcomp_steps_total"] == types["gcomp_bytes_in_total"] == "counter"
        assert types["gcomp_layer_codec"] == types["gcomp_trainers_connected"] == "gauge"
        assert one(samples, "gcomp_steps_total", bucket="b0") == nsteps
        check_histogram(samples, "gcomp_step_seconds", nsteps)
        for ph in PHASES:
            check_histogram(samples, "gcomp_phase_seconds", nsteps, phase=ph)
        assert one(samples, "gcomp_trainers_connected") == trainers[node]
        assert one(samples, "gcomp_trainers_expected") == trainers[node]
        errors = [(ls["status"], v) for n, ls, v in samples if n == "gcomp_step_errors_total"]
        assert ("GCOMP_PEER_LOST", 0) in errors and all(v == 0 for _, v in errors), errors
        codec = {ls["layer"]: ls for n, ls, v in samples if n == "gcomp_layer_codec" and v == 1}
        assert set(codec) == {"w", "bias"}, codec
        assert codec["w"]["codec"] == "topk" and codec["w"]["bucket"] == "b0"
        assert codec["w"]["spec"].startswith("topk:density=0.01"), codec["w"]
        assert codec["bias"]["codec"] == codec["bias"]["spec"] == "none"

    # The text gcompctl prints is the same families, the same counts.
    res = d.gcompctl("stats", "--prometheus", node=1)
    assert res.returncode == 0, res.stderr
    types, samples = parse(res.stdout)
    assert types == scraped[1][0]
    assert one(samples, "gcomp_steps_total", bucket="b0") == nsteps
    plain = d.gcompctl("stats", node=1)
    assert plain.returncode == 0 and plain.stdout.startswith("bucket "), plain.stdout
    assert "# TYPE" not in plain.stdout
    bad = d.gcompctl("status", "--prometheus")
    assert bad.returncode == 2 and "--prometheus goes with 'stats'" in bad.stderr

    # Other paths, methods and requests.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urls[0].replace("/metrics", "/nope"), timeout=10)
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(urls[0], data=b"x", method="POST"),
                               timeout=10)
    assert e.value.code == 405 and e.value.headers["Allow"] == "GET"
    assert scrape(urls[0] + "?x=1").startswith("# HELP")
    assert raw_request(urls[0], b"GET /metrics HTTP/1.0\r\n\r\n") == "HTTP/1.1 200 OK"
    assert raw_request(urls[0], b"hello\r\n\r\n") == "HTTP/1.1 400 Bad Request"
    assert raw_request(urls[0], b"GET /metrics HTTP/2.0\r\n\r\n") == "HTTP/1.1 400 Bad Request"
    assert raw_request(urls[0], b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000) == \
        "HTTP/1.1 400 Bad Request"
    assert raw_request(urls[0], b"GET /metrics HTTP/1.1\r\n") == ""  # closed: no request
    scrape(urls[0])  # still serving

    res, rc = d.shutdown()
    assert rc == 0, d.log()
    # The counters against the stats files the same steps wrote.
    for node in range(2):
        with open(stats.format(node=node)) as f:
            recs = [json.loads(line) for line in f]
        assert len(recs) == nsteps
        samples = scraped[node][1]
        assert one(samples, "gcomp_bytes_in_total", bucket="b0") == \
            sum(r["dense_bytes"] for r in recs)
        assert one(samples, "gcomp_bytes_out_total", bucket="b0") == \
            sum(r["payload_bytes"] for r in recs)
        last = recs[-1]
        assert one(samples, "gcomp_compression_ratio", bucket="b0") == \
            pytest.approx(last["dense_bytes"] / last["payload_bytes"], rel=1e-5)
        assert check_histogram(samples, "gcomp_step_seconds", nsteps) == \
            pytest.approx(sum(r["t_total_ms"] for r in recs) / 1e3, abs=1e-5)
        assert check_histogram(samples, "gcomp_phase_seconds", nsteps, phase="encode") == \
            pytest.approx(sum(r["t_encode_ms"] for r in recs) / 1e3, abs=1e-5)
        codec = {ls["layer"]: ls["codec"] for n, ls, v in samples if n == "gcomp_layer_codec"}
        assert codec == {lr["name"]: lr["codec"] for lr in last["layers"]}


def free_port_pair():
    """A port P with P and P + 1 free on 127.0.0.1 (as far as one can tell)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            if p >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", p + 1))
                except OSError:
                    continue
        return p
    raise AssertionError("no two free ports in a row")


def test_port_plus_node(start_daemons, agents):
    port = free_port_pair()
    d = start_daemons([1, 1], codec="none",
                      extra=("--metrics-listen", f"127.0.0.1:{port}+node"))
    ags = connect_agents(d, agents, [1, 1], LAYERS)
    steps(ags, 0, 2)
    for node in range(2):
        url = f"http://127.0.0.1:{port + node}/metrics"
        assert metrics_url(d, node) == url
        _, samples = parse(scrape(url))
        assert {ls["node"] for _, ls, _ in samples} == {str(node)}
        assert one(samples, "gcomp_steps_total", bucket="b0") == 2
        assert one(samples, "gcomp_layer_codec", bucket="b0", layer="w", codec="none") == 1


def test_off_by_default(start_daemons):
    d = start_daemons([1, 1], codec="none")
    assert metrics_url(d, 0) is None
    assert "metrics on" not in d.log()
    res = d.gcompctl("status")
    assert "metrics: off" in res.stdout, res.stdout
    res = d.gcompctl("stats", "--prometheus")  # kept all the same
    assert res.returncode == 0, res.stderr
    _, samples = parse(res.stdout)
    assert one(samples, "gcomp_trainers_expected") == 1


def test_port_in_use_fails_start_up(build, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = Daemons(build, [1, 1], extra=("--metrics-listen", f"127.0.0.1:{port}"),
                    logdir=str(tmp_path))
        try:
            rc = d.proc.wait(timeout=60)
            log = d.log()
            assert rc != 0, log
            assert f"cannot listen on 127.0.0.1:{port}" in log, log
            assert "address already in use" in log, log
            assert "start-up failed" in log
            assert not os.path.exists(d.sock(0)) and not os.path.exists(d.sock(1))
        finally:
            d.close()


def test_bad_address_fails_start_up(build, tmp_path):
    d = Daemons(build, [1, 1], extra=("--metrics-listen", "localhost:9100"),
                logdir=str(tmp_path))
    try:
        rc = d.proc.wait(timeout=60)
        log = d.log()
        assert rc != 0, log
        assert "--metrics-listen 'localhost:9100': 'localhost' is not a numeric IPv4 " \
               "address" in log, log
    finally:
        d.close()


def test_gcomp_run_forwards_metrics_listen(build, tmp_path):
    argv = [build.gcomp_run, "--nodes", "2", "--codec", "none", "--log-level", "info",
            "--metrics-listen", "127.0.0.1:0", "--", PYTHON, TRAINER, "--steps", "2"]
    res = run(argv, 240, signal.SIGTERM, env=build.env(), cwd=str(tmp_path))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for node in range(2):
        assert re.search(rf"node {node}\].*metrics on http://127\.0\.0\.1:\d+/metrics", out), out
