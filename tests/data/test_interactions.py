import pandas as pd
import pytest

from recsys.data.interactions import load_hm_customers, load_hm_transactions, load_interaction_log
from recsys.data.result import AdapterError
from recsys.data.schema import INTERACTION_SCHEMA, USER_SCHEMA


@pytest.mark.real_data
def test_hm_transactions_and_customers(shared_data):
    tx = load_hm_transactions(shared_data / "hm_pse_subset/transactions.parquet")
    assert tx.reconciliation()["read"] == 31662 and tx.table.num_rows == 31662
    assert tx.table.schema == INTERACTION_SCHEMA
    frame = tx.table.to_pandas()
    assert frame["user_id"].nunique() == 1364 and frame["item_id"].nunique() == 17033
    assert frame["channel"].isin(["1", "2"]).all() and frame["timestamp"].notna().all()
    # position is each user's order, 0..n-1, consistent with time.
    first_user = frame[frame["user_id"] == frame["user_id"].iloc[0]].sort_values("position")
    assert first_user["position"].tolist() == list(range(len(first_user)))
    assert first_user["timestamp"].is_monotonic_increasing

    users = load_hm_customers(shared_data / "hm_pse_subset/customers.parquet")
    assert users.table.num_rows == 1364 and users.table.schema == USER_SCHEMA
    first = users.table.slice(0, 1).to_pylist()[0]
    assert {"field": "age", "value": 21.0} in first["numeric"]
    assert {"field": "club_member_status", "value": "ACTIVE"} in first["categorical"]


def test_generic_log_with_positions_and_bad_rows(tmp_path):
    path = tmp_path / "log.csv"
    pd.DataFrame({"uid": [1, 1, 2, 2, None, 3], "sku": ["a", "b", "a", "", "c", "d"],
                  "pos": [2, 1, 5, 6, 1, None]}).to_csv(path, index=False)
    result = load_interaction_log(path, user_col="uid", item_col="sku", order_col="pos")
    frame = result.table.to_pandas()
    assert frame[["user_id", "item_id", "position"]].values.tolist() == [["1", "a", 1], ["1", "b", 0], ["2", "a", 0]]
    assert frame["timestamp"].isna().all()
    reasons = dict(zip(result.quarantine.column("record").to_pylist(), result.quarantine.column("reason").to_pylist()))
    assert reasons == {"row 3": "missing_item", "row 4": "missing_user", "row 5": "invalid_order"}
    assert result.reconciliation()["reconciles"] and result.reconciliation()["read"] == 6


def test_generic_log_with_timestamps(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["x", "y", "x"],
                  "ts": ["2024-01-02 10:00", "2024-01-01 09:00", "not a date"]}).to_parquet(path)
    result = load_interaction_log(path, order_col="ts")
    frame = result.table.to_pandas()
    assert frame["item_id"].tolist() == ["x", "y"] and frame["position"].tolist() == [1, 0]
    assert str(frame["timestamp"].iloc[1]) == "2024-01-01 09:00:00"
    assert result.quarantine.column("reason").to_pylist() == ["invalid_order"]
    assert "column 'ts': expected a timestamp" in result.quarantine.column("detail")[0].as_py()


def test_generic_log_missing_columns(tmp_path):
    path = tmp_path / "log.csv"
    pd.DataFrame({"user": [1], "item": [2]}).to_csv(path, index=False)
    with pytest.raises(AdapterError, match=r"missing column\(s\) \['user_id', 'item_id', 'timestamp'\]"):
        load_interaction_log(path)
