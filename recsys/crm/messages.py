"""CRM messages for a customer segment about its recommended products, one per tone, grounded.

The prompt holds ONLY the segment's description (persona name and profile fields) and the
retrieved fact snippets of the chosen products: no other customer's data, no other product.
The answer is a JSON object (``ANSWER_SCHEMA``: tone, text, product_ids, source_ids). Every
message is checked (``claims.check_message``, the declared ids, the channel's length limit);
a failing one is regenerated ``config.regenerate`` times with the reasons in the prompt, then
dropped, and the result lists each rejected draft with its reasons.

``TemplateWriter`` is the offline stand-in client (``make_writer`` returns it for
``LLMConfig.backend == "rules"``): deterministic sentences per tone built only from the snippets
in the prompt. It is a stand-in: its label says so and it measures nothing about an LLM.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from recsys.crm.claims import Violation, Vocabulary, check_message
from recsys.crm.facts import FactIndex, Snippet
from recsys.llm.client import LLMClient, make_client
from recsys.llm.config import LLMConfig
from recsys.llm.errors import LLMError, reason
from recsys.llm.protocol import BACKEND_KEY, validate_json

TONES = ("friendly", "professional", "trendy")
TEMPLATE_STAND_IN = "crm templates (stand-in, no LLM)"


@dataclass
class CrmConfig:
    tones: list[str] = field(default_factory=lambda: list(TONES))
    channel_limits: dict[str, int] = field(default_factory=lambda: {"kakao": 1000, "sms": 90})  # characters
    products_per_message: int = 3
    snippets_per_product: int = 4     # besides the title, which is always given
    regenerate: int = 1               # new drafts asked for a rejected message before it is dropped

    def __post_init__(self):
        unknown = [t for t in self.tones if t not in TONES]
        if unknown or not self.tones:
            raise ValueError(f"crm.tones: each must be one of {TONES}, got {self.tones}")
        for name in ("products_per_message", "snippets_per_product"):
            if getattr(self, name) < 1:
                raise ValueError(f"crm.{name} must be >= 1, got {getattr(self, name)}")
        if self.regenerate < 0 or any(v < 1 for v in self.channel_limits.values()):
            raise ValueError("crm.regenerate must be >= 0 and every channel limit >= 1")

    def limit(self, channel: str) -> int:
        if channel not in self.channel_limits:
            raise ValueError(f"unknown channel {channel!r}: configured {sorted(self.channel_limits)}")
        return self.channel_limits[channel]


@dataclass
class Segment:
    """Who the message is for: a persona name and aggregate profile fields, never a person's data."""
    name: str
    profile: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"persona: {self.name}"] + [f"{k}: {v}" for k, v in sorted(self.profile.items())]
        return "\n".join(lines)


@dataclass
class CrmMessage:
    tone: str
    text: str
    product_ids: list[str]
    source_ids: list[str]
    backend: str
    attempt: int = 1


@dataclass
class Rejection:
    tone: str
    attempt: int
    text: str
    violations: list[Violation]

    @property
    def reason(self) -> str:
        return "; ".join(v.reason for v in self.violations)


@dataclass
class CrmResult:
    segment: Segment
    channel: str
    product_ids: list[str]
    facts: dict[str, list[Snippet]]
    messages: list[CrmMessage]
    rejected: list[Rejection]       # every failed draft, also of tones that passed on a retry
    dropped_tones: list[str]        # tones with no message after all attempts
    backend: str


def answer_schema(tones: Sequence[str] = TONES) -> dict:
    return {"type": "object", "additionalProperties": False,
            "required": ["tone", "text", "product_ids", "source_ids"],
            "properties": {"tone": {"type": "string", "enum": list(tones)},
                           "text": {"type": "string", "minLength": 1},
                           "product_ids": {"type": "array", "items": {"type": "string"}},
                           "source_ids": {"type": "array", "items": {"type": "string"}}}}


