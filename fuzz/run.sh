#!/usr/bin/env bash
# A short fuzz run of every target (libFuzzer through cargo fuzz), on the
# stable toolchain:
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, all)
#
# cargo fuzz passes nightly-only flags (-Zsanitizer=address, ...) to rustc;
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them, which is the
# supported way here since no nightly toolchain can be installed.
#
# Each target starts from its seed corpus in fuzz/corpus/<target>/ (real
# messages, see seed_corpus.py). New inputs go to a scratch directory, not
# into the repository; SLUICE_FUZZ_MERGE=1 merges them back, minimised.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the run.
# The last lines print, per target, the executions run without a crash
# (the figures in docs/benchmarks.md, "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-60}
shift || true
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(cargo fuzz list)
fi
# One release build of every target, then the runs.
nice -n 10 cargo fuzz build -O
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p logs
declare -A RUNS
failed=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$SCRATCH/$t" "artifacts/$t"
    echo "== $t: ${SECONDS_PER_TARGET}s"
    if nice -n 10 cargo fuzz run -O "$t" "$SCRATCH/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=8192 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"logs/$t.log" 2>&1; then
        RUNS[$t]=$(grep -o 'Done [0-9]* runs' "logs/$t.log" | tail -1 | awk '{print $2}')
    else
        RUNS[$t]="CRASH (see fuzz/logs/$t.log, fuzz/artifacts/$t/)"
        failed=1
    fi
    if [ "${SLUICE_FUZZ_MERGE:-0}" = 1 ]; then
        nice -n 10 cargo fuzz run -O "$t" "corpus/$t" "$SCRATCH/$t" -- -merge=1 \
            >>"logs/$t.log" 2>&1 || true
    fi
done
echo
echo "target executions (no crash)"
for t in "${TARGETS[@]}"; do
    echo "$t ${RUNS[$t]}"
done
exit $failed
