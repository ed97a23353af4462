"""Each structured detector with positives, negatives and near misses."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from runtime.privacy import PrivacyConfig, PrivacyFilter, Span, Vault
from runtime.privacy.phones import PhoneDetector


@pytest.fixture(scope="module")
def privacy() -> PrivacyFilter:
    return PrivacyFilter.from_config(PrivacyConfig(ner="none"))


def found(privacy: PrivacyFilter, text: str) -> list[tuple[str, str]]:
    return [(text[s.start : s.end], s.label) for s in privacy.detect(text)]


def labels(privacy: PrivacyFilter, text: str) -> set[str]:
    return {s.label for s in privacy.detect(text)}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("card 4111 1111 1111 1111 please", "4111 1111 1111 1111"),
        ("amex 378282246310005.", "378282246310005"),
        ("mc 5555-5555-5555-4444", "5555-5555-5555-4444"),
        ("jcb 3530111333300000 ok", "3530111333300000"),
        ("visa 4111.1111.1111.1111.", "4111.1111.1111.1111"),
    ],
)
def test_luhn_valid_card_numbers_are_cards(privacy: PrivacyFilter, text: str, value: str) -> None:
    assert found(privacy, text) == [(value, "CARD")]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("card 4111 1111 1111 1111 05/27", "4111 1111 1111 1111"),
        ("card 4111 1111 1111 1111 123", "4111 1111 1111 1111"),
        ("card 4111-1111-1111-1111-123 ok", "4111-1111-1111-1111"),
        ("card 4111111111111111 123", "4111111111111111"),
    ],
)
def test_a_card_followed_by_expiry_or_cvv_is_still_a_card(
    privacy: PrivacyFilter, text: str, value: str
) -> None:
    assert (value, "CARD") in found(privacy, text)


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",
        "card 378282246310006",
        "0000 0000 0000 0000",
        "card 4111 1111 1111 1112 05/27",
        "version 4111.1111.1111.1",
    ],
)
def test_card_numbers_failing_luhn_are_not_cards(privacy: PrivacyFilter, text: str) -> None:
    assert "CARD" not in labels(privacy, text)


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (
            "My card is 4111 1111 1111 1111 exp 09/27 CVV 123, charge it.",
            "My card is <CARD_1> exp <CARD_EXPIRY_1> CVV <CARD_CVV_1>, charge it.",
        ),
        (
            "Card: 4111111111111111, expiry 09/2027, security code 123",
            "Card: <CARD_1>, expiry <CARD_EXPIRY_1>, security code <CARD_CVV_1>",
        ),
        ("Visa 4111-1111-1111-1111 12/26 987", "Visa <CARD_1> <CARD_EXPIRY_1> <CARD_CVV_1>"),
        ("card 5555 5555 5555 4444 05/27", "card <CARD_1> <CARD_EXPIRY_1>"),
        ("amex 378282246310005 1234 11/28", "amex <CARD_1> <CARD_CVV_1> <CARD_EXPIRY_1>"),
        ("pay 4111 1111 1111 1111; 10/28; 321", "pay <CARD_1>; <CARD_EXPIRY_1>; <CARD_CVV_1>"),
        ("4111 1111 1111 1111\n12/26\n987", "<CARD_1>\n<CARD_EXPIRY_1>\n<CARD_CVV_1>"),
        ("4111 1111 1111 1111 exp 09/27 123", "<CARD_1> exp <CARD_EXPIRY_1> <CARD_CVV_1>"),
        ("card 4111 1111 1111 1111 737", "card <CARD_1> <CARD_CVV_1>"),
        ("card 4111111111111111 cvv123", "card <CARD_1> cvv<CARD_CVV_1>"),
        (
            "cc 4111111111111111 exp0927 cvc2 321",
            "cc <CARD_1> exp<CARD_EXPIRY_1> cvc2 <CARD_CVV_1>",
        ),
        ("card 4111111111111111 expiry 0927", "card <CARD_1> expiry <CARD_EXPIRY_1>"),
        ("visa exp 092027", "visa exp <CARD_EXPIRY_1>"),
        ("security code on the back: 123", "security code on the back: <CARD_CVV_1>"),
        ("CVV on the back of the card: 987", "CVV on the back of the card: <CARD_CVV_1>"),
        (
            "my visa is 4111 1111 1111 1111 and the 3 digits on the back are 123",
            "my visa is <CARD_1> and the 3 digits on the back are <CARD_CVV_1>",
        ),
        ("debit card, code on the back is 4321", "debit card, code on the back is <CARD_CVV_1>"),
        ("4111111111111111, 0737. Thanks", "<CARD_1>, <CARD_CVV_1>. Thanks"),
        ("amex 378282246310005 1234\nplease", "amex <CARD_1> <CARD_CVV_1>\nplease"),
        ("4111 1111 1111 1111 and it expires 09/27", "<CARD_1> and it expires <CARD_EXPIRY_1>"),
        ("Exp/CVV: 09/27 123", "Exp/CVV: <CARD_EXPIRY_1> <CARD_CVV_1>"),
        ("expiry 09/27, cvv 123", "expiry <CARD_EXPIRY_1>, cvv <CARD_CVV_1>"),
        ("my CVV2 is 1234.", "my CVV2 is <CARD_CVV_1>."),
        ("CVV/CVC: 321", "CVV/CVC: <CARD_CVV_1>"),
        ("Amex CID 1234", "Amex CID <CARD_CVV_1>"),
        ("the card verification code is 456", "the card verification code is <CARD_CVV_1>"),
        ("card expiration date (MM/YY): 09/27", "card expiration date (MM/YY): <CARD_EXPIRY_1>"),
        ("visa valid thru 11/2029", "visa valid thru <CARD_EXPIRY_1>"),
        ("debit card good thru 03-28", "debit card good thru <CARD_EXPIRY_1>"),
        ("my card exp. Sep '27", "my card exp. <CARD_EXPIRY_1>"),
        ("credit card expires September 2027", "credit card expires <CARD_EXPIRY_1>"),
        ("card expired on 2027-09", "card expired on <CARD_EXPIRY_1>"),
        (
            "card 4111 1111 1111 1111 12/26 987, again 4111 1111 1111 1111 12/26 987",
            "card <CARD_1> <CARD_EXPIRY_1> <CARD_CVV_1>, again <CARD_1> <CARD_EXPIRY_1> "
            "<CARD_CVV_1>",
        ),
    ],
)
def test_card_security_data_is_redacted_and_restored(
    privacy: PrivacyFilter, text: str, redacted: str
) -> None:
    vault = Vault()
    red = privacy.redact(text, vault)
    assert red.text == redacted
    assert dict(red.counts) == Counter(re.findall(r"<([A-Z_]+)_\d+>", redacted))
    assert privacy.restore(red.text, vault).text == text


def test_card_security_data_through_redact_messages() -> None:
    privacy = PrivacyFilter.from_config(PrivacyConfig())  # the default filter, spaCy and all
    vault = Vault()
    text = "My card is 4111 1111 1111 1111 exp 09/27 CVV 123, charge it."
    red = privacy.redact_messages([{"role": "user", "content": text}], vault)
    sent = red.messages[0]["content"]
    assert sent == "My card is <CARD_1> exp <CARD_EXPIRY_1> CVV <CARD_CVV_1>, charge it."
    assert red.to_dict() == {
        "counts": {"CARD": 1, "CARD_CVV": 1, "CARD_EXPIRY": 1},
        "blocked": None,
    }
    answer = "Charged <CARD_1> (expires <CARD_EXPIRY_1>); I never store <card_cvv_1>."
    assert privacy.restore(answer, vault).text == (
        "Charged 4111 1111 1111 1111 (expires 09/27); I never store 123."
    )


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2/3",
        "on 09/27 we meet",
        "score 123",
        "room 987",
        "at 10:30, or 10:30:15",
        "add 3/4 cup and 1/2 spoon",
        "ratio 12/26 987",  # the form printed after a card number, with no card number
        "card 4111 1111 1111 1112 12/26 987",  # fails Luhn: no card, so no card data either
        "my card 4111 1111 1111 1111 arrives 09/27",  # a date, not next to the number
        "the CVV has 3 or 4 digits",
        "CVV 12 or CVV 12345",
        "expected 09/27, experience 10/20",
        "the coupon expires 12/31",  # a labelled expiry in a text about no card
        "milk exp 5/20",
        "my subscription expires 5/20, how many days left?",
        "gain exp 1000 per level",
        "exp(1/2)",
        "card exp 13/27 or 00/27",  # no such month
        "charge 4111 1111 1111 1111 120 EUR",  # an amount after the number, not its CVV
        "card 4111 1111 1111 1111 100 dollars, 5 %",
        "card 4111 1111 1111 1111 50% off",
        "card 4111 1111 1111 1111 or 41 1111",  # a 2-digit group is no CVV
        "the numbers on the back are 1234",  # "on the back" in a text about no card
        "expiry 1225 days",  # compact month-year only in a text about a card
        "card expires 2027",  # a year alone is no expiry
        "discover 8 new recipes",
    ],
)
def test_numbers_that_are_not_card_security_data(privacy: PrivacyFilter, text: str) -> None:
    assert not labels(privacy, text) & {"CARD_CVV", "CARD_EXPIRY"}
    assert privacy.redact(text, Vault()).text == text.replace("4111 1111 1111 1111", "<CARD_1>")


@pytest.mark.parametrize(
    "text", ["card 4111 1111 1111 1111 415 555 0199", "card 4111 1111 1111 1111 (212) 555-0199"]
)
def test_digit_groups_after_a_card_that_start_a_longer_number_are_no_cvv(
    privacy: PrivacyFilter, text: str
) -> None:
    assert "CARD_CVV" not in labels(privacy, text)


def test_a_full_date_after_an_expiry_word_stays_a_date(privacy: PrivacyFilter) -> None:
    assert found(privacy, "card expires 09/27/2024") == [("09/27/2024", "DATE")]
    assert found(privacy, "card expires March 30, 2026") == [("March 30, 2026", "DATE")]


def test_card_expiry_is_card_data_even_with_dates_left_alone() -> None:
    no_dates = PrivacyFilter.from_config(PrivacyConfig(ner="none", dates=False))
    assert no_dates.redact("card 4111 1111 1111 1111 12/26 987", Vault()).text == (
        "card <CARD_1> <CARD_EXPIRY_1> <CARD_CVV_1>"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "GB82 WEST 1234 5698 7654 32"),
        ("to DE89370400440532013000.", "DE89370400440532013000"),
        ("iban fr1420041010050500013m02606", "fr1420041010050500013m02606"),
        ("IBAN DE89-3704-0044-0532-0130-00, thanks", "DE89-3704-0044-0532-0130-00"),
        ("IBAN DE89-3704-0044-0532-0130-00-12", "DE89-3704-0044-0532-0130-00"),
    ],
)
def test_valid_ibans_are_found_whole(privacy: PrivacyFilter, text: str, value: str) -> None:
    assert found(privacy, text) == [(value, "IBAN")]


@pytest.mark.parametrize(
    "text", ["IBAN GB82 WEST 1234 5698 7654 33", "DE89370400440532013001", "GB82WEST"]
)
def test_ibans_with_a_bad_checksum_are_not_ibans(privacy: PrivacyFilter, text: str) -> None:
    assert "IBAN" not in labels(privacy, text)


def test_us_ssn_is_validated(privacy: PrivacyFilter) -> None:
    assert found(privacy, "SSN 536-22-1234") == [("536-22-1234", "SSN")]
    assert found(privacy, "my ssn is 536221234") == [("536221234", "SSN")]
    for invalid in ("000-12-3456", "666-12-3456", "900-12-3456", "536-00-1234"):
        assert "SSN" not in labels(privacy, f"SSN {invalid}")


@pytest.mark.parametrize(
    "text",
    [
        "DNI 12345678Z",
        "codice fiscale RSSMRA85T10A562S",
        "personnummer 880320-0016",
        "CPR 211062-5629",
        "HETU 131052-308T",
        "PESEL 44051401359",
        "Steuer-ID 36574261809",
        "fnr 15108695088",
        "CPF 390.533.447-05",
        "BSN 111222333",
        "driver's license number is F162823540116",
    ],
)
def test_national_identifiers_with_valid_checksums(privacy: PrivacyFilter, text: str) -> None:
    assert labels(privacy, text) == {"NATIONAL_ID"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("my username is jdoe_1984.", "jdoe_1984"),
        ("my login is alice.w99", "alice.w99"),
        ("user id jdoe42", "jdoe42"),
        ("my handle is @jdoe42", "@jdoe42"),
        ("my license plate is 7ABC123", "7ABC123"),
        ("VIN 1HGCM82633A004352", "1HGCM82633A004352"),
        ("medical record number 00123456", "00123456"),
    ],
)
def test_account_names_plates_and_records_after_their_word(
    privacy: PrivacyFilter, text: str, value: str
) -> None:
    assert found(privacy, text) == [(value, "NATIONAL_ID")]


@pytest.mark.parametrize("text", ["the login page", "handle 3 cases", "my username is jdoe"])
def test_words_after_an_account_word_need_a_digit(privacy: PrivacyFilter, text: str) -> None:
    assert labels(privacy, text) == set()


def test_checksum_ids_that_look_like_any_number_need_a_cue(privacy: PrivacyFilter) -> None:
    # 111222333 passes the Dutch BSN check; without a cue it is just a number.
    assert "NATIONAL_ID" not in labels(privacy, "we shipped 111222333 units")
    assert "NATIONAL_ID" not in labels(privacy, "DNI 12345678A")  # wrong check letter


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("call (415) 555-0132 today", "(415) 555-0132"),
        ("call 415-555-0132", "415-555-0132"),
        ("UK +44 20 7946 0958", "+44 20 7946 0958"),
        ("ring 020 7946 0958", "020 7946 0958"),
        ("Berlin +49 30 901820", "+49 30 901820"),
        ("Paris 01 42 68 53 00", "01 42 68 53 00"),
        ("Zurich +41 44 668 18 00", "+41 44 668 18 00"),
        ("Tokyo 03-1234-5678", "03-1234-5678"),
        ("India +91 98765 43210", "+91 98765 43210"),
        ("Brussels 0487 98 11 92", "0487 98 11 92"),
        ("Fax: 9498777106", "9498777106"),
        ("Desk: +1-903-140-4508x769", "+1-903-140-4508x769"),
        ("phone:\n780 6326", "780 6326"),
        ("930.167.3943 fax", "930.167.3943"),
        ("Tel: 089/12345678", "089/12345678"),
        ("mobile 0171/1234567", "0171/1234567"),
        ("phone 030 / 123 45 67", "030 / 123 45 67"),
        ("Praxis Dr. Weber 089/12345678", "089/12345678"),
    ],
)
def test_phone_numbers_in_many_national_formats(
    privacy: PrivacyFilter, text: str, value: str
) -> None:
    assert found(privacy, text) == [(value, "PHONE")]


def test_a_list_of_phone_numbers_is_not_a_csv_row(privacy: PrivacyFilter) -> None:
    text = "numbers: 5551234567, 4155550132"
    assert found(privacy, text) == [("5551234567", "PHONE"), ("4155550132", "PHONE")]


@pytest.mark.parametrize(
    "text",
    [
        "in 2019 2020 we grew",
        "it costs $1 250 000",
        "we sold 12 500 000 units",
        "version 1.2.3",
        "ISBN 978-3-16-148410-0",
        "pi is 3.14159265",
        "at 10:30:00",
        "room 12, floor 3",
        "date,open,volume\n2022-01-01,150.02,15678900\n2022-01-02,154.32,19874500",
    ],
)
def test_numbers_that_are_not_phone_numbers(privacy: PrivacyFilter, text: str) -> None:
    assert "PHONE" not in labels(privacy, text)


@pytest.mark.parametrize(
    "text",
    ["on 12/05/2024 at 9", "on 05/12/2024", "add 3/4 cup", "exp 05/2027", "ratio 0123/4567"],
)
def test_slashed_dates_and_fractions_are_not_phone_numbers(text: str) -> None:
    # The phone detector alone: the date detector must not be what keeps these out.
    assert PhoneDetector().detect(text) == []


def test_dates_ips_and_phones_do_not_steal_each_other(privacy: PrivacyFilter) -> None:
    assert found(privacy, "on 2021-03-04") == [("2021-03-04", "DATE")]
    assert found(privacy, "host 192.168.1.1") == [("192.168.1.1", "IP")]
    assert found(privacy, "v6 2001:db8::8a2e:370:7334") == [("2001:db8::8a2e:370:7334", "IP")]
    assert "IP" not in labels(privacy, "release 1.2.3.4.5")
    assert "IP" not in labels(privacy, "999.1.1.1")


def test_emails_urls_and_domains(privacy: PrivacyFilter) -> None:
    text = "mail jane.doe+tag@mail.example.co.uk. or see https://example.com/p?q=1."
    assert found(privacy, text) == [
        ("jane.doe+tag@mail.example.co.uk", "EMAIL"),
        ("https://example.com/p?q=1", "URL"),
    ]
    assert found(privacy, "visit example.org today") == [("example.org", "URL")]
    assert found(privacy, "user@localhost and main.py and README.md") == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("email me at jane.doe [at] example [dot] com", "jane.doe [at] example [dot] com"),
        ("write to j.doe (at) example.org please", "j.doe (at) example.org"),
        ("jane dot doe at gmail dot com", "jane dot doe at gmail dot com"),
        ("Jane DOT Doe AT Example DOT com", "Jane DOT Doe AT Example DOT com"),
        ("mail jdoe42 at example dot org", "jdoe42 at example dot org"),
        ("sam at gmail dot com, thanks", "sam at gmail dot com"),
        ("or john@example dot com", "john@example dot com"),
        ("mail jane @ example.com today", "jane @ example.com"),  # spaced: no plain address
        ("mail jane.doe@ example.org.", "jane.doe@ example.org"),
    ],
)
def test_spelled_out_emails(privacy: PrivacyFilter, text: str, value: str) -> None:
    assert found(privacy, text) == [(value, "EMAIL")]
    vault = Vault()
    red = privacy.redact(text, vault)
    assert red.text == text.replace(value, "<EMAIL_1>")
    assert privacy.restore(red.text, vault).text == text


@pytest.mark.parametrize(
    "text",
    [
        "look at this dot com bubble",  # a bare " at " needs an address-like name
        "we met at home dot",
        "I was at work. Is it ok",
        "prices at amazon dot com",
        "at the end of the day",
    ],
)
def test_prose_with_at_and_dot_is_no_email(privacy: PrivacyFilter, text: str) -> None:
    assert "EMAIL" not in labels(privacy, text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("born on 21/07/1990", "21/07/1990"),
        ("born March 3, 1990", "March 3, 1990"),
        ("DOB 3rd of March 1990", "3rd of March 1990"),
    ],
)
def test_full_dates(privacy: PrivacyFilter, text: str, value: str) -> None:
    assert found(privacy, text) == [(value, "DATE")]


def test_dates_can_be_left_alone() -> None:
    no_dates = PrivacyFilter.from_config(PrivacyConfig(ner="none", dates=False))
    assert no_dates.detect("born on 21/07/1990") == []


@pytest.mark.parametrize(
    "text",
    [
        "key AKIAIOSFODNN7EXAMPLE",
        "token ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFU",
        "password: hunter22",
        "my PIN is 0000",
        "wifi password Tr0ub4dor&3 please",
        "pwd s3cr3t!!",
        "pin code: 482913",
        "passcode 123456",
        "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz123456",
        "q8Xz2LmN4vB7rT1yW9kP3sD6fG0hJ5cV",
    ],
)
def test_secrets_by_shape_assignment_and_entropy(privacy: PrivacyFilter, text: str) -> None:
    assert labels(privacy, text) == {"SECRET"}


def test_private_key_block_is_one_secret(privacy: PrivacyFilter) -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0BAQEF\n-----END PRIVATE KEY-----"
    assert found(privacy, f"here: {pem} done") == [(pem, "SECRET")]


@pytest.mark.parametrize(
    "text",
    [
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "id 123e4567-e89b-12d3-a456-426614174000",
        "ThisIsAVeryLongCamelCaseIdentifierName",
        "the password is in the drawer",
        "GPIO pin 13 and pin 2",
        "password reset link",
        "the password field is empty",
        "pins 1234",
        "pin 12/2026",
    ],
)
def test_hashes_uuids_and_words_are_not_secrets(privacy: PrivacyFilter, text: str) -> None:
    assert "SECRET" not in labels(privacy, text)


def test_overlapping_detections_keep_the_validated_one(privacy: PrivacyFilter) -> None:
    # The card number also looks like a phone number: the Luhn-validated reading wins.
    spans = privacy.detect("pay with 4111-1111-1111-1111 now")
    assert spans == [Span(9, 28, "CARD", "luhn")]
