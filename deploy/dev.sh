#!/bin/sh
# One entry point for a checkout: install what is missing, build, then
#   deploy/dev.sh demo [STEPS]   2 emulated nodes x 2 trainers reducing ResNet-18 buckets
#   deploy/dev.sh test           every test (unit, integration), with a summary line
#   deploy/dev.sh bench [ARGS]   the reduction benchmark (tests/bench/bench_reduce.py)
#   deploy/dev.sh experiment [ARGS]  Fashion-MNIST convergence of every codec and policy on
#                                4 emulated nodes; writes docs/CONVERGENCE.md (examples/convergence.py)
# The build directory is ./build (GCOMP_BUILD overrides). With CI set, warnings are errors.
set -eu
cd "$(dirname "$0")/.."
BUILD=${GCOMP_BUILD:-build}
deploy/install-deps.sh
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" -Dwerror="$([ -n "${CI:-}" ] && echo true || echo false)"
elif [ -n "${CI:-}" ]; then
    meson configure "$BUILD" -Dwerror=true
fi
ninja -C "$BUILD"
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
demo)
    export GCOMP_LOG_LEVEL="${GCOMP_LOG_LEVEL:-warning}" # the daemons' info lines hide the steps
    exec "$BUILD/deploy/gcomp-run" --nodes 2 --trainers-per-node 2 -- "$BUILD/examples/gcomp-demo" "${1:-10}"
    ;;
test)
    rc=0
    meson test -C "$BUILD" --print-errorlogs --num-processes 2 "$@" || rc=$?
    /usr/bin/python3 - "$BUILD/meson-logs/testlog.json" <<'PY'
import json, sys
res = [json.loads(l)["result"] for l in open(sys.argv[1]) if l.strip()]
ok = sum(r in ("OK", "EXPECTEDFAIL") for r in res)
skip = sum(r == "SKIP" for r in res)
print(f"gcomp: {ok} passed, {len(res) - ok - skip} failed, {skip} skipped")
PY
    exit $rc
    ;;
bench)
    exec /usr/bin/python3 tests/bench/bench_reduce.py --build "$BUILD" "$@"
    ;;
experiment)
    exec /usr/bin/python3 examples/convergence.py --build "$BUILD" "$@"
    ;;
*)
    echo "usage: deploy/dev.sh demo [STEPS] | test [MESON TEST ARGS] | bench [ARGS] | experiment [ARGS]" >&2
    exit 2
    ;;
esac
