"""One interface for every backend: ``complete(messages, json_schema=None) -> str | dict``."""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from recsys.llm.config import LLMConfig


class LLMClient(Protocol):
    backend_label: str   # written beside every output, e.g. "rules (stand-in, no LLM)"

    def complete(self, messages: Sequence[Mapping[str, str]], json_schema: Mapping | None = None) -> str | dict:
        """Chat messages in OpenAI format -> the answer text, or with ``json_schema`` the validated
        JSON object (``_backend`` names who answered)."""
        ...


def make_client(config: LLMConfig | None = None) -> LLMClient:
    """The backend ``config.backend`` names (``rules`` when no config is given)."""
    config = config or LLMConfig()
    if config.backend == "openai":
        from recsys.llm.openai_compat import OpenAICompatClient
        return OpenAICompatClient(config)
    from recsys.llm.rules import RulesClient
    return RulesClient(config)


def backend_label(config: LLMConfig | None = None) -> str:
    """Who answers, as written beside every output: the rules stand-in says it is one."""
    config = config or LLMConfig()
    if config.backend == "openai":
        return f"openai-compatible ({config.model} at {config.base_url})"
    from recsys.llm.rules import STAND_IN
    return STAND_IN
