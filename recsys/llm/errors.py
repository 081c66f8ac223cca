"""Typed errors of the LLM clients; each message names what was expected and what came back.

``kind`` is the short reason code written to quarantine tables (``"invalid_json: ..."``), so a
row-level failure in a batch job reads the same as the exception a single call raises.
"""
from __future__ import annotations


class LLMError(RuntimeError):
    kind = "llm_error"


class LLMHTTPError(LLMError):
    """A non-retryable status, or a retryable one that persisted past ``max_retries``."""
    kind = "http_error"

    def __init__(self, message: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class LLMConnectionError(LLMHTTPError):
    """The server could not be reached (refused, reset) on every attempt."""
    kind = "connection_error"


class LLMTimeout(LLMError):
    kind = "timeout"

    def __init__(self, message: str, attempts: int = 1):
        super().__init__(message)
        self.attempts = attempts


class LLMInvalidJSON(LLMError):
    """The answer should have been a JSON object and was not (or the response had no answer)."""
    kind = "invalid_json"


class LLMSchemaViolation(LLMError):
    """The answer is JSON but breaks the schema; ``field`` is the offending path (``""`` = root)."""
    kind = "schema_violation"

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


def reason(exc: BaseException) -> str:
    """``"<kind>: <message>"``: the quarantine reason of a failed call."""
    return f"{getattr(exc, 'kind', type(exc).__name__)}: {exc}"
