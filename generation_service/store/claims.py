"""All SQL for the generation_claims table: which request_id is new, being generated (by whom), or done."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from convgen.db.database import Connection


@dataclass(frozen=True)
class ClaimState:
    """What the claim row of a request_id says after trying to take it."""

    claimed: bool
    done_pk: uuid.UUID | None
    catalog_version: int


async def try_claim(conn: Connection, request_id: str, owner: str, lease_seconds: float) -> ClaimState:
    """Takes the claim when it is free or its holder's lease expired; else says what it produced, if anything.

    The common case (a new request_id) is one round trip; the row lock of ON CONFLICT makes it race-free.
    """
    row = await conn.fetchrow(
        """
        INSERT INTO generation_claims (request_id, owner, lease_expires_at)
        VALUES ($1, $2, now() + make_interval(secs => $3))
        ON CONFLICT (request_id) DO UPDATE
            SET owner = EXCLUDED.owner, lease_expires_at = EXCLUDED.lease_expires_at, claimed_at = now()
            WHERE generation_claims.lease_expires_at < now()
        RETURNING (SELECT version FROM catalog_version WHERE id = 1) AS catalog_version
        """,
        request_id,
        owner,
        lease_seconds,
    )
    if row is not None:
        return ClaimState(claimed=True, done_pk=None, catalog_version=row["catalog_version"])
    current = await conn.fetchrow(
        """
        SELECT conversation_pk, (SELECT version FROM catalog_version WHERE id = 1) AS catalog_version
        FROM generation_claims WHERE request_id = $1
        """,
        request_id,
    )
    if current is None:  # released between the two statements: try again
        return await try_claim(conn, request_id, owner, lease_seconds)
    return ClaimState(claimed=False, done_pk=current["conversation_pk"], catalog_version=current["catalog_version"])


async def finish(conn: Connection, request_id: str, owner: str, conversation_pk: uuid.UUID) -> None:
    """Points the claim at its stored conversation for good: repeats of the request_id get that conversation.

    Run in the transaction that inserts the conversation, so a claim is done exactly when its conversation exists.
    """
    await conn.execute(
        """
        INSERT INTO generation_claims (request_id, owner, lease_expires_at, conversation_pk)
        VALUES ($1, $2, 'infinity', $3)
        ON CONFLICT (request_id) DO UPDATE
            SET owner = EXCLUDED.owner, lease_expires_at = 'infinity', conversation_pk = EXCLUDED.conversation_pk
        """,
        request_id,
        owner,
        conversation_pk,
    )


async def renew(conn: Connection, owner: str, request_ids: list[str], lease_seconds: float) -> int:
    """Extends this owner's leases on the request_ids it is still generating; returns how many."""
    result = await conn.execute(
        """
        UPDATE generation_claims SET lease_expires_at = now() + make_interval(secs => $3)
        WHERE owner = $1 AND request_id = ANY($2::text[]) AND conversation_pk IS NULL
        """,
        owner,
        request_ids,
        lease_seconds,
    )
    return int(result.split()[-1])


async def release(conn: Connection, request_id: str, owner: str) -> None:
    """Gives up this owner's unfinished claim (the generation failed), so a retry can claim at once."""
    await conn.execute(
        "DELETE FROM generation_claims WHERE request_id = $1 AND owner = $2 AND conversation_pk IS NULL",
        request_id,
        owner,
    )
