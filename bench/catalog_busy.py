#!/usr/bin/env python3
"""Workload 5b (catalog-busy): workload 5's DBeaver-style metadata burst
while the warehouse node is saturated, direct vs through sluice.

The same node and burst as workload 5 (bench/catalog_burst.py: 200 tables
of 10 columns with a primary key, a foreign key and an index each;
bench/MetadataBurst.java runs PgJDBC DatabaseMetaData as DBeaver browses a
schema: getTables, then getColumns, getPrimaryKeys, getImportedKeys and
getIndexInfo per table), with pg_stat_statements preloaded on the node and
sluice in front of it with a catalog copy: managed by sluice
(BENCH_BUSY_COPY=managed, the default: catalog.data_dir in the work dir) or
an external `postgres -b` server synced by `sluice catalog-sync --full`
(=external).

1. Once sluice's copy is current (sluice_catalog_stale{database="postgres"}
   is 0), one burst direct and one through sluice on the idle node: the
   reference, and a warm-up.
2. The node is saturated: BENCH_BUSY_QUERIES (default: as many as the node
   has cores) sessions each run `SELECT count(*) FROM (SELECT
   generate_series(1, 10^13)) s` (one core each, constant memory; no
   parallel workers), started here and cancelled here at the end
   (pg_cancel_backend, then pg_terminate_backend). Before every burst any
   that ended is started again.
3. BENCH_ROUNDS (3) rounds of the burst direct and through sluice,
   interleaved (the order alternates each round). Per burst: wall time, the
   statements that reached the node (pg_stat_statements, reset before each
   burst; sluice's probe statements, marked '/* sluice catalog probe */',
   the saturating queries and this driver's own are left out), of them the
   catalog statements (naming pg_catalog or information_schema; not
   PgJDBC's read of pg_settings at connect, which describes the node's live
   state and stays on the node by design), and the
   cores the saturating backends used meanwhile (their utime+stime from
   /proc), which shows the node really was busy.

Reported: min / median / max wall per target, idle and saturated, and
direct / sluice of the medians (above 1: sluice is faster). Written to
target/bench/catalog_busy.md (and .json).

All processes share one machine. BENCH_NODE_CPUS (e.g. "1") pins the node
to those CPUs and everything else (sluice, its copy, Java, psql) to the
others, as if the warehouse were its own machine; the saturating queries
then default to as many as the node's CPUs.

Run:   bash bench/run.sh catalog-busy            (builds sluice first)
       python3 bench/catalog_busy.py              (with target/release/sluice built)
       python3 bench/catalog_busy.py --direct-only   # no sluice: the direct side only
Environment: BENCH_ROUNDS (3), BENCH_BUSY_QUERIES, BENCH_BUSY_COPY (managed |
external), BENCH_NODE_CPUS, BENCH_PROBE_INTERVAL ("10s"), BENCH_BUSY_TIMEOUT
(900 s, for each burst and each wait on sluice), BENCH_TABLES (200),
BENCH_SLUICE_BIN.
"""

import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402
import catalog_burst as cb  # noqa: E402

DIRECT_ONLY = "--direct-only" in sys.argv[1:]
COPY_KIND = os.environ.get("BENCH_BUSY_COPY", "managed")
NODE_CPUS = os.environ.get("BENCH_NODE_CPUS", "").strip()
PROBE_INTERVAL = os.environ.get("BENCH_PROBE_INTERVAL", "10s")
TIMEOUT = float(os.environ.get("BENCH_BUSY_TIMEOUT", "900"))
APP = "sluice-bench-saturate"
# Leads every statement this driver sends to the node itself.
OWN = "/* sluice bench */"
SATURATE = "/* sluice bench saturate */ SELECT count(*) FROM (SELECT generate_series(1::bigint, 10000000000000::bigint)) s"
OUT = os.path.join(b.ROOT, "target", "bench")


