"""A streamed answer is restored exactly as the whole answer, wherever the chunks split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.privacy import Vault, restore
from runtime.privacy.restore import StreamRestorer


def _vault() -> Vault:
    vault = Vault()
    vault.placeholder("PERSON", "Jane Doe")
    vault.placeholder("EMAIL", "j@x.org")
    vault.placeholder("CARD_CVV", "123")
    vault.placeholder("IP", "10.0.0.1")
    return vault


TEXTS = (
    "my_IP_1 = 5", "x_PERSON_1 and PERSON_1", "aIP_1 IP_1b IP_1", "ab PERSON_12 cd",
    "Hi <PERSON_1>, mail <EMAIL_1>.", "Hi &lt;PERSON_1&gt; ok", "Hi \\<PERSON_1\\> ok",
    "[person-1] and PERSON1 and Person_1.", "CARD_CVV_1 then <CARD_CVV_1>", "PERSON_1PERSON_1",
    "é_IP_1 and 9IP_1 and _IP_1", "<IP_1>:8080 ip_1.", "IP_1",
)  # fmt: skip


def _streamed(vault: Vault, chunks: list[str]) -> str:
    stream = StreamRestorer(vault)
    return "".join(stream.feed(c) for c in chunks) + stream.flush()


@pytest.mark.parametrize("text", TEXTS)
def test_every_split_restores_like_the_whole(text: str) -> None:
    vault = _vault()
    whole = restore(text, vault).text
    for i in range(len(text) + 1):
        assert _streamed(vault, [text[:i], text[i:]]) == whole, i
        for j in range(i, len(text) + 1):
            assert _streamed(vault, [text[:i], text[i:j], text[j:]]) == whole, (i, j)
    assert _streamed(vault, list(text)) == whole


def test_a_placeholder_glued_to_a_word_is_left_when_split_before_it() -> None:
    vault = _vault()
    assert restore("my_IP_1 = 5", vault).text == "my_IP_1 = 5"
    assert _streamed(vault, ["my_", "IP_1 = 5"]) == "my_IP_1 = 5"
    assert _streamed(vault, ["my ", "IP_1 = 5"]) == "my 10.0.0.1 = 5"


_PIECES = ("IP_1", "PERSON_1", "<EMAIL_1>", "_", "x", "é", " ", "1", "<", "&lt;", "\\", "ip_", ">")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=4)), max_size=8),
    st.lists(st.integers(min_value=0, max_value=60), max_size=4),
)
def test_any_text_split_anywhere_restores_like_the_whole(parts: list[str], cuts: list[int]) -> None:
    vault = _vault()
    text = "".join(parts)
    whole = restore(text, vault).text
    for i in range(len(text) + 1):  # every split in two, then the drawn splits
        assert _streamed(vault, [text[:i], text[i:]]) == whole, i
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert _streamed(vault, chunks) == whole
