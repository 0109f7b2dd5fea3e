#!/usr/bin/env python3
"""The benchmark driver behind bench/run.sh (read that file first).

Starts a throwaway PostgreSQL node with pgbench data (scale 10), PgBouncer
in session mode and sluice (release build) in front of it, on free ports;
runs each workload against the three targets interleaved (direct, PgBouncer,
sluice, direct, ...) for BENCH_ROUNDS rounds; samples the proxies' CPU time
(/proc/PID/stat utime+stime) and peak RSS (VmHWM, reset through
/proc/PID/clear_refs before each run); writes a markdown report.

Everything it starts is stopped at exit. Only loopback addresses are used.
"""

import atexit
import datetime
import json
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WORKLOADS = os.environ.get("BENCH_WORKLOADS", "1 2 3 4 6 7").split()
MODES = os.environ.get("BENCH_MODES", "simple extended prepared").split()
COPY_ROWS = int(os.environ.get("BENCH_COPY_ROWS", "3000000"))
IDLE = int(os.environ.get("BENCH_IDLE", "1000"))
UPDATE_DOC = os.environ.get("BENCH_UPDATE_DOC", "1") == "1"
# Another build (e.g. an older commit's, for an A/B run) with BENCH_SLUICE_BIN.
SLUICE_BIN = os.environ.get("BENCH_SLUICE_BIN", os.path.join(ROOT, "target", "release", "sluice"))
FLOOR_BIN = os.path.join(ROOT, "target", "release", "examples", "relay_floor")
PROBE_BIN = os.path.join(ROOT, "target", "release", "examples", "latency_probe")
# Workload 2's interleaved measure: transactions per target per run of the probe.
PROBE_ROUNDS = int(os.environ.get("BENCH_PROBE_ROUNDS", "5000"))
TICK = os.sysconf("SC_CLK_TCK")
TARGETS = ["direct", "pgbouncer", "sluice"]
# Workloads 1 and 2 also run through the relay floor (examples/relay_floor.rs):
# a relay that only copies bytes, the least any proxy hop costs here.
WITH_FLOOR = TARGETS + ["floor"]
IS_ROOT = os.geteuid() == 0

children = []


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir():
    for v in ("17", "16", "15", "14", "13"):
        d = f"/usr/lib/postgresql/{v}/bin"
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    sys.exit("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")


def as_server_user():
    """Popen arguments that run a program as `postgres` when we are root:
    initdb, postgres and pgbouncer refuse to run as root."""
    if not IS_ROOT:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": "/"}


def chown_to_server(path):
    if IS_ROOT:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def spawn(cmd, logfile, **kw):
    out = open(logfile, "w")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
    children.append(p)
    return p


def stop_children():
    for p in reversed(children):
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in reversed(children):
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_port(port, what, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port} within {timeout} s")


# ---------------------------------------------------------------- processes


class Proc:
    """CPU time and memory of one process, from /proc."""

    def __init__(self, pid):
        self.pid = pid

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15; after the comm field is cut
        # off, they are at 11 and 12. For a process they cover all threads.
        return (int(fields[11]) + int(fields[12])) / TICK

    def status_kib(self, key):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def reset_peak(self):
        """Resets VmHWM to the current RSS (Linux >= 4.0)."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def peak_rss_mib(self):
        return self.status_kib("VmHWM") / 1024

    def rss_mib(self):
        return self.status_kib("VmRSS") / 1024


class Env:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-bench-")
        os.chmod(self.dir, 0o755)
        chown_to_server(self.dir)
        self.bindir = pg_bindir()
        self.pg_port = free_port()
        self.bouncer_port = free_port()
        self.sluice_port = free_port()
        self.proxies = {}
        # sluice instances other than the plain one (workload 7's, ...).
        self.extra_ports = {}

    def port(self, target):
        return {"direct": self.pg_port, "pgbouncer": self.bouncer_port, "sluice": self.sluice_port,
                **self.extra_ports}[target]

    def start_postgres(self):
        data = os.path.join(self.dir, "pg")
        log("initdb", data)
        run([os.path.join(self.bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync"], **as_server_user())
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(f"""
port = {self.pg_port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.dir}'
max_connections = {IDLE + 100}
shared_buffers = '256MB'
fsync = off
synchronous_commit = off
full_page_writes = off
""")
        self.pg = spawn([os.path.join(self.bindir, "postgres"), "-D", data],
                        os.path.join(self.dir, "postgres.log"), **as_server_user())
        wait_port(self.pg_port, "PostgreSQL", self.pg)
        time.sleep(0.5)
        log("pgbench -i -s 10")
        run(["pgbench", "-i", "-s", "10", "-q", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres",
             "postgres"])
        run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-c",
             "VACUUM ANALYZE", "postgres"])

    def start_pgbouncer(self):
        self.start_pgbouncer_with(())

    def start_pgbouncer_with(self, wrapper):
        ini = os.path.join(self.dir, "pgbouncer.ini")
        users = os.path.join(self.dir, "userlist.txt")
        with open(users, "w") as f:
            f.write('"postgres" ""\n')
        with open(ini, "w") as f:
            f.write(f"""[databases]
