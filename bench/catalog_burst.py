#!/usr/bin/env python3
"""Workload 5: the metadata burst of a DBeaver connect, direct vs through
sluice with the catalog copy answering.

A node with 200 tables (10 columns, a primary key, a foreign key and an
index each) and statement logging, a catalog copy in binary-upgrade mode,
and sluice (release build) with [catalog], synced once. bench/MetadataBurst.java
(PgJDBC DatabaseMetaData: getTables, then getColumns, getPrimaryKeys,
getImportedKeys and getIndexInfo per table) runs direct and through sluice,
interleaved, BENCH_ROUNDS times. Reported: wall time (min/median/max) and the
statements that reached the node during the sluice runs.

Run: bash bench/run.sh catalog   (or python3 bench/catalog_burst.py)

The helpers above main() (clusters, the burst schema, the Java burst, the
full sync, waiting until sluice's copy is current, /metrics) are shared with
bench/catalog_busy.py (workload 5b) and bench/catalog_scale.py.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402

TABLES = int(os.environ.get("BENCH_TABLES", "200"))
JAR = "/usr/share/java/postgresql.jar"


def start_cluster(env, name, port, extra_args=(), log_statements=False, conf="", wrapper=()):
    """initdb + postgres in env.dir/name on `port` (as the server user when
    root), with `conf` (postgresql.conf lines) appended, under `wrapper`
    (e.g. taskset) if given. Returns the server log's path."""
    data = os.path.join(env.dir, name)
    b.run([os.path.join(env.bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
           "-E", "UTF8", "--locale=C", "--no-sync"], **b.as_server_user())
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{env.dir}'\n"
                "fsync = off\nsynchronous_commit = off\n")
        if log_statements:
            f.write("log_statement = 'all'\n")
        f.write(conf)
    p = b.spawn([*wrapper, os.path.join(env.bindir, "postgres"), "-D", data, *extra_args],
                os.path.join(env.dir, f"{name}.log"), **b.as_server_user())
    b.wait_port(port, name, p)
    return os.path.join(env.dir, f"{name}.log")


def psql(port, sql, db="postgres", timeout=None):
    return b.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
                  "-U", "postgres", "-d", db, "-c", sql], timeout=timeout)


def create_burst_schema(port, tables=TABLES):
    """Schema `burst`: `tables` tables of 10 columns with a primary key, a
    foreign key to the previous table and an index each."""
    ddl = ["CREATE SCHEMA burst;", "CREATE TABLE burst.t0 (id int PRIMARY KEY);"]
    for i in range(1, tables):
        cols = ", ".join(f"c{j} text" for j in range(7))
        ddl.append(f"CREATE TABLE burst.t{i} (id int PRIMARY KEY, parent int REFERENCES burst.t{i-1}, "
                   f"amount numeric(12,2), {cols});")
        ddl.append(f"CREATE INDEX ON burst.t{i} (c0);")
    psql(port, "\n".join(ddl))


def compile_burst():
    """Compiles bench/MetadataBurst.java; returns the classes directory."""
    if not os.path.exists(JAR):
        sys.exit(f"{JAR} is missing: apt-get install libpostgresql-jdbc-java (bench/run.sh installs it)")
    classes = tempfile.mkdtemp(prefix="sluice-burst-")
    b.atexit.register(shutil.rmtree, classes, True)
    b.run(["javac", "-d", classes, os.path.join(b.ROOT, "bench", "MetadataBurst.java")])
    return classes


def run_burst(classes, port, timeout=None):
    """One metadata burst against `port`; returns (wall ms, DatabaseMetaData calls)."""
    out = b.run(["java", "-cp", f"{classes}:{JAR}", "MetadataBurst",
                 f"jdbc:postgresql://127.0.0.1:{port}/postgres?sslmode=disable", "burst"], timeout=timeout)
    fields = dict(kv.split("=") for kv in out.split())
    return int(fields["ms"]), int(fields["calls"])


def has_full_sync():
    """Whether this sluice build's catalog-sync takes --full (the builds with
    the managed copy and incremental refresh; older ones always sync fully)."""
    out = subprocess.run([b.SLUICE_BIN, "catalog-sync", "--help"], capture_output=True, text=True)
    return "--full" in out.stdout + out.stderr


def write_sluice_config(env, path, port, metrics_port, catalog):
    """A sluice.toml in front of the node on env.pg_port; `catalog` is the
    body of its [catalog] section. Returns `path`."""
    with open(path, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics_port}"

[warehouse]
nodes = ["127.0.0.1:{env.pg_port}"]
service_user = "postgres"

[catalog]
{catalog}
""")
    return path


def require_new_sluice(alternative):
    """Exits, saying what to do, unless b.SLUICE_BIN exists and has the
    managed copy and incremental refresh (`catalog-sync --full`);
    `alternative` names this driver's way to run without sluice."""
    if not os.path.exists(b.SLUICE_BIN):
        sys.exit(f"{b.SLUICE_BIN} is missing: cargo build --release --bin sluice (or set BENCH_SLUICE_BIN); "
                 f"{alternative}")
    if not has_full_sync():
        sys.exit(f"{b.SLUICE_BIN} has no `catalog-sync --full`: this driver needs the build with the "
                 "managed copy and incremental refresh")


