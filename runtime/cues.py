"""Cheap task cues of a prompt: what kind of work it asks for, by keyword patterns.

Read by the policy (`policy.cloud_task_cues`), traced in every decision, and used as
context by the online router (`runtime.router.online`), which has one feature per cue.
"""

from __future__ import annotations

import re

TASK_CUES: dict[str, re.Pattern[str]] = {
    "code": re.compile(r"```|\b(?:def|class|function|import|SELECT|regex|python|javascript|"
                       r"compile|stack trace|bug)\b", re.I),
    "math": re.compile(r"\d\s*[-+*/^=]\s*\d|\b(?:solve|equation|integral|derivative|"
                       r"probability|how many|calculate)\b", re.I),
    "translation": re.compile(r"\btranslat(?:e|ion)\b", re.I),
}
CUE_NAMES: tuple[str, ...] = tuple(TASK_CUES)


def task_cues(text: str) -> tuple[str, ...]:
    """The cues `text` shows, in `CUE_NAMES` order."""
    return tuple(name for name, pattern in TASK_CUES.items() if pattern.search(text))
