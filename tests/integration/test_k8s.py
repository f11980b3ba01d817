"""deploy/k8s/ and deploy/Dockerfile, checked without a cluster or a container engine.

Manifests: every document has apiVersion, kind and metadata.name; every container an
image (this version of gcomp) and CPU and memory requests and limits; the MPIJob is a
kubeflow.org/v2beta1 one for Open MPI; the Indexed Job's headless Service selects the
Job's pods and is their subdomain. The gcomp-run command of each is parsed by gcomp-run's
own argument parser, its daemon settings are run through a real gcompd, and its trainer
is a program the image installs.

Dockerfile: both stages on Debian 12; what it copies exists; it copies every directory
the build reads; the build options exist; the final stage installs the Debian package of
every shared library the built programs link.
"""

import glob
import json
import os
import re
import shlex
import subprocess

import pytest
import yaml

from gcomp import launch
from helpers import SOURCE_ROOT
from test_run import assert_clean, job_of

K8S = os.path.join(SOURCE_ROOT, "deploy", "k8s")
DOCKERFILE = os.path.join(SOURCE_ROOT, "deploy", "Dockerfile")


def manifests():
    """{file name: [documents]} of deploy/k8s/*.yaml."""
    found = {}
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        with open(path) as f:
            found[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d is not None]
    return found


def by_kind(kind):
    return [d for docs in manifests().values() for d in docs if d["kind"] == kind]


