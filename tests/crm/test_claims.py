from recsys.crm.claims import Vocabulary, check_message
from recsys.crm.facts import item_snippets
from tests.crm.conftest import CATALOG

VOCAB = Vocabulary.from_rows(CATALOG)
P1 = {"P1": item_snippets(CATALOG[0])}


def kinds(violations):
    return sorted((v.kind, v.value) for v in violations)


def test_faithful_message_passes():
    assert check_message("블랙 플리츠 스커트! 미디 기장에 울 소재라 가을에 딱이에요.", P1, VOCAB) == []


def test_swapped_colour_is_caught():
    got = check_message("화이트 컬러의 플리츠 스커트, 울 소재예요.", P1, VOCAB)
    assert kinds(got) == [("unsupported_value", "화이트")]
    assert "색상" in got[0].reason


def test_foreign_product_by_title_and_by_id_is_caught():
    got = check_message("블랙 플리츠 스커트와 화이트 레이스 블라우스를 함께!", P1, VOCAB)
    assert kinds(got) == [("foreign_product", "화이트 레이스 블라우스"), ("unsupported_value", "레이스"),
                          ("unsupported_value", "블라우스"), ("unsupported_value", "화이트")]
    assert kinds(check_message("추천: P3", P1, VOCAB)) == [("foreign_product", "p3")]


def test_only_retrieved_snippets_count_as_support():
    # 울 is P1's material, but a snippet that was not retrieved supports nothing.
    title_only = {"P1": P1["P1"][:1]}
    assert kinds(check_message("블랙 플리츠 스커트, 울 소재", title_only, VOCAB)) == [("unsupported_value", "울")]


def test_whole_phrase_matching():
    assert check_message("a bored look", P1, VOCAB) == []                        # "red" inside a word
    assert kinds(check_message("red point", P1, VOCAB)) == [("unsupported_value", "red")]
    assert kinds(check_message("블랙이에요", {"P2": item_snippets(CATALOG[1])}, VOCAB)) == [("unsupported_value", "블랙")]
    # the longer value wins: 오프화이트 is one (unsupported) colour, not 화이트
    assert kinds(check_message("오프화이트", {"P2": item_snippets(CATALOG[1])}, VOCAB)) == [
        ("unsupported_value", "오프화이트")]
    assert kinds(check_message("NAVY DENIM JACKET", {"P1": P1["P1"]}, VOCAB))[0] == ("foreign_product",
                                                                                     "navy denim jacket")
