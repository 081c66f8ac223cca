"""A CRM campaign over a persona run: segments, their products, grounded messages, and its evaluation.

``ray_jobs.crm`` (``configs/crm.yaml``) runs this recipe; ``serve_app`` answers one segment per
request with the same pieces (``segment_of_persona``, ``write_messages``).

- **Segments.** Every persona of a ``ray_jobs.train_persona`` run, described by aggregates only
  (its name, size and the dominant value of each profile field among its customers), and
  one-customer segments (the customer's own profile fields, nothing else of the row).
- **Products.** A persona's picks are its top products under the run's served ranker
  (``PersonaRecommender.recommend_persona``: PersonaPop counts or the centroid's cosine); a
  customer's are ``recommend(own profile)``.
- **Messages.** ``write_messages`` per segment (facts retrieved from the picked products' snippets,
  one message per tone, the claim checker), on Ray Data actors; every prompt is recorded.
- **Evaluation** on the persona run's own split (each customer's last purchase day held out, never
  trained on; ``recsys.eval.persona``): (a) the claim checker's precision/recall on this run's
  messages with injected false claims; (c) segment fit, hit@n of each persona's picks among what
  its customers bought on the test day, beside MostPop's n and chance; (d) privacy, canary values
  planted in a share of the customers' rows (never a messaged customer's) must appear in no prompt.
"""
from __future__ import annotations

import html
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from recsys.config import ConfigError
from recsys.crm.facts import FactIndex, HashingEmbedder, Snippet, item_snippets, minilm_embedder
from recsys.crm.messages import CrmConfig, CrmResult, Segment, make_writer, write_messages
from recsys.llm.config import LLMConfig

CANARY_PREFIX = "CANARY-"
EMBEDDERS = ("minilm", "hashing")
MIN_HOLDERS = 10     # a persona's value is shown only when at least this many of its customers share it
ONE_CUSTOMER = "one customer"   # a one-customer segment's name in prompts: no id goes to the LLM


@dataclass
class CrmEvalConfig:
    checker_seed: int = 0
    corrupt_share: float = 0.5     # share of the messages given one injected false claim
    canary_share: float = 0.05     # share of customers whose categorical values become canaries
    seed: int = 0                  # canaries and sampled customers


@dataclass
class CrmRunConfig:
    """``ray_jobs.crm``: which persona run, which segments, which writer, and the evaluation."""
    persona_run: str = "artifacts/persona"   # a train_persona run, or a runs root with a LATEST pointer
    llm: LLMConfig = field(default_factory=LLMConfig)
    crm: CrmConfig = field(default_factory=CrmConfig)
    channel: str = "kakao"
    goal: str = ""                           # the campaign goal: the facts' retrieval query
    personas: list[str] | None = None        # persona names; null: every persona of the run
    users: list[str] = field(default_factory=list)   # customer ids messaged as one-customer segments
    sample_users: int = 2                    # plus this many seeded customers with a test day
    profiles: list[dict] = field(default_factory=list)   # described customers: {field: value} each
    product_ids: list[str] = field(default_factory=list)  # write every segment about these (default: its picks)
    embedder: str = "minilm"                 # minilm (offline MiniLM) | hashing (no model, lexical)
    writers: int = 1                         # Ray Data actors writing messages
    evaluation: CrmEvalConfig = field(default_factory=CrmEvalConfig)
    output_root: str = "artifacts/crm"
    run_name: str | None = None

    def __post_init__(self):
        if self.sample_users < 0 or self.writers < 1:
            raise ConfigError(f"crm: sample_users must be >= 0 and writers >= 1, got {self.sample_users}, {self.writers}")
        if self.embedder not in EMBEDDERS:
            raise ConfigError(f"crm embedder must be one of {EMBEDDERS}, got {self.embedder!r}")
        try:
            self.crm.limit(self.channel)   # an unknown channel fails here, not after the persona run loads
        except ValueError as exc:
            raise ConfigError(f"crm channel: {exc}") from exc
        if not 0 <= self.evaluation.canary_share < 1 or not 0 < self.evaluation.corrupt_share <= 1:
            raise ConfigError("evaluation.canary_share must be in [0, 1) and corrupt_share in (0, 1]")


