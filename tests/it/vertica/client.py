"""vertica-python through sluice in front of PostgreSQL, checked against psycopg.

Run by tests/it/vertica.rs as: client.py SCENARIO SLUICE_PORT NODE_PORT [options...]
Every check raises (non-zero exit, with the reason) when it fails; the last
line printed is "ok SCENARIO".
"""

import datetime
import decimal
import sys
import threading
import time

import psycopg
import vertica_python
from vertica_python import errors
from vertica_python.vertica import messages

scenario, sluice_port, node_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
flags = set(sys.argv[4:])


def vertica(**extra):
    opts = {
        "host": "127.0.0.1",
        "port": sluice_port,
        "user": extra.pop("user", "postgres"),
        "password": extra.pop("password", ""),
        "database": "postgres",
        "tlsmode": "require" if "tls" in flags else "disable",
        "connection_load_balance": "load_balance" in flags,
        "connection_timeout": 10,
    }
    opts.update(extra)
    return vertica_python.connect(**opts)


def direct():
    return psycopg.connect(
        f"host=127.0.0.1 port={node_port} user=postgres dbname=postgres", autocommit=True
    )


def normalize(v):
    """One comparable form for what the two drivers return."""
    if isinstance(v, datetime.timedelta):
        return ("interval", v.days * 86400 + v.seconds, v.microseconds)
    if type(v).__name__ == "relativedelta":
        secs = ((v.days * 24 + v.hours) * 60 + v.minutes) * 60 + v.seconds
        return ("interval", secs, v.microseconds)
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def check_equal(label, got, want):
    g = [[normalize(x) for x in row] for row in got]
    w = [[normalize(x) for x in row] for row in want]
    if g != w:
        for i, (gr, wr) in enumerate(zip(g, w)):
            for j, (a, b) in enumerate(zip(gr, wr)):
                if a != b:
                    print(f"{label}: row {i} column {j}: vertica-python {a!r} != psycopg {b!r}")
        raise SystemExit(f"{label}: results differ\n vertica-python: {g}\n psycopg: {w}")
    print(f"{label}: {len(g)} rows equal")


TYPES_SQL = """
SELECT 42::int4 AS i4, (-9007199254740993)::int8 AS i8, 7::int2 AS i2,
       1.5::float8 AS f8, 0.25::float4 AS f4, 12345.678::numeric(10,3) AS num,
       'héllo, wörld'::varchar AS vc, 'abc'::text AS tx, 'x'::char(3) AS ch,
       true AS bt, false AS bf, DATE '2024-02-29' AS d,
       TIMESTAMP '2024-02-29 13:14:15.123456' AS ts,
       TIMESTAMPTZ '2024-02-29 13:14:15.5+00' AS tstz,
       INTERVAL '1 day 02:03:04.5' AS iv, INTERVAL '-3 hours' AS ivn,
       '\\x00015c7fff41'::bytea AS ba, NULL::int AS n_int, NULL::text AS n_txt,
       NULL::bytea AS n_ba
"""


def types():
    with direct() as pg:
        want = pg.execute(TYPES_SQL).fetchall()
        want_cols = [c.name for c in pg.execute(TYPES_SQL).description]
    with vertica() as conn:
        cur = conn.cursor()
        cur.execute(TYPES_SQL)
        got = cur.fetchall()
        cols = [c.name for c in cur.description]
        assert cols == want_cols, (cols, want_cols)
        check_equal("simple query", got, want)
        # The same through a prepared statement.
        cur.execute(TYPES_SQL, use_prepared_statements=True)
        check_equal("prepared", cur.fetchall(), want)
        cur.execute("SELECT 1 WHERE false")
        assert cur.fetchall() == []
        print("server protocol", conn.parameters.get("protocol_version"))


def prepared():
    with direct() as pg:
        pg.execute("DROP TABLE IF EXISTS vp_items")
        pg.execute("CREATE TABLE vp_items (id int, name varchar(40), price numeric(8,2), seen bool, data bytea)")
    with vertica(autocommit=True, use_prepared_statements=True) as conn:
        cur = conn.cursor()
        rows = [
            (1, "one", decimal.Decimal("1.50"), True, b"a\\b\x00"),
            (2, "two's", decimal.Decimal("2.25"), False, b"\xff\xfe"),
            (3, None, None, None, None),
        ]
        cur.executemany("INSERT INTO vp_items VALUES (?, ?, ?, ?, ?)", rows)
        cur.execute("SELECT id, name, price, seen, data FROM vp_items WHERE id >= ? ORDER BY id", [1])
        got = cur.fetchall()
        check_equal("executemany + prepared select", got, [list(r) for r in rows])
        cur.execute("SELECT name FROM vp_items WHERE id = ? AND name <> '?'", [2])
        assert cur.fetchall() == [["two's"]]
    with direct() as pg:
        want = pg.execute("SELECT id, name, price, seen, data FROM vp_items ORDER BY id").fetchall()
        check_equal("stored as psycopg reads it", want, [list(r) for r in rows])


