import pytest

from recsys.crm.claims import Vocabulary, check_message
from recsys.crm.evaluation import EvalCase, inject_claims, precision_recall, score_checker
from recsys.crm.facts import item_snippets
from tests.crm.conftest import CATALOG

VOCAB = Vocabulary.from_rows(CATALOG)
P1 = {"P1": item_snippets(CATALOG[0])}
FAITHFUL = "블랙 플리츠 스커트, 미디 기장에 울 소재예요."


def test_precision_recall_by_hand():
    # tp = 2 (cases 0, 3), flagged 3, true 3 -> P = R = F1 = 2/3
    assert precision_recall([True, True, False, True], [True, False, True, True]) == pytest.approx((2 / 3,) * 3)
    assert precision_recall([False, False], [False, False]) == (0.0, 0.0, 0.0)


def test_score_checker_by_hand():
    cases = [EvalCase("화이트 플리츠 스커트", P1, True, "swap_value"),          # caught: tp
             EvalCase("블랙 플리츠 스커트, 100% 캐시미어", P1, True, "free_text"),  # outside the vocabulary: fn
             EvalCase(FAITHFUL, P1, False),                                        # tn
             EvalCase("블랙 플리츠 스커트, 데님 느낌", P1, False)]                 # untouched but wrong: fp
    s = score_checker(cases, VOCAB)
    assert (s.tp, s.fp, s.fn, s.tn) == (1, 1, 1, 1)
    assert (s.precision, s.recall, s.f1) == (0.5, 0.5, 0.5)
    assert s.recall_by_kind == {"free_text": 0.0, "swap_value": 1.0}


def test_injection_is_seeded_and_every_injected_claim_is_false():
    messages = [(FAITHFUL, P1)] * 10
    cases = inject_claims(messages, VOCAB, seed=3, corrupt_share=0.4)
    assert [(c.text, c.kind) for c in cases] == [(c.text, c.kind) for c in inject_claims(messages, VOCAB, seed=3,
                                                                                        corrupt_share=0.4)]
    corrupted = [c for c in cases if c.corrupted]
    assert len(corrupted) == 4 and all(c.text != FAITHFUL for c in corrupted)
    assert all(c.text == FAITHFUL for c in cases if not c.corrupted)
    assert all(check_message(c.text, c.facts, VOCAB) for c in corrupted)
    s = score_checker(cases, VOCAB)
    assert (s.precision, s.recall) == (1.0, 1.0)


def test_swap_stays_within_the_field():
    cases = inject_claims([("색상은 블랙", P1)], VOCAB, seed=0, corrupt_share=1.0, kinds=["swap_value"])
    assert cases[0].kind == "swap_value" and cases[0].detail.startswith("색상: 블랙 -> ")
    assert cases[0].text.replace("색상은 ", "") in {"화이트", "네이비", "오프화이트"}