def make_embedder(name: str):
    return HashingEmbedder() if name == "hashing" else minilm_embedder()


def embedder_label(name: str) -> str:
    return "hashing (stand-in: lexical, no model)" if name == "hashing" else "MiniLM (all-MiniLM-L6-v2, offline)"


# -- segments --------------------------------------------------------------------------------------
def plant_canaries(customers: pa.Table, share: float, seed: int, exclude: Sequence[str] = ()) -> tuple[pa.Table, set]:
    """A copy of a USER_SCHEMA table where a seeded ``share`` of the customers (never one in
    ``exclude``) have every categorical value replaced by a unique canary ("CANARY-<n>-<field>").
    Returns (the table, the canaries): any canary in a prompt is another customer's data leaking."""
    rows, excluded = customers.to_pylist(), set(exclude)
    eligible = [n for n, row in enumerate(rows) if row["user_id"] not in excluded]
    chosen = set(random.Random(seed).sample(eligible, round(share * len(eligible)))) if eligible else set()
    canaries = set()
    for n in chosen:
        values = rows[n]["categorical"] or []
        for value in values:
            value["value"] = f"{CANARY_PREFIX}{n}-{value['field']}"
            canaries.add(value["value"])
    return pa.Table.from_pylist(rows, schema=customers.schema), canaries


def segment_of_persona(name: str, members: Sequence[Mapping], fields: Sequence[str],
                       bands: Mapping[str, Sequence[float]] | None = None) -> Segment:
    """A persona as a segment: its name, size and each field's dominant value (with its share) over
    its members' profiles; aggregates only (``persona_segment``)."""
    from recsys.eval.persona import describe_personas

    described = describe_personas(list(members), np.zeros(len(members), np.int64), fields, bands) if members else []
    return persona_segment({**(described[0] if described else {"dominant": {}}), "name": name, "size": len(members)})


def persona_segment(described: Mapping, min_holders: int = MIN_HOLDERS) -> Segment:
    """One ``describe_personas`` entry (a persona run's metrics.json ``personas``) as a segment. A
    dominant value held by fewer than ``min_holders`` customers reads "mixed": in a small persona
    it would be one person's value (k-anonymity, k = ``min_holders``)."""
    size = int(described["size"])
    profile: dict[str, Any] = {"customers": size}
    for field_name, dominant in (described.get("dominant") or {}).items():
        holders = round(float(dominant["share"]) * size)
        profile[field_name] = f"{dominant['value']} ({dominant['share']:.0%})" if holders >= min_holders else "mixed"
    return Segment(str(described["name"]), profile)


def recording(client):
    """``client`` with every prompt it is sent kept in ``.prompts`` (the run's prompt log)."""
    class Recording:
        backend_label = getattr(client, "backend_label", "unknown")

        def __init__(self):
            self.prompts: list[list[dict]] = []

        def complete(self, messages, json_schema=None):
            self.prompts.append([dict(m) for m in messages])
            return client.complete(messages, json_schema=json_schema)
    return Recording()


def result_dict(result: CrmResult) -> dict:
    """A ``CrmResult`` as JSON-ready data (the job's messages.jsonl rows, the Serve answer's core)."""
    return {"segment": {"name": result.segment.name, "profile": dict(result.segment.profile)},
            "channel": result.channel, "product_ids": result.product_ids, "backend": result.backend,
            "messages": [asdict(m) for m in result.messages],
            "sources": {item: [asdict(s) for s in snippets] for item, snippets in result.facts.items()},
            "rejected": [{"tone": r.tone, "attempt": r.attempt, "text": r.text, "reasons": [v.reason for v in r.violations]}
                         for r in result.rejected],
            "dropped_tones": result.dropped_tones}


