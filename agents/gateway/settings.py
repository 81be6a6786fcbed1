from __future__ import annotations

from streams.settings import BusSettings, DatabaseSettings


class GatewaySettings(BusSettings, DatabaseSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 50 * 1024 * 1024  # larger uploads are refused with 413 before being read
    ask_timeout: float = 180.0  # POST /ask and the websocket give up waiting for answer.done after this
    default_top_k: int = 5
    history_turns: int = 3  # earlier turns of a session sent with a follow-up question
    search_timeout: float = 30.0  # POST /search waits this long for context.built
