"""Settings of the CLI itself (prefix RAGBUS_, like every agent's): `ragbus up` and the gateway clients."""

from __future__ import annotations

from pathlib import Path

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
    log_level: str = "INFO"


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
