from __future__ import annotations

import os
import socket

from pydantic import Field

from streams.settings import BusSettings


def _default_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GeneratorSettings(BusSettings):
    llm_url: str = "http://127.0.0.1:8081/v1"  # any OpenAI-compatible server (llama.cpp, vLLM, Ollama)
    llm_model: str = "smollm2"
    llm_api_key: str = ""
    llm_timeout: float = 120.0
    llm_retries: int = 2  # transient errors before the first token are retried with backoff
    max_answer_tokens: int = 256
    temperature: float = 0.0  # deterministic: a redelivered question streams the same tokens again
    llm_context_tokens: int = 2048  # the server's context window (n_ctx): prompt + answer must fit
    llm_tokenizer: str = ""  # the model's GGUF, for exact token counts (vocab only); empty: estimate
    breaker_failures: int = 3  # consecutive LLM failures that open the circuit
    breaker_cooldown: float = 15.0  # seconds the circuit stays open before one trial call
    condense_tokens: int = 64  # follow-up rewriting answers are short
    generator_id: str = Field(default_factory=_default_id)
