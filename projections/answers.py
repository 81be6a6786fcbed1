"""Conversations read model: every answer (done or failed) with citations, timings and rating, and one row
per session. Sessions and their turns come from the same events, in the same transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from projections.base import Source
from streams import subjects
from streams.events import AnswerCompleted, AnswerFailed, AnswerRated, Event
from streams.topology import ANSWERS


class AnswersProjection:
    name = "answers"
    sources: tuple[Source, ...] = (
        Source(ANSWERS, tuple(subjects.wildcard(e.SUBJECT) for e in (AnswerCompleted, AnswerFailed, AnswerRated))),
    )

    async def apply(self, conn: asyncpg.Connection, event: Event) -> None:
        match event:
            case AnswerCompleted():
                inserted = await conn.fetchval(
                    """INSERT INTO answers (query_id, session_id, question, status, answer, citations, timings,
                                            model, generator, tokens, created_at, owner, attribution)
                       VALUES ($1, $2, $3, 'done', $4, $5, $6, $7, $8, $9, $10, $11, $12)
                       ON CONFLICT (query_id) DO UPDATE SET status = 'done', answer = EXCLUDED.answer,
                           error = NULL, citations = EXCLUDED.citations, timings = EXCLUDED.timings,
                           model = EXCLUDED.model, generator = EXCLUDED.generator, tokens = EXCLUDED.tokens,
                           attribution = EXCLUDED.attribution
                       RETURNING (xmax = 0)""",
                    event.query_id, event.session_id, event.question, event.answer,
                    [c.model_dump() for c in event.citations], event.timings,
                    event.model, event.generator, event.tokens, event.occurred_at, event.owner,
                    event.model_dump(mode="json", include={"sentences", "supported", "answer_mode", "truncated",
                                                           "repeating", "notices"}),
                )
                if inserted:
                    await self._turn(conn, event.session_id, event.question, event.occurred_at, event.owner)
            case AnswerFailed():
                inserted = await conn.fetchval(
                    """INSERT INTO answers (query_id, session_id, question, status, error, created_at, owner)
                       VALUES ($1, $2, $3, 'failed', $4, $5, $6) ON CONFLICT (query_id) DO NOTHING
                       RETURNING true""",
                    event.query_id, event.session_id, event.question, f"{event.stage}: {event.message}",
                    event.occurred_at, event.owner,
                )
                if inserted:
                    await self._turn(conn, event.session_id, event.question, event.occurred_at, event.owner)
            case AnswerRated():
                await conn.execute(
                    "UPDATE answers SET rating = $2, rating_comment = $3, rated_at = $4 WHERE query_id = $1",
                    event.query_id, event.rating, event.comment, event.occurred_at,
                )

    async def _turn(self, conn: asyncpg.Connection, session_id: str | None, question: str,
                    at: datetime, owner: str | None) -> None:
        if not session_id:
            return
        await conn.execute(
            """INSERT INTO sessions (session_id, title, turns, created_at, updated_at, owner)
               VALUES ($1, $2, 1, $3, $3, $4)
               ON CONFLICT (session_id) DO UPDATE SET turns = sessions.turns + 1,
                   updated_at = greatest(sessions.updated_at, EXCLUDED.updated_at)""",
            session_id, question[:200], at, owner,
        )
