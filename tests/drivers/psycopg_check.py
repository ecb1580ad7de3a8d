"""psycopg 3 through pgwarden: every protocol path a Python application uses.

Usage: psycopg_check.py DSN. Prints one line per check and exits non-zero on
the first failure.
"""
import sys
import psycopg
from psycopg import errors

dsn = sys.argv[1]


def check(name, cond):
    if not cond:
        print(f"FAIL {name}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


with psycopg.connect(dsn) as conn:
    cur = conn.cursor()
    cur.execute("select %s::int + 1, %s::text", (41, "héllo"))
    check("params", cur.fetchone() == (42, "héllo"))

    bcur = conn.cursor(binary=True)
    bcur.execute("select %s::bytea, 3.5::float8, array[1,2,3]", (b"\x00\xff",))
    check("binary", bcur.fetchone() == (b"\x00\xff", 3.5, [1, 2, 3]))

    cur.execute("create temp table t (id int, name text)")
    cur.executemany("insert into t values (%s, %s)", [(i, f"n{i}") for i in range(500)])
    cur.execute("select count(*) from t")
    check("executemany", cur.fetchone()[0] == 500)

    with conn.pipeline():
        c1 = conn.execute("select 1")
        c2 = conn.execute("select 2")
        c3 = conn.execute("select %s::int", (3,))
    check("pipeline", [c1.fetchone()[0], c2.fetchone()[0], c3.fetchone()[0]] == [1, 2, 3])

    with conn.cursor(name="server_side") as ss:
        ss.itersize = 100
        ss.execute("select generate_series(1, 1000)")
        check("server-side cursor", sum(r[0] for r in ss) == 500500)

    with cur.copy("copy t from stdin") as copy:
        for i in range(500, 1000):
            copy.write_row((i, f"c{i}"))
    cur.execute("select count(*) from t")
    check("copy in", cur.fetchone()[0] == 1000)
    rows = []
    with cur.copy("copy (select id, name from t where id < 3 order by id) to stdout") as copy:
        for row in copy.rows():
            rows.append(row)
    check("copy out", rows == [("0", "n0"), ("1", "n1"), ("2", "n2")])

    try:
        cur.execute("select 1/0")
        check("error raised", False)
    except errors.DivisionByZero:
        conn.rollback()
        check("error raised", True)
    cur.execute("select 'still usable'")
    check("usable after error", cur.fetchone()[0] == "still usable")
    conn.commit()

with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn, autocommit=True) as sender:
    listener.execute("listen pgwarden_chan")
    sender.execute("notify pgwarden_chan, 'from psycopg'")
    got = next(listener.notifies(timeout=10, stop_after=1), None)
    check("listen/notify", got is not None and got.payload == "from psycopg")

print("ALL OK")
