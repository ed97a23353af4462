"""The rules of `runtime.privacy.known`: which values recur, and how their occurrences meet
the detections."""

from __future__ import annotations

from runtime.privacy.entities import NATIONAL_ID, PERSON, PHONE, RAW, SECRET, Span
from runtime.privacy.gazetteer import load
from runtime.privacy.known import known_values, merge, name_parts, occurrences
from runtime.privacy.vault import Vault


def _keys(values: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k.label, " ".join(k.words)) for k in known_values(values, load())]


def test_short_values_and_placeholder_look_alikes_are_not_looked_for() -> None:
    assert _keys([(PERSON, "Li"), (SECRET, "12"), (RAW, "PERSON_1"), (SECRET, "4821")]) == [
        (SECRET, "4821")
    ]


def test_a_value_known_under_two_types_takes_the_higher_ranked_one() -> None:
    assert _keys([(PERSON, "Jordan"), (NATIONAL_ID, "Jordan")]) == [(NATIONAL_ID, "Jordan")]


def test_white_space_of_any_width_joins_a_values_words() -> None:
    known = known_values([(SECRET, "correct horse battery")])
    assert [s.start for s in occurrences(known, "a correct  horse\nbattery b")] == [2]


def test_name_parts_leave_short_common_and_function_words() -> None:
    lists = load()
    assert name_parts("Zyxa Quorn", lists) == ["Zyxa", "Quorn"]
    assert name_parts("Mr Will van Quorn", lists) == ["Quorn"]
    assert name_parts("John A. Leiva", lists) == ["John", "Leiva"]
    assert name_parts("Quorn", lists) == []  # one word: the value itself
    assert name_parts("okafor chidi", None) == []  # lower case needs the lists


def test_an_occurrence_inside_a_replaced_detection_is_left_to_it() -> None:
    text = "call +1 415 555 4821 now"
    phone = Span(5, 20, PHONE)
    pin = Span(16, 20, SECRET, "known")
    assert merge([phone], [pin], text, lambda s: True) == [phone]


def test_an_occurrence_wins_over_what_it_overlaps_and_trims_it() -> None:
    text = "Zyxa Quorn Smith"
    person = Span(5, 16, PERSON)  # "Quorn Smith" found here; "Zyxa Quorn" known
    known = Span(0, 10, PERSON, "known")
    assert merge([person], [known], text, lambda s: True) == [known, Span(11, 16, PERSON)]


def test_an_occurrence_inside_an_allowed_detection_is_replaced() -> None:
    text = "call +1 415 555 4821 now"
    phone = Span(5, 20, PHONE)
    pin = Span(16, 20, SECRET, "known")
    merged = merge([phone], [pin], text, lambda s: s.label != PHONE)
    assert merged == [Span(6, 15, PHONE), pin]  # the rest of the phone stays allowed


def test_look_alikes_stay_whole() -> None:
    text = "IP_1 4821"
    raw = Span(0, 4, RAW, "echo")
    assert merge([raw], [Span(0, 9, SECRET, "known")], text, lambda s: True) == [
        raw, Span(5, 9, SECRET, "known"),
    ]  # fmt: skip


def test_the_vault_lists_what_it_holds_in_order() -> None:
    vault = Vault()
    vault.placeholder(SECRET, "4821")
    vault.placeholder(PERSON, "Zyxa Quorn")
    vault.placeholder(SECRET, "4821")
    assert vault.known() == [(SECRET, "4821"), (PERSON, "Zyxa Quorn")]
