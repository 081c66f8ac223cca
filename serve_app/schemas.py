"""Request and response models of the HTTP API (they are the OpenAPI schema at /docs)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EXAMPLE_ATTRIBUTES = {"category": "블라우스", "style": ["로맨틱"], "silhouette": "노멀", "material": ["시폰"],
                      "detail": ["리본"]}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(Strict):
    """An attribute-JSON query (fields of the served JSON encoder; see GET /api/attributes) and/or
    free text matched against the items' text vectors."""
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"attributes": EXAMPLE_ATTRIBUTES, "k": 10},
        {"attributes": {"category": "드레스", "style": ["모던"]}, "text": "black dress", "k": 5, "mmr_lambda": 0.5}]})
    attributes: dict[str, Any] | None = Field(
        None, description="{field: value or [values]}; unknown fields are refused, unseen values of finite fields "
                          "map to UNKNOWN and are reported in unknown_values")
    text: str | None = Field(None, max_length=500, description="optional free text (searched on item texts)")
    k: int | None = Field(None, ge=1, description="results wanted (default search.default_k, at most search.max_k)")
    mmr_lambda: float | None = Field(None, ge=0.0, le=1.0, description="MMR relevance weight (1 = no diversity)")
    scope: Literal["all", "new"] = Field("all", description="'new': only new products")
    exclude_ids: list[str] = Field(default_factory=list, max_length=1000)


class ItemOut(BaseModel):
    item_id: str
    title: str | None = None
    category: str | None = None
    category_path: list[str] = []
    attributes: dict[str, list[str]] = {}
    styles: list[str] = []
    price: float | None = None
    source: str = Field(..., description="'catalog' (the served preprocess run) or 'api' (added with POST /api/items)")
    new: bool = Field(..., description="a new product (added through the API or listed in new_items_file)")
    image_url: str
    stored_by: str | None = Field(None, description="POST: the Recommender replica that wrote the item")


class Hit(BaseModel):
    rank: int
    score: float = Field(..., description="retrieval similarity (cosine; fused with text when both are given)")
    mmr_score: float = Field(..., description="the score the reranker picked it with")
    item: ItemOut


class RerankerInfo(BaseModel):
    name: str
    learned: bool = Field(..., description="a trained reranker (DeepFM/listwise) ordered the list; false: MMR")
    description: str
    model_config = ConfigDict(extra="allow")


class ModelInfo(BaseModel):
    json_encoder_run: str
    embed_run: str
    items: str
    users_run: str | None = Field(None, description="the train_users run behind /api/recommend/user (None: none)")
    index_run: str | None = Field(None, description="the build_index run searched (None: an index built from the "
                                                    "embed run's vectors when the replica loaded)")
    item_tower_run: str | None = Field(None, description="the train_item_tower run behind similar's item_tower space")
    persona_run: str | None = Field(None, description="the train_persona run answering profile-only requests")
    image_encoder_pretrained: str | None = None
    index_backend: str | None = Field(None, description="faiss (an index per replica) or pgvector (one table shared "
                                                        "by every replica)")
    replica: str | None = Field(None, description="the Recommender replica that answered (Serve's replica id)")


class SearchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "query": {"attributes": {"category": ["블라우스"]}}, "unknown_values": {},
        "results": [{"rank": 1, "score": 0.12, "mmr_score": 0.084, "item": {
            "item_id": "1000738-top", "title": "블루 블라우스", "category": "블라우스", "category_path": ["상의", "블라우스"],
            "attributes": {"color": ["블루"]}, "styles": ["모던"], "price": None, "source": "catalog", "new": False,
            "image_url": "/images/1000738-top"}}],
        "reranker": {"name": "mmr", "lambda": 0.7, "learned": False, "description": "..."},
        "scope": "all", "note": None, "model": {"json_encoder_run": "20261122-022605-ca6f63bf",
                                                "embed_run": "20261122-022326-9bc61400", "items": "..."},
        "took_ms": 12.5}]})
    query: dict[str, Any]
    unknown_values: dict[str, list[str]] = {}
    results: list[Hit]
    reranker: RerankerInfo
    scope: str
    note: str | None = None
    space: str | None = Field(None, description="similar: the vectors compared ('item_tower': attributes through the "
                                                "item tower, 'image': image vectors); absent for other searches")
    model: ModelInfo
    took_ms: float