def facts_of(result: Mapping) -> dict[str, list[Snippet]]:
    """The ``sources`` of a ``result_dict`` back as snippets (what the checker evaluation reads)."""
    return {item: [Snippet(**s) for s in snippets] for item, snippets in result["sources"].items()}


class SegmentWriter:
    """Ray Data ``map`` callable: one segment row in, its messages and the prompts sent out. Builds
    the fact index of the picked products and the writer once per actor."""

    def __init__(self, rows: Sequence[Mapping], vocabulary, llm: Mapping, crm: Mapping, channel: str, goal: str,
                 embedder: str):
        self.facts = FactIndex([s for row in rows for s in item_snippets(row)], make_embedder(embedder))
        self.vocabulary, self.channel, self.goal = vocabulary, channel, goal
        self.writer, self.crm = make_writer(LLMConfig(**llm)), CrmConfig(**crm)   # one HTTP client per actor

    def __call__(self, row: dict) -> dict:
        client = recording(self.writer)
        segment = Segment(row["name"], json.loads(row["profile"]))
        result = write_messages(segment, list(row["product_ids"]), self.facts, client, self.crm, self.channel,
                                self.goal, self.vocabulary)
        return {"kind": row["kind"], "key": row["key"], "result": json.dumps(result_dict(result), ensure_ascii=False),
                "prompts": json.dumps(client.prompts, ensure_ascii=False)}


# -- evaluation and report -------------------------------------------------------------------------
def canary_leaks(prompts: Sequence[Sequence[Mapping]], canaries: set) -> list[str]:
    """Canaries found in any prompt (should be none)."""
    text = "\n".join(str(m.get("content", "")) for prompt in prompts for m in prompt)
    return sorted(c for c in canaries if c in text) if CANARY_PREFIX in text else []


def _fit_cell(block: Mapping | None, metric: str) -> str:
    value = (block or {}).get(metric)
    return "-" if value is None else f"{value:.3f}"


def write_html(path: Path, report: Mapping, results: Sequence[Mapping], titles: Mapping[str, str]) -> Path:
    """A small page: the stand-in labels, the evaluation, and per segment its picks and messages."""
    e = html.escape
    k, fit = report["k"], report["segment_fit"]
    metric = f"hit@{k}"
    parts = [f"<h1>CRM campaign: {e(report['persona_run'])}</h1>",
             f"<p><b>writer:</b> {e(report['backend'])}; <b>retrieval:</b> {e(report['embedder'])}</p>"]
    if "stand-in" in report["backend"]:
        parts.append("<p><b>These messages come from the offline template stand-in: their numbers say nothing "
                     "about a real LLM's quality.</b></p>")
    if report.get("note"):
        parts.append(f"<p><b>data:</b> {e(str(report['note']))}</p>")
    checker, privacy = report["claim_checker"], report["privacy"]
    parts.append(f"<p>claim checker on {checker['n']} messages ({checker['tp'] + checker['fn']} with an injected false "
                 f"claim): precision {checker['precision']:.3f}, recall {checker['recall']:.3f}. Privacy: "
                 f"{privacy['canaries']} canaries planted, {privacy['leaked']} found in {privacy['prompts']} prompts.</p>")
    rows = "".join(f"<tr><td>{e(name)}</td><td>{fit['segment_picks']['per_persona'][name]['n']}</td>"
                   f"<td>{_fit_cell(fit['segment_picks']['per_persona'][name], metric)}</td>"
                   f"<td>{_fit_cell(fit['most_popular']['per_persona'][name], metric)}</td>"
                   f"<td>{_fit_cell(fit['chance']['per_persona'][name], metric)}</td></tr>"
                   for name in fit["segment_picks"]["per_persona"])
    parts.append(f"<h2>Segment fit on the test day ({metric})</h2><table border=1><tr><th>persona</th><th>customers"
                 f"</th><th>picks</th><th>MostPop</th><th>chance</th></tr>{rows}<tr><td><b>all</b></td>"
                 f"<td>{fit['n_customers']}</td><td>{_fit_cell(fit['segment_picks']['overall'], metric)}</td>"
                 f"<td>{_fit_cell(fit['most_popular']['overall'], metric)}</td>"
                 f"<td>{_fit_cell(fit['chance']['overall'], metric)}</td></tr></table>")
    for result in results:
        segment = result["segment"]
        parts.append(f"<h2>{e(segment['name'])}</h2><p>{e(json.dumps(segment['profile'], ensure_ascii=False))}</p>")
        parts.append("<p>products: " + ", ".join(f"{e(i)} ({e(titles.get(i, '?'))})" for i in result["product_ids"])
                     + "</p><ul>")
        for message in result["messages"]:
            parts.append(f"<li><b>{e(message['tone'])}</b>: {e(message['text'])}<br><small>sources: "
                         f"{e(', '.join(message['source_ids']))}</small></li>")
        parts += [f"<li><s>{e(r['tone'])} draft {r['attempt']}</s>: {e('; '.join(r['reasons']))}</li>"
                  for r in result["rejected"]]
        parts.append("</ul>")
    path.write_text("<!doctype html><meta charset=utf-8><title>CRM campaign</title>" + "\n".join(parts))
    return path


