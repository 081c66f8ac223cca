"""LLM backends behind one interface (``LLMClient.complete``), chosen by ``LLMConfig.backend``.

- ``rules``: the offline default, a deterministic stand-in (``recsys.llm.rules``);
- ``openai``: any OpenAI-compatible chat-completions server (``recsys.llm.openai_compat``);
- Ray Data batch inference over such a server, and the vLLM engine config for GPU clusters
  (``recsys.llm.ray_batch``; imports Ray only when called).
"""
from recsys.llm.client import LLMClient, make_client
from recsys.llm.config import LLMConfig
from recsys.llm.errors import (LLMConnectionError, LLMError, LLMHTTPError, LLMInvalidJSON, LLMSchemaViolation,
                               LLMTimeout)
from recsys.llm.rules import STAND_IN, STAND_IN_LABEL

__all__ = ["LLMClient", "LLMConfig", "make_client", "LLMError", "LLMHTTPError", "LLMConnectionError",
           "LLMTimeout", "LLMInvalidJSON", "LLMSchemaViolation", "STAND_IN", "STAND_IN_LABEL"]
