#!/usr/bin/env python3
"""Workload 7: pgbench -S through sluice with 50 rules loaded vs none.

One node with pgbench data (scale 10); two sluice instances in front of it,
one without rules and one with 50 rules that never match pgbench's query (so
every rule is evaluated on every query, and nothing is rejected); pgbench -S,
16 clients, 2 threads, BENCH_SECONDS per run, for -M simple and extended,
direct / sluice without rules / sluice with rules interleaved, BENCH_ROUNDS
rounds. Reports median TPS and the ratios.

Run: bash bench/run.sh rules   (or python3 bench/rules_on_off.py)
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402


def rules_toml(n):
    out = []
    for i in range(n):
        kind = i % 5
        cond = {
            0: f'pattern = "(?i)\\\\bforbidden_table_{i}\\\\b"',
            1: f'tables = ["archive_{i}.*"]',
            2: f'users = ["nobody_{i}"]',
            3: f'statement = ["delete"]\ntables = ["pgbench_history_{i}"]',
            4: f'select_star = true\ntables = ["big_{i}*"]',
        }[kind]
        out.append(f'[[rules]]\nname = "rule-{i}"\n{cond}\naction = "reject"\nmessage = "never matches pgbench"\n')
    return "\n".join(out)


def main():
    b.atexit.register(b.stop_children)
    env = b.Env()
    env.start_postgres()
    ports = {}
    for name, rules in (("sluice", ""), ("sluice+50 rules", rules_toml(50))):
        port = b.free_port()
        cfg = os.path.join(env.dir, f"{port}.toml")
        with open(cfg, "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{port}"
metrics_listen = ""

[warehouse]
nodes = ["127.0.0.1:{env.pg_port}"]
service_user = "postgres"

{rules}
""")
        p = b.spawn([b.SLUICE_BIN, "run", "--config", cfg], os.path.join(env.dir, f"{port}.log"),
                    env={**os.environ, "SLUICE_LOG": "warn"})
        b.wait_port(port, name, p)
        ports[name] = port
    targets = {"direct": env.pg_port, **ports}
    tps = {}
    for rnd in range(b.ROUNDS):
        for mode in ("simple", "extended"):
            for target, port in targets.items():
                cmd = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-S", "-c", "16",
                       "-j", "2", "-T", str(b.SECONDS), "-M", mode, "postgres"]
                out = b.run(cmd)
                value = float(next(line for line in out.splitlines() if line.startswith("tps")).split()[2])
                tps.setdefault((mode, target), []).append(value)
                b.log(f"round {rnd + 1} {mode} {target}: {value:.0f} tps")
    print(f"pgbench -S, 16 clients, 2 threads, {b.SECONDS} s per run, {b.ROUNDS} interleaved rounds, "
          f"{os.cpu_count()} cores.\n")
    print("| -M | direct tps | sluice tps | sluice + 50 rules tps | rules on / off | rules on / direct |")
    print("|---|---|---|---|---|---|")
    for mode in ("simple", "extended"):
        d, off, on = (statistics.median(tps[(mode, t)]) for t in ("direct", "sluice", "sluice+50 rules"))
        print(f"| {mode} | {d:,.0f} | {off:,.0f} | {on:,.0f} | {on / off:.2f} | {on / d:.2f} |")


if __name__ == "__main__":
    main()
