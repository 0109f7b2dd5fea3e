#!/usr/bin/env python3
"""Transaction pooling (issue 17): pgbench -S with 64 and 256 clients on a
node sluice and PgBouncer may each open at most 32 connections to:
sluice with [[pooling.transaction]] vs PgBouncer with pool_mode =
transaction, interleaved, BENCH_ROUNDS rounds of BENCH_SECONDS each.
-M simple for both; -M prepared for sluice only when PgBouncer is older
than 1.21 (it cannot keep protocol-level prepared statements in
transaction mode before that).

    cargo build --release --bin sluice
    python3 bench/transaction.py      # prints a Markdown table
"""

import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402

CAP = 32
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CLIENTS = [int(c) for c in os.environ.get("BENCH_CLIENTS", "64 256").split()]


def start_pgbouncer_transaction(env):
    ini = os.path.join(env.dir, "pgbouncer-tx.ini")
    users = os.path.join(env.dir, "userlist-tx.txt")
    with open(users, "w") as f:
        f.write('"postgres" ""\n')
    port = bench.free_port()
    with open(ini, "w") as f:
        f.write(f"""[databases]
* = host=127.0.0.1 port={env.pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = {CAP}
max_db_connections = {CAP}
ignore_startup_parameters = extra_float_digits,options
logfile = {env.dir}/pgbouncer-tx.log
pidfile = {env.dir}/pgbouncer-tx.pid
""")
    for p in (ini, users):
        bench.chown_to_server(p)
    p = bench.spawn(["pgbouncer", ini], os.path.join(env.dir, "pgbouncer-tx.out"), **bench.as_server_user())
    bench.wait_port(port, "PgBouncer", p)
    env.extra_ports["pgbouncer-tx"] = port
    env.proxies["pgbouncer-tx"] = bench.Proc(p.pid)


def version(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def main():
    env = bench.Env()
    bench.atexit.register(bench.stop_children)
    env.start_postgres()
    start_pgbouncer_transaction(env)
    env.start_sluice("sluice-tx", f"""[pooling]
max_node_connections = {CAP}
wait_timeout = "60s"

[[pooling.transaction]]
applications = ["pgbench"]
""")
    bouncer_prepared = version(["pgbouncer", "--version"]) >= (1, 21)
    runs = {}
    for rnd in range(ROUNDS):
        for clients in CLIENTS:
            for mode in ("simple", "prepared"):
                for target in ("pgbouncer-tx", "sluice-tx"):
                    if mode == "prepared" and target == "pgbouncer-tx" and not bouncer_prepared:
                        continue
                    args = ["-S", "-c", str(clients), "-j", "2", "-T", str(SECONDS), "-M", mode]
                    tps, _ = bench.pgbench(env, target, args)
                    runs.setdefault((clients, mode, target), []).append(tps)
                    bench.log(f"round {rnd + 1}: {clients} clients -M {mode} {target}: {tps:,.0f} tps")
    print(f"| clients | -M | PgBouncer (transaction) | sluice (transaction) | sluice / PgBouncer |")
    print("|---|---|---|---|---|")
    for clients in CLIENTS:
        for mode in ("simple", "prepared"):
            b = runs.get((clients, mode, "pgbouncer-tx"))
            s = runs.get((clients, mode, "sluice-tx"))
            med = lambda v: statistics.median(v) if v else None
            fmt = lambda v: f"{min(v):,.0f} / **{med(v):,.0f}** / {max(v):,.0f}" if v else "— (not supported)"
            ratio = f"{med(s) / med(b):.2f}×" if b and s else "—"
            print(f"| {clients} | {mode} | {fmt(b)} | {fmt(s)} | {ratio} |")
    bench.stop_children()


if __name__ == "__main__":
    main()
