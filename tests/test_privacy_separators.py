"""Personal data split by loose separators or invisible characters, and text that only
looked like personal data: number lists, sentences run together, code, licence names,
version pins (the privacy audit of 2026-11-29)."""

from __future__ import annotations

import pytest

from runtime.privacy import PrivacyConfig, PrivacyFilter, Vault
from runtime.privacy.filter import fold_for_detection


@pytest.fixture(scope="module")
def privacy() -> PrivacyFilter:
    return PrivacyFilter.from_config(PrivacyConfig(ner="none"))


def sent(privacy: PrivacyFilter, text: str) -> str:
    """What leaves the device for `text` as a user message."""
    red = privacy.redact_messages([{"role": "user", "content": text}], Vault())
    content: str = red.messages[0]["content"]
    return content


# --- 1. loose separators between digit groups ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my visa is 4532  0151  1283  0366", "my visa is <CARD_1>"),
        ("IBAN: DE89  3704  0044  0532  0130  00", "IBAN: <IBAN_1>"),
        ("phone: +44  20  7946  0958", "phone: <PHONE_1>"),
        ("fax  020  7946  0958", "fax  <PHONE_1>"),
        ("Name\tCard\nJane\t4532\t0151\t1283\t0366", "Name\tCard\nJane\t<CARD_1>"),
        ("card 4111 - 1111 - 1111 - 1111", "card <CARD_1>"),
        ("ssn: 123 - 45 - 6789", "ssn: <SSN_1>"),
        ("SSN 123  45  6789", "SSN <SSN_1>"),
        ("call me 555 - 123 - 4567", "call me <PHONE_1>"),
        # one line break inside a number, confirmed by its validator
        ("my cell is 415 555\n2671", "my cell is <PHONE_1>"),
        ("Call me\n555 123\n4567", "Call me\n<PHONE_1>"),
        ("card 4111 1111\n1111 1111", "card <CARD_1>"),
        ("IBAN DE89 3704 0044\n0532 0130 00", "IBAN <IBAN_1>"),
        ("ssn 123 45\n6789", "ssn <SSN_1>"),
        # a table: the card is one of the fields; two cards on two lines
        ("Name\tAge\tCard\nJane\t42\t4532 0151 1283 0366", "Name\tAge\tCard\nJane\t42\t<CARD_1>"),
        ("card 4111 1111 1111 1111\n5500 0000 0000 0004", "card <CARD_1>\n<CARD_2>"),
    ],
)
def test_loose_separators_hide_no_number(privacy: PrivacyFilter, text: str, expected: str) -> None:
    assert sent(privacy, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "What is 555 - 123 - 4567?",  # subtraction, no phone word
        "123 - 45 - 6789",  # an SSN's shape, but no SSN word: subtraction
        "Numbers 123  45  6789",
        "years 2019  2020  2021  2022",
        "Q1\tQ2\tQ3\tQ4\n4532\t0151\t1283\t0366",  # a table of figures, no card word
        "What is the number?\n38\n42\n638\n642",  # options, one a line
        "Lines\n1749-1945\n1776-1788",
    ],
)
def test_loose_separators_alone_make_no_number(privacy: PrivacyFilter, text: str) -> None:
    assert sent(privacy, text) == text


def test_a_number_split_by_loose_separators_is_restored_as_written(
    privacy: PrivacyFilter,
) -> None:
    vault = Vault()
    text = "card 4111 - 1111 - 1111 - 1111, cell 415 555\n2671"
    red = privacy.redact(text, vault)
    assert red.text == "card <CARD_1>, cell <PHONE_1>"
    assert privacy.restore(red.text, vault).text == text


# --- 2. lists of numbers are not phone numbers -------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Find the median of 23 45 12 67 34",
        "What is the average of 85 92 78 64?",
        "Sort in ascending order: 56 23 89 12 45",
        "Bubble sort trace for [64 34 25 12 22 11 90]",
        "What is the number? 38 42 638 642",
        "Her scores were 85 92 78 64 and 90",
    ],
)
def test_lists_of_numbers_are_sent_as_written(privacy: PrivacyFilter, text: str) -> None:
    assert sent(privacy, text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call me on 020 7946 0958", "call me on <PHONE_1>"),
        ("+1 415 555 2671", "<PHONE_1>"),
        ("My number is 612 34 56 78", "My number is <PHONE_1>"),  # Spanish grouping
        ("Ring 12 34 56 78 after six", "Ring <PHONE_1> after six"),  # Danish
        ("phone 01 23 45 67 89", "phone <PHONE_1>"),
    ],
)
def test_phone_numbers_in_small_groups_are_still_phones(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert sent(privacy, text) == expected


# --- 3. sentences run together and code are not domains ----------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I am running late.Is that ok?",
        "Thanks for the help.It worked!",
        "I live in Oslo.No problem.",
        'use logging.info("started")',
        "Why does df.info() show object dtype?",
        "flask: self.app.run()",
        "How do I deploy an ASP.NET Core app?",
        "Socket.IO vs WebSockets",
        "Use np.int instead",
        "Object.is(a, b)",
    ],
)
def test_sentence_breaks_and_code_are_not_domains(privacy: PrivacyFilter, text: str) -> None:
    assert sent(privacy, text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see example.com/reset?token=abc", "see <URL_1>"),
        ("https://Example.IO", "<URL_1>"),
        ("www.mysite.io", "<URL_1>"),
        ("jane@example.info", "<EMAIL_1>"),
        ("visit jdoe.github.io", "visit <URL_1>"),
        ("Contact us via example.com.", "Contact us via <URL_1>."),
        ("See GOOGLE.COM for info", "See <URL_1> for info"),
    ],
)
def test_real_domains_are_still_found(privacy: PrivacyFilter, text: str, expected: str) -> None:
    assert sent(privacy, text) == expected


