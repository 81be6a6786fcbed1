"""The PostgreSQL roles of ragbus, set up by `ragbus up` (and the tests) as the superuser, the only time it is
used: `ragbus_projector` owns and writes the read models, `ragbus_reader` may only read them. Tables the
projector creates later (a new index's vectors) are readable by the reader by default privileges."""

from __future__ import annotations

import asyncpg

from ragbus.credentials import Credentials


async def ensure_roles(superuser_dsn: str, credentials: Credentials) -> None:
    conn = await asyncpg.connect(superuser_dsn)
    try:
        database = await conn.fetchval("SELECT current_database()")
        for role in ("ragbus_projector", "ragbus_reader"):
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {role} LOGIN")
            # a literal: ALTER ROLE takes no parameters; the passwords are generated URL-safe tokens
            await conn.execute(f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                               f"PASSWORD '{credentials.postgres[role]}'")
        await conn.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
        await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO ragbus_projector, ragbus_reader')
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await conn.execute("GRANT USAGE, CREATE ON SCHEMA public TO ragbus_projector")
        await conn.execute("GRANT USAGE ON SCHEMA public TO ragbus_reader")
        # read models made before there were roles belong to the superuser: hand them over
        for (table,) in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                         "AND tableowner <> 'ragbus_projector'"):
            await conn.execute(f'ALTER TABLE public."{table}" OWNER TO ragbus_projector')
        await conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO ragbus_reader")
        await conn.execute("ALTER DEFAULT PRIVILEGES FOR ROLE ragbus_projector IN SCHEMA public "
                           "GRANT SELECT ON TABLES TO ragbus_reader")
    finally:
        await conn.close()
