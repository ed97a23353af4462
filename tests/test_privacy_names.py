"""People, organisations and postal addresses, found without a neural model."""

from __future__ import annotations

import pytest

from runtime.privacy.addresses import AddressDetector
from runtime.privacy.names import NameDetector


@pytest.fixture(scope="module")
def names() -> NameDetector:
    return NameDetector()


def people(names: NameDetector, text: str) -> list[str]:
    return [text[s.start : s.end] for s in names.detect(text) if s.label == "PERSON"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I met Maria Schmidt yesterday.", ["Maria Schmidt"]),
        ("Please ask John A. Leiva to call.", ["John A. Leiva"]),
        ("Dr. Nielsen will see you now.", ["Nielsen"]),
        ("My name is Rubija", ["Rubija"]),  # not in the name lists: the cue decides
        ("Name: Toshimi Arata\nPhone: 123", ["Toshimi Arata"]),
        ("Dear Szabina, thanks for the files.", ["Szabina"]),
        ("I'd like to add my daughter Aniela as a beneficiary", ["Aniela"]),
        ("billing address: patricia desrosiers", ["patricia desrosiers"]),
        ("email john baker about it", ["john baker"]),  # a surname that is also a word
        ("my name is grace", ["grace"]),
        ("Lois Lane met Glenn Close", ["Lois Lane", "Glenn Close"]),  # first name + suffix
        ("Krisztián Szöllösy listed his top 20 songs", ["Krisztián Szöllösy"]),
        ('"Stop," said Hakuba.', ["Hakuba"]),
        # a capitalised word before the title does not hide the name after it
        ("Patient Mr. O'Neil, room 12", ["O'Neil"]),
        ("Client Dr. Okafor said", ["Okafor"]),
        ("Ask Dr. Watson and Mrs. Hudson", ["Watson", "Hudson"]),
    ],
)
def test_names_from_lists_and_cues(names: NameDetector, text: str, expected: list[str]) -> None:
    assert people(names, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Will you help me with my taxes?",
        "Please send the report by Monday.",
        "The meeting is in May.",
        "I was studying English and journalism.",
        "We flew to Norway last summer.",
        "Hello, how are you?",
        "the will was read on friday",
        # lower case: a first name before a frequent English word is a phrase, not a person
        "is there a grace period on the loan?",
        "set max speed to 5",
        "pat dry the fish",
        "amber alert issued",
        "look at this dot com bubble",
        "GRACE PERIOD ENDS TODAY",
        # a street's name, whose suffix is also a surname
        "I walked down Main Street yesterday",
        "we shop on Oxford Street",
    ],
)
def test_common_words_and_places_are_not_people(names: NameDetector, text: str) -> None:
    assert people(names, text) == []


def test_countries_are_locations_and_companies_are_organisations(names: NameDetector) -> None:
    text = "She moved to New Zealand to work for Smith Ltd"
    found = {text[s.start : s.end]: s.label for s in names.detect(text)}
    assert found == {"New Zealand": "LOCATION", "Smith Ltd": "ORG"}


@pytest.fixture(scope="module")
def addresses() -> AddressDetector:
    return AddressDetector()


def places(addresses: AddressDetector, text: str) -> list[str]:
    return [text[s.start : s.end] for s in addresses.detect(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I live at 24 Clarke Avenue, Springfield. Born in", ["24 Clarke Avenue, Springfield"]),
        ("Meet me at 12 Baker Street, London NW1 6XE, ok?", ["12 Baker Street, London NW1 6XE"]),
        ("Our office: Via Roma 131, Milano", ["Via Roma 131, Milano"]),
        ("Filip lives on Nassaustraat 123 street.", ["Nassaustraat 123"]),
        ("Send it to Koskikatu 25 Apt. 864", ["Koskikatu 25 Apt. 864"]),
        ("ship to 8 wressle road suite 771", ["8 wressle road suite 771"]),
        (
            "Jane Roe\n6750 Koskikatu 25 Apt. 864\nArtilleros\n, CO\n Uruguay 64677\n\nThanks",
            ["6750 Koskikatu 25 Apt. 864\nArtilleros\n, CO\n Uruguay 64677"],
        ),
        ("PSC 3294, Box 9168\nAPO AA 61487", ["PSC 3294, Box 9168\nAPO AA 61487"]),
        ("my zip code is 90010-170", ["90010-170"]),
        ("He lives at Pagari 18 now", ["Pagari 18"]),
        # a unit written before the street belongs to the address
        ("Flat 3, 12 High Street, Oxford OX1 4AA", ["Flat 3, 12 High Street, Oxford OX1 4AA"]),
        ("Room 12, 10 Downing St, London", ["Room 12, 10 Downing St, London"]),
    ],
)
def test_street_addresses_grow_into_their_postal_block(
    addresses: AddressDetector, text: str, expected: list[str]
) -> None:
    assert places(addresses, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "in a way that works",
        "I have 2 big dogs on the way home",
        "we went to the park",
        "during 2020 the string broke",
        "navigate 5 screens",
        "send it via email",
    ],
)
def test_everyday_phrases_are_not_addresses(addresses: AddressDetector, text: str) -> None:
    assert places(addresses, text) == []


def test_the_english_word_list_holds_no_name() -> None:
    from runtime.privacy.gazetteer import load

    lists = load()
    assert {"period", "speed", "chorus", "com"} <= lists.english
    assert not lists.english & (lists.first | lists.last)
    assert len(lists.english) > 30_000

