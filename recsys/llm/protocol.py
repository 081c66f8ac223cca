"""The OpenAI chat-completions protocol pieces shared by the threaded client and the Ray Data path.

One place builds the request body, decides what to retry and how long to wait, and turns a
response into a validated answer, so ``OpenAICompatClient`` and ``ray_batch`` behave the same.
"""
from __future__ import annotations

import json
import re
from email.utils import parsedate_to_datetime
from typing import Any, Mapping, Sequence

from recsys.llm.config import LLMConfig
from recsys.llm.errors import LLMInvalidJSON, LLMSchemaViolation

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Provenance travels inside every dict answer; it is added after validation and overrides any
# value a model wrote there (a model must not be able to claim another backend).
BACKEND_KEY = "_backend"
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def response_format(config: LLMConfig, json_schema: Mapping | None, name: str = "answer") -> dict | None:
    """The ``response_format`` field for ``config.structured_output`` (None: send none)."""
    if json_schema is None or config.structured_output == "none":
        return None
    if config.structured_output == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(json_schema), "strict": True}}


def chat_payload(config: LLMConfig, messages: Sequence[Mapping[str, str]],
                 json_schema: Mapping | None = None) -> dict:
    payload: dict[str, Any] = {"model": config.model, "temperature": config.temperature,
                               "messages": [{"role": str(m["role"]), "content": str(m["content"])}
                                            for m in messages]}
    if config.max_tokens is not None:
        payload["max_tokens"] = config.max_tokens
    fmt = response_format(config, json_schema)
    if fmt is not None:
        payload["response_format"] = fmt
    return payload


def is_retryable(status: int) -> bool:
    """429 and 5xx-like statuses are transient; any other 4xx is our request's fault: never retried."""
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import datetime as dt
        when = parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(when.tzinfo)).total_seconds())
    except (TypeError, ValueError):
        return None


def retry_delay(config: LLMConfig, attempt: int, retry_after: str | None = None) -> float:
    """Wait before retry number ``attempt + 1``: exponential backoff, at least the server's
    Retry-After, capped by ``max_backoff_s``."""
    delay = config.backoff_s * (2 ** attempt)
    server = retry_after_seconds(retry_after)
    if server is not None:
        delay = max(delay, server)
    return min(delay, config.max_backoff_s)


def message_content(response: Any) -> str:
    """``choices[0].message.content`` of a chat-completions response, or LLMInvalidJSON naming the gap."""
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMInvalidJSON("expected a chat-completions response with choices[0].message.content, got "
                             f"{_short(response)}") from None
    if not isinstance(content, str):
        raise LLMInvalidJSON(f"expected choices[0].message.content to be a string, got {_short(content)}")
    return content


def parse_json_object(text: str) -> dict:
    """The JSON object in ``text`` (a ```json fence around it is tolerated), else LLMInvalidJSON."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise LLMInvalidJSON(f"expected a JSON object, got unparseable text ({exc.msg} at char {exc.pos}): "
                             f"{_short(text)}") from None
    if not isinstance(value, dict):
        raise LLMInvalidJSON(f"expected a JSON object, got JSON {type(value).__name__}: {_short(text)}")
    return value


def validate_json(value: Any, json_schema: Mapping) -> None:
    """Raise LLMSchemaViolation naming the field path and the rule broken (first error, deepest path).

    Uses ``jsonschema`` (a dependency of Ray, so always present where Ray is).
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: (-len(e.absolute_path), str(e.absolute_path)))
    if errors:
        first = errors[0]
        field = ".".join(str(p) for p in first.absolute_path)
        more = f" (and {len(errors) - 1} more violation(s))" if len(errors) > 1 else ""
        # An enum error quotes the whole enum (an STD vocabulary can have hundreds of values).
        raise LLMSchemaViolation(f"field {field or '<root>'!r}: {_short(first.message, 300)}{more}", field=field)


def parse_answer(text: str, json_schema: Mapping | None, backend: str) -> str | dict:
    """Text answers pass through; with a schema: parse, validate, stamp provenance."""
    if json_schema is None:
        return text
    value = parse_json_object(text)
    value.pop(BACKEND_KEY, None)
    validate_json(value, json_schema)
    value[BACKEND_KEY] = backend
    return value


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