def cpu_list(text):
    """ "0,2-3" -> {0, 2, 3}."""
    cpus = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def node_sql(port, sql, timeout=120):
    return b.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
                  "-U", "postgres", "-d", "postgres", "-c", sql], timeout=timeout).strip()


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / b.TICK
        except (OSError, IndexError, ValueError):
            pass
    return total


class Saturation:
    """`count` sessions on the node, each running SATURATE until cancelled."""

    def __init__(self, env, count):
        self.env, self.count, self.procs = env, count, []

    def backends(self):
        out = node_sql(self.env.pg_port, f"{OWN} SELECT pid FROM pg_stat_activity "
                                         f"WHERE application_name = '{APP}' AND state = 'active'")
        return [int(x) for x in out.split()]

    def top_up(self, timeout=30):
        """Starts sessions until `count` run the query; waits for them."""
        missing = self.count - len(self.backends())
        env = {**os.environ, "PGAPPNAME": APP,
               # No parallel workers: one core per session. The timeout only guards
               # against a run that dies without cancelling them.
               "PGOPTIONS": "-c max_parallel_workers_per_gather=0 -c statement_timeout=14400000"}
        for _ in range(missing):
            self.procs.append(b.spawn(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.env.pg_port),
                                       "-U", "postgres", "-d", "postgres", "-c", SATURATE],
                                      os.path.join(self.env.dir, f"saturate-{len(self.procs)}.log"), env=env))
        deadline = time.monotonic() + timeout
        while len(self.backends()) < self.count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count} saturating queries did not all start within {timeout} s:\n"
                                   + cb.tail(os.path.join(self.env.dir, f"saturate-{len(self.procs) - 1}.log")))
            time.sleep(0.1)
        if missing:
            b.log(f"  {missing} saturating quer{'y' if missing == 1 else 'ies'} started")

    def stop(self, timeout=20):
        for fn in ("pg_cancel_backend", "pg_terminate_backend"):
            node_sql(self.env.pg_port, f"{OWN} SELECT {fn}(pid) FROM pg_stat_activity WHERE application_name = '{APP}'")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
                time.sleep(0.1)
            if all(p.poll() is not None for p in self.procs):
                break
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        left = self.backends()
        if left:
            b.log(f"saturating backends still active after cancel and terminate: {left}")


def node_statements(port):
    """Since the last reset: (statements, of them catalog statements, sluice
    probe statements), this driver's own and the saturating queries left out."""
    out = node_sql(port, f"""{OWN} SELECT coalesce(sum(calls) FILTER (WHERE NOT probe), 0),
        coalesce(sum(calls) FILTER (WHERE NOT probe AND catalog), 0), coalesce(sum(calls) FILTER (WHERE probe), 0)
      FROM (SELECT calls, position('sluice catalog probe' in query) > 0 AS probe,
                   query ~ '(pg_catalog|information_schema)' AND query !~ 'pg_settings' AS catalog
              FROM pg_stat_statements
             WHERE query NOT LIKE '%sluice bench%' AND query NOT LIKE '%pg_stat_statements%') s""")
    return tuple(int(x) for x in out.split("|"))


def top_statements(port, n=8):
    return node_sql(port, f"""{OWN} SELECT calls || ' x ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
      FROM pg_stat_statements WHERE query NOT LIKE '%sluice bench%' AND query NOT LIKE '%pg_stat_statements%'
     ORDER BY calls DESC LIMIT {n}""")