EXAMPLE_USER = {"history": ["1000008-outer", "1000009-onepiece"], "profile": {"age": 31, "style": "로맨틱"},
                "context": "화이트 드레스", "k": 10, "mmr_lambda": 0.8}


class UserRecommendRequest(Strict):
    """A user who is not in the store, described by any of: items they interacted with (oldest
    first), profile fields, and context text (e.g. what they are shopping for). Unknown item ids
    and profile fields are refused; unseen values of a categorical profile field are reported in
    ``unknown_values`` and count as missing."""
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        EXAMPLE_USER, {"history": ["1000008-outer"], "k": 5}, {"profile": {"age": 45}, "context": "블랙 코트"}]})
    history: list[str] = Field(default_factory=list, max_length=200,
                               description="catalog item ids the user interacted with, oldest first")
    profile: dict[str, Any] | None = Field(None, description="profile fields of the served user model, e.g. "
                                                             "{\"age\": 31, \"style\": \"로맨틱\"} (see /healthz: "
                                                             "query_encoder.users)")
    context: str | None = Field(None, max_length=500, description="free text (encoded like text search)")
    k: int | None = Field(None, ge=1, description="results wanted (default search.default_k, at most search.max_k)")
    mmr_lambda: float | None = Field(None, ge=0.0, le=1.0,
                                     description="diversity: 1 = the reranker's order (default users.mmr_lambda), "
                                                 "lower trades relevance for variety")
    exclude_ids: list[str] = Field(default_factory=list, max_length=1000)


class UserHit(BaseModel):
    rank: int
    score: float = Field(..., description="the reranker's score (learned model, or the fallback's fusion)")
    mmr_score: float = Field(..., description="the score MMR picked it with (= min-max scaled score at lambda 1)")
    sources: dict[str, float] = Field(..., description="each candidate source's score (0: not proposed by it)")
    item: ItemOut


class UserQuery(BaseModel):
    user_id: str | None = None
    source: Literal["store", "request"]
    history: list[str]
    profile: dict[str, Any]
    context: str | None = None
    not_in_user_model: list[str] = Field([], description="history items the user tower has no embedding for "
                                                         "(used by nothing but the exclusion of seen items)")


class UserRecommendResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "user": {"user_id": "user-000000", "source": "store", "history": ["1000628-bottom"],
                 "profile": {"age": 58.0, "style": "스트리트"}, "context": "레드 스커트", "not_in_user_model": []},
        "unknown_values": {}, "results": [{"rank": 1, "score": 1.2, "mmr_score": 1.0,
                                           "sources": {"score_itemknn": 1.0, "score_mostpop": 0.0,
                                                       "score_user_tower": 0.41},
                                           "item": {"item_id": "1000322-bottom", "title": "블랙 스커트",
                                                    "category": "스커트", "source": "catalog", "new": False,
                                                    "image_url": "/images/1000322-bottom"}}],
        "reranker": {"name": "deepfm", "learned": True, "lambda": 1.0, "description": "..."},
        "candidates": 74, "note": "synthetic stand-in: ...", "model": {
            "json_encoder_run": "...", "embed_run": "...", "items": "...", "users_run": "20261122-052700-5cc3f5f6"},
        "took_ms": 25.0}]})
    user: UserQuery
    unknown_values: dict[str, list[str]] = {}
    results: list[UserHit]
    reranker: RerankerInfo
    candidates: int = Field(..., description="merged candidates the reranker ordered")
    note: str | None = None
    answered_by: Literal["user_tower", "persona"] = Field(
        "user_tower", description="persona: a profile-only request (no user id, history or context) answered by the "
                                  "persona two-tower; user_tower: the user tower's candidates and the reranker")
    persona: str | None = Field(None, description="the profile's persona (nearest k-means centroid), persona answers")
    model: ModelInfo
    took_ms: float


class CrmRequest(Strict):
    """A customer segment, exactly one of: a persona of the served persona run (by name, see
    /healthz persona.personas), a stored customer (their own profile and recommendations), or a
    profile (its persona's products). Optionally the products to write about and a campaign goal."""
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"persona": "age 25-34 · ACTIVE club · NONE news", "goal": "봄 신상", "channel": "kakao"},
        {"user_id": "user-000000", "channel": "sms"}, {"profile": {"age": 31}, "product_ids": ["1000008-outer"]}]})
    persona: str | None = Field(None, max_length=200, description="a persona name of the served persona run")
    user_id: str | None = Field(None, max_length=128, description="a customer of the served user store")
    profile: dict[str, Any] | None = Field(None, description="profile fields (as POST /api/recommend/user)")
    product_ids: list[str] | None = Field(None, max_length=10, description="write about these catalog items "
                                          "(default: the segment's top recommendations)")
    goal: str = Field("", max_length=300, description="campaign goal: the query the product facts are retrieved with")
    channel: str = Field("kakao", max_length=32, description="a configured channel (its length limit applies)")


