"""What every engine shares: the stop-string handling (`kernels.common.StopText`) and the
checks on `GenerationParams`."""

from __future__ import annotations

import pytest

from kernels import GenerationParams
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


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -float("inf"), 10**400],
                         ids=["nan", "inf", "-inf", "int-beyond-float"])
def test_a_temperature_that_is_not_a_finite_number_is_refused(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        GenerationParams(temperature=temperature)


@pytest.mark.parametrize("top_p", [float("nan"), float("inf")])
def test_a_top_p_that_is_not_a_finite_number_is_refused(top_p: float) -> None:
    with pytest.raises(ValueError, match=r"top_p must be between 0 and 1, not"):
        GenerationParams(top_p=top_p)


def test_an_empty_stop_string_is_refused() -> None:
    with pytest.raises(ValueError, match="stop strings must not be empty"):
        GenerationParams(stop=("END", ""))