* = host=127.0.0.1 port={self.pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.bouncer_port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = session
max_client_conn = {IDLE + 500}
default_pool_size = {IDLE + 50}
max_db_connections = 0
ignore_startup_parameters = extra_float_digits,options
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        for p in (ini, users):
            chown_to_server(p)
        p = spawn([*wrapper, "pgbouncer", ini], os.path.join(self.dir, "pgbouncer.out"), **as_server_user())
        wait_port(self.bouncer_port, "PgBouncer", p, timeout=120 if wrapper else 30)
        self.proxies["pgbouncer"] = Proc(p.pid)

    def start_sluice(self, target="sluice", rules="", wrapper=()):
        """Starts a sluice instance as `target` (with `rules`, TOML text, if
        any), under `wrapper` (e.g. valgrind) if given."""
        port = self.sluice_port if target == "sluice" else free_port()
        self.extra_ports[target] = port
        cfg = os.path.join(self.dir, f"{port}.toml")
        with open(cfg, "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{port}"
metrics_listen = ""
max_client_connections = {IDLE + 500}

[warehouse]
nodes = ["127.0.0.1:{self.pg_port}"]
service_user = "postgres"

{rules}
""")
        p = spawn([*wrapper, SLUICE_BIN, "run", "--config", cfg], os.path.join(self.dir, f"{port}.log"),
                  env={**os.environ, "SLUICE_LOG": "warn"})
        wait_port(port, target, p, timeout=120 if wrapper else 30)
        self.proxies[target] = Proc(p.pid)
        return p


    def start_floor(self, wrapper=()):
        port = free_port()
        self.extra_ports["floor"] = port
        p = spawn([*wrapper, FLOOR_BIN, f"127.0.0.1:{port}", f"127.0.0.1:{self.pg_port}"],
                  os.path.join(self.dir, "floor.log"))
        wait_port(port, "relay floor", p, timeout=120 if wrapper else 30)
        self.proxies["floor"] = Proc(p.pid)


def rules_toml(n):
    """Workload 7's rule set: n rules of five kinds that never match
    pgbench's query, so every rule is evaluated and nothing is rejected."""
    out = []
    for i in range(n):
        cond = {
            0: f'pattern = "(?i)\\\\bforbidden_table_{i}\\\\b"',
            1: f'tables = ["archive_{i}.*"]',
            2: f'users = ["nobody_{i}"]',
            3: f'statement = ["delete"]\ntables = ["pgbench_history_{i}"]',
            4: f'select_star = true\ntables = ["big_{i}*"]',
        }[i % 5]
        out.append(f'[[rules]]\nname = "rule-{i}"\n{cond}\naction = "reject"\nmessage = "never matches pgbench"\n')
    return "\n".join(out)


# ---------------------------------------------------------------- measuring


def pgbench(env, target, args, latencies=None):
    """Runs pgbench; returns (TPS, transactions). With a list for `latencies`,
    pgbench logs every transaction (-l) and their latencies in µs are appended."""
    log_dir = tempfile.mkdtemp(prefix="pgbench-log-", dir=env.dir) if latencies is not None else None
    extra = ["-l", f"--log-prefix={log_dir}/txn"] if log_dir else []
    cmd = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(env.port(target)), "-U", "postgres"] + args + extra + ["postgres"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    tps = float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))
    txns = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout).group(1))
    if log_dir:
        # One line per transaction: client, transaction, latency µs, script, epoch s, µs.
        for name in os.listdir(log_dir):
            with open(os.path.join(log_dir, name)) as f:
                latencies.extend(int(line.split()[2]) for line in f if line.strip())
        shutil.rmtree(log_dir, ignore_errors=True)
    return tps, txns


