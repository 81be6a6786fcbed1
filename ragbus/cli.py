"""`ragbus`: one command for the whole system. `ragbus --help` and `ragbus COMMAND --help` explain each."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ragbus.settings import UpSettings
from streams.doctypes import CHUNK_STRATEGIES

AGENTS = ("parser", "embedder", "generator", "gateway", "projector")

DESCRIPTION = """\
ragbus - an event-sourced RAG chatbot on NATS JetStream.

Start everything on this machine:      ragbus up
Upload documents (files or folders):   ragbus ingest ~/docs
Ask a question, streamed:              ragbus ask "What does the warranty cover?"
See streams, consumer lag, projections: ragbus status
"""

EPILOG = """\
Configuration is by environment variables (prefix RAGBUS_), e.g. RAGBUS_NATS_URL, RAGBUS_DATABASE_URL,
RAGBUS_LLM_URL, RAGBUS_LLM_MODEL, RAGBUS_GATEWAY_URL. See the README for the full list.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragbus", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the whole system on this machine (embedded default)",
                        description="Starts nats-server, PostgreSQL + pgvector and a llama.cpp server from "
                        "their Python wheels (unless RAGBUS_NATS_URL / RAGBUS_DATABASE_URL / RAGBUS_LLM_URL "
                        "point at existing servers), declares the streams, and runs every agent, the "
                        "projector and the gateway. Ctrl-C stops everything cleanly; data stays in "
                        "--data-dir for the next start.")
    defaults = UpSettings()
    up.add_argument("--data-dir", default=str(defaults.data_dir),
                    help="where NATS and PostgreSQL keep their data (default: %(default)s, env RAGBUS_DATA_DIR)")
    up.add_argument("--port", type=int, default=defaults.port,
                    help="gateway HTTP port (default: %(default)s, env RAGBUS_PORT)")
    up.add_argument("--host", default=defaults.host,
                    help="gateway bind address (default: %(default)s, env RAGBUS_HOST; 0.0.0.0 to serve the LAN)")
    up.add_argument("--generators", type=int, default=1, help="generator replicas (default: %(default)s)")
    up.add_argument("--parsers", type=int, default=1, help="parser replicas (default: %(default)s)")
    up.add_argument("--embedders", type=int, default=1, help="embedder replicas (default: %(default)s)")
    up.add_argument("--metrics-port", type=int, default=defaults.metrics_port,
                    help="Prometheus port of the first agent; the others take the next ones, the gateway serves "
                    "/metrics on --port (default: %(default)s, env RAGBUS_METRICS_PORT; 0: none)")

    streams = sub.add_parser("streams", help="manage JetStream streams")
    streams_sub = streams.add_subparsers(dest="streams_command", required=True, metavar="ACTION")
    declare = streams_sub.add_parser(
        "declare", help="create or update every stream, consumer and bucket (idempotent)",
        description="Creates what is missing and updates what changed; messages are kept. With --replicas, "
        "every stream and the document bucket move to that many copies on a JetStream cluster (3 on three "
        "nodes: one may be lost), up or down, while the system runs; without it existing streams keep theirs.")
    declare.add_argument("--replicas", type=int, choices=(1, 2, 3, 4, 5), default=None,
                         help="copies of every stream (default: new streams 1, existing ones unchanged)")

    agent = sub.add_parser("agent", help="run one agent in the foreground (what each k3s pod runs)")
    agent.add_argument("name", choices=AGENTS)

    ingest = sub.add_parser("ingest", help="upload files or folders through the gateway, with progress",
                            description="Uploads files, and the files of folders (recursively, hidden ones skipped), "
                            "then waits until each is indexed. A file given by itself is named after itself; a "
                            "folder's files by their path below it (docs/ holding faq/index.html and "
                            "howto/index.html gives two documents with those names). Uploading another file under "
                            "a name that exists makes it that document's next version. Exits 1 if anything did "
                            "not end indexed (failed, refused, replaced by another file of the same name, or "
                            "still working at --timeout).")
    ingest.add_argument("paths", nargs="+", help="files or folders (folders are walked recursively)")
    ingest.add_argument("--no-wait", action="store_true", help="do not wait for documents to be indexed")
    ingest.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for indexing")
    ingest.add_argument("--concurrency", type=int, default=4, help="uploads in flight (default: %(default)s)")
    ingest.add_argument("--chunk-strategy", choices=CHUNK_STRATEGIES,
                        help="chunking strategy for these uploads (default: the parser's setting)")

    ask = sub.add_parser("ask", help="ask a question and stream the answer in the terminal")
    ask.add_argument("question")
    ask.add_argument("--top-k", type=int, default=None, help="passages to retrieve")
    ask.add_argument("--session", default=None, help="conversation id for follow-up questions")

    asyncapi = sub.add_parser("asyncapi", help="write the AsyncAPI document of every event on the bus")
    asyncapi.add_argument("--out", default=None, help="file to write (default: the copy the gateway serves)")

    sub.add_parser("status", help="streams, consumer lag, dead letters and projection positions")

    dead = sub.add_parser("deadletters", help="list messages that could not be processed, or retry them",
                          description="Lists the DEADLETTER stream: what failed, where, why. `retry` republishes "
                          "the original messages (all not yet retried, or the given DEADLETTER sequence numbers) "
                          "once the cause is fixed.")
    dead.add_argument("action", nargs="?", choices=("list", "retry"), default="list")
    dead.add_argument("seqs", nargs="*", type=int, help="DEADLETTER sequence numbers (default: all not retried)")

    reindex = sub.add_parser(
        "reindex", help="switch to another embedding model by replaying the log (zero downtime)",
        description="Builds a new embedding index beside the live one by replaying every chunks.ready through "
        "embedders of the new model (no document is parsed again; questions are answered from the active index "
        "all along), compares both on the questions in the log, and switches with an index.activated event. "
        "The old index is kept (and kept up to date) until dropped, so --rollback is instant.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  ragbus reindex --model minilm-distilled-256\n  ragbus reindex --compare\n"
               "  ragbus reindex --activate minilm-distilled-256\n  ragbus reindex --rollback\n"
               "  ragbus reindex --rebuild")
    from ragbus.reindex import add_arguments

    add_arguments(reindex)

    models = sub.add_parser("models", help="the embedding models ragbus can use, and building them",
                            description="Lists the embedding model catalogue (each built locally from the "
                            "packaged all-MiniLM-L6-v2, nothing downloaded) or builds models into the models "
                            "folder (RAGBUS_MODELS_DIR) ahead of use; embedders also build on first use.")
    models.add_argument("action", nargs="?", choices=("list", "build"), default="list")
    models.add_argument("names", nargs="*", help="models to build (default: all)")

    keys = sub.add_parser("keys", help="the gateway's API keys: create, list, revoke",
                          description="API keys for the gateway's HTTP API, websocket and web page, kept as "
                          "events in the KEYS stream (only the hash of each secret). Keys are required when the "
                          "gateway listens beyond this machine (or RAGBUS_REQUIRE_API_KEYS=true).",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="example:\n  KEY=$(ragbus keys create --name laptop --scope write)\n"
                                 "  RAGBUS_API_KEY=$KEY ragbus ingest docs/\n  ragbus keys revoke KEY_ID")
    from ragbus.keys import add_arguments as add_key_arguments

    add_key_arguments(keys)

    from ragbus import k3s_secrets

    k3s = sub.add_parser("k3s-secrets", help=k3s_secrets.HELP, description=k3s_secrets.DESCRIPTION,
                         epilog=k3s_secrets.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    k3s_secrets.add_arguments(k3s)

    from ragbus import nats_context

    context = sub.add_parser("nats-context", help=nats_context.HELP, description=nats_context.__doc__)
    nats_context.add_arguments(context)

    from ragbus import backup_cli

    backup = sub.add_parser("backup", help=backup_cli.BACKUP_HELP, description=backup_cli.BACKUP_DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    restore = sub.add_parser("restore", help=backup_cli.RESTORE_HELP, description=backup_cli.RESTORE_DESCRIPTION,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    backup_cli.add_arguments(backup, restore)

    replay = sub.add_parser("replay", help="rebuild read models from the event log",
                            description="Drops the named projections' tables and rebuilds them by replaying "
                            "the streams. Safe while the projector runs.")
    replay.add_argument("--projection", action="append", choices=("documents", "chunks", "answers", "all"),
                        help="which read model (repeatable; default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "up":
        from ragbus.up import run_up

        return run_up(args)
    if args.command == "streams":
        from ragbus.ops import declare

        return asyncio.run(declare(args.replicas))
    if args.command == "agent":
        return run_agent(args.name)
    if args.command == "ingest":
        from ragbus.ingest import run_ingest

        return run_ingest(args)
    if args.command == "ask":
        from ragbus.ask import run_ask

        return run_ask(args)
    if args.command == "asyncapi":
        from pathlib import Path

        from ragbus.asyncapi import OUTPUT, write

        print(write(Path(args.out) if args.out else OUTPUT))
        return 0
    if args.command == "status":
        from ragbus.ops import status

        return asyncio.run(status())
    if args.command == "deadletters":
        from ragbus.ops import dead_letters

        return asyncio.run(dead_letters(args.action, args.seqs))
    if args.command == "reindex":
        from ragbus.reindex import run_reindex

        return run_reindex(args)
    if args.command == "models":
        from ragbus.models import run_models

        return run_models(args.action, args.names)
    if args.command == "keys":
        from ragbus.keys import run_keys

        return run_keys(args)
    if args.command == "nats-context":
        from ragbus import nats_context

        return nats_context.run(args)
    if args.command == "k3s-secrets":
        from ragbus.k3s_secrets import run_k3s_secrets

        return run_k3s_secrets(args)
    if args.command in ("backup", "restore"):
        from ragbus import backup_cli

        return backup_cli.run_backup(args) if args.command == "backup" else backup_cli.run_restore(args)
    if args.command == "replay":
        from ragbus.ops import replay_projections

        names = args.projection or ["all"]
        return asyncio.run(replay_projections(names))
    raise AssertionError(args.command)


def run_agent(name: str) -> int:
    if name == "gateway":
        import uvicorn

        from agents.gateway.app import create_app
        from agents.gateway.settings import GatewaySettings
        from streams.logs import configure_logging
        from streams.tracing import configure_tracing

        settings = GatewaySettings()
        configure_logging(settings.log_level, settings.log_format)
        configure_tracing("ragbus-gateway")
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                    timeout_graceful_shutdown=10)
        return 0
    if name == "projector":
        from projections.app import run_projector

        asyncio.run(run_projector())
        return 0
    from streams.agent import run_agent as run

    create_app, settings = faststream_agent(name)
    run(create_app, settings, f"ragbus-{name}")  # FastStream drains its subscriptions on SIGTERM/SIGINT
    return 0


def faststream_agent(name: str) -> tuple[Any, Any]:
    """The app factory of a FastStream agent and its settings (read from the environment)."""
    if name == "parser":
        from agents.parser.app import create_app
        from agents.parser.settings import ParserSettings

        return create_app, ParserSettings()
    if name == "embedder":
        from agents.embedder.app import create_app as create_embedder
        from agents.embedder.settings import EmbedderSettings

        return create_embedder, EmbedderSettings()
    if name == "generator":
        from agents.generator.app import create_app as create_generator
        from agents.generator.settings import GeneratorSettings

        return create_generator, GeneratorSettings()
    raise ValueError(f"{name} is not a FastStream agent")


if __name__ == "__main__":
    sys.exit(main())
