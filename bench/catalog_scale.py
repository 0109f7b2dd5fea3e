#!/usr/bin/env python3
"""catalog-scale: how the catalog copy's sync, freshness and change probe
scale with the size of the warehouse's schema.

An anchor-model warehouse: one PostgreSQL node (a throwaway cluster, run as
the `postgres` OS user when root, pg_stat_statements preloaded) whose
database `postgres` holds N tables in schema `anchors`, each an anchor-model
attribute: 3 columns (id bigint, value text, changed_at timestamptz) and a
primary key (id, changed_at). For each N in BENCH_SCALE_TABLES (ascending;
the schema grows from one size to the next):

  floor  `pg_dump --schema-only --binary-upgrade | psql` into a fresh
         database of the external copy: what any full sync has to pay
         (BENCH_SCALE_BASELINE=0 skips it);
  (a)    full sync: `sluice catalog-sync --config F --full` into an external
         copy (a `postgres -b` server started here): wall seconds, sluice's
         own peak RSS (VmHWM, sampled every 50 ms), the peak RSS of its
         largest child (pg_dump, psql) and wait4's ru_maxrss (the largest of
         sluice and its children); then the copy is checked to hold N tables;
  (b)    `sluice run` with a managed copy (BENCH_SCALE_COPY=managed, the
         default: catalog.data_dir in a fresh directory under the work dir)
         or with the external one (=external), probe_interval
         BENCH_PROBE_INTERVAL ("10s"); once sluice_catalog_stale{database=
         "postgres"} is 0, `CREATE TABLE anchors.fresh_direct (id int)` runs
         directly on the node, and `SELECT count(*) FROM pg_catalog.pg_class
         WHERE relname='fresh_direct'` is sent through sluice every 100 ms
         until it returns 1: the time a change made behind sluice's back
         takes to show; then the time until the copy is current again;
  (c)    `CREATE TABLE anchors.fresh_via (id int)` through sluice on one
         connection, then at once the same lookup on another: whether it saw
         the table at once, and the time until the copy is current again (a
         successful refresh and the stale gauge back at 0): the incremental
         refresh as a client sees it, with sluice's own "catalog refresh
         finished" log line and sluice_catalog_refresh_seconds;
  (d)    the change probe's cost on the node: sluice idle for
         BENCH_PROBE_SECONDS (60), pg_stat_statements reset before; calls
         and total_exec_time of the statements carrying '/* sluice catalog
         probe */', scaled per hour; other statements sluice sent meanwhile
         (health checks) are counted beside them.

Every wait has a timeout (BENCH_SCALE_TIMEOUT, 3600 s, for syncs; less for
the rest); a phase that fails or times out is reported as such and the run
goes on. The report goes to target/bench/catalog_scale.md (and .json).

Run:   bash bench/run.sh catalog-scale          (builds sluice first)
       BENCH_SCALE_TABLES="200 2000" BENCH_PROBE_SECONDS=20 python3 bench/catalog_scale.py
       python3 bench/catalog_scale.py --without-sluice   # node, schema, floor and the probe's
                                                         # SQL (read from src/catalog/shape.rs)
                                                         # run by hand: no sluice needed
Environment: BENCH_SCALE_TABLES ("2000 20000 100000"), BENCH_SCALE_COPY
(managed | external), BENCH_PROBE_INTERVAL ("10s"), BENCH_PROBE_SECONDS (60),
BENCH_SCALE_BASELINE (1), BENCH_SCALE_TIMEOUT (3600), BENCH_NODE_MAX_LOCKS (the
node's max_locks_per_transaction; default: enough for pg_dump of the biggest
size, ~N/100), BENCH_SLUICE_BIN.
"""

import datetime
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402
import catalog_burst as cb  # noqa: E402