def failures():
    # vertica-python sends Sync after a failed prepare but leaves its
    # ReadyForQuery unread, so each prepared case gets its own connection.
    for sql, state, prepared in [
            ("SELECT * FROM no_such_table", "42P01", False),
            ("SELECT 1/0", "22012", False),
            ("SELEC 1", "42601", True),
            ("SELECT * FROM no_such_table WHERE a = ?", "42P01", True),
    ]:
        with vertica(autocommit=True) as conn:
            cur = conn.cursor()
            try:
                if prepared:
                    cur.execute(sql, [1] if "?" in sql else None, use_prepared_statements=True)
                else:
                    cur.execute(sql)
            except errors.QueryError as e:
                assert e.sqlstate == state, (sql, e.sqlstate, str(e))
                assert "Error Code: ERROR" not in str(e), str(e)
                print(f"{sql!r}: SQLSTATE {e.sqlstate}")
            else:
                raise SystemExit(f"{sql!r} did not fail")
            if not prepared:
                # The session is still usable.
                cur.execute("SELECT 2")
                assert cur.fetchall() == [[2]]


def transactions():
    with direct() as pg:
        pg.execute("DROP TABLE IF EXISTS vp_tx")
        pg.execute("CREATE TABLE vp_tx (v int)")
    count = lambda: direct().execute("SELECT count(*) FROM vp_tx").fetchone()[0]
    with vertica() as conn:  # Vertica's default: autocommit off
        assert conn.autocommit is False
        cur = conn.cursor()
        cur.execute("INSERT INTO vp_tx VALUES (1)")
        assert count() == 0, "uncommitted insert visible"
        conn.rollback()
        cur.execute("SELECT count(*) FROM vp_tx")
        assert cur.fetchall() == [[0]], "rollback did not undo"
        cur.execute("INSERT INTO vp_tx VALUES (2)")
        cur.execute("INSERT INTO vp_tx VALUES (3)")
        conn.commit()
        assert count() == 2, "commit lost rows"
        conn.autocommit = True
        assert conn.autocommit is True
        cur.execute("INSERT INTO vp_tx VALUES (4)")
        assert count() == 3, "autocommit insert not visible"
        conn.autocommit = False
        assert conn.autocommit is False
        cur.execute("INSERT INTO vp_tx VALUES (5)")
        assert count() == 3
        conn.rollback()
        assert count() == 3
    with vertica(autocommit=True) as conn:
        assert conn.autocommit is True
        conn.cursor().execute("INSERT INTO vp_tx VALUES (6)")
        assert count() == 4


def detach():
    """Pauses long enough for sluice to detach the session (idle, outside a
    transaction) between statements; what the session set and its
    transactions must not notice."""
    with direct() as pg:
        pg.execute("DROP TABLE IF EXISTS vp_detach")
        pg.execute("CREATE TABLE vp_detach (v int)")
    with vertica() as conn:  # autocommit off
        cur = conn.cursor()
        cur.execute("SET search_path TO pg_catalog, public")
        conn.commit()
        cur.execute("INSERT INTO vp_detach VALUES (1)")
        conn.commit()
        time.sleep(0.5)  # idle outside a transaction: detached
        cur.execute("INSERT INTO vp_detach VALUES (2)")
        time.sleep(0.5)  # inside a transaction: stays attached
        cur.execute("INSERT INTO vp_detach VALUES (3)")
        conn.rollback()
        time.sleep(0.5)
        cur.execute("SELECT count(*), current_setting('search_path') FROM vp_detach")
        assert cur.fetchall() == [[1, "pg_catalog, public"]], "state lost across a detach"
        conn.commit()
        time.sleep(0.5)
        try:
            cur.execute("SELECT 1/0")
            raise AssertionError("no error")
        except vertica_python.errors.Error:
            pass
        conn.rollback()
        cur.execute("SELECT 42")
        assert cur.fetchall() == [[42]]


