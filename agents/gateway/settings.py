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
    # admission control (agents/gateway/admission.py)
    questions_per_minute: float = 60.0  # per client (address, or API key); 0: no limit
    uploads_per_minute: float = 120.0
    max_questions_in_flight: int = 32  # gateway-wide; fewer when recent answers say the wait would be long
    assumed_answer_seconds: float = 10.0  # an answer's time before any was measured (a small model on a Pi)
    max_questions_per_socket: int = 4  # waiting on one websocket, beyond the one being answered
    abandon_grace: float = 20.0  # seconds a question whose client left may be resumed before it is cancelled
    max_metadata_bytes: int = 16 * 1024  # a document's metadata, as JSON
    llm_url: str = ""  # checked by /readyz when set (`ragbus up` sets it: RAGBUS_LLM_URL)
    # who may call (agents/gateway/auth.py, origins.py)
    require_api_keys: bool | None = None  # None: required unless the gateway listens on loopback only
    allowed_hosts: str = ""  # comma-separated Host names; empty: loopback names when open, any with keys
    allowed_origins: str = ""  # comma-separated origins (https://app.example) besides the gateway's own page
