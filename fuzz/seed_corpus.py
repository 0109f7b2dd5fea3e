#!/usr/bin/env python3
"""Writes the seed corpus: real messages, byte for byte as clients and
servers send them (psql/libpq, pgJDBC, vertica-python, PostgreSQL 15).

Run once after changing it; the fuzzers add what they find beside the
seeds (`fuzz/run.sh` merges new finds back into corpus/<target>/)."""

import hashlib
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def untagged(body):
    return struct.pack(">i", len(body) + 4) + body


def msg(tag, body):
    return tag + struct.pack(">i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def startup(params, version=3 << 16):
    body = struct.pack(">i", version)
    for k, v in params:
        body += cstr(k) + cstr(v)
    return untagged(body + b"\0")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def seeds():
    # Pre-startup packets.
    write("startup", "ssl_request", untagged(struct.pack(">i", 80877103)))
    write("startup", "gssenc_request", untagged(struct.pack(">i", 80877104)))
    write("startup", "vertica_load_balance", untagged(struct.pack(">i", 80936960)))
    write("startup", "cancel_v3", untagged(struct.pack(">iii", 80877102, 4242, 0x5EC1237)))
    write("startup", "cancel_v32_long_secret",
          untagged(struct.pack(">ii", 80877102, 4242) + bytes(range(32))))
    write("startup", "psql", startup([("user", "alice"), ("database", "dwh"),
                                      ("application_name", "psql"), ("client_encoding", "UTF8")]))
    write("startup", "pgjdbc", startup([("user", "tableau"), ("database", "dwh"),
                                        ("client_encoding", "UTF8"), ("DateStyle", "ISO"),
                                        ("TimeZone", "UTC"), ("extra_float_digits", "2"),
                                        ("application_name", "DBeaver 24.1.0 - Main")]))
    write("startup", "protocol_3_2", startup([("user", "alice")], version=(3 << 16) | 2))
    # vertica-python 1.4: version 3.5, protocol_version as Int32 + NUL.
    body = struct.pack(">i", 0x00030005) + b"protocol_version\0" + struct.pack(">i", 0x00030010) + b"\0"
    for k, v in [("user", "dbadmin"), ("database", "VMart"), ("client_label", "vertica-python-1.4"),
                 ("client_type", "vertica-python"), ("client_version", "1.4.0"),
                 ("client_os", "Linux"), ("client_pid", "4242")]:
        body += cstr(k) + cstr(v)
    write("startup", "vertica_python", untagged(body + b"\0"))
    write("startup", "tls_client_hello_prefix", bytes.fromhex("16030100c4010000c00303") + bytes(24))
    write("startup", "http_get", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    # Streams: mode byte (0 client side, 1 node side, limits), split seed, bytes.
    client = (msg(b"Q", cstr("SELECT 1"))
              + msg(b"P", cstr("S_1") + cstr("SELECT $1::int") + struct.pack(">hi", 1, 23))
              # Bind: no parameter formats, one text parameter "42", no result formats.
              + msg(b"B", cstr("") + cstr("S_1") + struct.pack(">hhi", 0, 1, 2) + b"42"
                    + struct.pack(">h", 0))
              + msg(b"D", b"P" + cstr(""))
              + msg(b"E", cstr("") + struct.pack(">i", 0))
              + msg(b"S", b"")
              + msg(b"X", b""))
    write("scanner", "client_session", bytes([0x8, 0x5a]) + client)
    copy = msg(b"Q", cstr("COPY t FROM STDIN")) + msg(b"d", b"1\tone\n" * 50) + msg(b"c", b"")
    write("scanner", "client_copy_in", bytes([0x8, 0x11]) + copy)
    node = (msg(b"R", struct.pack(">i", 0))
            + msg(b"S", cstr("server_version") + cstr("15.18"))
            + msg(b"S", cstr("client_encoding") + cstr("UTF8"))
            + msg(b"K", struct.pack(">ii", 4242, 0x5EC1237))
            + msg(b"Z", b"I")
            + msg(b"T", struct.pack(">h", 1) + cstr("?column?") + struct.pack(">ihihih", 0, 0, 23, 4, -1, 0))
            + msg(b"D", struct.pack(">hi", 1, 1) + b"1") * 20
            + msg(b"C", cstr("SELECT 20"))
            + msg(b"Z", b"I")
            + msg(b"E", b"SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0Fparse_relation.c\0L1392\0RparserOpenTable\0\0")
            + msg(b"Z", b"E"))
    write("scanner", "node_session", bytes([0x9, 0x77]) + node)
    write("scanner", "node_big_row_limit", bytes([0x5, 0x03]) + msg(b"D", b"x" * 2000) + msg(b"Z", b"T"))
    write("scanner", "huge_length", bytes([0x0, 0x01]) + b"Q\x7f\xff\xff\xff" + b"x" * 8)

    # Frontend bodies: selector byte, then the body.
    write("frontend_messages", "query", b"\0" + cstr("SELECT * FROM pg_catalog.pg_class"))
    write("frontend_messages", "parse", b"\1" + cstr("S_1") + cstr("SELECT $1") + struct.pack(">hi", 1, 23))
    write("frontend_messages", "bind", b"\2" + cstr("p1") + cstr("S_1")
          + struct.pack(">hhhi", 1, 0, 1, 2) + b"42" + struct.pack(">hh", 1, 0))
    write("frontend_messages", "describe", b"\3" + b"S" + cstr("S_1"))
    write("frontend_messages", "close", b"\4" + b"P" + cstr("p1"))
    write("frontend_messages", "execute", b"\5" + cstr("p1") + struct.pack(">i", 0))
    write("frontend_messages", "sasl_initial", b"\6" + cstr("SCRAM-SHA-256")
          + struct.pack(">i", 32) + b"n,,n=,r=rOprNGfwEbeRWgbNEkqO%hvYD"[:32])

    # Backend bodies.
    write("backend_messages", "error", b"\0" + b"SERROR\0VERROR\0C57014\0Mcanceling statement due to user request\0Fpostgres.c\0L3300\0\0")
    write("backend_messages", "vertica_error", b"\0" + b"SERROR\0C42V01\0MRelation \"x\" does not exist\0V4566\0Rtrue\0\0")
    write("backend_messages", "notice", b"\0" + b"SNOTICE\0C00000\0Mhello\0Hhint\0\0")
    write("backend_messages", "key_v3", b"\1" + struct.pack(">ii", 4242, 123456))
    write("backend_messages", "key_v32", b"\1" + struct.pack(">i", 4242) + bytes(range(32)))
    write("backend_messages", "ready", b"\2I")

    # SQL as BI tools send it.
    sqls = {
        "select_one": "SELECT 1",
        "dbeaver_tables": "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr FROM pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass WHERE c.relnamespace=$1 AND c.relkind not in ('i','I','c')",
        "jdbc_types": "SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid FROM pg_catalog.pg_type LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r from pg_namespace as ns join ( select s.r, (current_schemas(false))[s.r] as nspname from generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r using ( nspname ) ) as sp ON sp.nspoid = typnamespace WHERE pg_type.oid = $1 ORDER BY sp.r, pg_type.oid DESC",
        "info_schema": "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1, 2",
        "vertica_catalog": "SELECT schema_name, table_name FROM v_catalog.tables WHERE is_system_table = false",
        "user_query": "SELECT region, sum(amount) FROM sales s JOIN stores t ON s.store_id = t.id WHERE s.day >= DATE '2024-01-01' GROUP BY 1 ORDER BY 2 DESC LIMIT 100",
        "cte_window": "WITH x AS (SELECT *, row_number() OVER (PARTITION BY a ORDER BY b) rn FROM t) SELECT * FROM x WHERE rn = 1",
        "ddl": "CREATE TABLE IF NOT EXISTS t (a int PRIMARY KEY, b text DEFAULT 'x')",
        "multi": "BEGIN; SET search_path = public; SELECT nextval('s'); COMMIT;",
        "insert": "INSERT INTO t (a, b) VALUES (1, 'a'), (2, 'b') ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING *",
        "copy": "COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv, HEADER)",
        "for_update": "SELECT * FROM pg_catalog.pg_class FOR UPDATE",
        "nested": "SELECT ((((((((((1))))))))))",
        "bad": "SELEC FROM WHERE",
    }
    for name, sql in sqls.items():
        write("classify", name, sql.encode())

    # Configurations.
    with open(os.path.join(HERE, "..", "config", "sluice.toml"), "rb") as f:
        write("config", "example", f.read())
    write("config", "minimal", b'[warehouse]\nnodes = ["127.0.0.1:5441"]\n')
    write("config", "hardened", b'[server]\nmax_client_connections = 100\nmax_client_connections_per_user = 10\n'
          b'startup_timeout = "2s"\ncancel_rate = 10\ncancel_burst = 20\n'
          b'[warehouse]\nnodes = ["a:1", "b:2"]\nhealthy_after = 3\n'
          b'[catalog]\ndsn = "host=127.0.0.1 port=5440 user=sluice"\nmax_parse_size = 4096\n'
          b'[cluster]\ninstance_id = 3\npeers = ["p:5433"]\n')
    write("config", "errors", b'[server]\nlisten = "nowhere"\ndrain_timeout = "soon"\n[warehouse]\ndialect = "oracle"\nnodes = ["db"]\n')


if __name__ == "__main__":
    seeds()
    sys.exit(0)