def measured(env, target, fn):
    """Runs fn(); returns (its result, proxy CPU seconds, proxy peak RSS MiB)."""
    proxy = env.proxies.get(target)
    if proxy:
        proxy.reset_peak()
        cpu0 = proxy.cpu_seconds()
    result = fn()
    if proxy:
        return result, proxy.cpu_seconds() - cpu0, proxy.peak_rss_mib()
    return result, None, None


class Results:
    """Samples per (workload, variant, target, metric)."""

    def __init__(self):
        self.samples = {}

    def add(self, key, target, metric, value):
        if value is not None:
            self.samples.setdefault((key, target, metric), []).append(value)

    def get(self, key, target, metric):
        return self.samples.get((key, target, metric), [])

    def median(self, key, target, metric):
        v = self.get(key, target, metric)
        return statistics.median(v) if v else None


def pgbench_workload(env, res, key, args, targets=TARGETS, latency=False):
    for target in targets:
        lat = [] if latency else None
        (tps, txns), cpu, peak = measured(env, target, lambda: pgbench(env, target, args, lat))
        res.add(key, target, "tps", tps)
        if lat:
            res.add(key, target, "median_latency_us", statistics.median(lat))
        if cpu is not None and txns:
            res.add(key, target, "cpu_us", cpu / txns * 1e6)
            res.add(key, target, "peak_mib", peak)
        log(f"  {key:<22} {target:<10} {tps:10.0f} tps" + (f"  {cpu / txns * 1e6:6.1f} µs CPU/txn" if cpu else ""))


