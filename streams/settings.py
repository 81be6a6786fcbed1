"""Connection settings every process shares. Each agent's own settings extend these (prefix RAGBUS_)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class BusSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGBUS_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    log_level: str = "INFO"
    metrics_port: int = 0  # 0 = no Prometheus endpoint for this process


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGBUS_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/ragbus"
