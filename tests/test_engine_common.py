"""The stop-string handling every engine shares (`kernels.common.StopText`)."""

from __future__ import annotations

from kernels.common import StopText


def test_text_that_may_begin_a_stop_string_is_held_until_settled() -> None:
    text = StopText(("</s>",))
    assert text.add("Hello <") == "Hell"  # the last 3 characters could begin "</s>"
    assert text.add("b>") == "o "
    assert text.add(" done") == "<b> d"
    assert text.rest() == "one" and not text.stopped
    assert text.text == "Hello <b> done"


def test_a_stop_string_split_across_pieces_cuts_the_text_before_it() -> None:
    text = StopText(("STOP", "\n\n"))
    shown = [text.add(p) for p in ("one ST", "OP two")]
    assert text.stopped and text.text == "one "
    assert "".join(shown) + text.rest() == "one "


def test_without_stop_strings_everything_is_shown_at_once() -> None:
    text = StopText(())
    assert text.add("abc") == "abc" and text.rest("def") == "def"
