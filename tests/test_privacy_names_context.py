"""People told from things by context: the "not a person" list, accents, and name forms.

Each case runs through a filter of the person detectors only (so that dates, phones and
addresses found by the other layers do not enter these tables): the name lists alone, and
with spaCy behind them as in the default `names+spacy`. It must redact to exactly the text
given.
"""

from __future__ import annotations

import pytest

from runtime.privacy import PrivacyFilter, Vault
from runtime.privacy.gazetteer import fold, parse_not_people
from runtime.privacy.names import NameDetector
from runtime.privacy.ner import DEFAULT_MODEL, SpacyDetector, spacy_available

NER = [
    "names",
    pytest.param(
        "names+spacy",
        marks=pytest.mark.skipif(
            not spacy_available(DEFAULT_MODEL), reason=f"{DEFAULT_MODEL} not installed"
        ),
    ),
]

# Software, products, dishes, eponyms, cooking and foreign words on weak evidence: no one.
THINGS = [
    "How do I configure Jenkins to trigger Kafka jobs?",
    "Is Ruby faster than Julia for numeric code?",
    "Set up Grafana with Prometheus and Loki",
    "In Excel, how do I use VLOOKUP",
    "Use the Adam optimizer with Xavier init",
    "Recipe: Beef Wellington, Eggs Benedict and Caesar salad",
    "Bake at 180°C for 20 minutes",
    "Cook at Gas Mark 4",
    "Translate 'Guten Morgen, wie geht es dir?'",
    "Fibonacci: 0 1 1 2 3 5",
    "The battle of Hastings",
    "Geburtsdatum: 3. Mai 1985",
    "jsmith at acme dot org",
    "Teléfono: n/a",
    "Wohnhaft: seit 2010",
    # only naming labels, not "known as", let an unlisted lower-case word be a name
    "Muscle forms in a process known as myogenesis.",
    # a two-letter name without its accent ("Hà") is not a name
    "If aH = Ha then H is normal.",
]

# Strong cues, a surname after the word, or no context for the thing: still a person.
PEOPLE = [
    ("Ruby is my sister.", "<PERSON_1> is my sister."),
    ("I met Ruby yesterday.", "I met <PERSON_1> yesterday."),
    ("Dear Julia, thanks for the code.", "Dear <PERSON_1>, thanks for the code."),
    ("Julia, can you review my code?", "<PERSON_1>, can you review my code?"),
    ("Mr Jenkins configured the pipeline.", "Mr <PERSON_1> configured the pipeline."),
    ("Adam Smith wrote the code.", "<PERSON_1> wrote the code."),
    ("Hi Cook, the oven is ready.", "Hi <PERSON_1>, the oven is ready."),
    ("My name is Mai.", "My name is <PERSON_1>."),
    ("Mai will call you at 5.", "<PERSON_1> will call you at 5."),
    ("It tells of the fall of Sue Sylvester.", "It tells of the fall of <PERSON_1>."),
    ("Hà will call you.", "<PERSON_1> will call you."),
    # accents are folded for the lookups
    ("Please forward this to Siobhán Ní Bhriain.", "Please forward this to <PERSON_1>."),
    ("Seán and Máire are coming.", "<PERSON_1> and <PERSON_2> are coming."),
    # "LAST, FIRST" and labelled fields, in upper or lower case
    ("Patient: DOE, JOHN", "Patient: <PERSON_1>"),
    ("SMITH, MARY ANNE was admitted.", "<PERSON_1> was admitted."),
    ("name: okafor chidi", "name: <PERSON_1>"),
    ("name: chidi okafor", "name: <PERSON_1>"),
    # a given name that is also a function word ("An") ends a listed name
    ("Nguyễn Văn An will join us.", "<PERSON_1> will join us."),
]


@pytest.fixture(scope="module", params=NER)
def privacy(request: pytest.FixtureRequest) -> PrivacyFilter:
    names = NameDetector()
    return PrivacyFilter([names] if request.param == "names" else [names, SpacyDetector()])


@pytest.mark.parametrize("text", THINGS)
def test_things_are_not_people(privacy: PrivacyFilter, text: str) -> None:
    assert privacy.redact(text, Vault()).text == text


@pytest.mark.parametrize(("text", "expected"), PEOPLE)
def test_people_stay_people(privacy: PrivacyFilter, text: str, expected: str) -> None:
    assert privacy.redact(text, Vault()).text == expected


@pytest.mark.parametrize(
    ("word", "key"),
    [("Siobhán", "siobhan"), ("MÁIRE", "maire"), ("Nguyễn", "nguyen"), ("Straße", "strasse")],
)
def test_fold_strips_case_and_accents(word: str, key: str) -> None:
    assert fold(word) == key


def test_not_people_format_has_groups_contexts_and_phrases() -> None:
    lists = parse_not_people(
        "# comment\n[things]\nGrafana, beef  Wellington\n[code]\nruby\ncontext: code, #number\n"
    )
    assert lists.is_thing("grafana") and lists.is_thing("Beef Wellington")
    assert not lists.is_thing("ruby") and lists.is_listed("Ruby")
    assert lists.is_thing_in("Ruby", {"code"}) and lists.is_thing_in("ruby", {"#number"})
    assert not lists.is_thing_in("Ruby", {"sister"})