class CrmMessageOut(BaseModel):
    tone: str
    text: str
    product_ids: list[str] = Field(..., description="products the message names (all among the chosen ones)")
    source_ids: list[str] = Field(..., description="the fact snippets it used (keys of `sources`)")
    backend: str = Field(..., description="who wrote it; 'crm templates (stand-in, no LLM)' is the offline default")
    attempt: int


class CrmSource(BaseModel):
    snippet_id: str
    item_id: str
    field: str
    text: str


class CrmRejected(BaseModel):
    tone: str
    attempt: int
    text: str
    reasons: list[str]


class CrmSegmentOut(BaseModel):
    name: str
    profile: dict[str, Any] = Field(..., description="aggregates for a persona; the customer's own fields otherwise")


class CrmResponse(BaseModel):
    segment: CrmSegmentOut
    channel: str
    product_ids: list[str]
    products: list[ItemOut]
    messages: list[CrmMessageOut] = Field(..., description="one per tone that passed every check")
    sources: dict[str, list[CrmSource]] = Field(..., description="the retrieved facts per product (the prompt's)")
    rejected: list[CrmRejected] = Field(..., description="drafts that failed a check, with the reasons")
    dropped_tones: list[str]
    backend: str
    retrieval: str = Field(..., description="the embedder that retrieved the facts")
    model: ModelInfo
    took_ms: float | None = None


class MatchedBestSeller(BaseModel):
    item_id: str
    similarity: float
    shared: dict[str, list[str]] = Field(..., description="category/color/style values both items carry")


class NewProductHit(Hit):
    matched_best_sellers: list[MatchedBestSeller]


class TrendRow(BaseModel):
    value: str
    best_sellers: int = Field(..., description="best sellers carrying this value")
    share: float
    new_products_matching: int = Field(..., description="recommended new products carrying this value")


class BestSellerSet(BaseModel):
    source: str
    n: int
    items: list[dict[str, Any]]


class Top10ToNewResponse(BaseModel):
    best_sellers: BestSellerSet
    results: list[NewProductHit]
    trends: dict[str, list[TrendRow]] = Field(..., description="per field: category, color, style")
    reranker: RerankerInfo
    scope: str
    note: str | None = None
    model: ModelInfo
    took_ms: float


class ItemMetadata(Strict):
    """Metadata of a new product (the multipart field ``metadata``, a JSON object)."""
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "item_id": "new-0001", "title": "핑크 블라우스", "category": "블라우스", "category_path": ["상의", "블라우스"],
        "attributes": {"color": ["핑크"], "material": ["시폰"]}, "styles": ["로맨틱"], "price": 39.0, "new": True}]})
    item_id: str = Field(..., pattern=r"^[\w.\-:]{1,128}$")
    title: str | None = Field(None, max_length=300)
    category: str | None = Field(None, max_length=100)
    category_path: list[str] = Field(default_factory=list, max_length=10)
    attributes: dict[str, str | list[str]] = Field(default_factory=dict, description="{field: value or [values]}")
    styles: list[str] = Field(default_factory=list, max_length=20)
    price: float | None = Field(None, ge=0)
    new: bool = True


class DeleteResponse(BaseModel):
    deleted: str
    stored_by: str | None = Field(None, description="the Recommender replica that wrote the deletion")


class ErrorResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": "unknown_field", "detail": "attributes: unknown field(s) ['colour']; this model reads [...]",
         "field": "attributes.colour"}]})
    error: str
    detail: str
    field: str | None = None
    problems: list[dict[str, Any]] | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    deployments: dict[str, Any]


class KpiResponse(BaseModel):
    kpi: dict[str, Any]
    loss_curve: list[dict[str, Any]]
    top_k_images: list[dict[str, Any]]
    hyperparams: dict[str, Any]
    augmented_samples: dict[str, Any]
    serving: dict[str, Any]
    model: dict[str, Any]