def psql_stream(env, target, sql):
    cmd = ["psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(env.port(target)), "-U", "postgres",
           "-c", sql, "postgres"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def open_idle(port, n):
    """Opens n sessions (trust auth) and leaves them idle; returns the sockets."""
    body = struct.pack("!i", 3 << 16) + b"user\0postgres\0database\0postgres\0\0"
    startup = struct.pack("!i", len(body) + 4) + body
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(startup)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed during startup")
            buf += chunk
            # Messages: tag, length; stop at ReadyForQuery.
            pos, ready = 0, False
            while pos + 5 <= len(buf):
                tag = buf[pos:pos + 1]
                length = struct.unpack("!i", buf[pos + 1:pos + 5])[0]
                if pos + 1 + length > len(buf):
                    break
                if tag == b"E":
                    raise RuntimeError(buf[pos + 5:pos + 1 + length].decode(errors="replace"))
                if tag == b"Z":
                    ready = True
                pos += 1 + length
            if ready:
                break
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.sendall(b"X\0\0\0\4")
            s.close()
        except OSError:
            pass


# ---------------------------------------------------------------- workloads


def workload_1(env, res, rnd):
    for mode in MODES:
        pgbench_workload(env, res, f"1 16 clients {mode}", ["-S", "-c", "16", "-j", "2", "-T", str(SECONDS), "-M", mode],
                         WITH_FLOOR)


def workload_2(env, res, rnd):
    for mode in MODES:
        key = f"2 1 client {mode}"
        pgbench_workload(env, res, key, ["-S", "-c", "1", "-j", "1", "-T", str(SECONDS), "-M", mode],
                         WITH_FLOOR, latency=True)
        probe(env, res, key, mode)


def probe(env, res, key, mode):
    """examples/latency_probe.rs: one client, every target in turn, transaction by transaction."""
    cmd = [PROBE_BIN, mode, str(PROBE_ROUNDS)] + [f"{t}={env.port(t)}" for t in WITH_FLOOR]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    for line in out.stdout.splitlines():
        r = json.loads(line)
        res.add(key, r["target"], "probe_median_us", r["median_us"])
        res.add(key, r["target"], "probe_added_us", r["added_us"])
    log(f"  {key:<22} probe      " + "  ".join(
        f"{t} {res.get(key, t, 'probe_added_us')[-1]:+.1f}" for t in WITH_FLOOR[1:]) + " µs")


def workload_3(env, res, rnd):
    pgbench_workload(env, res, "3 churn -C 8 clients", ["-S", "-C", "-c", "8", "-j", "2", "-T", str(SECONDS)])


def workload_4(env, res, rnd):
    rows = f"SELECT g, md5(g::text), now() FROM generate_series(1,{COPY_ROWS}) g"
    for name, sql in (("4 COPY TO STDOUT", f"COPY ({rows}) TO STDOUT"), ("4 SELECT via psql", rows)):
        for target in TARGETS:
            wall, cpu, peak = measured(env, target, lambda: psql_stream(env, target, sql))
            res.add(name, target, "wall_s", wall)
            res.add(name, target, "cpu_s", cpu)
            res.add(name, target, "peak_mib", peak)
            log(f"  {name:<22} {target:<10} {wall:7.2f} s" + (f"  peak RSS {peak:.1f} MiB" if peak else ""))


def workload_5(env, res, rnd):
    # The catalog burst needs a catalog copy and a node with statement
    # logging; it has its own driver: bench/catalog_burst.py.
    log("  5 catalog burst: run `bash bench/run.sh catalog` (bench/catalog_burst.py)")


def workload_6(env, res, rnd):
    busy = ["-S", "-c", "16", "-j", "2", "-T", str(SECONDS), "-M", "simple"]
    for target in TARGETS:
        (tps0, _), _, _ = measured(env, target, lambda: pgbench(env, target, busy))
        proxy = env.proxies.get(target)
        rss0 = proxy.rss_mib() if proxy else None
        t0 = time.perf_counter()
        socks = open_idle(env.port(target), IDLE)
        opened = time.perf_counter() - t0
        try:
            rss1 = proxy.rss_mib() if proxy else None
            (tps1, _), _, _ = measured(env, target, lambda: pgbench(env, target, busy))
            rss2 = proxy.rss_mib() if proxy else None
        finally:
            close_all(socks)
        res.add("6 idle clients", target, "tps_without", tps0)
        res.add("6 idle clients", target, "tps_with", tps1)
        res.add("6 idle clients", target, "tps_ratio", tps1 / tps0)
        res.add("6 idle clients", target, "open_s", opened)
        if proxy:
            res.add("6 idle clients", target, "rss_idle_mib", rss1)
            res.add("6 idle clients", target, "rss_busy_mib", max(rss1, rss2))
            res.add("6 idle clients", target, "kib_per_idle", (rss1 - rss0) * 1024 / IDLE)
        log(f"  6 idle clients          {target:<10} {tps0:8.0f} -> {tps1:8.0f} tps"
            + (f", RSS {rss0:.1f} -> {rss1:.1f} MiB" if proxy else ""))
        time.sleep(1)  # let the node reap the closed backends


def workload_7(env, res, rnd):
    """Workload 1 with 50 rules loaded, beside the same without rules."""
    for mode in MODES:
        args = ["-S", "-c", "16", "-j", "2", "-T", str(SECONDS), "-M", mode]
        key = f"7 rules on, {mode}"
        for target in ("direct", "sluice", "sluice+rules"):
            (tps, txns), cpu, _ = measured(env, target, lambda: pgbench(env, target, args))
            res.add(key, target, "tps", tps)
            if cpu is not None and txns:
                res.add(key, target, "cpu_us", cpu / txns * 1e6)
            log(f"  {key:<22} {target:<12} {tps:10.0f} tps" + (f"  {cpu / txns * 1e6:6.1f} µs CPU/txn" if cpu else ""))


WORKLOAD_FNS = {"1": workload_1, "2": workload_2, "3": workload_3, "4": workload_4, "5": workload_5,
                "6": workload_6, "7": workload_7}


# ---------------------------------------------------------------- report


def fmt(v, digits=0):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def mmm(values, digits=0):
    if not values:
        return "—"
    return f"{fmt(min(values), digits)} / **{fmt(statistics.median(values), digits)}** / {fmt(max(values), digits)}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "—"


def report(env, res, started, versions):
    lines = []
    add = lines.append
    add(f"Run {started:%Y-%m-%d %H:%M} UTC; {SECONDS} s per pgbench run, {ROUNDS} interleaved round(s) "
        f"(direct, PgBouncer, sluice, direct, ...). Values are min / **median** / max over the rounds; "
        f"ratios compare medians.")
    add("")
    add("Machine and versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()) + ".")
    add("")
    # In the order they ran: workload, then mode as in BENCH_MODES.
    pg_keys = list(dict.fromkeys(k for (k, _, m) in res.samples if m == "tps" and k[0] in "123"))
    if pg_keys:
        add("### pgbench -S (scale 10): workloads 1 (16 clients, 2 threads), 2 (1 client), 3 (-C, 8 clients)")
        add("")
        add("| workload | direct TPS | PgBouncer TPS | sluice TPS | sluice / direct | sluice / PgBouncer "
            "| PgBouncer / direct | CPU µs/txn PgBouncer | CPU µs/txn sluice |")
        add("|---|---|---|---|---|---|---|---|---|")
        for k in pg_keys:
            d, b, s = (res.median(k, t, "tps") for t in TARGETS)
            add(f"| {k} | {mmm(res.get(k, 'direct', 'tps'))} | {mmm(res.get(k, 'pgbouncer', 'tps'))} "
                f"| {mmm(res.get(k, 'sluice', 'tps'))} | {ratio(s, d)} | {ratio(s, b)} | {ratio(b, d)} "
                f"| {fmt(res.median(k, 'pgbouncer', 'cpu_us'), 1)} | {fmt(res.median(k, 'sluice', 'cpu_us'), 1)} |")
        add("")
        floor_keys = [k for k in pg_keys if res.get(k, "floor", "tps")]
        if floor_keys:
            add("The relay floor (`examples/relay_floor.rs`: bytes copied, nothing else, one tokio thread) in "
                "the same rounds: what the extra hop itself costs, and sluice against it.")
            add("")
            add("| workload | relay floor TPS | floor / direct | floor / PgBouncer | sluice / floor "
                "| CPU µs/txn floor |")
            add("|---|---|---|---|---|---|")
            for k in floor_keys:
                d, b, s, f = (res.median(k, t, "tps") for t in WITH_FLOOR)
                add(f"| {k} | {mmm(res.get(k, 'floor', 'tps'))} | {ratio(f, d)} | {ratio(f, b)} | {ratio(s, f)} "
                    f"| {fmt(res.median(k, 'floor', 'cpu_us'), 1)} |")
            add("")
        lat_keys = [k for k in pg_keys if k.startswith("2 ")]
        if lat_keys:
            def added_table(title, metric, direct_header, direct_value, per_round):
                """A row per workload: direct's figure, then what each proxy adds, as the median over
                the rounds of per_round(proxy's `metric`, direct's of the same round)."""
                add(title)
                add("")
                add(f"| workload | {direct_header} | PgBouncer adds | relay floor adds | sluice adds |")
                add("|---|---|---|---|---|")
                for k in lat_keys:
                    d = res.get(k, "direct", metric)

                    def added(t):
                        diffs = [per_round(x, y) for x, y in zip(res.get(k, t, metric), d)]
                        return f"{statistics.median(diffs):+.1f} µs" if diffs else "—"

                    add(f"| {k} | {fmt(direct_value(d), 1) if d else '—'} | {added('pgbouncer')} "
                        f"| {added('floor')} | {added('sluice')} |")
                add("")

            added_table("Added latency per transaction at 1 client (1/TPS, median of the per-round differences):",
                        "tps", "direct µs/txn", lambda d: 1e6 / statistics.median(d), lambda x, y: 1e6 / x - 1e6 / y)
            added_table("The same from every transaction's own latency (`pgbench -l`): the median transaction "
                        "of each run, less the direct run's of the same round, median over the rounds. A median "
                        "transaction is not moved by the scheduler's occasional long stalls, which 1/TPS "
                        "averages in.", "median_latency_us", "direct median µs", statistics.median, lambda x, y: x - y)
            probe_keys = [k for k in lat_keys if res.get(k, "direct", "probe_median_us")]
            if probe_keys:
                add(f"Interleaved transaction by transaction (`examples/latency_probe.rs`, the precise measure): "
                    f"one client with a connection to every target sends pgbench -S's query through each in "
                    f"turn, {PROBE_ROUNDS:,} times per run (the order rotating), so every target meets the "
                    f"same moment's load; each cell is the median over the run of (target − direct) in the "
                    f"same turn, min / **median** / max over the rounds.")
                add("")
                add("| workload | direct median µs | PgBouncer adds | relay floor adds | sluice adds "
                    "| sluice − PgBouncer |")
                add("|---|---|---|---|---|---|")
                for k in probe_keys:
                    b = res.get(k, "pgbouncer", "probe_added_us")
                    s = res.get(k, "sluice", "probe_added_us")
                    gap = statistics.median([x - y for x, y in zip(s, b)]) if s and b else None
                    add(f"| {k} | {fmt(res.median(k, 'direct', 'probe_median_us'), 1)} "
                        f"| {mmm(b, 1)} | {mmm(res.get(k, 'floor', 'probe_added_us'), 1)} | {mmm(s, 1)} "
                        f"| {'—' if gap is None else f'{gap:+.1f} µs'} |")
                add("")
    stream = [k for k in dict.fromkeys(k for (k, _, _) in res.samples) if k.startswith("4 ")]
    if stream:
        add(f"### Workload 4: streaming {COPY_ROWS:,} rows through psql (`-A -t`, output to /dev/null)")
        add("")
        add("| workload | direct s | PgBouncer s | sluice s | sluice / direct | PgBouncer / direct "
            "| peak RSS PgBouncer MiB | peak RSS sluice MiB | CPU s PgBouncer | CPU s sluice |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for k in stream:
            d, b, s = (res.median(k, t, "wall_s") for t in TARGETS)
            add(f"| {k} | {mmm(res.get(k, 'direct', 'wall_s'), 2)} | {mmm(res.get(k, 'pgbouncer', 'wall_s'), 2)} "
                f"| {mmm(res.get(k, 'sluice', 'wall_s'), 2)} | {ratio(s, d)} | {ratio(b, d)} "
                f"| {fmt(max(res.get(k, 'pgbouncer', 'peak_mib'), default=None), 1)} "
                f"| {fmt(max(res.get(k, 'sluice', 'peak_mib'), default=None), 1)} "
                f"| {fmt(res.median(k, 'pgbouncer', 'cpu_s'), 2)} | {fmt(res.median(k, 'sluice', 'cpu_s'), 2)} |")
        add("")
    k = "6 idle clients"
    if res.get(k, "direct", "tps_with"):
        add(f"### Workload 6: {IDLE} idle sessions plus 16 busy (pgbench -S -M simple)")
        add("")
        add("| target | busy TPS without idle | busy TPS with idle | with / without | RSS with idle MiB "
            "| KiB per idle session | opening them took s |")
        add("|---|---|---|---|---|---|---|")
        for t in TARGETS:
            add(f"| {t} | {mmm(res.get(k, t, 'tps_without'))} | {mmm(res.get(k, t, 'tps_with'))} "
                f"| {fmt(res.median(k, t, 'tps_ratio'), 2)} | {fmt(res.median(k, t, 'rss_idle_mib'), 1)} "
                f"| {fmt(res.median(k, t, 'kib_per_idle'), 1)} | {fmt(res.median(k, t, 'open_s'), 1)} |")
        add("")
    rules = [k for k in dict.fromkeys(k for (k, _, _) in res.samples) if k.startswith("7 ")]
    if rules:
        add("### Workload 7: workload 1 with 50 rules loaded (a second sluice instance), beside sluice without rules")
        add("")
        add("| workload | direct TPS | sluice TPS | sluice + 50 rules TPS | rules on / off | rules on / direct "
            "| CPU µs/txn sluice | CPU µs/txn sluice + rules |")
        add("|---|---|---|---|---|---|---|---|")
        for k in rules:
            d, off, on = (res.median(k, t, "tps") for t in ("direct", "sluice", "sluice+rules"))
            add(f"| {k} | {mmm(res.get(k, 'direct', 'tps'))} | {mmm(res.get(k, 'sluice', 'tps'))} "
                f"| {mmm(res.get(k, 'sluice+rules', 'tps'))} | {ratio(on, off)} | {ratio(on, d)} "
                f"| {fmt(res.median(k, 'sluice', 'cpu_us'), 1)} | {fmt(res.median(k, 'sluice+rules', 'cpu_us'), 1)} |")
        add("")
    add("Workload 5 (catalog burst) has its own driver, `bash bench/run.sh catalog` (figures in the "
        "catalog offload section).")
    return "\n".join(lines) + "\n"


def versions_of():
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rev = first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    return {
        "cores": str(os.cpu_count()),
        "CPU": cpu,
        "kernel": os.uname().release,
        "load average at start": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "PostgreSQL": first_line([os.path.join(pg_bindir(), "postgres"), "--version"]),
        "pgbench": first_line(["pgbench", "--version"]),
        "PgBouncer": first_line(["pgbouncer", "--version"]),
        "sluice": f"{first_line([SLUICE_BIN, '--version'])} "
                  + (f"({SLUICE_BIN})" if "BENCH_SLUICE_BIN" in os.environ else f"(git {rev}, release build)"),
    }


def write_doc(text):
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    doc = open(path).read()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        doc = f"{head}{begin}\n{text}{end}{tail}"
    else:
        doc = f"{doc.rstrip()}\n\n{begin}\n{text}{end}\n"
    open(path, "w").write(doc)
    log("wrote", path)


def profile():
    """`bench/run.sh profile`: where sluice's CPU goes under workload 1
    (-M simple, 16 clients), with perf (Debian package linux-perf)."""
    env = Env()
    atexit.register(stop_children)
    env.start_postgres()
    env.start_sluice()
    pid = env.proxies["sluice"].pid
    data = os.path.join(ROOT, "target", "bench", "perf.data")
    os.makedirs(os.path.dirname(data), exist_ok=True)
    rec = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", data, "-p", str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (tps, txns), cpu, _ = measured(env, "sluice", lambda: pgbench(
        env, "sluice", ["-S", "-c", "16", "-j", "2", "-T", str(SECONDS), "-M", "simple"]))
    rec.send_signal(signal.SIGINT)
    rec.wait()
    log(f"sluice: {tps:.0f} tps, {cpu / txns * 1e6:.1f} µs CPU/txn; perf data in {data}")
    for args in (["--no-children", "--sort", "dso"], ["--no-children", "--sort", "symbol"]):
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--percent-limit", "1.5", "-g", "none"]
                             + args, capture_output=True, text=True).stdout
        print("\n".join(line for line in out.splitlines() if line and not line.startswith("#")))
    stop_children()
    shutil.rmtree(env.dir, ignore_errors=True)


