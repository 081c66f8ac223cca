"""The OpenAI-compatible chat-completions backend (vLLM's server, Ollama, llama.cpp, OpenAI, Gemini).

Thread-safe: one client is shared by a thread pool; ``max_concurrency`` bounds the requests in
flight across all of its threads (a semaphore held only while a request is on the wire, not while
backing off, so a throttled thread does not starve the others).
"""
from __future__ import annotations

import threading
import time
from typing import Mapping, Sequence

import requests

from recsys.llm.client import backend_label
from recsys.llm.config import LLMConfig
from recsys.llm.errors import LLMConnectionError, LLMHTTPError, LLMTimeout
from recsys.llm.protocol import chat_payload, is_retryable, message_content, parse_answer, retry_delay


class OpenAICompatClient:
    def __init__(self, config: LLMConfig, sleep=time.sleep):
        self.config = config
        self.backend_label = backend_label(config)
        self._slots = threading.BoundedSemaphore(config.max_concurrency)
        self._local = threading.local()   # requests.Session is not documented thread-safe
        self._sleep = sleep

    def complete(self, messages: Sequence[Mapping[str, str]], json_schema: Mapping | None = None) -> str | dict:
        """The answer text, or (with ``json_schema``) the validated JSON object with ``_backend`` set.

        Raises LLMHTTPError / LLMConnectionError / LLMTimeout once retries are spent, and
        LLMInvalidJSON / LLMSchemaViolation for a bad answer (never retried: at temperature 0 the
        same prompt tends to give the same answer; the caller quarantines it instead).
        """
        response = self._post_with_retries(chat_payload(self.config, messages, json_schema))
        return parse_answer(message_content(response), json_schema, self.backend_label)

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _post_with_retries(self, payload: dict) -> dict:
        cfg = self.config
        headers = cfg.headers()
        attempts = cfg.max_retries + 1
        for attempt in range(attempts):
            retry_after = None
            try:
                with self._slots:
                    resp = self._session().post(cfg.chat_url, json=payload, headers=headers, timeout=cfg.timeout_s)
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError:
                        return {"unparseable_body": resp.text[:200]}   # message_content names the gap
                failure = LLMHTTPError(f"POST {cfg.chat_url} answered HTTP {resp.status_code} "
                                       f"after {attempt + 1} attempt(s): {resp.text[:200]}",
                                       status=resp.status_code, attempts=attempt + 1)
                if not is_retryable(resp.status_code):
                    raise failure
                retry_after = resp.headers.get("Retry-After")
            except requests.Timeout:
                failure = LLMTimeout(f"POST {cfg.chat_url}: no answer within timeout_s={cfg.timeout_s} "
                                     f"after {attempt + 1} attempt(s)", attempts=attempt + 1)
            except requests.ConnectionError as exc:
                failure = LLMConnectionError(f"POST {cfg.chat_url}: connection failed after {attempt + 1} "
                                             f"attempt(s): {exc}", attempts=attempt + 1)
            if attempt + 1 < attempts:
                self._sleep(retry_delay(cfg, attempt, retry_after))
        raise failure
