"""The projector's position per (projection, stream), written in the same transaction as the rows."""

from __future__ import annotations

import asyncpg


async def lock_position(conn: asyncpg.Connection, projection: str, stream: str) -> int:
    """Read and lock the position; concurrent projectors serialise here, so each event is applied once."""
    await conn.execute(
        "INSERT INTO projection_positions (projection, stream) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        projection, stream,
    )
    return await conn.fetchval(
        "SELECT last_seq FROM projection_positions WHERE projection = $1 AND stream = $2 FOR UPDATE",
        projection, stream,
    )


async def read_position(conn: asyncpg.Connection, projection: str, stream: str) -> int:
    value = await conn.fetchval(
        "SELECT last_seq FROM projection_positions WHERE projection = $1 AND stream = $2", projection, stream
    )
    return int(value or 0)


async def save_position(conn: asyncpg.Connection, projection: str, stream: str, seq: int) -> None:
    await conn.execute(
        "UPDATE projection_positions SET last_seq = $3, updated_at = now() WHERE projection = $1 AND stream = $2",
        projection, stream, seq,
    )


async def all_positions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT projection, stream, last_seq, updated_at FROM projection_positions ORDER BY 1, 2")
