#!/usr/bin/env python3
"""Pooling (issue 17): idle clients on a node that admits few sessions.

For N idle clients (BENCH_IDLE_LIST, default "1000 5000") through sluice
with [pooling] idle_detach and max_node_connections = 90, and through
sluice without pooling: how many connect, sluice's RSS, node sessions in
use, and pgbench -S TPS of 16 busy clients beside them vs without them.
Then the cost of a re-attach: the latency of a query that finds its session
detached (idle_detach = 50ms, a pause of 200 ms before each query) against
one that finds it attached.

    cargo build --release --bin sluice
    python3 bench/pooling.py          # prints a Markdown table

Reuses bench.py's environment (PostgreSQL, pgbench tables, sluice start).
"""

import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402

NODE_MAX = 100
CAP = 90
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
IDLE_LIST = [int(n) for n in os.environ.get("BENCH_IDLE_LIST", "1000 5000").split()]


def node_sessions(env):
    out = subprocess.run(
        ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(env.pg_port), "-U", "postgres", "-c",
         "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'", "postgres"],
        capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) - 1


def open_some(port, n):
    """Opens up to n idle sessions; returns (sockets, refused)."""
    socks, refused = [], 0
    for _ in range(n):
        try:
            socks.extend(bench.open_idle(port, 1))
        except (RuntimeError, OSError):
            refused += 1
    return socks, refused


def tps(env, target):
    out = bench.pgbench(env, target, ["-S", "-c", "16", "-j", "2", "-T", str(SECONDS), "-M", "simple"])
    return out[0] if isinstance(out, tuple) else out


def query_us(port, pause):
    """Median latency of SELECT 1 on one session, each after `pause` s idle."""
    s = bench.open_idle(port, 1)[0]
    q = b"SELECT 1\0"
    msg = b"Q" + struct.pack("!i", len(q) + 4) + q
    times = []
    for _ in range(40):
        time.sleep(pause)
        t0 = time.perf_counter()
        s.sendall(msg)
        buf = b""
        while not buf.endswith(b"Z\0\0\0\x05I"):
            buf += s.recv(65536)
        times.append((time.perf_counter() - t0) * 1e6)
    bench.close_all([s])
    times.sort()
    return times[len(times) // 2]


def main():
    bench.IDLE = max(IDLE_LIST)
    env = bench.Env()
    bench.atexit.register(bench.stop_children)
    env.start_postgres()
    subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(env.pg_port), "-U", "postgres", "-c",
                    f"ALTER SYSTEM SET max_connections = {NODE_MAX}", "postgres"], check=True)
    env.pg.terminate()
    env.pg.wait()
    data = os.path.join(env.dir, "pg")
    env.pg = bench.spawn([os.path.join(env.bindir, "postgres"), "-D", data],
                         os.path.join(env.dir, "postgres2.log"), **bench.as_server_user())
    bench.wait_port(env.pg_port, "PostgreSQL", env.pg)
    time.sleep(0.5)
    pooled = f'[pooling]\nidle_detach = "1s"\nmax_node_connections = {CAP}\nwait_timeout = "120s"\n'
    env.start_sluice("sluice")
    env.start_sluice("sluice+pool", pooled)
    rows = []
    # One sluice at a time: the other's kept connections would take node
    # sessions the measured one needs.
    for target in ("sluice", "sluice+pool"):
        for n in IDLE_LIST:
            port = env.port(target)
            base = tps(env, target)
            rss0 = env.proxies[target].rss_mib()
            t0 = time.perf_counter()
            socks, refused = open_some(port, n)
            opened = time.perf_counter() - t0
            time.sleep(2)
            used = node_sessions(env)
            rss1 = env.proxies[target].rss_mib()
            busy = tps(env, target) if used < NODE_MAX - 16 or target == "sluice+pool" else None
            bench.close_all(socks)
            rows.append((n, target, len(socks), refused, opened, used, rss0, rss1, base, busy))
            bench.log(f"{n} idle via {target}: {len(socks)} connected, {refused} refused, "
                      f"{used} node sessions, RSS {rss0:.1f} -> {rss1:.1f} MiB, tps {base:.0f} -> {busy}")
            time.sleep(3)
        if target == "sluice":
            os.kill(env.proxies[target].pid, 15)
            time.sleep(2)
    rows.sort(key=lambda r: (r[0], r[1]))
    attached = query_us(env.port("sluice+pool"), 0.2)
    env.start_sluice("sluice+detach", '[pooling]\nidle_detach = "50ms"\n')
    detached = query_us(env.port("sluice+detach"), 0.2)
    print(f"| idle clients | target | connected | refused | open s | node sessions | RSS MiB before → with | "
          f"TPS 16 busy without → with |")
    print("|---|---|---|---|---|---|---|---|")
    for n, target, ok, refused, opened, used, rss0, rss1, base, busy in rows:
        busy_text = f"{busy:,.0f}" if busy else "— (node full)"
        print(f"| {n} | {target} | {ok} | {refused} | {opened:.1f} | {used} | {rss0:.1f} → {rss1:.1f} | "
              f"{base:,.0f} → {busy_text} |")
    print()
    print(f"SELECT 1 after 200 ms idle: on a session still attached (idle_detach 1s) {attached:.0f} µs; on one "
          f"that detached at 50 ms (re-attach to a kept connection) {detached:.0f} µs (medians of 40)")
    bench.stop_children()


if __name__ == "__main__":
    main()
