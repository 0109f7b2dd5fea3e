"""A psycopg 3 session with server-side prepared statements (prepare=True)
and a search_path, used before and after a pause long enough for sluice to
detach it from its node. Prints each result.

    python detach_psycopg.py PORT PAUSE_S
"""
import sys
import time

import psycopg

port, pause = int(sys.argv[1]), float(sys.argv[2])
with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                     autocommit=True) as conn:
    conn.execute("SET search_path = pool_clients, public")
    for round in range(2):
        for i in range(1, 4):
            (v,) = conn.execute("SELECT v * %s FROM t", (i,), prepare=True).fetchone()
            print(f"round {round}: {v}")
        time.sleep(pause)