SIZES = sorted(int(n) for n in os.environ.get("BENCH_SCALE_TABLES", "2000 20000 100000").split())
COPY_KIND = os.environ.get("BENCH_SCALE_COPY", "managed")
PROBE_INTERVAL = os.environ.get("BENCH_PROBE_INTERVAL", "10s")
PROBE_SECONDS = float(os.environ.get("BENCH_PROBE_SECONDS", "60"))
BASELINE = os.environ.get("BENCH_SCALE_BASELINE", "1") == "1"
SYNC_TIMEOUT = float(os.environ.get("BENCH_SCALE_TIMEOUT", "3600"))
# pg_dump locks every table it dumps in one transaction: with PostgreSQL's
# default (64) it fails past ~12,800 tables ("out of shared memory"). The node
# gets enough for the biggest size unless this sets it (e.g. 64, to show that).
NODE_LOCKS = int(os.environ.get("BENCH_NODE_MAX_LOCKS", "0"))
WITHOUT_SLUICE = "--without-sluice" in sys.argv[1:]
MARKER = "sluice catalog probe"
# Leads every statement this driver sends to the node itself, so that
# pg_stat_statements counts can leave them out.
OWN = "/* sluice bench */"
LOOKUP = "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = '{}'"
OUT = os.path.join(b.ROOT, "target", "bench")


