"""Dependency aliases: endpoints ask for what they use, the lifespan provides it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from agents.gateway.bus import Bus
from agents.gateway.settings import GatewaySettings
from projections.views import AnswerView, DocumentView


def _bus(request: Request) -> Bus:
    return request.app.state.bus


def _documents(request: Request) -> DocumentView:
    return request.app.state.documents


def _answers(request: Request) -> AnswerView:
    return request.app.state.answers


def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


BusDep = Annotated[Bus, Depends(_bus)]
DocumentsDep = Annotated[DocumentView, Depends(_documents)]
AnswersDep = Annotated[AnswerView, Depends(_answers)]
SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