ANSWER_SCHEMA = answer_schema()
SYSTEM = ("You write short CRM messages (KakaoTalk/SMS style) for a customer segment about the products given. "
          "State only facts found in <facts>; never invent colours, materials, prices or other products. "
          "Answer with JSON: tone, text, product_ids (products you mention), source_ids (fact ids you used).")


def build_prompt(segment: Segment, facts: Mapping[str, Sequence[Snippet]], tone: str, channel: str,
                 limit: int, feedback: str = "") -> list[dict[str, str]]:
    """Chat messages for one tone. Only ``segment`` and ``facts`` (chosen products) go in."""
    fact_lines = [f"[{s.snippet_id}] ({s.field}) {s.text}" for snippets in facts.values() for s in snippets]
    user = (f"tone: {tone}\nchannel: {channel}\nlimit: {limit} characters\n"
            f"<segment>\n{segment.describe()}\n</segment>\n"
            f"<products>{', '.join(facts)}</products>\n<facts>\n" + "\n".join(fact_lines) + "\n</facts>")
    if feedback:
        user += f"\n<rejected>Your previous draft was rejected: {feedback}. Use only the facts.</rejected>"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


# -- the offline stand-in writer -----------------------------------------------------------------
_FACT_LINE = re.compile(r"^\[(?P<id>[^\]]+)#(?P<n>\d+)\] \((?P<field>[^)]+)\) (?P<text>.*)$")
_OPENERS = {"friendly": "안녕하세요! 고객님께 딱 맞는 아이템을 골라봤어요 :)",
            "professional": "고객님께 추천 상품을 안내해 드립니다.",
            "trendy": "이번 시즌 핫한 픽 도착!"}
_CLOSERS = {"friendly": "지금 만나보세요!", "professional": "감사합니다.", "trendy": "놓치지 마세요 #NEW"}


