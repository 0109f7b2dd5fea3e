#!/usr/bin/env bash
# sluice's benchmark suite: each workload direct to PostgreSQL, through
# PgBouncer (session mode) and through sluice, interleaved, several rounds;
# the report (min/median/max, ratios, proxy CPU per transaction, peak RSS)
# goes to docs/benchmarks.md. See docs/benchmarks.md for what each workload is.
#
#   bash bench/run.sh                       # everything, 15 s per run, 3 rounds
#   BENCH_SECONDS=3 BENCH_ROUNDS=1 BENCH_UPDATE_DOC=0 bash bench/run.sh   # a quick check
#   BENCH_WORKLOADS="1 2" bash bench/run.sh # some workloads only
#   bash bench/run.sh profile               # perf profile of sluice under workload 1
#   bash bench/run.sh catalog               # workload 5: DBeaver-style metadata burst, direct vs sluice
#   bash bench/run.sh catalog-busy          # workload 5b: the same burst while the node is saturated
#                                           # (bench/catalog_busy.py; --direct-only: without sluice)
#   bash bench/run.sh catalog-scale         # catalog copy at 2,000 / 20,000 / 100,000 tables: full sync
#                                           # time and RSS, freshness after DDL, probe cost (bench/catalog_scale.py;
#                                           # --without-sluice: schema, pg_dump floor, probe SQL by hand)
#   bash bench/run.sh classify              # classification cost per query, cached and uncached
#   bash bench/run.sh rules                 # workload 7 only: pgbench -S with 50 rules loaded vs none
#   bash bench/run.sh instructions          # callgrind: user-space instructions per transaction, per proxy
#
# Environment:
#   BENCH_SECONDS     seconds per pgbench run (15)
#   BENCH_ROUNDS      interleaved rounds (3)
#   BENCH_WORKLOADS   which workloads (1 2 3 4 6 7; 5 has its own driver: `catalog`)
#   BENCH_MODES       pgbench -M modes for workloads 1 and 2 (simple extended prepared)
#   BENCH_COPY_ROWS   rows for workload 4 (3000000)
#   BENCH_IDLE        idle connections for workload 6 (1000)
#   BENCH_UPDATE_DOC  1: write the report into docs/benchmarks.md (default); 0: only
#                     target/bench/report.md
#   BENCH_SKIP_BUILD  1: use the existing target/release/sluice (and examples/relay_floor, latency_probe)
#   BENCH_TXNS        transactions per client counted by `instructions` (2000)
#   BENCH_SLUICE_BIN  another sluice binary to measure (an older build, for an A/B run)
#   BENCH_PROBE_ROUNDS transactions per target per run of the workload-2 probe (5000)
#   catalog-scale:    BENCH_SCALE_TABLES ("2000 20000 100000"), BENCH_SCALE_COPY (managed | external),
#                     BENCH_PROBE_INTERVAL ("10s"), BENCH_PROBE_SECONDS (60), BENCH_SCALE_BASELINE (1),
#                     BENCH_SCALE_TIMEOUT (3600), BENCH_NODE_MAX_LOCKS (node's max_locks_per_transaction)
#   catalog-busy:     BENCH_ROUNDS (3), BENCH_BUSY_QUERIES (cores), BENCH_BUSY_COPY (managed | external),
#                     BENCH_NODE_CPUS (pin the node, e.g. "1"), BENCH_BUSY_TIMEOUT (900), BENCH_TABLES (200)
#
# Needs: PostgreSQL server binaries (/usr/lib/postgresql/*/bin), pgbench, psql,
# pgbouncer, python3. Missing Debian packages are installed when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v pgbench >/dev/null || missing+=(postgresql-contrib)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v python3 >/dev/null || missing+=(python3)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
case "${1:-}" in
    catalog | catalog-busy)
        command -v javac >/dev/null || missing+=(default-jdk-headless)
        [ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java) ;;
esac
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
# Debian's pgbouncer package may start its own service; the suite runs its own.

# The parts of the catalog drivers that run without sluice need no build.
case " $* " in *" --without-sluice "* | *" --direct-only "*) BENCH_SKIP_BUILD=1 ;; esac
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --locked --bin sluice --example relay_floor --example latency_probe
fi

# 1000 idle clients: each holds sockets in this process, the proxy and the node.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

case "${1:-}" in
    catalog) exec python3 bench/catalog_burst.py ;;
    catalog-busy) shift; exec python3 bench/catalog_busy.py "$@" ;;
    catalog-scale) shift; exec python3 bench/catalog_scale.py "$@" ;;
    rules) BENCH_WORKLOADS=7 BENCH_UPDATE_DOC=0 exec python3 bench/bench.py ;;
    instructions) exec python3 bench/bench.py instructions ;;
    classify) exec cargo run --release --locked --example classify_cost ;;
    *) exec python3 bench/bench.py "$@" ;;
esac
