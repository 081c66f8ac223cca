import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.config import ConfigError
from recsys.data.demo_users import STAND_IN
from recsys.data.interactions import interactions_table, users_table
from recsys.data.result import AdapterError
from recsys.data.schema import ITEM_SCHEMA, attributes, table_from_rows
from recsys.eval.persona import (CustomerFieldsConfig, HeldOut, PersonaDataConfig, ProductFieldsConfig, chance_report,
                                 cluster_personas, describe_personas, item_records, load_persona_inputs, mean_prices,
                                 persona_chart, persona_popularity_scores, popularity_scores, prepare_persona_data,
                                 profiles_from_users, purchases_frame, ranking_report, split_last_day, tsne_plot)


def _purchases(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "day", "price"]).assign(day=lambda f: pd.to_datetime(f["day"]))


def test_split_holds_out_the_last_day_and_validates_on_the_second_to_last():
    purchases = _purchases([
        ("u3", "a", "2020-01-01", 1.0), ("u3", "b", "2020-01-05", 1.0), ("u3", "c", "2020-01-09", 1.0),
        ("u3", "d", "2020-01-09", 1.0), ("u3", "e", "2020-01-02", 1.0),          # 4 days
        ("u2", "a", "2020-02-01", 2.0), ("u2", "b", "2020-03-01", 2.0),          # 2 days
        ("u1", "c", "2020-02-02", 3.0), ("u1", "d", "2020-02-02", 3.0)])         # 1 day: cold
    split = split_last_day(purchases)
    key = lambda frame: sorted(zip(frame["user_id"], frame["item_id"]))
    assert key(split.test) == [("u1", "c"), ("u1", "d"), ("u2", "b"), ("u3", "c"), ("u3", "d")]
    assert key(split.val) == [("u3", "b")]                       # u3's second-to-last day
    assert key(split.train) == [("u2", "a"), ("u3", "a"), ("u3", "e")]  # strictly before the val/test day
    assert split.warm_users == ["u2", "u3"] and split.cold_users == ["u1"]
    assert split.summary()["val_users"] == 1
    assert mean_prices(split.train) == {"a": 1.5, "e": 1.0}


def test_purchases_are_deduplicated_per_day_and_restricted_to_known_items():
    table = interactions_table(pd.DataFrame({
        "user_id": ["u", "u", "u", "u"], "item_id": ["a", "a", "a", "x"],
        "timestamp": pd.to_datetime(["2020-01-01 10:00", "2020-01-01 12:00", "2020-01-02 09:00", "2020-01-01 09:00"]),
        "price": [1.0, 1.0, 2.0, 3.0]}))
    frame = purchases_frame(table, {"a"})
    assert frame[["item_id", "price"]].values.tolist() == [["a", 1.0], ["a", 2.0]]


def test_canonical_tables_become_profiles_and_item_records():
    users = users_table(["u1", "u2"], {"age": pd.Series([31.0, float("nan")])},
                        {"club_member_status": pd.Series(["ACTIVE", None])})
    assert profiles_from_users(users) == {"u1": {"age": 31.0, "club_member_status": "ACTIVE"}, "u2": {}}
    items = table_from_rows([
        {"item_id": "1", "source": "hm", "category_path": ["Garment Upper body", "Sweater"], "category": "Sweater",
         "std_attributes": attributes({"index_group_name": "Ladieswear"}), "re_attributes": attributes({"section_name": "Womens"})},
        {"item_id": "2", "source": "hm", "category_path": ["Socks"], "category": "Socks"}], ITEM_SCHEMA)
    records = item_records(items, ["category", "parent_category", "index_group_name", "section_name", "price_bucket"])
    assert records["1"] == {"category": "Sweater", "parent_category": "Garment Upper body",
                            "index_group_name": "Ladieswear", "section_name": "Womens"}
    assert records["2"] == {"category": "Socks", "parent_category": None, "index_group_name": None,
                            "section_name": None}
    with pytest.raises(ValueError, match="brand"):
        item_records(items, ["category", "brand"])


