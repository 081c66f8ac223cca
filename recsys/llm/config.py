"""The typed LLM backend config (a block of a stage's YAML, loaded by ``recsys.config``)."""
from __future__ import annotations

import os
from dataclasses import dataclass

BACKENDS = ("rules", "openai")
STRUCTURED_OUTPUT_MODES = ("json_schema", "json_object", "none")


@dataclass
class LLMConfig:
    """Which backend answers, and how the HTTP one behaves.

    ``rules`` (the default) needs no model: a deterministic stand-in. ``openai`` speaks the
    OpenAI chat-completions protocol (vLLM's server, Ollama, llama.cpp's server, OpenAI, Gemini's
    compatible endpoint): ``POST {base_url}/chat/completions``.
    ``structured_output`` says what the server supports: ``json_schema`` sends the schema as
    ``response_format`` (constrained decoding on vLLM/OpenAI), ``json_object`` only asks for JSON,
    ``none`` sends nothing; the answer is validated against the schema in every mode.
    """
    backend: str = "rules"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "default"
    api_key_env: str | None = None   # name of the env var holding the key, never the key itself
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0           # first retry waits this long, then doubling
    max_backoff_s: float = 60.0      # cap on one wait, Retry-After included
    max_concurrency: int = 8         # requests in flight per client (per actor in Ray Data)
    structured_output: str = "json_schema"
    temperature: float = 0.0
    max_tokens: int | None = None

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"llm.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.structured_output not in STRUCTURED_OUTPUT_MODES:
            raise ValueError(f"llm.structured_output must be one of {STRUCTURED_OUTPUT_MODES}, "
                             f"got {self.structured_output!r}")
        for name in ("timeout_s", "max_concurrency"):
            if getattr(self, name) <= 0:
                raise ValueError(f"llm.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_retries", "backoff_s", "max_backoff_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"llm.{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def headers(self) -> dict[str, str]:
        """Request headers; the API key is read from the named env var at call time."""
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ValueError(f"llm.api_key_env names {self.api_key_env!r}, but that environment "
                                 "variable is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers
