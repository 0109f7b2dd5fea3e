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
"""

import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402

TABLES = int(os.environ.get("BENCH_TABLES", "200"))
JAR = "/usr/share/java/postgresql.jar"


def start_cluster(env, name, port, extra_args=(), log_statements=False):
    data = os.path.join(env.dir, name)
    b.run([os.path.join(env.bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
           "-E", "UTF8", "--locale=C", "--no-sync"], **b.as_server_user())
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{env.dir}'\n"
                "fsync = off\nsynchronous_commit = off\n")
        if log_statements:
            f.write("log_statement = 'all'\n")
    p = b.spawn([os.path.join(env.bindir, "postgres"), "-D", data, *extra_args],
                os.path.join(env.dir, f"{name}.log"), **b.as_server_user())
    b.wait_port(port, name, p)
    return os.path.join(env.dir, f"{name}.log")


def psql(port, sql, db="postgres"):
    return b.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
                  "-U", "postgres", "-d", db, "-c", sql])


def main():
    b.atexit.register(b.stop_children)
    env = b.Env()
    copy_port = b.free_port()
    node_log = start_cluster(env, "node", env.pg_port, log_statements=True)
    start_cluster(env, "copy", copy_port, extra_args=("-b",))
    ddl = ["CREATE SCHEMA burst;", "CREATE TABLE burst.t0 (id int PRIMARY KEY);"]
    for i in range(1, TABLES):
        cols = ", ".join(f"c{j} text" for j in range(7))
        ddl.append(f"CREATE TABLE burst.t{i} (id int PRIMARY KEY, parent int REFERENCES burst.t{i-1}, "
                   f"amount numeric(12,2), {cols});")
        ddl.append(f"CREATE INDEX ON burst.t{i} (c0);")
    psql(env.pg_port, "\n".join(ddl))
    cfg = os.path.join(env.dir, "sluice.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{env.sluice_port}"
metrics_listen = ""

[warehouse]
nodes = ["127.0.0.1:{env.pg_port}"]
service_user = "postgres"

[catalog]
dsn = "host=127.0.0.1 port={copy_port} user=postgres"
""")
    b.run([b.SLUICE_BIN, "catalog-sync", "--config", cfg])
    p = b.spawn([b.SLUICE_BIN, "run", "--config", cfg], os.path.join(env.dir, "sluice.log"),
                env={**os.environ, "SLUICE_LOG": "warn"})
    b.wait_port(env.sluice_port, "sluice", p)

    classes = tempfile.mkdtemp(prefix="sluice-burst-")
    b.run(["javac", "-d", classes, os.path.join(b.ROOT, "bench", "MetadataBurst.java")])

    def burst(port):
        out = b.run(["java", "-cp", f"{classes}:{JAR}", "MetadataBurst",
                     f"jdbc:postgresql://127.0.0.1:{port}/postgres?sslmode=disable", "burst"])
        fields = dict(kv.split("=") for kv in out.split())
        return int(fields["ms"]), int(fields["calls"])

    # "copy": the same calls straight to the catalog copy, which tells the
    # copy's own answer time from what sluice's path adds to it.
    ports = {"direct": env.pg_port, "sluice": env.sluice_port, "copy": copy_port}
    times = {target: [] for target in ports}
    reached = []
    calls = 0
    for rnd in range(b.ROUNDS):
        for target in ports:
            before = os.path.getsize(node_log)
            ms, calls = burst(ports[target])
            times[target].append(ms)
            if target == "sluice":
                with open(node_log, errors="replace") as f:
                    f.seek(before)
                    lines = [line for line in f if "statement:" in line or "execute " in line]
                # Health checks (SELECT 1) and JDBC's connection SETs are not lookups.
                reached.append(sum(1 for line in lines if "pg_catalog" in line or "information_schema" in line))
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


if __name__ == "__main__":
    main()