def project_version():
    with open(os.path.join(SOURCE_ROOT, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


def pod_templates(doc):
    if doc["kind"] == "MPIJob":
        return [r["template"] for r in doc["spec"]["mpiReplicaSpecs"].values()]
    if doc["kind"] == "Job":
        return [doc["spec"]["template"]]
    return []


def gcomp_run_args(container):
    """The gcomp-run arguments of a container: its command, or its args when the command
    is a shell script that ends in `exec "$@"`."""
    argv = container.get("command", []) + container.get("args", [])
    if argv[:2] == ["/bin/sh", "-c"]:
        assert 'exec "$@"' in argv[2], "the script must run its args"
        argv = container["args"]
    assert argv[0] == "gcomp-run", argv
    return argv[1:]


def installed_programs(build):
    res = subprocess.run(["meson", "introspect", build.root, "--installed"],
                         capture_output=True, text=True, check=True)
    return {os.path.basename(dest).removesuffix(".installed")
            for dest in json.loads(res.stdout).values() if "/bin/" in dest}


def test_every_document_is_complete():
    docs = manifests()
    assert set(docs) >= {"mpijob.yaml", "indexed-job.yaml"}, sorted(docs)
    image = f"gcomp:{project_version()}"
    for name, items in docs.items():
        assert items, f"{name} is empty"
        for d in items:
            assert d.get("apiVersion") and d.get("kind"), (name, d)
            assert d.get("metadata", {}).get("name"), (name, d["kind"])
            for template in pod_templates(d):
                for c in template["spec"]["containers"]:
                    where = f"{name}: {d['kind']} container {c.get('name')}"
                    assert c.get("name") and c.get("image") == image, (where, c.get("image"))
                    for part in ("requests", "limits"):
                        assert set(c.get("resources", {}).get(part, {})) >= {"cpu", "memory"}, \
                            f"{where}: resources.{part} lacks cpu or memory"


def test_mpijob():
    [job] = by_kind("MPIJob")
    assert job["apiVersion"] == "kubeflow.org/v2beta1", job["apiVersion"]
    spec = job["spec"]
    assert spec["mpiImplementation"] == "OpenMPI"
    replicas = spec["mpiReplicaSpecs"]
    assert set(replicas) == {"Launcher", "Worker"}
    assert replicas["Launcher"]["replicas"] == 1 and replicas["Worker"]["replicas"] >= 1
    [launcher] = replicas["Launcher"]["template"]["spec"]["containers"]
    args = launch.build_parser().parse_args(gcomp_run_args(launcher))
    # The operator writes its hostfile here, one line per worker with slotsPerWorker slots.
    assert args.hostfile == "/etc/mpi/hostfile"
    assert int(args.trainers_per_node) == spec["slotsPerWorker"]
    assert args.nodes is None or args.nodes == replicas["Worker"]["replicas"]
    # The launcher pod is not a node: a fixed rendezvous port on the first worker.
    assert {e["name"]: e["value"] for e in launcher.get("env", [])}.get("MASTER_PORT")
    [worker] = replicas["Worker"]["template"]["spec"]["containers"]
    assert worker["command"][0] == "/usr/sbin/sshd" and "-D" in worker["command"][1], worker


def test_indexed_job_and_headless_service():
    [service] = by_kind("Service")
    [job] = by_kind("Job")
    assert service["apiVersion"] == "v1" and job["apiVersion"] == "batch/v1"
    assert service["spec"]["clusterIP"] == "None"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector and all(labels.get(k) == v for k, v in selector.items()), (selector, labels)
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert pod["spec"]["restartPolicy"] == "Never"
    [c] = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    assert int(env["NODES"]) == spec["completions"]
    args = launch.build_parser().parse_args(gcomp_run_args(c))
    script = c["command"][2]
    # The script writes the hostfile gcomp-run reads, one line per pod of the Job, named
    # JOB-INDEX.SERVICE, with --trainers-per-node slots.
    assert f": > {args.hostfile}" in script and f">> {args.hostfile}" in script, script
    m = re.search(r'echo "\$host slots=(\d+)"', script)
    assert m and int(m.group(1)) == int(args.trainers_per_node), script
    assert f"host={job['metadata']['name']}-$k.{service['metadata']['name']}" in script, script
    assert "$JOB_COMPLETION_INDEX" in script and "/usr/sbin/sshd" in script
    secret = {v["name"]: v for v in pod["spec"]["volumes"]}["ssh-key"]["secret"]["secretName"]
    assert f"kubectl create secret generic {secret}" in open(
        os.path.join(K8S, "indexed-job.yaml")).read()
    assert spec["successPolicy"]["rules"] == [{"succeededIndexes": "0"}]
    # sh -n: the script parses.
    res = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def launcher_containers():
    for doc in by_kind("MPIJob"):
        yield doc["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    for doc in by_kind("Job"):
        yield doc["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("container", list(launcher_containers()),
                         ids=lambda c: c["name"])
def test_gcomp_run_command_works(build, container):
    # The trainer is a program of the image, and the daemon settings are ones gcompd
    # accepts: the same flags on this machine, with `true` as the trainer.
    argv = gcomp_run_args(container)
    cut = argv.index("--")
    assert argv[cut + 1] in installed_programs(build), argv[cut + 1:]
    launch.build_parser().parse_args(argv)
    local, rest = [], argv[:cut]
    while rest:
        flag = rest.pop(0)
        value = [rest.pop(0)] if rest and not rest[0].startswith("-") else []
        if flag not in ("--hostfile", "--trainers-per-node", "--nodes"):
            local += [flag, *value]
    env = build.env(**{e["name"]: e["value"] for e in container.get("env", [])})
    res = subprocess.run([build.gcomp_run, "-v", "--nodes", "1", *local, "--", "true"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, f"gcomp-run {shlex.join(local)}: {res.stderr}"
    assert_clean(*job_of(res.stderr))


# ---- deploy/Dockerfile ----

def dockerfile():
    """[(instruction, arguments)] with continuation lines joined and comments dropped."""
    text = open(DOCKERFILE).read()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [tuple(line.strip().split(None, 1)) for line in joined.splitlines() if line.strip()]


def stages():
    """[[(instruction, arguments), ...] per stage]."""
    out = []
    for ins, arg in dockerfile():
        if ins == "FROM":
            out.append([])
        out[-1].append((ins, arg))
    return out


def test_dockerfile_stages_and_copies():
    build_stage, final = stages()
    assert build_stage[0] == ("FROM", "debian:12 AS build") and final[0] == ("FROM", "debian:12")
    copied = set()
    for ins, arg in build_stage:
        if ins == "COPY":
            *sources, _dest = arg.split()
            for src in sources:
                assert os.path.exists(os.path.join(SOURCE_ROOT, src)), f"COPY {src}: no such path"
                copied.add(src.rstrip("/"))
    # Every directory the build reads (subdir() of meson.build) is copied, but tests/,
    # which the image builds without (-Dtests=disabled).
    with open(os.path.join(SOURCE_ROOT, "meson.build")) as f:
        subdirs = set(re.findall(r"subdir\('([^']+)'\)", f.read()))
    assert subdirs - copied == {"tests"}, subdirs - copied
    runs = " ".join(arg for ins, arg in build_stage if ins == "RUN")
    assert "deploy/install-deps.sh --build-only" in runs and "-Dtests=disabled" in runs, runs
    with open(os.path.join(SOURCE_ROOT, "meson_options.txt")) as f:
        options = set(re.findall(r"option\('([^']+)'", f.read())) | {"werror", "prefix"}
    for opt in re.findall(r"-D(\w+)=", runs) + re.findall(r"--(prefix)=", runs):
        assert opt in options, f"meson option {opt} does not exist"
    # install-deps.sh takes --build-only (here everything is installed already: exit 0).
    res = subprocess.run([os.path.join(SOURCE_ROOT, "deploy", "install-deps.sh"), "--build-only"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert ("COPY", "--from=build /install/usr /usr") in final
    cmd = json.loads(dict(final)["CMD"])
    assert cmd[0] == "gcomp-run", cmd


def runtime_packages():
    run = " ".join(arg for ins, arg in stages()[1] if ins == "RUN")
    words = run.split("apt-get install", 1)[1].split("&&", 1)[0].split()
    return {w for w in words if not w.startswith("-")}


def package_of(path):
    """The Debian package that holds a library (by its path, or the file it links to;
    dpkg knows /lib paths under their pre-/usr-merge names)."""
    real = os.path.realpath(path)
    for candidate in dict.fromkeys((path, real, re.sub(r"^/usr/lib/", "/lib/", real))):
        res = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if res.returncode == 0:
            return res.stdout.split(":", 1)[0]
    raise AssertionError(f"no Debian package holds {path} ({real})")


def test_dockerfile_runtime_has_every_library(build):
    packages = runtime_packages()
    assert {"openmpi-bin", "python3", "openssh-server", "openssh-client"} <= packages, packages
    # Essential in every Debian image.
    base = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
    programs = [os.path.join(build.root, p) for p in
                ("daemon/gcompd", "client/gcompctl", "client/libgcomp-client.so",
                 "examples/gcomp-demo")]
    for prog in programs:
        needed = subprocess.run(["readelf", "-d", prog], capture_output=True, text=True,
                                check=True).stdout
        resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", subprocess.run(
            ["ldd", prog], capture_output=True, text=True, check=True).stdout, re.M))
        for soname in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", needed):
            # (the sanitizer runtimes of a sanitized build are not the image's: it builds
            # without them, and under the suite's preload ldd names them by path)
            if soname.startswith(("libgcomp-client", "ld-linux", "libasan", "libubsan")):
                continue  # ours, and the dynamic loader (libc6)
            assert soname in resolved, f"{prog}: {soname} not found by ldd"
            pkg = package_of(resolved[soname])
            assert pkg in packages | base, \
                f"{os.path.basename(prog)} needs {soname} from {pkg}, which the image lacks"
    # The Python tools import numpy and matplotlib.
    assert {"python3-numpy", "python3-matplotlib"} <= packages, packages