def statement_rollback():
    """Vertica's error semantics in its drivers' default mode (autocommit
    off): an error rolls back only the failing statement; the transaction
    goes on, COMMIT keeps what came before, ROLLBACK still undoes it all."""
    with direct() as pg:
        pg.execute("DROP TABLE IF EXISTS vp_stmt")
        pg.execute("CREATE TABLE vp_stmt (v int PRIMARY KEY)")
    count = lambda: direct().execute("SELECT count(*) FROM vp_stmt").fetchone()[0]
    with vertica() as conn:
        assert conn.autocommit is False
        cur = conn.cursor()
        cur.execute("INSERT INTO vp_stmt VALUES (1)")
        for bad, state in [("SELECT 1/0", "22012"), ("INSERT INTO vp_stmt VALUES (1)", "23505")]:
            try:
                cur.execute(bad)
            except errors.QueryError as e:
                assert e.sqlstate == state, (bad, e.sqlstate, str(e))
            else:
                raise SystemExit(f"{bad!r} did not fail")
            # Not 25P02: the transaction goes on.
            cur.execute("SELECT count(*) FROM vp_stmt")
            assert cur.fetchall() == [[1]], "the statement before the error was lost"
        # Prepared statements too, and an error in a prepared one.
        cur.execute("INSERT INTO vp_stmt VALUES (?)", [2], use_prepared_statements=True)
        try:
            cur.execute("INSERT INTO vp_stmt VALUES (?)", [2], use_prepared_statements=True)
        except errors.QueryError as e:
            assert e.sqlstate == "23505", (e.sqlstate, str(e))
        else:
            raise SystemExit("a duplicate key did not fail")
        cur.execute("INSERT INTO vp_stmt VALUES (3)")
        assert count() == 0, "uncommitted rows visible"
        conn.commit()
        assert count() == 3, f"COMMIT kept {count()} rows, not the 3 good ones"
        # A rollback of the whole transaction is still possible.
        cur.execute("INSERT INTO vp_stmt VALUES (4)")
        try:
            cur.execute("SELECT 1/0")
        except errors.QueryError:
            pass
        cur.execute("INSERT INTO vp_stmt VALUES (5)")
        conn.rollback()
        assert count() == 3, "ROLLBACK left rows behind"
        cur.execute("SELECT count(*) FROM vp_stmt")
        assert cur.fetchall() == [[3]]
        # COPY in the transaction: its data follows the statement, nothing
        # of sluice's comes between them.
        cur.copy("COPY vp_stmt FROM STDIN", "100\n101\n")
        cur.execute("SELECT count(*) FROM vp_stmt")
        assert cur.fetchall() == [[5]], "COPY in a transaction"
        conn.rollback()
        # Statements that set how the transaction runs run as they are.
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SHOW transaction_isolation")
        assert cur.fetchall() == [["repeatable read"]]
        conn.rollback()
        # The client's own savepoints keep working beside sluice's.
        cur.execute("INSERT INTO vp_stmt VALUES (6)")
        cur.execute("SAVEPOINT mine")
        cur.execute("INSERT INTO vp_stmt VALUES (7)")
        cur.execute("ROLLBACK TO SAVEPOINT mine")
        conn.commit()
        assert count() == 4, f"client savepoint: {count()} rows"
    print("statement-level rollback kept")


def killed():
    """The session is ended by sluice (argv[4]: "result" or "copy") while a
    large result streams or a COPY runs: the driver reads whole messages and
    then sluice's FATAL error, never a cut message."""
    what = sys.argv[4]
    conn = vertica(autocommit=True)
    cur = conn.cursor()
    # Tell the test the session is busy, then let it end the session.
    print("busy", flush=True)
    try:
        if what == "result":
            cur.execute("SELECT g, repeat('x', 200) FROM generate_series(1, 3000000) g")
            n = 0
            for _ in cur.iterate():
                n += 1
                if n == 1000:
                    sys.stdout.write("streaming\n")
                    sys.stdout.flush()
                    time.sleep(1.5)
        else:
            with direct() as pg:
                pg.execute("DROP TABLE IF EXISTS vp_copy_kill")
                pg.execute("CREATE TABLE vp_copy_kill (v text)")

            def rows():
                for i in range(10_000_000):
                    if i == 1000:
                        sys.stdout.write("streaming\n")
                        sys.stdout.flush()
                    yield f"{i}\n".encode()
            class Slow:
                def __init__(self):
                    self.it = rows()
                def read(self, n=-1):
                    chunk = b"".join(next(self.it, b"") for _ in range(100))
                    time.sleep(0.001)
                    return chunk
            cur.copy("COPY vp_copy_kill FROM STDIN", Slow())
    except (errors.ConnectionError, errors.QueryError, errors.DatabaseError) as e:
        text = str(e)
        if what == "result":
            # Whole rows, then sluice's FATAL: the driver reads the reason.
            assert "57P01" in text, text
        # A driver busy writing COPY data learns of the end by its write
        # failing; the operating system drops what sluice wrote with the
        # connection, as it does when PostgreSQL itself ends a COPY.
        print("closed with:", text.splitlines()[0][:200])
    else:
        raise SystemExit("the session was not ended")


