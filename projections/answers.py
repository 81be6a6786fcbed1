"""Answers read model: every completed (or failed) answer with its citations and timings."""

from __future__ import annotations

import asyncpg

from projections.base import Source
from streams import subjects
from streams.events import AnswerCompleted, AnswerFailed, Event


class AnswersProjection:
    name = "answers"
    sources = (
        Source("ANSWERS", (subjects.wildcard(subjects.ANSWER_DONE), subjects.wildcard(subjects.ANSWER_FAILED))),
    )

    async def apply(self, conn: asyncpg.Connection, event: Event) -> None:
        match event:
            case AnswerCompleted():
                await conn.execute(
                    """INSERT INTO answers (query_id, session_id, question, status, answer, citations, timings,
                                            model, generator, tokens, created_at)
                       VALUES ($1, $2, $3, 'done', $4, $5, $6, $7, $8, $9, $10)
                       ON CONFLICT (query_id) DO UPDATE SET status = 'done', answer = EXCLUDED.answer,
                           error = NULL, citations = EXCLUDED.citations, timings = EXCLUDED.timings,
                           model = EXCLUDED.model, generator = EXCLUDED.generator, tokens = EXCLUDED.tokens""",
                    event.query_id, event.session_id, event.question, event.answer,
                    [c.model_dump() for c in event.citations], event.timings,
                    event.model, event.generator, event.tokens, event.occurred_at,
                )
            case AnswerFailed():
                await conn.execute(
                    """INSERT INTO answers (query_id, question, status, error, created_at)
                       VALUES ($1, '', 'failed', $2, $3) ON CONFLICT (query_id) DO NOTHING""",
                    event.query_id, f"{event.stage}: {event.message}", event.occurred_at,
                )
