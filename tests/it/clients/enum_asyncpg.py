"""Reads an enum column through asyncpg, which resolves unknown type OIDs
with its own catalog query (pg_type by OID array): the OIDs the node sends
must mean the same on the catalog copy."""
import asyncio
import sys


async def main(port: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
    rows = await conn.fetch("SELECT id, status FROM shop.orders ORDER BY id")
    for r in rows:
        print(f"order {r['id']}: {r['status']}")
    stmt = await conn.prepare("SELECT status FROM shop.orders WHERE id = $1")
    print("type:", stmt.get_attributes()[0].type.name, stmt.get_attributes()[0].type.kind)
    await conn.close()


asyncio.run(main(int(sys.argv[1])))
