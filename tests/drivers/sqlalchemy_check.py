"""SQLAlchemy 2 with psycopg 3 through pgwarden as a restricted role: the
connect-time probes (psycopg's TypeInfo.fetch for hstore), the inspector
(what Alembic's autogenerate and admin tools call) and a lookup.

Usage: sqlalchemy_check.py URL EXPECTED_PHONE_PREFIX. Prints one line per
check and "ALL OK" at the end; exits non-zero on the first failure.
"""
import sys

from sqlalchemy import create_engine, inspect, text

url, phone_prefix = sys.argv[1], sys.argv[2]


def check(name, cond):
    if not cond:
        print(f"FAIL {name}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


engine = create_engine(url)
with engine.connect() as conn:
    check("connect", conn.execute(text("select 1")).scalar() == 1)
    i = inspect(conn)
    check("schemas", "public" in i.get_schema_names())
    check("tables", set(i.get_table_names()) >= {"customers", "shipments"})
    check("has_table", i.has_table("customers"))
    cols = {c["name"]: c for c in i.get_columns("customers")}
    check("columns", {"id", "name", "phone"} <= set(cols))
    check("pk", i.get_pk_constraint("customers")["constrained_columns"] == ["id"])
    fks = i.get_foreign_keys("shipments")
    check("fks", any(f["referred_table"] == "customers" for f in fks))
    i.get_indexes("customers")
    i.get_unique_constraints("customers")
    i.get_check_constraints("customers")
    i.get_table_comment("customers")
    check("sequences", "customers_id_seq" in i.get_sequence_names())
    i.get_view_names()
    i.get_materialized_view_names()
    i.get_enums()
    check("metadata calls", True)
    row = conn.execute(
        text("select name, phone from customers where id = :id"), {"id": 1}
    ).one()
    check("lookup is masked", row.phone.startswith(phone_prefix) and "****" in row.phone)
    by_phone = conn.execute(
        text("select count(*) from customers where city = :c"), {"c": "nowhere"}
    ).scalar()
    check("count", by_phone == 0)
    # psycopg underneath: a server-side cursor (DECLARE, then a Describe of
    # the cursor's portal, then FETCHes) and a pipeline.
    raw = conn.connection.driver_connection
    with raw.cursor(name="c") as cur:
        cur.execute("select id, phone from customers where id < 5 order by id")
        rows = cur.fetchmany(2) + cur.fetchall()
    check("server-side cursor", len(rows) == 4 and all("****" in p for _, p in rows))
    with raw.pipeline():
        cs = [raw.execute("select phone from customers where id = %s", (i,)) for i in (1, 2, 3)]
    check("pipeline", all("****" in c.fetchone()[0] for c in cs))
print("ALL OK")