def cancel():
    with vertica(autocommit=True) as conn:
        cur = conn.cursor()
        timer = threading.Timer(0.7, conn.cancel)
        timer.start()
        started = time.time()
        try:
            cur.execute("SELECT pg_sleep(30)")
            cur.fetchall()
        except errors.QueryError as e:
            assert e.sqlstate == "57014", (e.sqlstate, str(e))
        else:
            raise SystemExit("the query was not canceled")
        assert time.time() - started < 10, "cancel took too long"
        cur.execute("SELECT 3")
        assert cur.fetchall() == [[3]]


def login():
    user, password = sys.argv[4], sys.argv[5]
    with vertica(user=user, password=password) as conn:
        cur = conn.cursor()
        cur.execute("SELECT current_user")
        assert cur.fetchall() == [[user]]
    try:
        vertica(user=user, password="wrong").close()
    except errors.ConnectionError as e:
        print("wrong password refused:", str(e).splitlines()[0])
    else:
        raise SystemExit("a wrong password was accepted")


def catalog():
    """Catalog lookups (answered by sluice's catalog copy, or the node when
    the copy is down), then data in the same session. argv[4]: the table
    names expected, comma-separated."""
    want = [[t] for t in sys.argv[4].split(",")]
    lookup = "SELECT table_name FROM v_catalog.tables WHERE table_schema = 'public' ORDER BY 1"
    with vertica() as conn:  # autocommit off, Vertica's default
        cur = conn.cursor()
        cur.execute(lookup)
        check_equal("simple lookup", cur.fetchall(), want)
        cur.execute("SELECT count(*) FROM public.orders")
        assert cur.fetchall() == [[1]], "data comes from the node"
        cur.execute(lookup)
        check_equal("lookup inside the transaction", cur.fetchall(), want)
        conn.rollback()
    with vertica(autocommit=True, use_prepared_statements=True) as conn:
        cur = conn.cursor()
        prepared = "SELECT table_name FROM v_catalog.tables WHERE table_schema = ? ORDER BY 1"
        for _ in range(2):
            cur.execute(prepared, ["public"])
            check_equal("prepared lookup", cur.fetchall(), want)
        cur.execute("SELECT id, amount FROM public.orders WHERE id = ?", [1])
        assert cur.fetchall() == [[1, decimal.Decimal("9.50")]], "prepared data comes from the node"
        cur.execute(prepared, ["public"])
        check_equal("prepared lookup after data", cur.fetchall(), want)
        cur.execute("SELECT is_temp_table, create_time, table_id FROM v_catalog.tables WHERE table_name = ?", ["orders"])
        row = cur.fetchall()[0]
        assert row[0] is False and row[2] == 45035996273704980, row
        assert row[1] == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), row


def rules():
    """A reject rule on vp_secret (argv[4]: its name): refused simply and
    prepared with SQLSTATE 42501, the session usable afterwards."""
    rule = sys.argv[4]
    with direct() as pg:
        pg.execute("DROP TABLE IF EXISTS vp_secret")
        pg.execute("CREATE TABLE vp_secret (id int)")
        pg.execute("INSERT INTO vp_secret VALUES (1)")

    def refused(run):
        try:
            run()
        except errors.QueryError as e:
            assert e.sqlstate == "42501", (e.sqlstate, str(e))
            assert f'"{rule}"' in e.message, e.message
            assert "secrets stay put" in e.message, e.message
            assert "administrators" in (e.hint or ""), e.hint
            print("refused:", e.message)
        else:
            raise SystemExit("the rule did not refuse the query")

    for autocommit in (True, False):
        with vertica(autocommit=autocommit) as conn:
            cur = conn.cursor()
            refused(lambda: cur.execute("SELECT id FROM vp_secret"))
            cur.execute("SELECT 2")
            assert cur.fetchall() == [[2]]
            refused(lambda: cur.execute("SELECT id FROM vp_secret WHERE id = ?", [1],
                                        use_prepared_statements=True))
            # vertica-python sends Sync after a failed prepare and leaves
            # the ReadyForQuery unread (with Vertica too); read it, as the
            # driver's next call would trip over it.
            assert isinstance(conn.read_message(), messages.ReadyForQuery)
            cur.execute("SELECT ? + 1", [41], use_prepared_statements=True)
            assert cur.fetchall() == [[42]]
            cur.execute("SELECT 3")
            got = cur.fetchall()
            assert got == [[3]], got
            if not autocommit:
                conn.rollback()
    print("session usable after refusals")


