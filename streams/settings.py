"""Connection settings every process shares. Each agent's own settings extend these (prefix RAGBUS_)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class BusSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGBUS_", extra="ignore")

    # one server, or every member of a cluster, comma-separated: the client picks one and fails over to the
    # others (and learns the rest of the cluster from whichever it reaches)
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str = ""  # every agent has a user of its own (streams.access); `ragbus up` generates them
    nats_password: str = ""
    # CA certificate (PEM file) to verify the server with, for a nats-server that requires TLS (a tls:// URL;
    # the k3s component k3s/components/nats-tls). Empty: the system's defaults, and plain TCP for nats://.
    nats_tls_ca: str = ""
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one object per line, with the correlation id (streams/logs.py)
    metrics_port: int = 0  # 0 = no Prometheus endpoint for this process

    @property
    def servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGBUS_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/ragbus"
