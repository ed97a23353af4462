"""spaCy NER in the privacy filter: where it runs, what it adds, and how it degrades."""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from runtime.privacy import PrivacyConfig, PrivacyFilter, Span, Vault
from runtime.privacy.entities import ContextDetector
from runtime.privacy.names import NameDetector
from runtime.privacy.ner import DEFAULT_MODEL, SpacyDetector, spacy_available

ROOT = Path(__file__).resolve().parents[1]
needs_model = pytest.mark.skipif(
    not spacy_available(DEFAULT_MODEL),
    reason=f"spaCy or {DEFAULT_MODEL} not installed (a core dependency of the filter)",
)


def _segments(text: str, found: list[Span]) -> list[str]:
    return [text[a:b] for a, b in SpacyDetector().segments(text, found)]


def test_only_sentences_with_an_unexplained_capitalised_word_go_to_the_model() -> None:
    text = (
        "The weather is nice. Please email me at a@b.co today.\n"
        "I met Kowalczyk yesterday. Thanks, see you at 10!"
    )
    assert _segments(text, []) == ["I met Kowalczyk yesterday."]
    start = text.index("Kowalczyk")
    explained = [Span(start, start + len("Kowalczyk"), "PERSON")]
    assert _segments(text, explained) == []


def test_function_words_acronyms_and_contractions_are_not_candidates() -> None:
    assert _segments("The USA. I'm here. Can you? What's up? Monday then.", []) == []


def test_adjacent_candidate_sentences_are_sent_as_one_piece() -> None:
    text = "Ask Brzęczyszczykiewicz. Also Szczebrzeszyn. Bye."
    assert _segments(text, []) == ["Ask Brzęczyszczykiewicz. Also Szczebrzeszyn."]


def test_spacy_detector_is_a_context_detector_and_nothing_loads_without_candidates() -> None:
    detector = SpacyDetector()
    assert isinstance(detector, ContextDetector)
    assert detector.detect_after("nothing capitalised here, 12 items", []) == []
    assert not detector.loaded


def test_filter_passes_earlier_spans_to_a_context_detector() -> None:
    class Recorder:
        seen: list[list[Span]] = []

        def detect(self, text: str) -> list[Span]:
            return []

        def detect_after(self, text: str, found: list[Span]) -> list[Span]:
            self.seen.append(list(found))
            return []

    recorder = Recorder()
    privacy = PrivacyFilter([NameDetector(), recorder])
    privacy.detect("Hi Maria Schmidt")
    assert [(s.label, s.start, s.end) for s in recorder.seen[0]] == [("PERSON", 3, 16)]


def test_a_missing_model_degrades_to_nothing_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    detector = SpacyDetector("tandem_no_such_spacy_model")
    with caplog.at_level(logging.WARNING, logger="runtime.privacy.ner"):
        assert detector.detect("I met Kowalczyk yesterday.") == []
        assert detector.detect("And Nowak today.") == []
    assert len(caplog.records) == 1
    assert "name lists only" in caplog.records[0].getMessage()


@pytest.mark.parametrize("ner", ["spacy", "names+spacy"])
def test_without_the_model_the_filter_falls_back_to_the_name_lists(
    ner: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = PrivacyConfig(ner=ner, spacy_model="tandem_no_such_spacy_model")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="runtime.privacy.filter"):
        privacy = PrivacyFilter.from_config(config)
    assert "not installed" in caplog.text
    kinds = [type(d).__name__ for d in privacy.detectors]
    assert "NameDetector" in kinds and "SpacyDetector" not in kinds
    assert privacy.redact("I met Maria Schmidt", Vault()).text == "I met <PERSON_1>"


def test_spacy_is_not_imported_until_a_candidate_needs_it() -> None:
    code = (
        "import sys\n"
        "from runtime.privacy import PrivacyFilter, Vault\n"
        "f = PrivacyFilter.from_config()\n"
        "f.redact('no names here, call 555 0100', Vault())\n"
        "print('spacy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


@needs_model
@pytest.mark.slow
def test_spacy_finds_people_the_name_lists_do_not_know() -> None:
    text = "Gissela has 5 apples and Azibo has 3."  # neither is in the name lists
    names_only = PrivacyFilter.from_config(PrivacyConfig(ner="names"))
    both = PrivacyFilter.from_config()  # the default: names + spaCy
    assert names_only.redact(text, Vault()).text == text
    redacted = both.redact(text, Vault())
    assert redacted.text == "<PERSON_1> has 5 apples and <PERSON_2> has 3."
    assert dict(redacted.counts) == {"PERSON": 2}


@needs_model
@pytest.mark.slow
def test_spacy_person_spans_are_trimmed_and_plain_words_dropped() -> None:
    privacy = PrivacyFilter.from_config()
    red = privacy.redact("Email maria@example.com for Maria Schmidt", Vault())
    assert red.text == "Email <EMAIL_1> for <PERSON_1>"


@needs_model
@pytest.mark.slow
@pytest.mark.skipif(find_spec("torch") is None, reason="torch not installed: nothing to hide")
def test_loading_spacy_does_not_pull_in_torch_but_torch_still_imports_later() -> None:
    code = (
        "import sys\n"
        "from runtime.privacy.ner import SpacyDetector\n"
        "d = SpacyDetector()\n"
        "d.detect('I met Kowalczyk.')\n"
        "print(d.loaded, 'torch' in sys.modules)\n"
        "import torch\n"
        "print(torch.tensor([1]).item())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "False", "1"]