def instructions():
    """`bench/run.sh instructions`: user-space instructions per transaction
    of each proxy, counted by callgrind (Debian package valgrind) while
    `pgbench -S -c 4 -j 1 -t N` runs through it; machine noise does not
    change them, so they compare two builds where TPS cannot. Counting
    starts after a warm-up (connections opened, caches filled) and covers
    only the measured pgbench run, connection set-up included (4 per run).
    Each count's callgrind dump is kept in target/bench/callgrind.TARGET.MODE
    (`callgrind_annotate` reads it)."""
    txns = int(os.environ.get("BENCH_TXNS", "2000"))
    env = Env()
    atexit.register(stop_children)
    env.start_postgres()
    # In the work directory: PgBouncer runs as the server user.
    out_dir = env.dir

    def wrapper(name):
        return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={out_dir}/callgrind.{name}.%p"]

    env.start_pgbouncer_with(wrapper("pgbouncer"))
    env.start_floor(wrapper("floor"))
    env.start_sluice("sluice", wrapper=wrapper("sluice"))
    env.start_sluice("sluice+rules", rules_toml(50), wrapper=wrapper("sluice-rules"))
    targets = ("pgbouncer", "floor", "sluice", "sluice+rules")
    counts = {}
    for target in targets:
        pid = str(env.proxies[target].pid)
        for mode in MODES:
            args = ["-S", "-c", "4", "-j", "1", "-M", mode]
            pgbench(env, target, args + ["-t", "200"])
            # vgdb finds a process by its user: PgBouncer runs as the server user.
            as_owner = as_server_user() if target == "pgbouncer" else {}
            for step in ("--zero", "--instr=on"):
                run(["callgrind_control", step, pid], **as_owner)
            pgbench(env, target, args + ["-t", str(txns)])
            for step in ("--instr=off", "--dump"):
                run(["callgrind_control", step, pid], **as_owner)
            dump = newest_dump(out_dir, pid)
            counts[(target, mode)] = dump_total(dump) / (4 * txns)
            kept = os.path.join(ROOT, "target", "bench", f"callgrind.{target.replace('+', '-')}.{mode}")
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            shutil.copy(dump, kept)
            log(f"  {target:<13} {mode:<9} {counts[(target, mode)]:8,.0f} instructions/txn")
    print(f"User-space instructions per transaction (callgrind; pgbench -S -c 4 -j 1 -t {txns}, "
          "after a 200-transaction warm-up):\n")
    print("| -M | PgBouncer | relay floor | sluice | sluice + 50 rules |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | " + " | ".join(f"{counts[(t, mode)]:,.0f}" for t in targets) + " |")
    stop_children()
    shutil.rmtree(env.dir, ignore_errors=True)