def full_sync_cmd(cfg):
    return [b.SLUICE_BIN, "catalog-sync", "--config", cfg] + (["--full"] if has_full_sync() else [])


def scrape(port, timeout=5):
    """sluice's /metrics as {(name, ((label, value), ...)): value}; {} if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_:][\w:]*)(\{.*\})?\s+(\S+)", line)
        if not m or line.startswith("#"):
            continue
        labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def metric(samples, name, **labels):
    """The sum of `name`'s samples whose labels include `labels`; None if there is none."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    return sum(found) if found else None


def ok_refreshes(samples):
    """Successful refreshes of the copy so far, of any kind."""
    return metric(samples, "sluice_catalog_refreshes_total", result="ok") or 0


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def wait_copy_current(metrics_port, proc, log_path, timeout, database="postgres", refreshes_above=None,
                      old_build_grace=None):
    """Waits until sluice_catalog_stale{database} reads 0 (and, with
    refreshes_above, more refreshes succeeded than that); returns the seconds
    waited. Raises RuntimeError if sluice exits and TimeoutError after
    `timeout` s, both with the tail of sluice's log. With old_build_grace, a
    sluice whose /metrics answers without the gauge for that long is taken
    for a build without it (the gauge is then never waited for): returns None."""
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sluice exited ({proc.returncode}) while waiting for the catalog copy:\n"
                               + tail(log_path))
        s = scrape(metrics_port)
        stale = metric(s, "sluice_catalog_stale", database=database)
        waited = time.monotonic() - t0
        if stale == 0 and (refreshes_above is None or ok_refreshes(s) > refreshes_above):
            return waited
        if old_build_grace is not None and s and stale is None and waited > old_build_grace:
            b.log(f"sluice exports no sluice_catalog_stale after {waited:.0f} s: an older build, not waited for")
            return None
        if waited > timeout:
            raise TimeoutError(f"the catalog copy of {database!r} was not current after {timeout:.0f} s "
                               f"(sluice_catalog_stale = {stale}); sluice's log ends:\n" + tail(log_path))
        time.sleep(0.1)


def main():
    b.atexit.register(b.stop_children)
    if not os.path.exists(b.SLUICE_BIN):
        sys.exit(f"{b.SLUICE_BIN} is missing: cargo build --release --bin sluice (or set BENCH_SLUICE_BIN)")
    env = b.Env()
    copy_port = b.free_port()
    metrics_port = b.free_port()
    node_log = start_cluster(env, "node", env.pg_port, log_statements=True)
    start_cluster(env, "copy", copy_port, extra_args=("-b",))
    create_burst_schema(env.pg_port)
    cfg = write_sluice_config(env, os.path.join(env.dir, "sluice.toml"), env.sluice_port, metrics_port,
                              f'dsn = "host=127.0.0.1 port={copy_port} user=postgres"')
    b.run(full_sync_cmd(cfg))
    sluice_log = os.path.join(env.dir, "sluice.log")
    p = b.spawn([b.SLUICE_BIN, "run", "--config", cfg], sluice_log, env={**os.environ, "SLUICE_LOG": "warn"})
    b.wait_port(env.sluice_port, "sluice", p)
    # Builds with freshness tracking send lookups to the node until their
    # first refresh since start has checked the copy: wait for it.
    wait_copy_current(metrics_port, p, sluice_log, timeout=300, old_build_grace=10)

    classes = compile_burst()

    # "copy": the same calls straight to the catalog copy, which tells the
    # copy's own answer time from what sluice's path adds to it.
    ports = {"direct": env.pg_port, "sluice": env.sluice_port, "copy": copy_port}
    times = {target: [] for target in ports}
    reached = []
    calls = 0
    for rnd in range(b.ROUNDS):
        for target in ports:
            before = os.path.getsize(node_log)
            ms, calls = run_burst(classes, ports[target])
            times[target].append(ms)
            if target == "sluice":
                with open(node_log, errors="replace") as f:
                    f.seek(before)
                    lines = [line for line in f if "statement:" in line or "execute " in line]
                # Health checks (SELECT 1), JDBC's connection SETs, its read of
                # pg_settings (live state: stays on the node by design) and
                # sluice's own change probe are not lookups.
                reached.append(sum(1 for line in lines if ("pg_catalog" in line or "information_schema" in line)
                                   and "sluice catalog probe" not in line and "pg_settings" not in line))
            b.log(f"round {rnd + 1} {target}: {ms} ms")

    def row(target):
        t = times[target]
        return f"| {target} | {min(t)} | {statistics.median(t)} | {max(t)} |"

    ratio = statistics.median(times["sluice"]) / statistics.median(times["direct"])
    print(f"Catalog burst: {TABLES} tables, {calls} DatabaseMetaData calls per run, {b.ROUNDS} interleaved rounds, "
          f"{os.cpu_count()} cores.\n")
    print("| target | min ms | median ms | max ms |\n|---|---|---|---|")
    print(row("direct"))
    print(row("sluice"))
    print(row("copy"))
    copy_ratio = statistics.median(times["copy"]) / statistics.median(times["direct"])
    print(f"\nsluice / direct (median wall time): {ratio:.2f}; the copy queried directly / direct: "
          f"{copy_ratio:.2f}; statements that reached the node during the "
          f"sluice runs (pg_catalog / information_schema statements, per run): {reached}")
    b.stop_children()
    shutil.rmtree(env.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
