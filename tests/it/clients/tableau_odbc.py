"""A Tableau-like session over psqlODBC: a #Tableau_ temporary table and a
WITH HOLD cursor, used before and after a pause long enough for sluice to
detach an idle session. Prints what it reads.

    python tableau_odbc.py PORT PAUSE_S
"""
import sys
import time

import pyodbc

port, pause = int(sys.argv[1]), float(sys.argv[2])
conn = pyodbc.connect(
    f"DRIVER={{PostgreSQL Unicode}};SERVER=127.0.0.1;PORT={port};DATABASE=postgres;UID=postgres;PWD=;SSLmode=disable",
    autocommit=True,
)
cur = conn.cursor()
cur.execute('CREATE TEMP TABLE "#Tableau_7_1_Filter" AS SELECT generate_series(1, 100) AS a')
cur.execute('DECLARE extract CURSOR WITH HOLD FOR SELECT a FROM "#Tableau_7_1_Filter" ORDER BY a')
time.sleep(pause)
cur.execute("FETCH 3 FROM extract")
print("fetched", [r[0] for r in cur.fetchall()])
cur.execute('SELECT count(*), sum(a) FROM "#Tableau_7_1_Filter"')
print("temp table", tuple(cur.fetchone()))
time.sleep(pause)
cur.execute("FETCH 2 FROM extract")
print("fetched", [r[0] for r in cur.fetchall()])
cur.execute("CLOSE extract")
cur.execute('DROP TABLE "#Tableau_7_1_Filter"')
conn.close()
