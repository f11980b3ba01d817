#!/bin/sh
# One entry point for a checkout: install what is missing, build, then
#   deploy/dev.sh demo [STEPS]   2 emulated nodes x 2 trainers reducing ResNet-18 buckets
#   deploy/dev.sh test           every test (unit, integration), with a summary line
#   deploy/dev.sh test --sanitize  the same in ./build-san, built with ASan and UBSan
#                                (leaks, UBSan errors fatal; docs/RELIABILITY.md)
#   deploy/dev.sh fuzz [SECONDS] every fuzz target for SECONDS (default 60) with libFuzzer,
#                                in ./build-fuzz (clang); executions and crashes per target
#   deploy/dev.sh bench [ARGS]   the reduction benchmark (tests/bench/bench_reduce.py)
#   deploy/dev.sh bench-link [RATE] [ARGS]
#                                the slow-link benchmark in a private network namespace
#                                (tests/bench/bench_link.py; RATE default 1gbit)
#   deploy/dev.sh experiment [ARGS]  Fashion-MNIST convergence of every codec and policy on
#                                4 emulated nodes; writes docs/CONVERGENCE.md (examples/convergence.py)
# Build directories: ./build, ./build-san, ./build-fuzz (GCOMP_BUILD, GCOMP_SAN_BUILD,
# GCOMP_FUZZ_BUILD override them). With CI set, warnings are errors.
set -eu
cd "$(dirname "$0")/.."
cmd=${1:-}
[ $# -gt 0 ] && shift
sanitize=
if [ "$cmd" = test ] && [ "${1:-}" = --sanitize ]; then
    sanitize=1
    shift
fi
werror=$([ -n "${CI:-}" ] && echo true || echo false)

# setup DIR WERROR [MESON OPTIONS...]: configure DIR if it is not yet (or set WERROR).
setup() {
    dir=$1 want=$2
    shift 2
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" -Dwerror="$want" "$@"
    elif [ "$want" = true ]; then
        meson configure "$dir" -Dwerror=true
    fi
}

# run_tests BUILD LABEL [MESON TEST ARGS]: meson test, then one line of counts naming what
# failed; exits non-zero if a test failed.
run_tests() {
    log=$1/meson-logs/testlog.json label=$2
    shift 2
    rm -f "$log"
    rc=0
    meson test -C "$BUILD" --print-errorlogs --num-processes 2 "$@" || rc=$?
    [ -f "$log" ] || exit "$rc" # no test ran (the build failed)
    /usr/bin/python3 - "$log" "$label" <<'PY'
import json, sys
res = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in res if r["result"] in ("OK", "EXPECTEDFAIL")]
skip = [r for r in res if r["result"] == "SKIP"]
bad = [f'{r["name"]} ({r["result"]})' for r in res if r not in ok and r not in skip]
print(f"{sys.argv[2]}: {len(ok)} passed, {len(bad)} failed, {len(skip)} skipped"
      + (f": {', '.join(bad)}" if bad else ""))
sys.exit(1 if bad else 0)
PY
}

# fuzz_target NAME SECONDS COMMAND...: run the libFuzzer COMMAND on NAME's corpus until
# SECONDS are spent; a run that ends in a crash is counted and the fuzzing goes on. New
# inputs go to BUILD/fuzz-out/NAME/corpus (kept between runs), crashing ones to
# .../crashes/ with their reports in .../crashes.log. Fails if anything crashed.
fuzz_target() {
    name=$1 secs=$2
    shift 2
    dir=$BUILD/fuzz-out/$name
    mkdir -p "$dir/corpus" "$dir/crashes"
    end=$(($(date +%s) + secs))
    execs=0 crashes=0
    while left=$((end - $(date +%s))) && [ "$left" -gt 0 ]; do
        rc=0
        "$@" -max_total_time="$left" -timeout=10 -print_final_stats=1 \
            -artifact_prefix="$dir/crashes/" "$dir/corpus" "tests/fuzz/corpus/$name" \
            >"$dir/log" 2>&1 || rc=$?
        n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
        execs=$((execs + ${n:-0}))
        [ "$rc" -eq 0 ] && break
        crashes=$((crashes + 1))
        cat "$dir/log" >>"$dir/crashes.log"
    done
    where=""
    [ "$crashes" -gt 0 ] && where=" (reports: $dir/crashes.log)"
    printf 'fuzz: %-14s %10d executions in %ss, %d crashes%s\n' "$name" "$execs" "$secs" \
        "$crashes" "$where"
    [ "$crashes" -eq 0 ]
}

deploy/install-deps.sh
case "$cmd" in
fuzz)
    BUILD=${GCOMP_FUZZ_BUILD:-build-fuzz}
    deploy/install-deps.sh --fuzz "$BUILD/venv"
    CC=clang setup "$BUILD" false -Dfuzz=enabled -Db_lundef=false
    ninja -C "$BUILD" tests/fuzz/fuzz_messages tests/fuzz/fuzz_codecs tests/fuzz/fuzz_checkpoint
    ;;
test)
    if [ -n "$sanitize" ]; then
        BUILD=${GCOMP_SAN_BUILD:-build-san}
        # GCC's -Wformat-overflow misfires on code that ASan/UBSan instrument.
        setup "$BUILD" "$werror" -Db_sanitize=address,undefined -Dc_args=-Wno-error=format-overflow
    else
        BUILD=${GCOMP_BUILD:-build}
        setup "$BUILD" "$werror"
    fi
    ninja -C "$BUILD"
    ;;
*)
    BUILD=${GCOMP_BUILD:-build}
    setup "$BUILD" "$werror"
    ninja -C "$BUILD"
    ;;
esac

case "$cmd" in
demo)
    export GCOMP_LOG_LEVEL="${GCOMP_LOG_LEVEL:-warning}" # the daemons' info lines hide the steps
    exec "$BUILD/deploy/gcomp-run" --nodes 2 --trainers-per-node 2 -- "$BUILD/examples/gcomp-demo" "${1:-10}"
    ;;
test)
    if [ -n "$sanitize" ]; then
        # Sanitized code runs several times slower: so may the tests.
        run_tests "$BUILD" "gcomp (sanitize)" --timeout-multiplier 5 "$@"
    else
        run_tests "$BUILD" gcomp "$@"
    fi
    ;;
fuzz)
    secs=${1:-60}
    rc=0
    for t in fuzz_messages fuzz_codecs fuzz_checkpoint; do
        fuzz_target "$t" "$secs" "$BUILD/tests/fuzz/$t" || rc=1
    done
    for t in fuzz_npy fuzz_manifest; do
        fuzz_target "$t" "$secs" env PYTHONPATH=client/python PYTHONDONTWRITEBYTECODE=1 \
            "$BUILD/venv/bin/python" "tests/fuzz/$t.py" --fuzz || rc=1
    done
    exit $rc
    ;;
bench)
    exec /usr/bin/python3 tests/bench/bench_reduce.py --build "$BUILD" "$@"
    ;;
bench-link)
    rate=${1:-1gbit}
    [ $# -gt 0 ] && shift
    exec unshare -n /usr/bin/python3 tests/bench/bench_link.py --build "$BUILD" --rate "$rate" "$@"
    ;;
experiment)
    exec /usr/bin/python3 examples/convergence.py --build "$BUILD" "$@"
    ;;
*)
    echo "usage: deploy/dev.sh demo [STEPS] | test [--sanitize] [MESON TEST ARGS] | fuzz [SECONDS] | bench [ARGS] | bench-link [RATE] | experiment [ARGS]" >&2
    exit 2
    ;;
esac
