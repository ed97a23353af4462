"""A value found once is redacted wherever it recurs: in every message, any role, and in
later texts redacted with the same vault (the local draft, stop strings)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels.base import Message
from runtime.privacy import PrivacyConfig, PrivacyFilter, Vault


@pytest.fixture(scope="module")
def privacy() -> PrivacyFilter:
    return PrivacyFilter.from_config()


@pytest.fixture(scope="module")
def structured() -> PrivacyFilter:
    return PrivacyFilter.from_config(PrivacyConfig(ner="none"))


def _contents(privacy: PrivacyFilter, messages: list[dict[str, Any]], vault: Vault) -> list[str]:
    return [m["content"] for m in privacy.redact_messages(messages, vault).messages]


def test_the_assistant_turn_repeating_values_of_the_user_turn_is_redacted(
    privacy: PrivacyFilter,
) -> None:
    # The second request of the hunt's conversation: the restored answer is history now.
    vault = Vault()
    messages = [
        {"role": "user", "content": "My PIN is 4821 and my passport number is X1234567. "
                                    "Are they OK?"},
        {"role": "assistant", "content": "4821 is easy to guess, and X1234567 is a valid "
                                         "passport number."},
        {"role": "user", "content": "What should I change?"},
    ]  # fmt: skip
    red = privacy.redact_messages(messages, vault)
    assert [m["content"] for m in red.messages] == [
        "My PIN is <SECRET_1> and my passport number is <NATIONAL_ID_1>. Are they OK?",
        "<SECRET_1> is easy to guess, and <NATIONAL_ID_1> is a valid passport number.",
        "What should I change?",
    ]
    assert dict(red.counts) == {"SECRET": 2, "NATIONAL_ID": 2}
    for message, original in zip(red.messages, messages, strict=True):
        assert privacy.restore(message["content"], vault).text == original["content"]


@pytest.mark.parametrize(
    ("user", "assistant", "user_sent", "assistant_sent"),
    [
        ("my username jdoe_1984 got locked", "Try resetting jdoe_1984 from the login page.",
         "my username <NATIONAL_ID_1> got locked",
         "Try resetting <NATIONAL_ID_1> from the login page."),
        ("The patient DOB 03.05.85 needs a refill.", "For 03.05.85, the refill is due.",
         "The patient DOB <DATE_1> needs a refill.", "For <DATE_1>, the refill is due."),
        ("My wifi password is Blue7horse! how strong is it?",
         "Blue7horse! is moderately strong.",
         "My wifi password is <SECRET_1> how strong is it?",
         "<SECRET_1> is moderately strong."),
        ("card 4111 1111 1111 1111 CVV 737", "Never share 737 with anyone.",
         "card <CARD_1> CVV <CARD_CVV_1>", "Never share <CARD_CVV_1> with anyone."),
    ],
)  # fmt: skip
def test_a_value_found_by_its_context_is_redacted_where_it_has_none(
    structured: PrivacyFilter, user: str, assistant: str, user_sent: str, assistant_sent: str
) -> None:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    assert _contents(structured, messages, Vault()) == [user_sent, assistant_sent]


def test_an_earlier_message_is_redacted_with_a_value_found_later(
    structured: PrivacyFilter,
) -> None:
    messages = [
        {"role": "system", "content": "The user jdoe_1984 is on the free plan."},
        {"role": "user", "content": "my username jdoe_1984 got locked"},
    ]
    assert _contents(structured, messages, Vault()) == [
        "The user <NATIONAL_ID_1> is on the free plan.",
        "my username <NATIONAL_ID_1> got locked",
    ]


def test_text_parts_names_and_typed_messages_share_the_known_values(
    structured: PrivacyFilter,
) -> None:
    vault = Vault()
    red = structured.redact_messages(
        [
            {"role": "user", "content": [{"type": "text", "text": "my PIN is 4821"}]},
            {"role": "assistant", "name": "bot_4821", "content": [
                {"type": "text", "text": "4821 noted"}]},
        ],
        vault,
    )  # fmt: skip
    assert red.messages[1]["content"] == [{"type": "text", "text": "<SECRET_1> noted"}]
    assert red.messages[1]["name"] == "bot_4821"  # a word of its own only
    typed = structured.redact_messages(
        [Message(role="user", content="PIN: 4821"), Message(role="assistant", content="4821?")],
        Vault(),
    )
    assert typed.messages[1] == Message(role="assistant", content="<SECRET_1>?")


def test_a_persons_name_and_its_words_keep_their_placeholders(privacy: PrivacyFilter) -> None:
    vault = Vault()
    messages = [
        {"role": "user", "content": "My name is Zyxa Quorn and I need a cover letter."},
        {"role": "assistant", "content": "Sure, Zyxa. Here it is: Dear hiring manager, "
                                         "I am Zyxa Quorn..."},
        {"role": "user", "content": "Make it shorter, and sign it Quorn."},
    ]  # fmt: skip
    assert _contents(privacy, messages, vault) == [
        "My name is <PERSON_1> and I need a cover letter.",
        "Sure, <PERSON_2>. Here it is: Dear hiring manager, I am <PERSON_1>...",
        "Make it shorter, and sign it <PERSON_3>.",
    ]
    assert (vault.value("PERSON", 2), vault.value("PERSON", 3)) == ("Zyxa", "Quorn")


def test_common_words_of_a_name_are_not_redacted_alone(privacy: PrivacyFilter) -> None:
    messages = [
        {"role": "user", "content": "Please write to Will Quorn today."},
        {"role": "assistant", "content": "Will do. Quorn will get it."},
    ]
    assert _contents(privacy, messages, Vault()) == [
        "Please write to <PERSON_1> today.",
        "Will do. <PERSON_2> will get it.",
    ]


def test_the_draft_is_redacted_with_the_values_of_the_vault(structured: PrivacyFilter) -> None:
    # CloudPath.with_draft redacts the local draft with the request's vault.
    vault = Vault()
    structured.redact_messages([{"role": "user", "content": "My PIN is 4821. Safe?"}], vault)
    draft = structured.redact("4821 is a weak PIN , pick another one . ", vault)
    assert draft.text == "<SECRET_1> is a weak PIN , pick another one . "
    assert dict(draft.counts) == {"SECRET": 1}
    assert structured.redact("\nX1234567:", vault).text == "\nX1234567:"  # never vaulted


def test_short_numbers_recur_only_as_numbers_of_their_own(structured: PrivacyFilter) -> None:
    messages = [
        {"role": "user", "content": "card 4111 1111 1111 1111 CVV 123"},
        {"role": "assistant", "content": "Keep 123 secret. 1,123.45 EUR, 123.5, 1234, A123, "
                                         "10/123, 2.123, 123:30, 12 123 and 123456 are other "
                                         "numbers; (123)."},
    ]  # fmt: skip
    assert _contents(structured, messages, Vault())[1] == (
        "Keep <CARD_CVV_1> secret. 1,123.45 EUR, 123.5, 1234, A123, 10/123, 2.123, 123:30, "
        "12 123 and 123456 are other numbers; (<CARD_CVV_1>)."
    )


def test_a_value_is_found_as_whole_words_only(structured: PrivacyFilter) -> None:
    messages = [
        {"role": "user", "content": "my passport number is X1234567"},
        {"role": "assistant", "content": "X12345678 and AX1234567 differ; X1234567, not x1234567."},
    ]
    assert _contents(structured, messages, Vault())[1] == (
        "X12345678 and AX1234567 differ; <NATIONAL_ID_1>, not x1234567."
    )


def test_a_value_inside_a_longer_detection_is_left_to_it(structured: PrivacyFilter) -> None:
    messages = [
        {"role": "user", "content": "my PIN is 4821"},
        {"role": "user", "content": "call me on +1 415 555 4821 or mail 4821@example.com"},
    ]
    assert _contents(structured, messages, Vault())[1] == "call me on <PHONE_1> or mail <EMAIL_1>"


def test_dropped_types_recur_dropped_and_allowed_ones_are_not_known() -> None:
    privacy = PrivacyFilter.from_config(
        PrivacyConfig(ner="none", drop_types=("SECRET",), allow_types=("NATIONAL_ID",))
    )
    messages = [
        {"role": "user", "content": "My PIN is 4821 and my passport number is X1234567."},
        {"role": "assistant", "content": "4821 and X1234567 noted."},
    ]
    assert _contents(privacy, messages, Vault()) == [
        "My PIN is [SECRET] and my passport number is X1234567.",
        "[SECRET] and X1234567 noted.",
    ]


def test_a_blocked_type_blocks_where_it_recurs() -> None:
    privacy = PrivacyFilter.from_config(PrivacyConfig(ner="none", block_types=("CARD_CVV",)))
    vault = Vault()
    privacy.redact("card 4111 1111 1111 1111 CVV 737", vault)
    draft = privacy.redact("Your code 737 is safe with me.", vault)
    assert (draft.text, draft.blocked) == ("Your code <CARD_CVV_1> is safe with me.",
                                           "contains CARD_CVV")  # fmt: skip


_PIECES = (
    "My PIN is 4821", "4821", " 4821 ", "X1234567", "my passport number is X1234567", "Zyxa",
    "My name is Zyxa Quorn", "Quorn", "Maria Schmidt", "maria@example.com", "PERSON_1", "_",
    "<SECRET_1>", "person_1", "KaR", " ", "\n", ".", "1", "DOB 03.05.85", "03.05.85",
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(st.one_of(st.text(max_size=12), st.sampled_from(_PIECES)), max_size=8),
        min_size=1,
        max_size=4,
    )
)
def test_restore_of_redacted_messages_is_the_identity(conversation: list[list[str]]) -> None:
    privacy = _names_filter()
    messages = [{"role": "user", "content": "".join(parts)} for parts in conversation]
    vault = Vault()
    red = privacy.redact_messages(messages, vault)
    for sent, original in zip(red.messages, messages, strict=True):
        assert privacy.restore(sent["content"], vault).text == original["content"]


_FILTERS: list[PrivacyFilter] = []


def _names_filter() -> PrivacyFilter:
    if not _FILTERS:
        _FILTERS.append(PrivacyFilter.from_config(PrivacyConfig(ner="names")))
    return _FILTERS[0]
