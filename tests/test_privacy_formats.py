"""Personal data as it arrives from copy-paste and machine formats: Unicode separators,
JSON/XML fields, CSV columns, scripts without spaces; and numbers that are not personal."""

from __future__ import annotations

import pytest

from runtime.privacy import PrivacyConfig, PrivacyFilter, Vault
from runtime.privacy.filter import fold_for_detection


@pytest.fixture(scope="module")
def privacy() -> PrivacyFilter:
    return PrivacyFilter.from_config(PrivacyConfig(ner="none"))


def redacted(privacy: PrivacyFilter, text: str) -> str:
    return privacy.redact(text, Vault()).text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111\u00a01111\u00a01111\u00a01111", "card <CARD_1>"),  # no-break space
        ("card 4111\u202f1111\u202f1111\u202f1111", "card <CARD_1>"),  # narrow no-break
        ("card 4111\u20131111\u20131111\u20131111", "card <CARD_1>"),  # en dash
        ("card \uff14\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 "
         "\uff11\uff11\uff11\uff11", "card <CARD_1>"),  # full-width digits
        ("card 4111\u200b1111\u200b1111\u200b1111", "card <CARD_1>"),  # zero-width space
        ("SSN: 123\u201345\u20136789", "SSN: <SSN_1>"),
        ("SSN: 123\u201145\u20116789", "SSN: <SSN_1>"),  # non-breaking hyphen
        ("SSN 123\u00a045\u00a06789", "SSN <SSN_1>"),
        ("IBAN DE89\u202f3704\u202f0044\u202f0532\u202f0130\u202f00", "IBAN <IBAN_1>"),
        ("phone 555\u2013123\u20134567", "phone <PHONE_1>"),
        ("phone: 07700\u00a0900\u00a0123", "phone: <PHONE_1>"),
        ("phone +44\u00a07700\u00a0900123", "phone <PHONE_1>"),
        ("mail \uff4a\uff41\uff4e\uff45\uff20\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45"
         "\uff0e\uff43\uff4f\uff4d", "mail <EMAIL_1>"),  # full-width e-mail
        ("phone \u0660\u0667\u0667\u0660\u0660 \u0669\u0660\u0660 \u0661\u0662\u0663",
         "phone <PHONE_1>"),  # Arabic-Indic digits
    ],
)
def test_unicode_separators_and_digits_hide_nothing(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert redacted(privacy, text) == expected


def test_the_vault_keeps_the_value_as_written_and_restores_it(privacy: PrivacyFilter) -> None:
    vault = Vault()
    text = "card 4111\u00a01111\u00a01111\u00a01111 and SSN 123\u201345\u20136789"
    red = privacy.redact(text, vault)
    assert red.text == "card <CARD_1> and SSN <SSN_1>"
    assert privacy.restore(red.text, vault).text == text


def test_folding_keeps_every_offset() -> None:
    text = "a\u00a0b\u2013c\uff11\u0663\u200b\u2014d"
    folded = fold_for_detection(text)
    assert len(folded) == len(text)
    assert folded == "a b-c13 \u2014d"  # the em dash separates clauses: kept