def watchdog():
    """A cancel rule with max_duration (argv[4]: its name) stops a long query."""
    rule = sys.argv[4]
    notices = []
    with vertica(autocommit=True) as conn:
        conn.notice_handler = lambda m: notices.append(m.message)
        cur = conn.cursor()
        for prepared in (False, True):
            started = time.time()
            try:
                cur.execute("SELECT pg_sleep(5)", use_prepared_statements=prepared)
                cur.fetchall()
            except errors.QueryError as e:
                assert e.sqlstate == "57014", (e.sqlstate, str(e))
            else:
                raise SystemExit("the query was not cancelled")
            took = time.time() - started
            assert 0.25 < took < 4, f"cancelled after {took:.2f}s"
            assert any(f'"{rule}"' in n for n in notices), notices
            notices.clear()
            print(f"cancelled after {took:.2f}s (prepared={prepared})")
            cur.execute("SELECT 4")
            assert cur.fetchall() == [[4]]


def statistics():
    """Queries to find in /queries by their fingerprints' samples."""
    with vertica(autocommit=True) as conn:
        cur = conn.cursor()
        for i in (1, 2, 3):
            cur.execute(f"SELECT {i} AS vp_stat_marker")
            assert cur.fetchall() == [[i]]
        cur.execute("SELECT ?::int AS vp_prepared_marker", [7], use_prepared_statements=True)
        assert cur.fetchall() == [[7]]


def row_counts():
    """DML answers as Vertica gives them: a one-row result with the count."""
    with direct() as pg:
        pg.execute("DROP TABLE IF EXISTS vp_counts")
        pg.execute("CREATE TABLE vp_counts (id int, v text)")
    with vertica(autocommit=True) as conn:
        cur = conn.cursor()
        for sql, want in [
                ("INSERT INTO vp_counts VALUES (1, 'a'), (2, 'b'), (3, 'c')", 3),
                ("UPDATE vp_counts SET v = 'z' WHERE id >= 2", 2),
                ("DELETE FROM vp_counts WHERE id = 1", 1),
                ("DELETE FROM vp_counts WHERE id = 99", 0),
                ("MERGE INTO vp_counts t USING (SELECT 5 AS id) s ON t.id = s.id "
                 "WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'm')", 1),
        ]:
            cur.execute(sql)
            assert cur.rowcount == -1, (sql, cur.rowcount)
            assert [d.name for d in cur.description] == ["OUTPUT"], cur.description
            got = cur.fetchall()
            assert got == [[want]], (sql, got)
            assert cur.rowcount == 1, (sql, cur.rowcount)
            print(f"{sql.split()[0]}: {got}")
        # Prepared, and several statements in one simple query.
        cur.execute("UPDATE vp_counts SET v = ? WHERE id > ?", ["p", 0], use_prepared_statements=True)
        assert [d.name for d in cur.description] == ["OUTPUT"], cur.description
        assert cur.fetchall() == [[3]]
        cur.execute("INSERT INTO vp_counts VALUES (?, ?)", [8, "q"], use_prepared_statements=True)
        assert cur.fetchone() == [1]
        cur.execute("DELETE FROM vp_counts WHERE id = 8; SELECT count(*) FROM vp_counts")
        assert cur.fetchall() == [[1]]
        assert cur.nextset()
        assert cur.fetchall() == [[3]]
        # RETURNING keeps its own rows; COPY FROM STDIN its PostgreSQL answer.
        cur.execute("INSERT INTO vp_counts VALUES (9, 'r') RETURNING id, v")
        assert cur.fetchall() == [[9, "r"]]
        cur.copy("COPY vp_counts FROM STDIN", "10\ts\n11\tt\n")
        cur.execute("SELECT count(*) FROM vp_counts")
        assert cur.fetchall() == [[6]]
        # executemany with prepared statements still works.
        cur.executemany("INSERT INTO vp_counts VALUES (?, ?)", [(20, "u"), (21, "v")],
                        use_prepared_statements=True)
        cur.execute("SELECT count(*) FROM vp_counts")
        assert cur.fetchall() == [[8]]


{
    "types": types,
    "prepared": prepared,
    "errors": failures,
    "transactions": transactions,
    "cancel": cancel,
    "login": login,
    "catalog": catalog,
    "rules": rules,
    "watchdog": watchdog,
    "statistics": statistics,
    "row_counts": row_counts,
    "statement_rollback": statement_rollback,
    "killed": killed,
    "detach": detach,
}[scenario]()
print("ok", scenario)