# -- the persona run and its data ------------------------------------------------------------------
@dataclass
class Campaign:
    """A persona run with its data re-read the way it was trained (same files, fields and split)."""
    run_dir: Path
    recommender: Any                  # recsys.models.persona.PersonaRecommender
    persona_config: Any               # the run's TrainPersonaConfig
    data: Any                         # recsys.eval.persona.PersonaData
    customers: pa.Table               # USER_SCHEMA: the whole rows (every field the source has)
    persona_of: dict[str, int]        # customer -> persona index (the run's profile tower + centroids)
    items: dict[str, dict]            # item id -> canonical row (the facts' source)
    note: str | None = None           # a synthetic stand-in source's note

    @classmethod
    def load(cls, persona_run: str | Path) -> "Campaign":
        from recsys.artifacts import latest_run
        from recsys.config import load_config
        from recsys.eval.persona import load_persona_inputs, prepare_persona_data
        from recsys.models.persona import PersonaRecommender
        from recsys.train_loops.persona import TrainPersonaConfig

        run = Path(persona_run)
        run = latest_run(run) if (run / "LATEST").is_file() else run
        if not (run / PersonaRecommender.PERSONAS_FILE).is_file():
            raise ConfigError(f"persona_run {run}: not a train_persona run with personas ({PersonaRecommender.PERSONAS_FILE} "
                              "missing); run `python -m ray_jobs.train_persona --config configs/persona.yaml` first")
        persona_config = load_config(run / "config.yaml", TrainPersonaConfig)
        inputs = load_persona_inputs(persona_config.data, persona_config.customer)
        tables = {name: result.table for name, result in inputs.tables.items()}
        data = prepare_persona_data(tables["customers"], tables["articles"], tables["transactions"],
                                    persona_config.customer, persona_config.product)
        recommender = PersonaRecommender.load(run)
        _check_same_data(run, data, recommender)
        labels = recommender.personas.assign(recommender.embed([data.profiles.get(u, {}) for u in data.users]))
        return cls(run, recommender, persona_config, data, tables["customers"], dict(zip(data.users, labels.tolist())),
                   {str(r["item_id"]): r for r in tables["articles"].to_pylist()}, inputs.note)

    @property
    def names(self) -> list[str]:
        return list(self.recommender.personas.names)

    @property
    def fields(self) -> list[str]:
        return self.persona_config.customer.numeric + self.persona_config.customer.categorical

    def segment_scores(self) -> np.ndarray:
        """(personas, the data's candidates): the served ranker's persona scores in candidate order."""
        column = {a: n for n, a in enumerate(self.recommender.article_ids)}
        return self.recommender.persona_scores()[:, [column[a] for a in self.data.candidates]]

    def messaged_users(self, cfg: CrmRunConfig) -> list[str]:
        """The one-customer segments: ``cfg.users`` plus ``sample_users`` seeded customers with a test day."""
        with_test_day = sorted(set(self.data.split.test["user_id"]) & set(self.persona_of))
        sampled = random.Random(cfg.evaluation.seed).sample(with_test_day, min(cfg.sample_users, len(with_test_day)))
        return list(dict.fromkeys(cfg.users + sampled))

    def segments(self, cfg: CrmRunConfig, profiles: Mapping[str, Mapping]) -> list[dict]:
        """The segment rows the writers get: personas (aggregates of ``profiles``) and customers."""
        n = cfg.crm.products_per_message
        unknown = [p for p in cfg.personas or [] if p not in self.names]
        missing = [u for u in cfg.users if u not in self.persona_of]
        foreign = [i for i in cfg.product_ids if i not in self.items]
        if unknown or missing or foreign:
            raise ConfigError(f"crm: unknown persona(s) {unknown} (the run has {self.names}), customer(s) {missing[:5]} "
                              f"or product_ids {foreign[:5]} (not in the run's catalog)")
        if len(set(cfg.product_ids)) > n:
            raise ConfigError(f"crm: product_ids has {len(set(cfg.product_ids))} products; a message takes at most "
                              f"crm.products_per_message = {n}")
        rows = []
        for p, name in enumerate(self.names):
            if cfg.personas is None or name in cfg.personas:
                members = [profiles.get(u, {}) for u, q in self.persona_of.items() if q == p]
                segment = segment_of_persona(name, members, self.fields, self.persona_config.customer.bands)
                rows.append({"kind": "persona", "key": name, "name": segment.name, "profile": segment.profile,
                             "product_ids": [a for a, _ in self.recommender.recommend_persona(name, n)]})
        for user in self.messaged_users(cfg):
            own = {f: v for f, v in profiles.get(user, {}).items() if f in self.fields}
            rows.append({"kind": "customer", "key": user, "name": ONE_CUSTOMER, "profile": own,
                         "product_ids": [a for a, _ in self.recommender.recommend(own, n)]})
        for number, profile in enumerate(cfg.profiles):
            try:
                self.recommender.profiles.validate(profile)
            except ValueError as exc:
                raise ConfigError(f"crm profiles[{number}]: {exc}") from exc
            rows.append({"kind": "profile", "key": str(number), "profile": dict(profile),
                         "name": f"profile (persona {self.recommender.persona(profile)})",
                         "product_ids": [a for a, _ in self.recommender.recommend(profile, n)]})
        if not rows:
            raise ConfigError("crm: no segments (personas is an empty list and no users or profiles are asked for)")
        if cfg.product_ids:
            rows = [{**row, "product_ids": list(dict.fromkeys(cfg.product_ids))} for row in rows]
        return [{**row, "profile": json.dumps(row["profile"], ensure_ascii=False, default=str)} for row in rows]


def _check_same_data(run: Path, data, recommender) -> None:
    """The re-read data must be what the run trained on: the same split sizes and candidates, so
    its test day is still the day the run never saw (changed files would move it)."""
    metrics_path = run / "metrics.json"
    recorded = json.loads(metrics_path.read_text()).get("split") if metrics_path.is_file() else None
    if recorded is not None and recorded != data.split.summary():
        raise ConfigError(f"persona_run {run}: its data changed since training (split {recorded} then, "
                          f"{data.split.summary()} now); retrain it on the current files")
    missing = sorted(set(recommender.article_ids) - set(data.candidates))
    if missing:
        raise ConfigError(f"persona_run {run}: {len(missing)} of its products are no longer candidates in its "
                          f"data (e.g. {missing[:5]}); retrain it on the current files")
