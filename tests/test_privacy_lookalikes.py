"""Placeholder look-alikes in the input: vaulted where `restore` would take them for one,
left as written inside ordinary identifiers."""

from __future__ import annotations

import pytest

from runtime.privacy import PrivacyConfig, PrivacyFilter, Vault


@pytest.fixture(scope="module")
def privacy() -> PrivacyFilter:
    return PrivacyFilter.from_config()


@pytest.mark.parametrize(
    "text",
    [
        "def validate_1(candidate_2): return update_3(zip_4, strip_5)",
        "Why does my loop over clip_1, clip_2 and chip_3 fail?",
        "Rename tip_10 to tip_11 in the SQL: UPDATE1 SET x=1; SHIP2 WHIP3",
        "The sensor names are temp_1, temp_2, resp_1, turl_2",
        "x = my_IP_1 + IP_1_old + PERSON_1x",
    ],
)
def test_look_alikes_inside_identifiers_are_sent_as_written(
    privacy: PrivacyFilter, text: str
) -> None:
    vault = Vault()
    red = privacy.redact(text, vault)
    assert red.text == text
    assert len(vault) == 0


def test_whole_look_alikes_are_still_vaulted(privacy: PrivacyFilter) -> None:
    text = "Use MP3 and RAW2 with org_3 and validate_1 and <PERSON_1>"
    vault = Vault()
    red = privacy.redact(text, vault)
    assert red.text == "Use MP3 and <RAW_1> with <RAW_2> and validate_1 and <RAW_3>"
    assert privacy.restore(red.text, vault).text == text


def test_a_look_alike_the_folded_text_glues_to_a_word_is_vaulted() -> None:
    # The detectors read a full-width underscore and a soft hyphen as "_" and " "; the
    # restore reads the text as written, where both end a word before "PERSON_1".
    privacy = PrivacyFilter.from_config(PrivacyConfig(ner="none"))
    vault = Vault()
    text = "ab\uff3fPERSON_1 and x\u00adIP_1"
    red = privacy.redact(text, vault)
    assert red.text == "ab\uff3f<RAW_1> and x\u00ad<RAW_2>"
    assert privacy.restore(red.text, vault).text == text


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        # A replacement right after "IP_1" would give it the word boundary it lacked.
        ("see IP_1Maria Schmidt", "see <RAW_1><PERSON_1>"),
        ("validate_1 and IP_1Maria Schmidt", "validate_1 and <RAW_1><PERSON_1>"),
    ],
)
def test_a_look_alike_a_replacement_would_expose_is_vaulted(text: str, sent: str) -> None:
    privacy = PrivacyFilter.from_config(PrivacyConfig(ner="names"))
    vault = Vault()
    red = privacy.redact(text, vault)
    assert red.text == sent
    assert privacy.restore(red.text, vault).text == text


def test_exposure_is_probed_with_the_replaced_spans_blanked() -> None:
    from runtime.privacy.entities import RAW, SECRET, Span
    from runtime.privacy.filter import _escape_exposed

    def escaped(text: str, spans: list[Span]) -> list[Span]:
        return _escape_exposed(text, text, spans)  # text as the detectors read it

    secret = Span(8, 11, SECRET)
    assert escaped("PERSON_1KaR", [secret]) == [Span(0, 8, RAW, "echo"), secret]
    assert escaped("xPERSON_1KaR", [secret := Span(9, 12, SECRET)]) == [secret]
    before = Span(0, 3, SECRET)
    assert escaped("KaRIP_1 x", [before]) == [before, Span(3, 7, RAW, "echo")]
    assert escaped("KaRIP_1x", [before]) == [before]  # still inside a word
