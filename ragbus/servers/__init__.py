"""The real servers ragbus depends on, run as child processes (``ragbus up`` and the test fixtures)."""

from .llm import LlamaServer, find_smollm2_gguf
from .nats import NatsServer, find_nats_server
from .nats_cluster import NatsCluster
from .ports import ManagedServer, ServerStartError, free_port, port_is_open
from .postgres import EmbeddedPostgres, find_pg_bin_dir

__all__ = [
    "EmbeddedPostgres",
    "LlamaServer",
    "ManagedServer",
    "NatsCluster",
    "NatsServer",
    "ServerStartError",
    "find_nats_server",
    "find_pg_bin_dir",
    "find_smollm2_gguf",
    "free_port",
    "port_is_open",
]
