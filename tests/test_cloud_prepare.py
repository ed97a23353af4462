"""What `CloudPath` sends: the messages, the stop strings and the device's draft are
redacted together, so a value found by its context in one of them is replaced in all.

`prepare` and `with_draft` never touch the offload client (no gateway is needed to see the
body they build); the privacy filter is the runtime's real default one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kernels import GenerationParams, Message
from runtime.cloud import DRAFT_INSTRUCTION, CloudPath
from runtime.privacy import PrivacyConfig


@pytest.fixture(scope="module")
def path() -> CloudPath:
    return CloudPath(client=None, privacy=PrivacyConfig())  # type: ignore[arg-type]


def _sent(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


def test_a_value_found_only_in_the_draft_is_replaced_in_the_request_too(path: CloudPath) -> None:
    question = "remember the code for my front door: 4821. What if I forget it?"
    prepared = path.prepare([Message("user", question)], GenerationParams())
    assert prepared.body["messages"][0]["content"] == question  # nothing marks 4821 here
    with_draft, kept_back = path.with_draft(prepared, "If you forget your PIN 4821, call the "
                                                      "landlord.")
    assert kept_back == ""
    assert "4821" not in _sent(with_draft.body)
    user, draft, instruction = with_draft.body["messages"]
    assert user["content"] == ("remember the code for my front door: <SECRET_1>. What if I "
                               "forget it?")
    assert draft == {"role": "assistant",
                     "content": "If you forget your PIN <SECRET_1>, call the landlord."}
    assert instruction == {"role": "user", "content": DRAFT_INSTRUCTION}
    assert with_draft.redactions == {"counts": {"SECRET": 2}, "blocked": None}
    assert with_draft.vault.value("SECRET", 1) == "4821"


def test_the_draft_repeats_the_placeholders_of_the_request(path: CloudPath) -> None:
    prepared = path.prepare([Message("user", "Mail jane.roe@example.org about the invoice.")],
                            GenerationParams())
    with_draft, _ = path.with_draft(prepared, "Sure: I will mail jane.roe@example.org today.")
    user, draft, _ = with_draft.body["messages"]
    assert user["content"] == "Mail <EMAIL_1> about the invoice."
    assert draft["content"] == "Sure: I will mail <EMAIL_1> today."
    assert prepared.body["messages"][0]["content"] == user["content"]  # the request unchanged


def test_a_value_found_only_in_a_stop_string_is_replaced_in_the_messages(
    path: CloudPath,
) -> None:
    prepared = path.prepare(
        [Message("user", "Write the note for the door; the code is 4821 as usual.")],
        GenerationParams(stop=("my PIN is 4821",)))
    assert "4821" not in _sent(prepared.body)
    assert prepared.body["stop"] == ["my PIN is <SECRET_1>"]
    assert "<SECRET_1>" in prepared.body["messages"][0]["content"]


def test_a_blocked_type_in_a_stop_string_alone_says_so(path: CloudPath) -> None:
    cloud = CloudPath(client=None, privacy=PrivacyConfig(block_types=("SSN",)))  # type: ignore[arg-type]
    prepared = cloud.prepare([Message("user", "Fill in the form.")],
                             GenerationParams(stop=("SSN 536-90-4399",)))
    assert prepared.blocked == "a stop string: contains SSN"
    in_message = cloud.prepare([Message("user", "My SSN is 536-90-4399.")],
                               GenerationParams(stop=("SSN 536-90-4399",)))
    assert in_message.blocked == "contains SSN"


def test_a_draft_with_a_blocked_type_stays_on_the_device(path: CloudPath) -> None:
    cloud = CloudPath(client=None, privacy=PrivacyConfig(block_types=("SSN",)))  # type: ignore[arg-type]
    prepared = cloud.prepare([Message("user", "Which number goes on line 3?")],
                             GenerationParams())
    same, kept_back = cloud.with_draft(prepared, "Your SSN, 536-90-4399, goes there.")
    assert kept_back == "contains SSN" and same is prepared


def test_the_plain_request_is_kept_out_of_the_repr(path: CloudPath) -> None:
    prepared = path.prepare([Message("user", "call me on +1 415 555 0132")], GenerationParams())
    assert "555 0132" not in repr(prepared.body) and "555 0132" not in repr(prepared)
    assert prepared.plain[0]["content"] == "call me on +1 415 555 0132"