def seconds_of(duration):
    """ "10s", "500ms", "2m" -> seconds."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(ms|s|m|h)?\s*", duration)
    if not m:
        sys.exit(f"cannot read the duration {duration!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


# ---------------------------------------------------------------- a small client


class Session:
    """A minimal PostgreSQL client: protocol 3.0, trust authentication,
    simple queries, text results. One connection kept open, so that a lookup
    polled every 100 ms costs no connection start (psql would)."""

    def __init__(self, port, timeout=30, application_name="sluice-bench"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        params = (b"user\0postgres\0database\0postgres\0application_name\0"
                  + application_name.encode() + b"\0\0")
        body = struct.pack("!i", 3 << 16) + params
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self._until_ready()

    def _exactly(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        return buf

    def _until_ready(self):
        rows, error = [], None
        while True:
            kind = self._exactly(1)
            (length,) = struct.unpack("!i", self._exactly(4))
            body = self._exactly(length - 4)
            if kind == b"R":
                (code,) = struct.unpack("!i", body[:4])
                if code != 0:
                    raise ConnectionError(f"authentication {code} asked; only trust is supported here")
            elif kind == b"E":
                fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
                error = f"{fields.get(b'C', '?')}: {fields.get(b'M', '?')}"
            elif kind == b"D":
                (n,) = struct.unpack("!h", body[:2])
                pos, row = 2, []
                for _ in range(n):
                    (size,) = struct.unpack("!i", body[pos:pos + 4])
                    pos += 4
                    row.append(None if size < 0 else body[pos:pos + size].decode())
                    pos += max(size, 0)
                rows.append(row)
            elif kind == b"Z":
                if error:
                    raise RuntimeError(error)
                return rows

    def query(self, sql):
        data = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(data) + 4) + data)
        return self._until_ready()

    def value(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows and rows[0] else None

    def close(self):
        try:
            self.sock.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------- the node


def node_sql(port, sql, db="postgres", timeout=600):
    """One statement (or several) on a server, unaligned tuples only."""
    return b.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
                  "-U", "postgres", "-d", db, "-c", sql], timeout=timeout).strip()


def anchor_ddl(i):
    return (f"CREATE TABLE anchors.a{i:06d} (id bigint NOT NULL, value text, changed_at timestamptz NOT NULL, "
            f"PRIMARY KEY (id, changed_at));")


def anchor_count(port):
    return int(node_sql(port, f"{OWN} SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                              "ON n.oid = c.relnamespace WHERE n.nspname = 'anchors' AND c.relkind = 'r' "
                              "AND c.relname LIKE 'a%'"))


def grow_schema(port, want):
    """Creates anchors.a<have+1> .. a<want> in one psql script, 500 tables
    per transaction (the lock table holds what one transaction creates);
    returns (tables created, seconds)."""
    have = anchor_count(port)
    if have >= want:
        return 0, 0.0
    lines = ["SET client_min_messages = warning;"]
    for start in range(have + 1, want + 1, 500):
        lines.append("BEGIN;")
        lines.extend(anchor_ddl(i) for i in range(start, min(start + 500, want + 1)))
        lines.append("COMMIT;")
    t0 = time.perf_counter()
    out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
                          "-U", "postgres", "-d", "postgres", "-f", "-"], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, timeout=SYNC_TIMEOUT)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"creating anchors.a{have + 1}..a{want} failed:\n{out.stderr[-2000:]}")
    return want - have, took


def locks_for(tables):
    """max_locks_per_transaction for one transaction locking `tables`
    relations (pg_dump locks every table it dumps; a restore in one
    transaction locks each table, its index and its TOAST table and index):
    the lock table has max_locks_per_transaction x ~(max_connections + 22) slots."""
    return max(64, math.ceil((tables + 2000) / 100))


# ---------------------------------------------------------------- measuring a process


def status_kib(pid, key="VmHWM"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid):
    """Process ids below pid (from /proc/*/stat's ppid field)."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found.extend(kids)
        frontier.extend(kids)
    return found


def measure(cmd, logfile, timeout, env=None):
    """Runs cmd to its end; returns a dict: exit code, wall seconds, the
    process's own peak RSS (VmHWM sampled every 50 ms; VmHWM only grows, so
    the last sample misses at most the last 50 ms), the largest peak RSS of
    any process below it, and wait4's ru_maxrss (the largest of the process
    and the children it waited for), all in MiB."""
    with open(logfile, "w") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    own = kids = 0
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        own = max(own, status_kib(p.pid))
        for child in descendants(p.pid):
            kids = max(kids, status_kib(child))
        if time.perf_counter() - t0 > timeout:
            for child in descendants(p.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
            p.kill()
            p.wait()
            return {"code": None, "wall_s": time.perf_counter() - t0, "error": f"timed out after {timeout:.0f} s"}
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"code": p.returncode, "wall_s": wall, "own_peak_mib": own / 1024, "child_peak_mib": kids / 1024,
            "maxrss_mib": usage.ru_maxrss / 1024}


# ---------------------------------------------------------------- sluice


def sluice_config(env, port, metrics_port, copy):
    """`copy`: ("external", port) or ("managed", data_dir)."""
    kind, where = copy
    catalog = (f'dsn = "host=127.0.0.1 port={where} user=postgres"' if kind == "external"
               else f'data_dir = "{where}"')
    path = os.path.join(env.dir, f"sluice-{kind}-{port}.toml")
    return cb.write_sluice_config(env, path, port, metrics_port,
                                  f'{catalog}\npostgres_bin = "{env.bindir}"\nprobe_interval = "{PROBE_INTERVAL}"')


class Sluice:
    """A `sluice run` with its config, log and metrics port."""

    def __init__(self, env, copy, label):
        self.port = b.free_port()
        self.metrics = b.free_port()
        self.copy = copy
        self.cfg = sluice_config(env, self.port, self.metrics, copy)
        self.log = os.path.join(env.dir, f"sluice-run-{label}.log")
        self.proc = b.spawn([b.SLUICE_BIN, "run", "--config", self.cfg], self.log,
                            env={**os.environ, "SLUICE_LOG": os.environ.get("SLUICE_LOG", "info")})

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited ({self.proc.returncode}) at start:\n" + cb.tail(self.log))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"sluice did not listen on {self.port} within {timeout:.0f} s:\n" + cb.tail(self.log))

    def wait_current(self, timeout, refreshes_above=None):
        return cb.wait_copy_current(self.metrics, self.proc, self.log, timeout, refreshes_above=refreshes_above)

    def samples(self):
        return cb.scrape(self.metrics)

    def log_size(self):
        return os.path.getsize(self.log)

    def refreshes_logged(self, since):
        """sluice's "catalog refresh finished" lines after byte `since`, as dicts of their fields."""
        found = []
        with open(self.log, errors="replace") as f:
            f.seek(since)
            for line in f:
                if "catalog refresh finished" in line:
                    fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))
                    found.append({k: v.strip('"') for k, v in fields.items()})
        return found

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                b.log("sluice did not stop within 90 s; killed")
                self.proc.kill()
                self.proc.wait()
        if self.copy[0] == "managed":
            stop_leftover_copy(self.copy[1])


def stop_leftover_copy(data_dir):
    """A managed copy still running after its sluice stopped (sluice stops
    it with pg_ctl on exit; this is for a sluice that was killed)."""
    pidfile = os.path.join(data_dir, "postmaster.pid")
    if os.path.exists(pidfile):
        try:
            pid = int(open(pidfile).readline())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return
        b.log(f"the managed copy in {data_dir} (pid {pid}) outlived sluice: pg_ctl stop -m immediate")
        subprocess.run([os.path.join(b.pg_bindir(), "pg_ctl"), "-D", data_dir, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60, **b.as_server_user())


def duration_s(text):
    """A Rust Duration's Debug form ("1.2345ms", "3.1s", "950µs") in seconds."""
    m = re.fullmatch(r"([\d.]+)(ns|µs|us|ms|s)", text or "")
    if not m:
        return None
    return float(m.group(1)) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1}[m.group(2)]


def refresh_histogram(samples):
    """{kind: (count, sum s)} of sluice_catalog_refresh_seconds."""
    out = {}
    for (name, labels), v in samples.items():
        for suffix, i in (("_count", 0), ("_sum", 1)):
            if name == "sluice_catalog_refresh_seconds" + suffix:
                kind = dict(labels).get("kind", "?")
                pair = list(out.get(kind, (0, 0.0)))
                pair[i] = v
                out[kind] = tuple(pair)
    return out


# ---------------------------------------------------------------- pg_stat_statements


def reset_statements(port):
    node_sql(port, f"{OWN} SELECT pg_stat_statements_reset()")


def statement_stats(port):
    """Since the last reset: (probe calls, probe exec ms, [(calls, ms, text)] of the probe's statements,
    other statements' calls and their texts), leaving out this driver's own."""
    rows = node_sql(port, f"""{OWN} SELECT calls, round(total_exec_time::numeric, 3),
        position('{MARKER}' in query) > 0,
        replace(replace(left(regexp_replace(query, '\\s+', ' ', 'g'), 90), '|', '/'), E'\\n', ' ')
      FROM pg_stat_statements
     WHERE query NOT LIKE '%sluice bench%' AND query NOT LIKE '%pg_stat_statements%'
     ORDER BY calls DESC""")
    probe_calls, probe_ms, probe, other_calls, other = 0, 0.0, [], 0, []
    for line in rows.splitlines():
        calls, ms, is_probe, text = line.split("|", 3)
        if is_probe == "t":
            probe_calls += int(calls)
            probe_ms += float(ms)
            probe.append((int(calls), float(ms), text))
        else:
            other_calls += int(calls)
            other.append((int(calls), float(ms), text))
    return probe_calls, probe_ms, probe, other_calls, other


# ---------------------------------------------------------------- the phases


def baseline(env, copy_port, n):
    """pg_dump --schema-only --binary-upgrade | psql into a fresh database of the external copy."""
    node_sql(copy_port, "DROP DATABASE IF EXISTS bench_floor")
    node_sql(copy_port, "CREATE DATABASE bench_floor TEMPLATE template0")
    pipe = (f"set -o pipefail; {env.bindir}/pg_dump --schema-only --binary-upgrade -h 127.0.0.1 "
            f"-p {env.pg_port} -U postgres -d postgres | psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 "
            f"-p {copy_port} -U postgres -d bench_floor -o /dev/null")
    r = measure(["bash", "-c", pipe], os.path.join(env.dir, f"floor-{n}.log"), SYNC_TIMEOUT)
    if r["code"] != 0:
        r["error"] = r.get("error") or f"exit {r['code']}: " + cb.tail(os.path.join(env.dir, f"floor-{n}.log"), 5)
    else:
        r["tables"] = copy_tables(copy_port, "bench_floor")
    node_sql(copy_port, "DROP DATABASE IF EXISTS bench_floor")
    return r


def copy_tables(copy_port, db="postgres"):
    return int(node_sql(copy_port, "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                                   "ON n.oid = c.relnamespace WHERE n.nspname = 'anchors' AND c.relkind = 'r' "
                                   "AND c.relname LIKE 'a%'", db=db))


def full_sync(env, copy_port, n):
    """(a) sluice catalog-sync --full into the external copy."""
    cfg = sluice_config(env, b.free_port(), b.free_port(), ("external", copy_port))
    log_path = os.path.join(env.dir, f"catalog-sync-{n}.log")
    r = measure(cb.full_sync_cmd(cfg), log_path, SYNC_TIMEOUT, env={**os.environ, "SLUICE_LOG": "info"})
    if r["code"] != 0:
        r["error"] = r.get("error") or f"exit {r['code']}: " + cb.tail(log_path, 8)
    else:
        r["tables"] = copy_tables(copy_port)
    return r


def direct_change(env, s, res):
    """(b) DDL directly on the node; polled through sluice every 100 ms."""
    wait = 3 * seconds_of(PROBE_INTERVAL) + 120
    before = s.samples()
    refreshes0 = cb.ok_refreshes(before)
    mark = s.log_size()
    probe = Session(s.port)
    try:
        if probe.value(LOOKUP.format("fresh_direct")) != "0":
            raise RuntimeError("anchors.fresh_direct is already there")
        node_sql(env.pg_port, f"{OWN} CREATE TABLE anchors.fresh_direct (id int)")
        t0 = time.monotonic()
        stale_at = visible_at = None
        while visible_at is None:
            if time.monotonic() - t0 > wait:
                raise TimeoutError(f"fresh_direct not visible through sluice after {wait:.0f} s")
            if s.proc.poll() is not None:
                raise RuntimeError("sluice exited:\n" + cb.tail(s.log))
            if probe.value(LOOKUP.format("fresh_direct")) == "1":
                visible_at = time.monotonic() - t0
            if stale_at is None and cb.metric(s.samples(), "sluice_catalog_stale", database="postgres") == 1:
                stale_at = time.monotonic() - t0
            if visible_at is None:
                time.sleep(0.1)
        res["b_visible_s"] = visible_at
        res["b_stale_seen_s"] = stale_at
        s.wait_current(SYNC_TIMEOUT, refreshes_above=refreshes0)
        res["b_current_s"] = time.monotonic() - t0
        res["b_copy_answers"] = probe.value(LOOKUP.format("fresh_direct")) == "1"
        res["b_refreshes"] = s.refreshes_logged(mark)
    finally:
        probe.close()


def via_sluice_change(s, res):
    """(c) DDL through sluice; the lookup at once from another session."""
    before = s.samples()
    refreshes0 = cb.ok_refreshes(before)
    res["c_histogram_before"] = refresh_histogram(before)
    mark = s.log_size()
    ddl, lookup = Session(s.port), Session(s.port)
    try:
        if lookup.value(LOOKUP.format("fresh_via")) != "0":
            raise RuntimeError("anchors.fresh_via is already there")
        t0 = time.monotonic()
        ddl.query("CREATE TABLE anchors.fresh_via (id int)")
        committed = time.monotonic()
        res["c_seen_at_once"] = lookup.value(LOOKUP.format("fresh_via")) == "1"
        res["c_ddl_s"] = committed - t0
        s.wait_current(SYNC_TIMEOUT, refreshes_above=refreshes0)
        res["c_current_s"] = time.monotonic() - committed
        res["c_copy_answers"] = lookup.value(LOOKUP.format("fresh_via")) == "1"
        res["c_refreshes"] = s.refreshes_logged(mark)
        after = s.samples()
        res["c_histogram_after"] = refresh_histogram(after)
    finally:
        ddl.close()
        lookup.close()


def probe_cost(env, s, res):
    """(d) sluice idle for PROBE_SECONDS; the probe's statements on the node.
    The window starts one probe interval after (c), once the copy is current:
    the probe's next reading after a change sluice refreshed itself may start
    one more refresh, which is (c)'s, not the idle cost."""
    settle = time.monotonic() + 1.5 * seconds_of(PROBE_INTERVAL)
    while time.monotonic() < settle:
        if s.proc.poll() is not None:
            raise RuntimeError("sluice exited:\n" + cb.tail(s.log))
        time.sleep(0.5)
    s.wait_current(SYNC_TIMEOUT)
    refreshes0 = cb.ok_refreshes(s.samples())
    reset_statements(env.pg_port)
    t0 = time.monotonic()
    while time.monotonic() - t0 < PROBE_SECONDS:
        if s.proc.poll() is not None:
            raise RuntimeError("sluice exited:\n" + cb.tail(s.log))
        time.sleep(min(1.0, PROBE_SECONDS))
    window = time.monotonic() - t0
    record_probe_stats(env, res, window)
    res["d_refreshes_during"] = cb.ok_refreshes(s.samples()) - refreshes0


def record_probe_stats(env, res, window):
    calls, ms, probe, other_calls, other = statement_stats(env.pg_port)
    res.update({"d_window_s": window, "d_probe_calls": calls, "d_probe_ms": ms, "d_probe_statements": probe,
                "d_other_calls": other_calls, "d_other_statements": other[:10]})


def emulated_probe(env, res):
    """--without-sluice: the probe's SQL (from src/catalog/shape.rs) run on
    the node 5 times by hand, read back through pg_stat_statements like (d)."""
    try:
        src = open(os.path.join(b.ROOT, "src", "catalog", "shape.rs")).read()
        sql = re.search(r'pub const PROBE: &str = "(.*?)";\n', src, re.S).group(1).replace('\\"', '"')
    except (OSError, AttributeError):
        res["d_error"] = "no PROBE constant in src/catalog/shape.rs"
        return
    reset_statements(env.pg_port)
    t0 = time.monotonic()
    for _ in range(5):
        node_sql(env.pg_port, sql)
    record_probe_stats(env, res, time.monotonic() - t0)
    res["d_emulated"] = True


# ---------------------------------------------------------------- the report


def fmt(v, digits=1):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    return f"{v:,.{digits}f}"


def cell(res, key, digits=1, error_key=None):
    """A figure, or the phase's error."""
    err = res.get(error_key) if error_key else None
    if err:
        return "failed: " + err.splitlines()[0][:80].replace("|", "/")
    return fmt(res.get(key), digits)


def report(results, started, versions):
    lines = []
    add = lines.append
    add(f"Run {started:%Y-%m-%d %H:%M} UTC. " + "; ".join(f"{k}: {v}" for k, v in versions.items()) + ".")
    add("")
    add("Schema: N tables `anchors.aNNNNNN (id bigint, value text, changed_at timestamptz, "
        "PRIMARY KEY (id, changed_at))` in the node's database `postgres` (each: a table, its index, a "
        "TOAST table and index, a row type and an array type in the catalogs).")
    add("")
    add("### Full sync")
    add("")
    add("| tables | created in s (this step) | pg_dump \\| psql (floor) s | pg_dump, psql peak RSS MiB "
        "| `catalog-sync --full` s | sluice peak RSS MiB | its largest child MiB | tables in the copy |")
    add("|---|---|---|---|---|---|---|---|")
    for r in results:
        fl = r.get("floor") or ({"error": r["floor_error"]} if r.get("floor_error") else {})
        a = r.get("a") or ({"error": r["a_error"]} if r.get("a_error") else {})
        add(f"| {r['tables']:,} | {fmt(r.get('created_s'))} ({r.get('created', 0):,} tables) "
            f"| {cell(fl, 'wall_s', 1, 'error')} | {fmt(fl.get('child_peak_mib'))} "
            f"| {cell(a, 'wall_s', 1, 'error')} | {fmt(a.get('own_peak_mib'))} | {fmt(a.get('child_peak_mib'))} "
            f"| {fmt(a.get('tables'), 0)} |")
    add("")
    if WITHOUT_SLUICE:
        add("(run with --without-sluice: no sluice figures)")
        add("")
    add(f"### Freshness (`sluice run`, {COPY_KIND} copy, probe_interval {PROBE_INTERVAL})")
    add("")
    add("| tables | copy current after start s | (b) direct DDL visible through sluice s | (b) stale seen at s "
        "| (b) copy current again s | (c) DDL via sluice seen at once | (c) copy current again s "
        "| (c) refresh (sluice's log) |")
    add("|---|---|---|---|---|---|---|---|")
    for r in results:
        refresh = "; ".join(f"{x.get('kind', '?')}, {x.get('relations', '?')} rel., {x.get('elapsed', '?')}"
                            for x in r.get("c_refreshes", [])) or "—"
        add(f"| {r['tables']:,} | {cell(r, 'start_current_s', 1, 'start_error')} "
            f"| {cell(r, 'b_visible_s', 2, 'b_error')} | {fmt(r.get('b_stale_seen_s'), 2)} "
            f"| {fmt(r.get('b_current_s'), 2)}{'' if r.get('b_copy_answers', True) else ' (copy lacks it!)'} "
            f"| {cell(r, 'c_seen_at_once', 0, 'c_error')} "
            f"| {fmt(r.get('c_current_s'), 2)}{'' if r.get('c_copy_answers', True) else ' (copy lacks it!)'} "
            f"| {refresh} |")
    add("")
    add("sluice_catalog_refresh_seconds at the end of each size's run (count / sum s, per kind): "
        + "; ".join(f"{r['tables']:,}: " + ", ".join(f"{k} {int(c)} / {s:.2f}"
                                                        for k, (c, s) in r.get("histogram_end", {}).items())
                    for r in results if r.get("histogram_end")) + ".")
    add("")
    add(f"### Change probe on the node ({'probe SQL run 5 times by hand' if WITHOUT_SLUICE else f'sluice idle for {PROBE_SECONDS:.0f} s'}, "
        "pg_stat_statements)")
    add("")
    add("| tables | probe statements | rounds | exec ms per round | per hour: calls | per hour: node exec s "
        "| other statements from sluice per hour | refreshes during the window |")
    add("|---|---|---|---|---|---|---|---|")
    for r in results:
        w = r.get("d_window_s")
        if r.get("d_error") or not w:
            add(f"| {r['tables']:,} | {('failed: ' + r['d_error'].splitlines()[0][:80]) if r.get('d_error') else '—'} "
                "| | | | | | |")
            continue
        calls, ms = r["d_probe_calls"], r["d_probe_ms"]
        # A round sends each of its statements once: as many rounds as the most-called one's calls.
        rounds = max((c for c, _, _ in r.get("d_probe_statements", [])), default=0)
        per_h = 3600 / w
        add(f"| {r['tables']:,} | {calls} | {rounds} | {fmt(ms / rounds if rounds else None, 2)} "
            f"| {'—' if r.get('d_emulated') else fmt(calls * per_h, 0)} "
            f"| {'—' if r.get('d_emulated') else fmt(ms * per_h / 1000, 2)} "
            f"| {'—' if r.get('d_emulated') else fmt(r['d_other_calls'] * per_h, 0)} "
            f"| {fmt(r.get('d_refreshes_during'), 0)} |")
    add("")
    texts = [f"{r['tables']:,}: " + ", ".join(f"{c} × `{t[27:75].strip()}…` ({ms:.1f} ms)"
                                             for c, ms, t in r.get("d_probe_statements", []))
             for r in results if r.get("d_probe_statements")]
    if texts:
        add("Probe statements in the window, by text (calls, total exec time): " + "; ".join(texts) + ".")
        add("")
    return "\n".join(lines) + "\n"


def versions_of(env):
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    rev = first_line(["git", "-C", b.ROOT, "rev-parse", "--short", "HEAD"])
    return {
        "cores": str(os.cpu_count()),
        "load average at start": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "PostgreSQL": first_line([os.path.join(env.bindir, "postgres"), "--version"]),
        "sluice": "not run" if WITHOUT_SLUICE else f"{first_line([b.SLUICE_BIN, '--version'])} (git {rev}, "
                                                   f"{b.SLUICE_BIN})",
    }


def main():
    if not WITHOUT_SLUICE:
        cb.require_new_sluice("python3 bench/catalog_scale.py --without-sluice runs the parts that need no sluice")
    if COPY_KIND not in ("managed", "external"):
        sys.exit("BENCH_SCALE_COPY is managed or external")
    started = datetime.datetime.now(datetime.timezone.utc)
    b.atexit.register(b.stop_children)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    env = b.Env()
    b.log("work dir", env.dir)
    versions = versions_of(env)
    biggest = max(SIZES)
    node_conf = ("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = 'top'\n"
                 f"max_locks_per_transaction = {NODE_LOCKS or locks_for(biggest)}\nmax_wal_size = '8GB'\n"
                 "checkpoint_timeout = '30min'\nshared_buffers = '256MB'\n")
    cb.start_cluster(env, "node", env.pg_port, conf=node_conf)
    node_sql(env.pg_port, f"{OWN} CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE SCHEMA anchors")
    copy_port = b.free_port()
    # The external copy: a restore in one transaction locks ~4 relations per table.
    cb.start_cluster(env, "copy", copy_port, extra_args=("-b",),
                     conf=f"max_locks_per_transaction = {locks_for(5 * biggest)}\nmax_wal_size = '8GB'\n"
                          "checkpoint_timeout = '30min'\n")
    results = []
    os.makedirs(OUT, exist_ok=True)

    def save():
        text = report(results, started, versions)
        with open(os.path.join(OUT, "catalog_scale.md"), "w") as f:
            f.write(text)
        with open(os.path.join(OUT, "catalog_scale.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        return text

    def attempt(res, phase, fn):
        """Runs one phase; a failure or timeout is recorded as `<phase>_error` and the run goes on."""
        try:
            fn()
            return True
        except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as e:
            text = str(e) + (f"\n{e.stderr}" if getattr(e, "stderr", None) else "")
            res[f"{phase}_error"] = text
            b.log(f"  ({phase}) failed: {text}")
            return False

    for n in SIZES:
        res = {"tables": n}
        results.append(res)
        b.log(f"== {n:,} tables")
        for t in ("fresh_direct", "fresh_via"):
            node_sql(env.pg_port, f"{OWN} DROP TABLE IF EXISTS anchors.{t}")
        res["created"], res["created_s"] = grow_schema(env.pg_port, n)
        b.log(f"  created {res['created']:,} tables in {res['created_s']:.1f} s")
        if BASELINE:
            attempt(res, "floor", lambda: res.update(floor=baseline(env, copy_port, n)))
            b.log(f"  floor pg_dump | psql: {res.get('floor')}")
        if WITHOUT_SLUICE:
            attempt(res, "d", lambda: emulated_probe(env, res))
            b.log(f"  probe SQL by hand: {res.get('d_probe_calls')} calls, {res.get('d_probe_ms')} ms")
            save()
            continue
        attempt(res, "a", lambda: res.update(a=full_sync(env, copy_port, n)))
        b.log(f"  (a) catalog-sync --full: {res.get('a')}")
        save()
        if COPY_KIND == "managed":
            copy = ("managed", os.path.join(env.dir, f"managed-{n}"))  # sluice creates and initdb's it
        else:
            copy = ("external", copy_port)
        s = Sluice(env, copy, str(n))

        def start():
            t0 = time.monotonic()
            s.wait_listening(SYNC_TIMEOUT)
            s.wait_current(SYNC_TIMEOUT)
            res["start_current_s"] = time.monotonic() - t0
            b.log(f"  copy current {res['start_current_s']:.1f} s after start")

        if attempt(res, "start", start):
            for phase, fn in (("b", lambda: direct_change(env, s, res)), ("c", lambda: via_sluice_change(s, res)),
                              ("d", lambda: probe_cost(env, s, res))):
                attempt(res, phase, fn)
                b.log(f"  ({phase}) " + ", ".join(f"{k}={v}" for k, v in res.items() if k.startswith(phase + "_")
                                                   and not isinstance(v, (list, dict))))
            res["histogram_end"] = refresh_histogram(s.samples())
        s.stop()
        if copy[0] == "managed":
            shutil.rmtree(copy[1], ignore_errors=True)
        save()
    text = save()
    print(text)
    b.log("wrote", os.path.join(OUT, "catalog_scale.md"))
    b.stop_children()
    shutil.rmtree(env.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