def test_personas_are_named_by_dominant_attributes_on_a_hand_made_table():
    profiles = [{"age": 27.0, "club_member_status": "ACTIVE", "fashion_news_frequency": "Regularly"},
                {"age": 31.0, "club_member_status": "ACTIVE", "fashion_news_frequency": "NONE"},
                {"age": 52.0, "club_member_status": "ACTIVE", "fashion_news_frequency": "Regularly"},
                {"age": 60.0, "club_member_status": "PRE-CREATE", "fashion_news_frequency": "NONE"},
                {"age": 58.0, "fashion_news_frequency": "NONE"},
                {"club_member_status": "PRE-CREATE", "fashion_news_frequency": "NONE"}]
    labels = np.array([0, 0, 0, 1, 1, 1])
    described = describe_personas(profiles, labels, ["age", "club_member_status", "fashion_news_frequency"],
                                  {"age": [25, 35, 45, 55, 65]}, {"club_member_status": "club",
                                                                  "fashion_news_frequency": "news"})
    # persona 0: ages 25-34 (2 of 3), ACTIVE 3/3, Regularly 2/3; persona 1: 55-64 2/3, PRE-CREATE 2/3, NONE 3/3
    assert [p["name"] for p in described] == ["age 25-34 · ACTIVE club · Regularly news",
                                              "age 55-64 · PRE-CREATE club · NONE news"]
    assert described[0]["size"] == 3 and described[0]["dominant"]["age"] == {"value": "25-34", "share": 0.667}
    assert described[1]["dominant"]["club_member_status"]["share"] == 0.667
    # equal counts: the alphabetically first value; identical names are numbered; missing reads "unknown"
    twins = describe_personas([{"x": "b"}, {"x": "a"}, {"x": "a"}, {}], np.array([0, 0, 1, 2]), ["x"], {}, {})
    assert [p["name"] for p in twins] == ["a x", "a x (2)", "unknown x"]


