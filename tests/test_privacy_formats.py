"""Personal data as it arrives from copy-paste and machine formats: Unicode separators,
JSON/XML fields, CSV columns, scripts without spaces; and numbers that are not personal."""

from __future__ import annotations

from typing import Any

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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\u7535\u8bdd13800138000", "\u7535\u8bdd<PHONE_1>"),  # no space in Chinese
        ("\u643a\u5e2f\u306f090-1234-5678\u3067\u3059", "\u643a\u5e2f\u306f<PHONE_1>\u3067\u3059"),
        ("\uc5f0\ub77d\ucc98\ub294 010-1234-5678\uc785\ub2c8\ub2e4",
         "\uc5f0\ub77d\ucc98\ub294 <PHONE_1>\uc785\ub2c8\ub2e4"),  # the last group leaked
        ("tel.+4930123456", "tel.<PHONE_1>"),
        # still found: grouping, cue or validity, as before
        ("They're not answering at 780-999-2181", "They're not answering at <PHONE_1>"),
        ("They're not answering at 71-33-52-22", "They're not answering at <PHONE_1>"),
        ("call 01 23 45 67 89", "call <PHONE_1>"),
        ("He lives at 5403926876", "He lives at <PHONE_1>"),
        ("my number is 2125551234, sum it up later", "my number is <PHONE_1>, sum it up later"),
    ],
)
def test_phone_numbers_next_to_other_scripts_and_dots(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert redacted(privacy, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "What is 1234567 * 7654321?",
        "Is 1000000007 prime?",
        "for i in range(1000000): pass",
        "Convert 1700000000 from unix time to a date",
        "What is 2^31 - 1 = 2147483647?",
        "Revenue was 12345678 in Q3",
        "So 3000-2000 = 1000 voters remain.",
        "He paid 1100-400=<<1100-400=700>>700 for it",
        "sort this list: 5 3 8 1 9 2 7 4 6",
        "The first primes: 2 3 5 7 11 13 17 19 23 29",
        "Ibn Battuta, Voyages, 1332\u20131346 C.E.",
        "Find the quotient: 3.6 36 0.01272 12.72",
        "the binary number 1001 0011",
        "How many were sold? 632 643 655 668",
        "the eighth number in the pattern? 160 240 320 640",
        "it is $409 500 - $400 000 = $9500 more",
    ],
)
def test_numbers_in_arithmetic_code_and_lists_are_left(privacy: PrivacyFilter, text: str) -> None:
    assert redacted(privacy, text) == text


def test_a_card_grouped_oddly_is_still_a_card_in_a_text_about_a_card(
    privacy: PrivacyFilter,
) -> None:
    assert redacted(privacy, "my visa: 41 1111 1111 1111 11") == "my visa: <CARD_1>"
    assert redacted(privacy, "charge 3782 822463 10005 today") == "charge <CARD_1> today"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"card_number": "4111111111111111", "exp": "09/27", "cvv": "123"}',
         '{"card_number": "<CARD_1>", "exp": "<CARD_EXPIRY_1>", "cvv": "<CARD_CVV_1>"}'),
        ('{"cardNumber":"4111111111111111","expiry":"09/27","cvc":"123"}',
         '{"cardNumber":"<CARD_1>","expiry":"<CARD_EXPIRY_1>","cvc":"<CARD_CVV_1>"}'),
        ("cvv: '123'", "cvv: '<CARD_CVV_1>'"),
        ("<cvv>123</cvv>", "<cvv><CARD_CVV_1></cvv>"),
        ('"CVC": 123', '"CVC": <CARD_CVV_1>'),
        ("card_cvv=123", "card_cvv=<CARD_CVV_1>"),
        ("CVV (3 digits): 123", "CVV (3 digits): <CARD_CVV_1>"),
        ("CVV \u2014 123", "CVV \u2014 <CARD_CVV_1>"),
        # not card data
        ("the coupon expires 12/31", "the coupon expires 12/31"),
        ("Cardiff: exp 5/20", "Cardiff: exp 5/20"),
    ],
)
def test_card_security_data_in_machine_formats(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert redacted(privacy, text) == expected


def test_a_cvv_in_json_blocks_when_the_policy_says_so() -> None:
    strict = PrivacyFilter.from_config(PrivacyConfig(ner="none", block_types=("CARD_CVV",)))
    red = strict.redact('{"pan": "4111111111111111", "cvv": "123"}', Vault())
    assert red.blocked == "contains CARD_CVV"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IBAN DE89 370400440532013000", "IBAN <IBAN_1>"),
        ("IBAN DE89 3704 0044 0532 013000", "IBAN <IBAN_1>"),
        ("IBAN: DE 89 3704 0044 0532 0130 00", "IBAN: <IBAN_1>"),
        ("IBAN DE89.3704.0044.0532.0130.00", "IBAN <IBAN_1>"),
        ("IBAN DE89 3704 0044 0532 0130 00BIC COBADEFFXXX", "IBAN <IBAN_1>BIC COBADEFFXXX"),
        ("IBAN\u662fDE89370400440532013000", "IBAN\u662f<IBAN_1>"),
        ("pay GB82 WEST 1234 5698 7654 32 today", "pay <IBAN_1> today"),
        ("is 20 and then some more words here", "is 20 and then some more words here"),
        ("IBAN DE89 3704 0044 0532 0130 01", "IBAN DE89 3704 0044 0532 0130 01"),  # checksum
    ],
)
def test_ibans_in_any_grouping(privacy: PrivacyFilter, text: str, expected: str) -> None:
    assert redacted(privacy, text) == expected


