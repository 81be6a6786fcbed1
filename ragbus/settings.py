"""Settings of the CLI itself (prefix RAGBUS_, like every agent's): `ragbus up` and the gateway clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict


class UpSettings(BaseSettings):
    """`ragbus up`: which servers to start from their wheels, and where. A URL that is set points at an
    existing server instead (then nothing is started for it)."""

    model_config = SettingsConfigDict(env_prefix="RAGBUS_", extra="ignore")

    data_dir: Path = Path("~/.ragbus")
    host: str = "127.0.0.1"  # the gateway's address (0.0.0.0 serves the LAN)
    port: int = 8000
    nats_url: str | None = None
    database_url: str | None = None
    llm_url: str | None = None
    nats_port: int = 4222  # ports of the embedded servers
    pg_port: int = 54329
    llm_port: int = 8081
    models_dir: Path | None = None  # embedding models built here (default: <data_dir>/models)
    metrics_port: int = 9190  # the projector's Prometheus port; each further agent process takes the next
    log_level: str = "INFO"
    log_format: str = "text"  # or "json" (streams/logs.py)


def initial_index() -> tuple[str, str]:
    """The first embedding index of a fresh system, as `ragbus streams declare` starts it: (model, source).
    RAGBUS_EMBEDDING_MODEL is a catalogue name or a sentence-transformers folder (named after the folder)."""
    from agents.embedder.settings import EmbedderSettings

    configured = EmbedderSettings().embedding_model
    path = Path(configured).expanduser()
    return (path.resolve().name, str(path.resolve())) if path.is_dir() else (configured, "")


class ClientSettings(BaseSettings):
    """`ragbus ingest` and `ragbus ask` talk to the gateway over HTTP and its websocket."""

    model_config = SettingsConfigDict(env_prefix="RAGBUS_", extra="ignore")

    gateway_url: str = "http://127.0.0.1:8000"
    api_key: str = ""  # RAGBUS_API_KEY: sent as 'Authorization: Bearer' (needed where the gateway requires keys)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _embedded_credentials() -> Any:
    from ragbus.credentials import Credentials

    return Credentials.find(UpSettings().data_dir.expanduser() / "secrets")


def admin_login(settings: Any) -> Any:
    """`settings` (any settings with the bus and database fields) as the CLI's admin sees them: what the
    environment says, else the embedded default's own admin login from the data directory (so `ragbus status`
    next to `ragbus up` needs no setup)."""
    update: dict[str, str] = {}
    credentials = _embedded_credentials()
    if credentials is not None and not settings.nats_user:
        update |= {"nats_user": "admin", "nats_password": credentials.nats["admin"]}
    if hasattr(settings, "database_url") and "database_url" not in settings.model_fields_set:
        pg_port = UpSettings().pg_port
        if credentials is not None:
            update["database_url"] = credentials.dsn(f"postgresql://127.0.0.1:{pg_port}/ragbus", "admin")
    return settings.model_copy(update=update)
