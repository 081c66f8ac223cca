"""Ray Data batch inference: ``ray.data.llm``'s HTTP request processor over an OpenAI-compatible
server, and the vLLM engine processor config for GPU clusters.

How Ray 2.60's HTTP processor treats failures, and why a session adapter sits under it:
its ``HttpRequestStage`` retries only 408/429/502/503/504 (not 500, and without Retry-After),
hands any other status's JSON body on as if it were an answer, and raises ``RuntimeError`` when
retries run out or a body is not JSON, which fails the whole Dataset for one bad row. So the
processor gets ``session_factory=ResilientSessionFactory(...)``: an adapter for the one call the
stage makes (``session.post(url, headers=, data=)``) that sends the request with aiohttp under our
policy (``recsys.llm.protocol``: backoff, Retry-After, timeout, per-actor concurrency limit) and
always hands the stage an envelope ``{"content", "error", "status", "attempts"}`` with HTTP 200.
The stage's own retries are off (``max_retries=0``). A failed row thus travels on as data and
``postprocess`` turns it into a quarantine reason (``"timeout: ..."``, ``"http_error: ..."``,
``"invalid_json: ..."``, ``"schema_violation: field 'colour': ..."``) while the job goes on.

The adapter also adds ``response_format`` (the JSON schema) to each request body: the schema is
the same for every row, and carrying it per row in the Dataset would copy the whole STD
vocabulary into every block.

Ray is imported inside the functions, so ``recsys.llm`` imports without it.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from recsys.llm.client import backend_label
from recsys.llm.config import LLMConfig
from recsys.llm.errors import LLMError, reason
from recsys.llm.protocol import (chat_payload, is_retryable, message_content, parse_answer, response_format,
                                 retry_delay)

Messages = list[dict[str, str]]


@dataclass
class _Envelope:
    """What the stage sees as the HTTP response: always 200, the real outcome inside."""
    body: dict
    status: int = 200
    reason: str = "OK"

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def json(self) -> dict:
        return self.body


class _ResilientSession:
    def __init__(self, config: LLMConfig, json_schema: Mapping | None):
        self._config = config
        self._format = response_format(config, json_schema)

    async def __aenter__(self):
        import aiohttp

        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._config.timeout_s))
        self._slots = asyncio.Semaphore(self._config.max_concurrency)
        return self

    async def __aexit__(self, *exc):
        await self._http.close()
        return False

    def post(self, url: str, headers: Mapping | None = None, data: Any = None) -> "asyncio.Future[_Envelope]":
        # Started now, not when the stage awaits it: the stage awaits its rows one by one, so
        # this is what lets up to ``max_concurrency`` requests of a batch be in flight together.
        return asyncio.ensure_future(self._call(url, dict(headers or {}), data))

    async def _call(self, url: str, headers: dict, data: Any) -> _Envelope:
        import aiohttp

        body = json.loads(data)
        if self._format is not None:
            body["response_format"] = self._format
        cfg, attempts = self._config, self._config.max_retries + 1
        for attempt in range(attempts):
            retry_after, failure = None, None
            try:
                async with self._slots:
                    async with self._http.post(url, json=body, headers=headers) as resp:
                        text = await resp.text()
                        if resp.status == 200:
                            return _Envelope({**_content_or_error(text), "status": 200, "attempts": attempt + 1})
                        retry_after = resp.headers.get("Retry-After")
                        failure = (f"http_error: POST {url} answered HTTP {resp.status} after {attempt + 1} "
                                   f"attempt(s): {text[:200]}")
                        if not is_retryable(resp.status):
                            return _Envelope({"content": "", "error": failure, "status": resp.status,
                                              "attempts": attempt + 1})
                        status = resp.status
            except asyncio.TimeoutError:
                status, failure = 0, (f"timeout: POST {url}: no answer within timeout_s={cfg.timeout_s} "
                                      f"after {attempt + 1} attempt(s)")
            except aiohttp.ClientError as exc:
                status, failure = 0, f"connection_error: POST {url} failed after {attempt + 1} attempt(s): {exc}"
            if attempt + 1 < attempts:
                await asyncio.sleep(retry_delay(cfg, attempt, retry_after))
        return _Envelope({"content": "", "error": failure, "status": status, "attempts": attempts})


def _content_or_error(text: str) -> dict:
    """``content`` of a 200 body, or the reason it is not a chat completion."""
    try:
        return {"content": message_content(json.loads(text)), "error": ""}
    except LLMError as exc:
        return {"content": "", "error": reason(exc)}
    except ValueError:
        return {"content": "", "error": f"invalid_json: expected a chat-completions JSON body, got {text[:200]!r}"}


@dataclass
class ResilientSessionFactory:
    """``session_factory`` for ``HttpRequestProcessorConfig`` (picklable: it is shipped to actors)."""
    config: LLMConfig
    json_schema: Mapping | None = None

    def __call__(self) -> _ResilientSession:
        return _ResilientSession(self.config, self.json_schema)


@dataclass
class _Preprocess:
    config: LLMConfig
    to_messages: Callable[[dict], Messages]

    def __call__(self, row: dict) -> dict:
        return {"payload": chat_payload(self.config, self.to_messages(row))}


@dataclass
class _Postprocess:
    json_schema: Mapping | None
    keep_columns: Sequence[str]
    backend: str
    validate: bool = True

    def __call__(self, row: dict) -> dict:
        out = {c: row[c] for c in self.keep_columns}
        reply = row["http_response"]
        answer, error = None, reply.get("error") or None
        if error is None and not self.validate:
            answer = reply["content"]
        elif error is None:
            try:
                parsed = parse_answer(reply["content"], self.json_schema, self.backend)
                answer = parsed if isinstance(parsed, str) else json.dumps(parsed, sort_keys=True)
            except LLMError as exc:
                error = reason(exc)
        # One flat, typed row per item: answer (JSON text) xor error (quarantine reason).
        return {**out, "answer": answer, "error": error, "attempts": int(reply.get("attempts") or 0),
                "backend": self.backend}


def build_http_processor(config: LLMConfig, to_messages: Callable[[dict], Messages], *,
                         json_schema: Mapping | None = None, keep_columns: Sequence[str] = ("item_id",),
                         batch_size: int = 16, concurrency: int = 1, validate: bool = True):
    """A ``ray.data.llm`` Processor: rows -> ``{*keep_columns, answer, error, attempts, backend}``.

    ``to_messages(row)`` builds the chat messages of a row; ``answer`` is the validated JSON (as
    text) or the text answer, ``error`` the quarantine reason; exactly one of them is set.
    ``validate=False`` passes the answer text on unparsed (``json_schema`` is still sent as
    ``response_format``): for callers that validate themselves, e.g. the enrichment job, which
    maps STD spellings ("navy-blue") onto the vocabulary before checking the schema.
    ``concurrency`` actors each keep up to ``config.max_concurrency`` requests in flight.
    """
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    if config.backend != "openai":
        raise ValueError(f"the Ray Data HTTP processor needs llm.backend 'openai', got {config.backend!r}; "
                         "the rules stand-in runs in-process (recsys.llm.rules)")
    headers = {k: v for k, v in config.headers().items() if k.lower() != "content-type"}
    processor_config = HttpRequestProcessorConfig(
        url=config.chat_url, headers=headers, batch_size=batch_size, concurrency=concurrency,
        max_retries=0, session_factory=ResilientSessionFactory(config, json_schema))
    label = backend_label(config)
    return build_processor(processor_config, preprocess=_Preprocess(config, to_messages),
                           postprocess=_Postprocess(json_schema, tuple(keep_columns), label, validate))


def vllm_engine_config(model_source: str, *, json_schema: Mapping | None = None, batch_size: int = 32,
                       concurrency: int = 1, accelerator_type: str | None = None,
                       engine_kwargs: Mapping | None = None, max_tokens: int = 512) -> tuple[Any, dict]:
    """The GPU-cluster path: ``vLLMEngineProcessorConfig`` (validated by Ray's pydantic model)
    and the per-row ``sampling_params`` (vLLM structured outputs constrained to ``json_schema``).

    Only the config is built here: running it needs vLLM and a GPU, neither of which this
    project's test machine has. Use it as
    ``build_processor(cfg, preprocess=lambda r: {"messages": ..., "sampling_params": params}, ...)``
    on a GPU cluster with ``pip install vllm``. ``should_continue_on_error`` makes failed rows
    carry ``__inference_error__`` instead of failing the job (the same quarantine idea).
    """
    from ray.data.llm import vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(
        model_source=model_source, batch_size=batch_size, concurrency=concurrency,
        accelerator_type=accelerator_type, should_continue_on_error=True,
        engine_kwargs={"max_model_len": 4096, **dict(engine_kwargs or {})})
    sampling_params: dict[str, Any] = {"temperature": 0.0, "max_tokens": max_tokens}
    if json_schema is not None:
        sampling_params["structured_outputs"] = {"json": dict(json_schema)}
    return config, sampling_params