def test_messages_with_text_parts_and_names_are_redacted(privacy: PrivacyFilter) -> None:
    vault = Vault()
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [
            {"type": "text", "text": "My SSN is 123-45-6789"},
            {"type": "text", "text": "mail jane@example.com"},
        ]},
        {"role": "user", "name": "jane@example.com", "content": "hello"},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    red = privacy.redact_messages(messages, vault)
    assert red.messages == (
        {"role": "user", "content": [
            {"type": "text", "text": "My SSN is <SSN_1>"},
            {"type": "text", "text": "mail <EMAIL_1>"},
        ]},
        {"role": "user", "name": "<EMAIL_1>", "content": "hello"},
        {"role": "assistant", "content": None, "tool_calls": []},
    )
    assert dict(red.counts) == {"SSN": 1, "EMAIL": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([{"type": "image_url", "image_url": {"url": "data:..."}}], "of type 'image_url'"),
        ([{"type": "text", "text": 7}], "of type 'text'"),
        (["plain"], "of type 'str'"),
        (42, "not int"),
    ],
)
def test_content_that_cannot_be_checked_is_refused(
    privacy: PrivacyFilter, content: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as err:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "ok"},
                                          {"role": "user", "content": content}]
        privacy.redact_messages(messages, Vault())
    assert str(err.value).startswith("message 1:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DOB 3-5-1985", "DOB <DATE_1>"),
        ("DOB: 1985/05/03", "DOB: <DATE_1>"),
        ("DOB: 3-May-85", "DOB: <DATE_1>"),
        ("DOB 03MAY1985", "DOB <DATE_1>"),
        ("born 03.05.85", "born <DATE_1>"),
        ("birth date: May 3rd '85", "birth date: <DATE_1>"),
        ("D.O.B. 12/03/1985", "D.O.B. <DATE_1>"),
        ("n\u00e9 le 3 mai 1985", "n\u00e9 le <DATE_1>"),
        ("fecha de nacimiento: 3 de mayo de 1985", "fecha de nacimiento: <DATE_1>"),
        ("Geburtsdatum: 3. Mai 1985", "Geburtsdatum: <DATE_1>"),
        ("data di nascita: 3 maggio 1985", "data di nascita: <DATE_1>"),
        # no date after the cue
        ("I was born in 1985", "I was born in 1985"),
        ("born 3 times", "born 3 times"),
    ],
)
def test_dates_of_birth_in_any_common_form(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert redacted(privacy, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name,ssn,dob\nJane Doe,123456789,1980-01-02",
         "name,ssn,dob\nJane Doe,<SSN_1>,<DATE_1>"),
        ("id;SSN;city\n1;123456789;Boston", "id;SSN;city\n1;<SSN_1>;Boston"),
        ("name\tsocial_security_number\nBob\t123456789",
         "name\tsocial_security_number\nBob\t<SSN_1>"),
        ("note\n\nname,ssn\nJo,123456789", "note\n\nname,ssn\nJo,<SSN_1>"),
        ("a,b,c\n1,123456789,2", "a,b,c\n1,123456789,2"),  # not an SSN column
    ],
)
def test_an_ssn_column_of_a_table(privacy: PrivacyFilter, text: str, expected: str) -> None:
    assert redacted(privacy, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"city": "Oxford", "zip": "OX1 4AB"}', '{"city": "Oxford", "zip": "<ADDRESS_1>"}'),
        ('"zip": "94043"', '"zip": "<ADDRESS_1>"'),
        ('Postcode "SW1A 1AA"', 'Postcode "<ADDRESS_1>"'),
        ("postal_code='10115'", "postal_code='<ADDRESS_1>'"),
        ("gzip 94043", "gzip 94043"),
    ],
)
def test_a_postcode_as_a_quoted_field(privacy: PrivacyFilter, text: str, expected: str) -> None:
    assert redacted(privacy, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("office: Unit 4, Riverside Business Park, Leeds LS11 5QE",
         "office: Unit 4, Riverside Business Park, Leeds <ADDRESS_1>"),
        ("We are at Leeds LS11 5QE now", "We are at Leeds <ADDRESS_1> now"),
        ("Ottawa K1A 0B1", "Ottawa <ADDRESS_1>"),
        ("The M62 runs past Leeds", "The M62 runs past Leeds"),
        ("COVID 19 and the A1 road", "COVID 19 and the A1 road"),
        ("ABC 1DE", "ABC 1DE"),  # no such outward code
    ],
)
def test_a_whole_uk_or_canadian_postcode_needs_no_cue(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert redacted(privacy, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DL# D123-4567-8901", "DL# <NATIONAL_ID_1>"),
        ("DL: B12345678", "DL: <NATIONAL_ID_1>"),
        ("Use the DL link 12345 now", "Use the DL link 12345 now"),
        ("Chinese ID 11010519491231002X", "Chinese ID <NATIONAL_ID_1>"),
        ("order 110105194912310021", "order 110105194912310021"),  # check character wrong
        ("open /home/alice.wong/notes.txt", "open /home/<NATIONAL_ID_1>/notes.txt"),
        ("cd /Users/jsmith && ls", "cd /Users/<NATIONAL_ID_1> && ls"),
        ("C:\\Users\\Bob\\Desktop", "C:\\Users\\<NATIONAL_ID_1>\\Desktop"),
        ("/home/ubuntu/app and /home/user/x", "/home/ubuntu/app and /home/user/x"),
    ],
)
def test_documents_resident_ids_and_home_directories(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert redacted(privacy, text) == expected
