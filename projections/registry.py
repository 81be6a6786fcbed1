"""Every projection the projector runs, by name (the names `ragbus replay --projection` accepts)."""

from __future__ import annotations

from projections.answers import AnswersProjection
from projections.base import Projection
from projections.chunks import ChunkIndexProjection
from projections.documents import DocumentsProjection

PROJECTIONS: dict[str, Projection] = {
    p.name: p for p in (DocumentsProjection(), ChunkIndexProjection(), AnswersProjection())
}