def start_sluice(env, copy_port):
    """sluice run with the copy; returns (process, metrics port, log path) once the copy is current."""
    metrics_port = b.free_port()
    if COPY_KIND == "managed":
        catalog = f'data_dir = "{os.path.join(env.dir, "managed")}"'  # sluice creates and initdb's it
    else:
        catalog = f'dsn = "host=127.0.0.1 port={copy_port} user=postgres"'
    cfg = cb.write_sluice_config(env, os.path.join(env.dir, "sluice.toml"), env.sluice_port, metrics_port,
                                 f'{catalog}\npostgres_bin = "{env.bindir}"\nprobe_interval = "{PROBE_INTERVAL}"')
    if COPY_KIND == "external":
        b.log("sluice catalog-sync --full")
        out = subprocess.run(cb.full_sync_cmd(cfg), capture_output=True, text=True, timeout=TIMEOUT)
        if out.returncode != 0:
            sys.exit(f"sluice catalog-sync failed:\n{out.stderr[-3000:]}")
    log_path = os.path.join(env.dir, "sluice.log")
    p = b.spawn([b.SLUICE_BIN, "run", "--config", cfg], log_path, env={**os.environ, "SLUICE_LOG": "info"})
    b.wait_port(env.sluice_port, "sluice", p, timeout=TIMEOUT)
    waited = cb.wait_copy_current(metrics_port, p, log_path, TIMEOUT)
    b.log(f"sluice's catalog copy is current ({waited:.1f} s after sluice listened)")
    return p, metrics_port, log_path


def summary(samples):
    return (f"{min(samples):,.0f} | **{statistics.median(samples):,.0f}** | {max(samples):,.0f}"
            if samples else "— | — | —")


def report(runs, started, versions, busy, calls):
    lines = []
    add = lines.append
    add(f"Run {started:%Y-%m-%d %H:%M} UTC. " + "; ".join(f"{k}: {v}" for k, v in versions.items()) + ".")
    add("")
    add(f"Workload 5b: the DBeaver-style burst ({cb.TABLES} tables, {calls} DatabaseMetaData calls per run) "
        f"while {busy} saturating quer{'y runs' if busy == 1 else 'ies run'} on the node "
        f"(`{SATURATE.split('*/ ')[1]}`, no parallel workers); {b.ROUNDS} interleaved round(s) per target on the "
        f"saturated node, one on the idle node first.")
    add("")
    add("| target | node | min ms | median ms | max ms | statements on the node per run | of them catalog "
        "| saturating backends' cores during the burst |")
    add("|---|---|---|---|---|---|---|---|")
    for load in ("idle", "saturated"):
        for target in ("direct", "sluice"):
            rs = [r for r in runs if r["target"] == target and r["load"] == load]
            if not rs:
                continue
            add(f"| {target} | {load} | {summary([r['ms'] for r in rs])} "
                f"| {', '.join(str(r['statements']) for r in rs)} | {', '.join(str(r['catalog']) for r in rs)} "
                f"| {', '.join(format(r['cores'], '.2f') for r in rs) if load == 'saturated' else '—'} |")
    add("")
    for load in ("saturated", "idle"):
        d = [r["ms"] for r in runs if r["target"] == "direct" and r["load"] == load]
        s = [r["ms"] for r in runs if r["target"] == "sluice" and r["load"] == load]
        if d and s:
            add(f"direct / sluice, median wall, {load} node: **{statistics.median(d) / statistics.median(s):.2f}**")
            add("")
    d_idle = [r["ms"] for r in runs if r["target"] == "direct" and r["load"] == "idle"]
    d_busy = [r["ms"] for r in runs if r["target"] == "direct" and r["load"] == "saturated"]
    if d_idle and d_busy:
        add(f"Saturation slows the direct burst {statistics.median(d_busy) / statistics.median(d_idle):.2f} x.")
        add("")
    return "\n".join(lines) + "\n"