# --- 4. invisible format characters ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SSN 123\u200d45\u200d6789", "SSN <SSN_1>"),  # zero-width joiner
        ("SSN 123\u200c45\u200c6789", "SSN <SSN_1>"),  # zero-width non-joiner
        ("SSN 123\u200e45\u200e6789", "SSN <SSN_1>"),  # left-to-right mark
        ("card 4111 1111 \u200d1111 1111", "card <CARD_1>"),
        ("iban DE89 3704\u200d0044 0532 0130 00", "iban <IBAN_1>"),
        ("email jane\u200d.doe@example.com", "email <EMAIL_1>"),
        ("email jane\u200b.doe@example.com", "email <EMAIL_1>"),  # zero-width space
        ("mail ja\u2062ne.doe@example.com", "mail <EMAIL_1>"),  # invisible times
    ],
)
def test_format_characters_hide_nothing(privacy: PrivacyFilter, text: str, expected: str) -> None:
    assert sent(privacy, text) == expected


def test_format_characters_fold_one_for_one_and_are_vaulted_as_written(
    privacy: PrivacyFilter,
) -> None:
    text = "a\u200db 1\u200d2 x\u202ay \U000e0041q \u200b\u00ad"
    folded = fold_for_detection(text)
    assert len(folded) == len(text)
    # inside a word a hyphen (it joins), elsewhere a space (it separates digit groups)
    assert folded == "a-b 1 2 x-y  q   "
    vault = Vault()
    message = "email jane\u200d.doe@example.com, SSN 123\u200d45\u200d6789"
    red = privacy.redact(message, vault)
    assert red.text == "email <EMAIL_1>, SSN <SSN_1>"
    assert privacy.restore(red.text, vault).text == message


# --- 5. words that are not a document's name ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "How do I handle UTF-16 encoded files?",
        "License: GPL-3.0-or-later",
        "This project is under the license Apache-2.0",
        "The patient 45-year-old presented with fever",
        "The patient: 45-year-old male",
    ],
)
def test_licences_encodings_and_ages_are_not_documents(privacy: PrivacyFilter, text: str) -> None:
    assert sent(privacy, text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("license number D1234567", "license number <NATIONAL_ID_1>"),
        ("policy no. AB-123456", "policy no. <NATIONAL_ID_1>"),
        ("patient ID 55-1234", "patient ID <NATIONAL_ID_1>"),
        ("my handle is @jdoe42", "my handle is <NATIONAL_ID_1>"),
        ("my license: ABC12345", "my license: <NATIONAL_ID_1>"),
    ],
)
def test_document_numbers_after_a_number_word_are_found(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert sent(privacy, text) == expected


# --- 6. e-mail and phone forms that leaked in part ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("email john.o'reilly@example.ie", "email <EMAIL_1>"),
        ("Mail O'Brien@example.com please", "Mail <EMAIL_1> please"),
        ("jsmith(at)acme(dot)co(dot)uk", "<EMAIL_1>"),
        ("raj at company dot sg", "<EMAIL_1>"),
        ("Mob.01711234567", "Mob.<PHONE_1>"),
        ("Tel.030 1234567", "Tel.<PHONE_1>"),
    ],
)
def test_email_and_phone_forms_are_found_whole(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert sent(privacy, text) == expected


@pytest.mark.parametrize(
    "text",
    ["look at this dot com", "I was at Google dot com", "file.0123456 backup", "it's me"],
)
def test_prose_and_file_names_stay(privacy: PrivacyFilter, text: str) -> None:
    assert sent(privacy, text) == text


# --- 7. version pins and order numbers ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "pip install package==1.2.3.4",
        "requests>=2.31.0.1",
        "version 1.2.3.4 released",
        "Order #1234567",
        "invoice no. 1234567",
        "ticket #7654321",
    ],
)
def test_versions_and_order_numbers_are_sent_as_written(privacy: PrivacyFilter, text: str) -> None:
    assert sent(privacy, text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ip.addr==192.168.1.5", "ip.addr==<IP_1>"),
        ("my ip is 10.0.0.1", "my ip is <IP_1>"),
        ("Call me at 555-123-4567 re: order", "Call me at <PHONE_1> re: order"),
    ],
)
def test_addresses_and_phones_next_to_those_words_are_found(
    privacy: PrivacyFilter, text: str, expected: str
) -> None:
    assert sent(privacy, text) == expected


# --- the runtime's default filter --------------------------------------------------------------


def test_the_default_filter_sends_the_audit_cases_redacted() -> None:
    privacy = PrivacyFilter.from_config(PrivacyConfig())
    cases = {
        "my visa is 4532  0151  1283  0366": "my visa is <CARD_1>",
        "card 4111 1111\n1111 1111": "card <CARD_1>",
        "SSN 123\u200d45\u200d6789": "SSN <SSN_1>",
        "Find the median of 23 45 12 67 34": "Find the median of 23 45 12 67 34",
        "I am running late.Is that ok?": "I am running late.Is that ok?",
        "How do I handle UTF-16 encoded files?": "How do I handle UTF-16 encoded files?",
    }
    for text, expected in cases.items():
        assert sent(privacy, text) == expected
