#!/usr/bin/env bash
# Installs what sluice's demo and tests need on a fresh Debian/Ubuntu machine
# (PostgreSQL server and client, openssl), when it is missing. Needs root (or
# sudo) only when something must be installed.
set -euo pipefail

have_pg_server() {
    local bindir
    bindir=$(pg_config --bindir 2>/dev/null || true)
    [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

missing=()
have_pg_server || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v openssl >/dev/null || missing+=(openssl)
command -v runuser >/dev/null || missing+=(util-linux)
# PgJDBC and a JDK: the catalog tests run DatabaseMetaData as DBeaver does.
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v javac >/dev/null || missing+=(default-jdk-headless)
# psqlODBC and unixODBC: a Tableau-like ODBC session in the pooling tests.
compgen -G "/usr/lib/*/odbc/psqlodbcw.so" >/dev/null || missing+=(odbc-postgresql)
compgen -G "/usr/lib/*/libodbc.so.2" >/dev/null || missing+=(unixodbc)

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# Debian's package starts a cluster of its own; sluice's tests and demo start
# their own on free ports and do not need it.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# Python clients for the tests (asyncpg, vertica-python with psycopg to check
# it against, ...), in a venv under target/.
venv="$(dirname "$0")/../target/venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import asyncpg, vertica_python, psycopg, pyodbc" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$(dirname "$0")/../tests/it/clients/requirements.txt"
fi