def test_cluster_personas_orders_by_size_and_caps_k_at_distinct_points():
    vectors = np.array([[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 5, dtype=np.float32)
    labels, centroids = cluster_personas(vectors, k=6, seed=0)
    assert labels.tolist() == [1, 1, 0, 0, 0, 0, 0] and np.allclose(centroids, [[0, 1], [1, 0]])


def test_popularity_baselines_by_hand():
    items = np.array([0, 0, 1, 2, 2, 2])
    personas = np.array([0, 0, 1, 1, 1, 0])
    assert popularity_scores(items, 4).tolist() == [2, 1, 3, 0]
    scores = persona_popularity_scores(items, personas, 2, 4)
    # persona 0 bought item 0 twice, item 2 once; persona 1 item 1 once, item 2 twice; + overall / 4
    assert np.allclose(scores, [[2 + 2 / 4, 0 + 1 / 4, 1 + 3 / 4, 0], [0 + 2 / 4, 1 + 1 / 4, 2 + 3 / 4, 0]])


def test_ranking_report_overall_and_per_persona_by_hand(tmp_path):
    test = pd.DataFrame({"user_id": ["u1", "u2", "u2", "u3"], "item_id": ["a", "c", "z", "b"]})
    candidate_index = {"a": 0, "b": 1, "c": 2, "d": 3}
    item_category = {"a": "top", "b": "dress", "c": "top", "d": "shoe", "z": "shoe"}
    held_out = HeldOut.build(test, ["u1", "u2", "u3", "u9"], candidate_index, item_category,
                             {"u1": 0, "u2": 0, "u3": 1, "u9": 1})
    assert held_out.users == ["u1", "u2", "u3"]  # u9 has no held-out purchase
    assert held_out.items == [{0}, {2}, {1}] and held_out.categories[1] == {"top", "shoe"}
    scores = np.array([[4, 3, 2, 1],    # top 3 = a b c: hit (a)
                       [4, 3, 0, 2],    # a b d: miss on c, but d is a shoe: category hit
                       [4, 0, 3, 2]])   # a c d: miss, no dress
    category = np.array(["top", "dress", "top", "shoe"])
    report = ranking_report(scores, held_out, category, ["young", "older"], k=3)
    assert report["overall"] == {"n": 3, "hit@3": pytest.approx(1 / 3), "category_hit@3": pytest.approx(2 / 3)}
    assert report["per_persona"]["young"] == {"n": 2, "hit@3": 0.5, "category_hit@3": 1.0}
    assert report["per_persona"]["older"] == {"n": 1, "hit@3": 0.0, "category_hit@3": 0.0}
    # equal scores: candidate order by default, or the given tie order (here: d, c, b, a)
    flat = np.zeros((3, 4))
    assert ranking_report(flat, held_out, category, ["young", "older"], 1)["overall"]["hit@1"] == pytest.approx(1 / 3)
    reverse = ranking_report(flat, held_out, category, ["young", "older"], 2, tie_order=np.array([3, 2, 1, 0]))
    assert reverse["overall"]["hit@2"] == pytest.approx(1 / 3)  # top 2 = d, c: only u2 (bought c) hits
    chance = chance_report(held_out, 4, ["young", "older"], 3)
    assert chance["overall"]["hit@3"] == pytest.approx(0.75)  # one relevant of 4, 3 drawn
    persona_chart({"model": report, "most_popular": report}, ["young", "older"], [10, 5], tmp_path / "p.png", "t", 3)
    assert (tmp_path / "p.png").stat().st_size > 5_000


def test_tsne_plot_draws_customers_and_products(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    tsne_plot(vectors[:30], np.arange(30) % 2, ["p0", "p1"], vectors[30:], ["Divided", "Ladieswear"] * 15,
              tmp_path / "tsne.png", "t", sample=20)
    assert (tmp_path / "tsne.png").stat().st_size > 5_000


def _users_run(root, users: pd.DataFrame, log: pd.DataFrame, items: list[dict], manifest: bool = True):
    """A train_users run's files by hand (users.parquet, interactions.parquet, manifest naming the items)."""
    import json

    items_dir = root / "items"
    items_dir.mkdir(parents=True)
    pq.write_table(table_from_rows(items, ITEM_SCHEMA), items_dir / "part-0.parquet")
    run = root / "users-run"
    run.mkdir()
    users.to_parquet(run / "users.parquet", index=False)
    log.to_parquet(run / "interactions.parquet", index=False)
    if manifest:
        (run / "manifest.json").write_text(json.dumps({"inputs": {"items": str(items_dir)}}))
    return run, items_dir


def _demo_item(item_id, category, style, colour):
    return {"item_id": item_id, "source": "kfashion", "category_path": ["상의", category], "category": category,
            "std_attributes": attributes({"category": category, "color": colour}), "styles": [style]}


def test_a_users_run_becomes_the_canonical_tables_with_every_record_accounted_for(tmp_path):
    users = pd.DataFrame({"user_id": ["user-1", "user-2", "user-2", None], "history": [["a"], ["b"], ["b"], []],
                          "age": [31.0, None, 40.0, 20.0], "style": ["스트리트", "로맨틱", "로맨틱", None],
                          "context": ["x", "y", "y", "z"]})
    log = pd.DataFrame({"user_id": ["user-1", "user-1", "user-2", "user-2"], "item_id": ["a", "zz", "b", "a"],
                        "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03", None])})
    items = [_demo_item("a", "티셔츠", "스트리트", "블랙"), _demo_item("b", "블라우스", "로맨틱", "화이트"),
             _demo_item("b", "블라우스", "로맨틱", "화이트")]
    run, items_dir = _users_run(tmp_path, users, log, items)
    inputs = load_persona_inputs(PersonaDataConfig(users_run=str(run)), CustomerFieldsConfig(["style"], ["age"]))
    assert inputs.note == STAND_IN and inputs.paths == {"users_run": str(run.resolve()), "items": str(items_dir)}
    (tmp_path / "LATEST").write_text("users-run\n")   # a runs root: its newest run
    latest = load_persona_inputs(PersonaDataConfig(users_run=str(tmp_path)), CustomerFieldsConfig(["style"], ["age"]))
    assert latest.paths["users_run"] == str(run.resolve())
    tables = {name: result.reconciliation() for name, result in inputs.tables.items()}
    assert all(t["reconciles"] for t in tables.values())
    assert tables["customers"]["quarantine_reasons"] == {"missing_user": 1, "duplicate_user": 1}
    assert tables["transactions"]["quarantine_reasons"] == {"unknown_item": 1, "invalid_order": 1}
    assert tables["articles"]["quarantine_reasons"] == {"duplicate_item": 1}
    assert profiles_from_users(inputs.tables["customers"].table) == {"user-1": {"age": 31.0, "style": "스트리트"},
                                                                     "user-2": {"style": "로맨틱"}}
    # the K-Fashion style (the items' `styles`) and colour (a STD attribute) are product fields
    records = item_records(inputs.tables["articles"].table, ["category", "parent_category", "style", "color"])
    assert records["a"] == {"category": "티셔츠", "parent_category": "상의", "style": "스트리트", "color": "블랙"}
    # no prices in the log: price_bucket is refused; customer fields must exist in users.parquet
    with pytest.raises(ValueError, match="'price_bucket' needs purchase prices"):
        prepare_persona_data(inputs.tables["customers"].table, inputs.tables["articles"].table,
                             inputs.tables["transactions"].table, CustomerFieldsConfig(["style"], ["age"]),
                             ProductFieldsConfig(["category", "price_bucket"], colour_by="category"))
    with pytest.raises(AdapterError, match=r"users.parquet: missing column\(s\) \['height'\]"):
        load_persona_inputs(PersonaDataConfig(users_run=str(run)), CustomerFieldsConfig(["style"], ["height"]))
    (run / "manifest.json").write_text("{}")
    with pytest.raises(AdapterError, match=r"manifest.json: no field inputs.items"):
        load_persona_inputs(PersonaDataConfig(users_run=str(run)), CustomerFieldsConfig(["style"], ["age"]))
    assert load_persona_inputs(PersonaDataConfig(users_run=str(run), items=str(items_dir)),
                               CustomerFieldsConfig(["style"], ["age"])).paths["items"] == str(items_dir)
    with pytest.raises(ConfigError, match="data.items is read only with data.users_run"):
        PersonaDataConfig(items=str(items_dir))


def test_a_customer_field_no_profile_has_is_refused():
    users = users_table(["u1"], {"age": pd.Series([31.0])}, {})
    with pytest.raises(ValueError, match=r"customer field\(s\) \['club_member_status'\] have no value"):
        prepare_persona_data(users, table_from_rows([_demo_item("a", "티셔츠", "스트리트", "블랙")], ITEM_SCHEMA),
                             interactions_table(pd.DataFrame({"user_id": ["u1"], "item_id": ["a"],
                                                              "timestamp": pd.to_datetime(["2020-01-01"])})),
                             CustomerFieldsConfig(["club_member_status"], ["age"]), ProductFieldsConfig(["category"]))


@pytest.mark.real_data
@pytest.mark.slow
def test_split_on_the_real_hm_subset(shared_data):
    from recsys.data.catalogs import load_hm_articles
    from recsys.data.interactions import load_hm_transactions

    root = shared_data / "hm_pse_subset"
    records = item_records(load_hm_articles(root / "articles.parquet").table, ["category", "index_group_name"])
    purchases = purchases_frame(load_hm_transactions(root / "transactions.parquet").table, set(records))
    split = split_last_day(purchases)
    # 8,874 deduplicated purchases of the 4,116 articles with metadata, 1,037 customers (SOURCE.md)
    assert len(purchases) == 8874 and purchases["user_id"].nunique() == 1037
    assert split.summary() == {"train_rows": 5432, "val_rows": 1139, "test_rows": 2303, "val_users": 480,
                               "warm_users": 639, "cold_users": 398}
    assert split.train["item_id"].nunique() == 2772  # the candidates


def test_served_ranker_is_chosen_on_the_validation_day_by_hand():
    """Persona 0 (u1, u2) bought a, persona 1 (u3) bought b in training. Every customer vector points
    at product c. Validation day: u1 buys a, u3 buys b -> PersonaPop hits both (1.0), the model none:
    PersonaPop is served. When the validation purchases are c, the model wins; a tie keeps the model.
    The test day never enters the decision (a test day of c's would not change the first case)."""
    from recsys.eval.persona import PurchaseSplit, choose_served_ranker

    frame = lambda rows: pd.DataFrame(rows, columns=["user_id", "item_id"])  # noqa: E731
    train = frame([("u1", "a"), ("u2", "a"), ("u2", "a"), ("u3", "b"), ("u3", "c")])
    persona_of, user_index = {"u1": 0, "u2": 0, "u3": 1}, {"u1": 0, "u2": 1, "u3": 2}
    customer_vectors = np.tile(np.array([[0.0, 0.0, 1.0]], np.float32), (3, 1))
    products = np.eye(3, dtype=np.float32)
    category = {"a": "x", "b": "y", "c": "z"}

    def choose(val, test=frame([("u1", "c"), ("u3", "c")])):
        split = PurchaseSplit(train, frame(val), test, ["u1", "u2", "u3"], [])
        return choose_served_ranker(split, ["a", "b", "c"], category, persona_of, 2, customer_vectors, user_index,
                                    products, k=1)

    decision, scores = choose([("u1", "a"), ("u3", "b")])
    assert decision["ranker"] == "persona_popular" and decision["n_customers"] == 2
    assert decision["validation_hit@1"] == {"model": 0.0, "persona_popular": 1.0}
    # persona 0: a bought 3 times -> 3 + overall/(max+1): a 3 + 3/4, b 1/4, c 1/4; persona 1: b 1 + 1/4, c 1 + 1/4
    assert scores.tolist() == [[3.75, 0.25, 0.25], [0.75, 1.25, 1.25]]
    assert choose([("u1", "c"), ("u3", "c")])[0]["ranker"] == "model"
    assert choose([("u1", "a"), ("u3", "c")])[0]["ranker"] == "model"       # 0.5 each: the model stays


def test_best_cover_and_the_category_ceiling_by_hand():
    from recsys.eval.persona import HeldOut, best_cover, category_ceiling, profile_cells

    bought = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=bool)
    # two columns: {1, 2} cover rows 1, 2, 4; no pair covers 4 rows (column 0 and 3 each cover one row alone)
    assert best_cover(bought, 2) == 3 and best_cover(bought, 1) == 2 and best_cover(bought, 4) == 5
    # greedy would take column 1 or 2 first either way; exact search is what a ceiling needs
    assert best_cover(np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=bool), 2) == 4
    held_out = HeldOut(users=["a", "b", "c", "d"], items=[set()] * 4,
                       categories=[{"dress"}, {"dress", "shoes"}, {"jeans"}, {"socks"}], personas=np.array([0, 0, 1, 1]))
    candidates = ["dress", "jeans", "shoes"]                        # nobody can be offered socks
    assert category_ceiling(held_out, np.zeros(4), candidates, 1) == 0.5          # dress for everyone: a, b
    assert category_ceiling(held_out, held_out.personas, candidates, 1) == 0.75   # dress for 0, jeans for 1
    assert category_ceiling(held_out, held_out.personas, candidates, 4) is None   # exact search only up to k = 3
    cells = profile_cells({"a": {"age": 23, "club": "ACTIVE"}, "b": {"age": 41}}, ["a", "b", "z"], ["age", "club"],
                          {"age": [25, 35]})
    assert cells[0].endswith("|ACTIVE") and cells[0] != cells[1] and cells[1].split("|")[1] == cells[2].split("|")[1]


