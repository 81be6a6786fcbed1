from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field

from streams.events import AnswerMode
from streams.settings import BusSettings


def _default_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GeneratorSettings(BusSettings):
    llm_url: str = "http://127.0.0.1:8081/v1"  # any OpenAI-compatible server (llama.cpp, vLLM, Ollama)
    llm_model: str = "smollm2"
    llm_api_key: str = ""
    llm_timeout: float = 120.0
    llm_retries: int = 2  # transient errors before the first token are retried with backoff
    # the sources in the prompt are cut to the sentences that best answer the question, to this many tokens
    # (agents/generator/focus.py; 0: whole passages). bench/attribution.py: prompts of 498 tokens instead of 1004,
    # the first token 2.6x earlier, and more of the gold facts in the answers
    prompt_source_tokens: int = 320
    max_answer_tokens: int = 384  # bench/attribution.py: how often answers are cut at this limit
    temperature: float = 0.0  # deterministic: a redelivered question streams the same tokens again
    llm_context_tokens: int = 2048  # the server's context window (n_ctx): prompt + answer must fit
    llm_tokenizer: str = ""  # the model's GGUF, for exact token counts (vocab only); empty: estimate
    breaker_failures: int = 3  # consecutive LLM failures that open the circuit
    breaker_cooldown: float = 15.0  # seconds the circuit stays open before one trial call
    condense_tokens: int = 64  # follow-up rewriting answers are short
    generator_id: str = Field(default_factory=_default_id)
    answer_mode: AnswerMode = "generative"  # a question's own answer_mode overrides it
    # the model that matches answer sentences to passages (agents/generator/attribution.py): the packaged
    # MiniLM as ONNX int8 (~120 MB, no torch in the generator), built into models_dir on first start
    attribution_model: str = "all-MiniLM-L6-v2-onnx-int8"
    models_dir: Path = Path("~/.ragbus/models").expanduser()
    # the sentence cut runs before the prompt is sent and attribution after the last token: this answer's LLM call
    # is idle then, so two threads take the cut from ~150 to ~100 ms of the first token (bench/chat.py); more
    # would take cores from other answers' decoding for little
    attribution_threads: int = Field(default_factory=lambda: min(2, os.cpu_count() or 1))
    attribution_threshold: float = 0.5  # tuned with bench/attribution.py
    constrained_citing: bool = False  # a llama.cpp grammar that makes every sentence end in [n]: see bench