def _field(prompt: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(\S+)", prompt, re.MULTILINE)
    return match.group(1) if match else ""


class TemplateWriter:
    """``LLMClient`` stand-in: per product its title and first facts, in a tone template, cut to the
    prompt's length limit (whole products and facts only, so nothing is half-stated)."""
    backend_label = TEMPLATE_STAND_IN

    def __init__(self, facts_per_product: int = 2):
        self.facts_per_product = facts_per_product

    def complete(self, messages: Sequence[Mapping[str, str]], json_schema: Mapping | None = None) -> str | dict:
        prompt = [str(m["content"]) for m in messages if m.get("role") == "user"][-1]
        tone = _field(prompt, "tone") or "friendly"
        limit = int(_field(prompt, "limit") or 10**6)
        products: dict[str, list[tuple[str, str, str]]] = {}
        for line in prompt.split("<facts>", 1)[-1].split("</facts>", 1)[0].splitlines():
            if m := _FACT_LINE.match(line.strip()):
                products.setdefault(m["id"], []).append((f"{m['id']}#{m['n']}", m["field"], m["text"]))
        text, used_products, used_sources = _OPENERS.get(tone, _OPENERS["friendly"]), [], []
        for item, snippets in products.items():
            title = [s for s in snippets if s[1] == "title"][:1]
            others = [s for s in snippets if s[1] != "title"][: self.facts_per_product]
            chosen = title + others
            while chosen:   # drop facts from the end until the product fits the limit
                part = " - " + " / ".join(s[2] for s in chosen)
                if len(text + part + " " + _CLOSERS.get(tone, "")) <= limit:
                    break
                chosen = chosen[:-1] if len(chosen) > 1 else []
            if not chosen:
                break
            text += part
            used_products.append(item)
            used_sources += [s[0] for s in chosen]
        text += " " + _CLOSERS.get(tone, "")
        answer = {"tone": tone, "text": text, "product_ids": used_products, "source_ids": used_sources}
        if json_schema is None:
            return text
        validate_json(answer, json_schema)
        return {**answer, BACKEND_KEY: self.backend_label}


def writer_label(config: LLMConfig | None = None) -> str:
    """Who writes the messages, as every output states it (the template stand-in says it is one)."""
    from recsys.llm.client import backend_label
    return TEMPLATE_STAND_IN if (config or LLMConfig()).backend == "rules" else backend_label(config)


def make_writer(config: LLMConfig | None = None) -> LLMClient:
    """The CRM writer for ``config``: the template stand-in for ``rules``, else the configured LLM."""
    config = config or LLMConfig()
    return TemplateWriter() if config.backend == "rules" else make_client(config)


# -- writing and checking --------------------------------------------------------------------------
def validate_draft(answer: Mapping, tone: str, facts: Mapping[str, Sequence[Snippet]], vocabulary: Vocabulary,
                   limit: int) -> list[Violation]:
    """Every reason to reject one draft: unsupported claims, ids outside the prompt, tone, length."""
    text = str(answer.get("text", ""))
    violations = check_message(text, facts, vocabulary)
    for item in answer.get("product_ids", []):
        if item not in facts:
            violations.append(Violation("foreign_product", item, f"declares product {item!r}, not among the chosen "
                                        f"products {sorted(facts)}"))
    known = {s.snippet_id for snippets in facts.values() for s in snippets}
    for source in answer.get("source_ids", []):
        if source not in known:
            violations.append(Violation("unknown_source", source, f"cites source {source!r}, which was not given"))
    if answer.get("tone") != tone:
        violations.append(Violation("wrong_tone", str(answer.get("tone")), f"asked for tone {tone!r}, "
                                    f"got {answer.get('tone')!r}"))
    if len(text) > limit:
        violations.append(Violation("too_long", str(len(text)), f"{len(text)} characters, over the channel "
                                    f"limit of {limit}"))
    return violations


def write_messages(segment: Segment, products: Sequence[str], facts: FactIndex, client: LLMClient,
                   config: CrmConfig | None = None, channel: str = "kakao", goal: str = "",
                   vocabulary: Vocabulary | None = None) -> CrmResult:
    """One checked message per tone about the first ``products_per_message`` of ``products``.

    ``goal`` (the campaign goal) is the retrieval query; without it the segment description is.
    ``vocabulary`` defaults to the one ``FactIndex.from_rows`` built from the same catalog."""
    config = config or CrmConfig()
    limit = config.limit(channel)
    chosen = list(dict.fromkeys(products))[: config.products_per_message]
    retrieved = facts.retrieve(chosen, goal or segment.describe(), config.snippets_per_product)
    vocabulary = vocabulary or facts.vocabulary
    if vocabulary is None:
        raise ValueError("write_messages needs the catalog vocabulary: build facts with FactIndex.from_rows "
                         "or pass vocabulary=Vocabulary.from_rows(items)")
    label = getattr(client, "backend_label", "unknown")
    schema = answer_schema(config.tones)
    messages, rejected, dropped = [], [], []
    for tone in config.tones:
        feedback = ""
        for attempt in range(1, config.regenerate + 2):
            prompt = build_prompt(segment, retrieved, tone, channel, limit, feedback)
            try:
                answer = client.complete(prompt, json_schema=schema)
                violations = validate_draft(answer, tone, retrieved, vocabulary, limit)
            except LLMError as exc:
                answer, violations = {}, [Violation("llm_error", type(exc).__name__, reason(exc))]
            if not violations:
                messages.append(CrmMessage(tone, answer["text"], list(answer["product_ids"]),
                                           list(answer["source_ids"]), answer.get(BACKEND_KEY, label), attempt))
                break
            rejected.append(Rejection(tone, attempt, str(answer.get("text", "")), violations))
            feedback = "; ".join(v.reason for v in violations)
        else:
            dropped.append(tone)
    return CrmResult(segment, channel, chosen, retrieved, messages, rejected, dropped, label)