def newest_dump(out_dir, pid):
    """The newest callgrind dump of process pid."""
    dumps = [os.path.join(out_dir, f) for f in os.listdir(out_dir) if f.endswith(f".{pid}") or f".{pid}." in f]
    return max(dumps, key=os.path.getmtime)


def dump_total(path):
    with open(path) as f:
        for line in f:
            # The header's summary is written before the counts; the totals after them.
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main():
    if sys.argv[1:] == ["profile"]:
        return profile()
    if sys.argv[1:] == ["instructions"]:
        return instructions()
    for binary in (SLUICE_BIN, FLOOR_BIN, PROBE_BIN):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: "
                     "cargo build --release --bin sluice --example relay_floor --example latency_probe")
    started = datetime.datetime.now(datetime.timezone.utc)
    atexit.register(stop_children)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    env = Env()
    log("work dir", env.dir)
    versions = versions_of()
    env.start_postgres()
    env.start_pgbouncer()
    env.start_sluice()
    if {"1", "2"} & set(WORKLOADS):
        env.start_floor()
    if "7" in WORKLOADS:
        env.start_sluice("sluice+rules", rules_toml(50))
    res = Results()
    for rnd in range(1, ROUNDS + 1):
        log(f"round {rnd}/{ROUNDS}")
        for w in WORKLOADS:
            WORKLOAD_FNS[w](env, res, rnd)
    text = report(env, res, started, versions)
    out = os.path.join(ROOT, "target", "bench")
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, "report.md"), "w").write(text)
    print(text)
    if UPDATE_DOC:
        write_doc(text)
    stop_children()
    shutil.rmtree(env.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
