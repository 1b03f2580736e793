"""All SQL for the generation_claims table: who is generating which request_id right now."""

from __future__ import annotations

from convgen.db.database import Connection


async def try_claim(conn: Connection, request_id: str, owner: str, lease_seconds: float) -> bool:
    """Takes the claim on request_id when nobody holds it or the holder's lease expired."""
    claimed = await conn.fetchval(
        """
        INSERT INTO generation_claims (request_id, owner, lease_expires_at)
        VALUES ($1, $2, now() + make_interval(secs => $3))
        ON CONFLICT (request_id) DO UPDATE
            SET owner = EXCLUDED.owner, lease_expires_at = EXCLUDED.lease_expires_at, claimed_at = now()
            WHERE generation_claims.lease_expires_at < now()
        RETURNING true
        """,
        request_id,
        owner,
        lease_seconds,
    )
    return bool(claimed)


async def holder(conn: Connection, request_id: str) -> str | None:
    """The owner holding the claim on request_id, if any."""
    owner: str | None = await conn.fetchval("SELECT owner FROM generation_claims WHERE request_id = $1", request_id)
    return owner


async def renew_all(conn: Connection, owner: str, lease_seconds: float) -> int:
    """Extends every lease this owner holds; returns how many."""
    result = await conn.execute(
        "UPDATE generation_claims SET lease_expires_at = now() + make_interval(secs => $2) WHERE owner = $1",
        owner,
        lease_seconds,
    )
    return int(result.split()[-1])


async def release(conn: Connection, request_id: str, owner: str) -> None:
    """Drops this owner's claim on request_id."""
    await conn.execute("DELETE FROM generation_claims WHERE request_id = $1 AND owner = $2", request_id, owner)