def test_ranking_report_one_per_category_with_a_tie_order():
    from recsys.eval.persona import HeldOut, ranking_report

    # candidates 0..4 with categories; one user, all scores equal: the tie order decides
    category = np.array(["dress", "dress", "jeans", "shoes", "dress"])
    held_out = HeldOut(users=["u"], items=[{3}], categories=[{"shoes"}], personas=np.array([0]))
    scores = np.zeros((1, 5))
    tie_order = np.array([4, 1, 0, 2, 3])                     # popularity: 4 first, 3 last
    plain = ranking_report(scores, held_out, category, ["p"], 2, tie_order)
    distinct = ranking_report(scores, held_out, category, ["p"], 2, tie_order, one_per_category=True)
    three = ranking_report(scores, held_out, category, ["p"], 3, tie_order, one_per_category=True)
    # plain top 2: 4, 1 (both dresses); one per category: 4 (dress), 2 (jeans); top 3 adds 3 (shoes)
    assert plain["overall"]["category_hit@2"] == 0 and distinct["overall"]["category_hit@2"] == 0
    assert three["overall"]["category_hit@3"] == 1 and three["overall"]["hit@3"] == 1
    assert ranking_report(scores, held_out, category, ["p"], 3, tie_order)["overall"]["category_hit@3"] == 0