def main():
    if not DIRECT_ONLY:
        cb.require_new_sluice("python3 bench/catalog_busy.py --direct-only runs the direct side alone")
    if COPY_KIND not in ("managed", "external"):
        sys.exit("BENCH_BUSY_COPY is managed or external")
    started = datetime.datetime.now(datetime.timezone.utc)
    b.atexit.register(b.stop_children)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    env = b.Env()
    b.log("work dir", env.dir)
    wrapper, node_cores = (), os.cpu_count()
    if NODE_CPUS:
        node_set = cpu_list(NODE_CPUS)
        rest = set(os.sched_getaffinity(0)) - node_set
        if not rest:
            sys.exit(f"BENCH_NODE_CPUS={NODE_CPUS} leaves no CPU for sluice and the clients")
        wrapper, node_cores = ("taskset", "-c", NODE_CPUS), len(node_set)
    busy = int(os.environ.get("BENCH_BUSY_QUERIES", "0")) or node_cores
    cb.start_cluster(env, "node", env.pg_port, wrapper=wrapper,
                     conf="shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = 'top'\n"
                          "pg_stat_statements.max = 10000\n")
    if NODE_CPUS:
        # Everything started from here on (sluice, its copy, Java, psql) runs on the other CPUs.
        os.sched_setaffinity(0, rest)
        b.log(f"node on CPUs {sorted(node_set)}, the rest on {sorted(rest)}")
    node_sql(env.pg_port, f"{OWN} CREATE EXTENSION pg_stat_statements")
    cb.create_burst_schema(env.pg_port)
    classes = cb.compile_burst()
    ports = {"direct": env.pg_port}
    if not DIRECT_ONLY:
        copy_port = None
        if COPY_KIND == "external":
            copy_port = b.free_port()
            cb.start_cluster(env, "copy", copy_port, extra_args=("-b",))
        start_sluice(env, copy_port)
        ports["sluice"] = env.sluice_port

    rev = subprocess.run(["git", "-C", b.ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    versions = {
        "cores": str(os.cpu_count()) + (f" (node pinned to {NODE_CPUS})" if NODE_CPUS else ""),
        "load average at start": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "PostgreSQL": b.run([os.path.join(env.bindir, "postgres"), "--version"]).strip(),
        "sluice": "not run (--direct-only)" if DIRECT_ONLY else
        f"{b.run([b.SLUICE_BIN, '--version']).strip()} (git {rev}, {b.SLUICE_BIN}), {COPY_KIND} copy, "
        f"probe_interval {PROBE_INTERVAL}",
    }
    runs, calls, notes = [], 0, []
    saturation = Saturation(env, busy)

    def burst(target, load, rnd):
        nonlocal calls
        if load == "saturated":
            saturation.top_up()
        pids = saturation.backends() if load == "saturated" else []
        node_sql(env.pg_port, f"{OWN} SELECT pg_stat_statements_reset()")
        cpu0, t0 = cpu_seconds(pids), time.perf_counter()
        ms, calls = cb.run_burst(classes, ports[target], timeout=TIMEOUT)
        cores = (cpu_seconds(pids) - cpu0) / (time.perf_counter() - t0)
        statements, catalog, probes = node_statements(env.pg_port)
        runs.append({"target": target, "load": load, "round": rnd, "ms": ms, "calls": calls,
                     "statements": statements, "catalog": catalog, "probe_statements": probes, "cores": cores})
        notes.append(f"== {target} {load} round {rnd}: {ms} ms\n{top_statements(env.pg_port)}\n")
        b.log(f"  {load:<9} round {rnd} {target:<6} {ms:6} ms, {statements} statements on the node "
              f"({catalog} catalog, {probes} sluice probe)" + (f", saturating backends {cores:.2f} cores"
                                                                if pids else ""))

    for target in ports:
        burst(target, "idle", 0)
    b.log(f"saturating the node with {busy} quer{'y' if busy == 1 else 'ies'}")
    try:
        saturation.top_up()
        time.sleep(1)
        for rnd in range(1, b.ROUNDS + 1):
            order = list(ports) if rnd % 2 else list(reversed(ports))
            for target in order:
                burst(target, "saturated", rnd)
    finally:
        saturation.stop()

    text = report(runs, started, versions, busy, calls)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "catalog_busy.md"), "w") as f:
        f.write(text)
    with open(os.path.join(OUT, "catalog_busy.json"), "w") as f:
        json.dump(runs, f, indent=1)
    with open(os.path.join(OUT, "catalog_busy-statements.txt"), "w") as f:
        f.write("Most frequent statements on the node during each burst (pg_stat_statements):\n\n" + "\n".join(notes))
    print(text)
    b.log("wrote", os.path.join(OUT, "catalog_busy.md"))
    b.stop_children()
    shutil.rmtree(env.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
