"""Placeholders, the vault, restore (whole and streamed) and the per-type policy."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels.base import Message
from runtime.errors import PrivacyBlockError
from runtime.privacy import PrivacyConfig, PrivacyFilter, PrivacyPolicy, Vault, restore

PIECES = (
    "Maria Schmidt", "maria@example.com", "4111 1111 1111 1111", "<PERSON_1>", "[email 2]",
    "PERSON_3", "<RAW_1>", "+41 44 668 18 00", "10.0.0.1", " ", "<", ">", "_", "1", "KaR",
    "password: hunter22", "24 Clarke Avenue", "\n", "person_1", "Email_1", "PERSON1", "\\<",
    "\\>", "&lt;", "&gt;", "&", "\\", " 12/26 987", "exp 09/27", "CVV 123", "<CARD_CVV_1>",
    "CARD_EXPIRY_1",
)  # fmt: skip
TEXT = (
    "Hi, I'm Maria Schmidt (maria.schmidt@example.com, +44 20 7946 0958). "
    "Card 4111 1111 1111 1111. Maria Schmidt again: maria.schmidt@example.com"
)


@pytest.fixture(scope="module")
def privacy() -> PrivacyFilter:
    return PrivacyFilter.from_config()


def test_values_become_typed_numbered_placeholders(privacy: PrivacyFilter) -> None:
    red = privacy.redact(TEXT, Vault())
    assert red.text == (
        "Hi, I'm <PERSON_1> (<EMAIL_1>, <PHONE_1>). Card <CARD_1>. <PERSON_1> again: <EMAIL_1>"
    )
    assert dict(red.counts) == {"PERSON": 2, "EMAIL": 2, "PHONE": 1, "CARD": 1}
    assert red.blocked is None


def test_the_same_value_keeps_its_placeholder_across_messages(privacy: PrivacyFilter) -> None:
    vault = Vault()
    first = privacy.redact("Call Maria Schmidt", vault).text
    second = privacy.redact("Did Maria Schmidt call? And John Miller?", vault).text
    assert first == "Call <PERSON_1>"
    assert second == "Did <PERSON_1> call? And <PERSON_2>?"


def test_report_holds_counts_never_values(privacy: PrivacyFilter) -> None:
    red = privacy.redact(TEXT, Vault())
    report = repr(red.to_dict())
    assert red.to_dict() == {
        "counts": {"CARD": 1, "EMAIL": 2, "PERSON": 2, "PHONE": 1},
        "blocked": None,
    }
    for value in ("Maria", "Schmidt", "example.com", "7946", "4111"):
        assert value not in report


@pytest.mark.parametrize(
    "echo",
    [
        "<PERSON_1>", "<person_1>", "< PERSON 1 >", "[PERSON_1]", "<Person-1>", "PERSON_1",
        "Person_1", "person_1", "PERSON1", "\\<PERSON_1\\>", "\\[PERSON_1\\]",
        "&lt;PERSON_1&gt;",
    ],
)  # fmt: skip
def test_restore_accepts_a_model_changing_case_or_spacing(
    privacy: PrivacyFilter, echo: str
) -> None:
    vault = Vault()
    privacy.redact("ask Maria Schmidt", vault)
    result = privacy.restore(f"Sure, {echo} and {echo} again.", vault)
    assert result.text == "Sure, Maria Schmidt and Maria Schmidt again."
    assert result.restored == 2
    assert result.unknown_placeholders == ()


def test_unknown_placeholders_are_left_and_reported(privacy: PrivacyFilter) -> None:
    vault = Vault()
    privacy.redact("ask Maria Schmidt", vault)
    result = restore("<PERSON_1> met <PERSON_7> and <EMAIL_3>; <PERSON_7>", vault)
    assert result.text == "Maria Schmidt met <PERSON_7> and <EMAIL_3>; <PERSON_7>"
    assert result.unknown_placeholders == ("<PERSON_7>", "<EMAIL_3>")


def test_bare_look_alikes_the_vault_did_not_issue_are_ordinary_words(
    privacy: PrivacyFilter,
) -> None:
    vault = Vault()
    privacy.redact("ask Maria Schmidt", vault)
    result = restore("person_1 and ip_2 = IP6; person_7, PERSON7 and PERSON_7", vault)
    assert result.text == "Maria Schmidt and ip_2 = IP6; person_7, PERSON7 and PERSON_7"
    assert result.unknown_placeholders == ("PERSON_7",)


def test_look_alikes_in_the_input_survive_the_round_trip(privacy: PrivacyFilter) -> None:
    vault = Vault()
    text = "person_1 wrote PERSON1 and &lt;Person_1&gt; to Maria Schmidt"
    red = privacy.redact(text, vault)
    assert red.text == "<RAW_1> wrote <RAW_2> and <RAW_3> to <PERSON_1>"
    assert privacy.restore(red.text, vault).text == text


def test_stream_restore_handles_a_placeholder_split_at_every_point(
    privacy: PrivacyFilter,
) -> None:
    vault = Vault()
    privacy.redact("mail maria.schmidt@example.com about Maria Schmidt", vault)
    answer = (
        "Dear <PERSON_1>, I wrote to < email_1 > and to PERSON_1, person_1, \\<Email_1\\> "
        "and &lt;PERSON_1&gt;."
    )
    expected = (
        "Dear Maria Schmidt, I wrote to maria.schmidt@example.com and to Maria Schmidt, "
        "Maria Schmidt, maria.schmidt@example.com and Maria Schmidt."
    )
    for cut in range(len(answer) + 1):
        for second in range(cut, len(answer) + 1):
            stream = privacy.stream_restorer(vault)
            chunks = (answer[:cut], answer[cut:second], answer[second:])
            out = "".join(stream.feed(c) for c in chunks) + stream.flush()
            assert out == expected, (cut, second)


def test_stream_restore_emits_plain_text_without_waiting(privacy: PrivacyFilter) -> None:
    stream = privacy.stream_restorer(Vault())
    assert stream.feed("Hello there, ") == "Hello there, "
    assert stream.feed("see <PER") == "see "  # may be the start of a placeholder
    assert stream.feed("SON_9> ok") == "<PERSON_9> ok"
    assert stream.flush() == ""
    assert stream.unknown_placeholders == ("<PERSON_9>",)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=20),
            st.sampled_from(PIECES),
        ),
        max_size=12,
    )
)
def test_restore_of_redact_is_the_identity_for_any_text(parts: list[str]) -> None:
    privacy = _shared_filter()
    text = "".join(parts)
    vault = Vault()
    red = privacy.redact(text, vault)
    assert privacy.restore(red.text, vault).text == text
    stream = privacy.stream_restorer(vault)
    half = len(red.text) // 2
    assert stream.feed(red.text[:half]) + stream.feed(red.text[half:]) + stream.flush() == text


_FILTER: list[PrivacyFilter] = []


def _shared_filter() -> PrivacyFilter:
    if not _FILTER:
        _FILTER.append(PrivacyFilter.from_config())
    return _FILTER[0]


def test_vault_never_pickles_copies_or_prints_values(privacy: PrivacyFilter) -> None:
    vault = Vault()
    privacy.redact("Maria Schmidt, maria@example.com", vault)
    with pytest.raises(TypeError):
        pickle.dumps(vault)
    with pytest.raises(TypeError):
        copy.deepcopy(vault)
    assert repr(vault) == "Vault({'EMAIL': 1, 'PERSON': 1})"


def test_vault_gives_one_placeholder_per_value_under_threads() -> None:
    vault = Vault()
    results: list[str] = []

    def work(i: int) -> None:
        for n in range(200):
            results.append(vault.placeholder("PERSON", f"name {n % 50}"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(vault) == 50
    assert {vault.value("PERSON", n) for n in range(1, 51)} == {f"name {n}" for n in range(50)}
    assert set(results) == {f"<PERSON_{n}>" for n in range(1, 51)}


def test_drop_allow_and_block_actions() -> None:
    config = PrivacyConfig(drop_types=("SECRET",), allow_types=("URL",), block_types=("CARD",))
    privacy = PrivacyFilter.from_config(config)
    red = privacy.redact("see https://example.com with password: hunter22", Vault())
    assert red.text == "see https://example.com with password: [SECRET]"
    assert dict(red.counts) == {"SECRET": 1}
    assert red.blocked is None
    blocked = privacy.redact("my card 4111 1111 1111 1111", Vault())
    assert blocked.blocked == "contains CARD"
    assert "4111" not in blocked.text
    with pytest.raises(PrivacyBlockError, match="contains CARD"):
        blocked.raise_if_blocked()


@pytest.mark.parametrize(
    ("config", "redacted", "blocked"),
    [
        ({}, "card <CARD_1> <CARD_EXPIRY_1> <CARD_CVV_1>", None),
        ({"drop_types": ("CARD_CVV",)}, "card <CARD_1> <CARD_EXPIRY_1> [CARD_CVV]", None),
        ({"allow_types": ("CARD_EXPIRY",)}, "card <CARD_1> 12/26 <CARD_CVV_1>", None),
        (
            {"block_types": ("CARD_CVV",)},
            "card <CARD_1> <CARD_EXPIRY_1> <CARD_CVV_1>",
            "contains CARD_CVV",
        ),
        ({"allow_types": ("CARD",)}, "card 4111 1111 1111 1111 <CARD_EXPIRY_1> <CARD_CVV_1>", None),
    ],
)
def test_card_security_types_have_their_own_actions(
    config: dict[str, tuple[str, ...]], redacted: str, blocked: str | None
) -> None:
    privacy = PrivacyFilter.from_config(PrivacyConfig(ner="none", **config))  # type: ignore[arg-type]
    red = privacy.redact("card 4111 1111 1111 1111 12/26 987", Vault())
    assert (red.text, red.blocked) == (redacted, blocked)


def test_stay_local_categories_and_keywords_keep_the_request_local() -> None:
    privacy = PrivacyFilter.from_config(
        PrivacyConfig(stay_local_categories=("health",), stay_local_keywords=("project x",))
    )
    assert privacy.redact("My diagnosis came back", Vault()).blocked == "stay-local topic health"
    assert privacy.redact("status of Project X?", Vault()).blocked == "stay-local topic custom"
    assert privacy.redact("What is the capital of France?", Vault()).blocked is None


def test_allowed_values_are_sent_as_written_and_nothing_else_is() -> None:
    privacy = PrivacyFilter.from_config(PrivacyConfig(
        ner="names", block_types=("EMAIL",),
        allow_values=("Ernest Hemingway", "support@acme.example.com", "Acme"),
    ))
    text = ("Jane Doe asks: how did ERNEST  hemingway write? Mail support@acme.example.com, "
            "not jane@acme.example.com; Acme and Acmeville.")
    red = privacy.redact(text, Vault())
    # Any case and spacing; whole words only; a detected value the allowed one lies
    # inside (Jane's address holds no allowed word, but Acmeville is no Acme) is replaced.
    assert red.text == ("<PERSON_1> asks: how did ERNEST  hemingway write? Mail "
                        "support@acme.example.com, not <EMAIL_1>; Acme and Acmeville.")
    assert red.blocked == "contains EMAIL"  # the other address still blocks
    alone = privacy.redact("write to support@acme.example.com", Vault())
    assert (alone.text, alone.blocked, dict(alone.counts)) == (
        "write to support@acme.example.com", None, {})
    # A detected value that only holds an allowed one is replaced whole.
    assert privacy.redact("Ernest Hemingway Smith called", Vault()).text == "<PERSON_1> called"
    assert privacy.policy.allowed("acme, ACME-1, Acme's") == [(0, 4), (6, 10), (14, 18)]


def test_messages_are_redacted_with_one_vault(privacy: PrivacyFilter) -> None:
    vault = Vault()
    messages = [
        {"role": "system", "content": "You help Maria Schmidt."},
        {"role": "user", "content": "Email maria@example.com for Maria Schmidt", "name": "u"},
    ]
    red = privacy.redact_messages(messages, vault)
    assert red.messages == (
        {"role": "system", "content": "You help <PERSON_1>."},
        {"role": "user", "content": "Email <EMAIL_1> for <PERSON_1>", "name": "u"},
    )
    assert dict(red.counts) == {"PERSON": 2, "EMAIL": 1}
    typed = privacy.redact_messages([Message(role="user", content="Hi Maria Schmidt")], vault)
    assert typed.messages == (Message(role="user", content="Hi <PERSON_1>"),)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop_types": ("NAME",)}, "unknown entity type 'NAME'"),
        ({"drop_types": ("CARD",), "allow_types": ("CARD",)}, "CARD is in both"),
        ({"stay_local_categories": ("weather",)}, "unknown category 'weather'"),
        ({"ner": "spacy", "spacy_model": ""}, "needs spacy_model"),
        ({"spacy_labels": ("GPE",)}, "spacy_labels"),
        ({"allow_values": ("Acme", "  ")}, "allow_values: an empty value"),
    ],
)
def test_bad_privacy_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrivacyConfig(**kwargs)  # type: ignore[arg-type]


def test_policy_refuses_an_unknown_action() -> None:
    with pytest.raises(ValueError, match="must be one of"):
        PrivacyPolicy(actions={"PERSON": "hide"})  # type: ignore[dict-item]
