"""End to end over the real wire protocol: what the gateway decrypts holds no annotated value.

The device redacts the chat, seals it with `cloud_gateway.protocol` (HPKE), the gateway side
opens it; the test reads the gateway's plaintext. The answer travels back as sealed frames
that echo placeholders, and the device restores the original values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_gateway.protocol import (
    FrameOpener,
    FrameSealer,
    Kem,
    open_request,
    open_response,
    seal_request,
    seal_response,
)
from cloud_gateway.protocol.suites import PrivateKey, generate_secret, private_key, public_bytes
from runtime.privacy import PrivacyFilter, Vault

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "pii"
STRUCTURED = {
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS",
}  # fmt: skip
KEM: Kem = "x25519"
SECRET = generate_secret(KEM)
DEVICE_KEY = Ed25519PrivateKey.generate()


def _lookup(key_id: str) -> tuple[Kem, PrivateKey] | None:
    return (KEM, private_key(KEM, SECRET)) if key_id == "k1" else None


def _device_sends(privacy: PrivacyFilter, vault: Vault, user_text: str) -> tuple[bytes, bytes]:
    red = privacy.redact_messages([{"role": "user", "content": user_text}], vault)
    red.raise_if_blocked()
    body = json.dumps({"messages": list(red.messages), "max_tokens": 64}).encode()
    sealed = seal_request(
        body,
        kem=KEM,
        key_id="k1",
        gateway_key=public_bytes(KEM, SECRET),
        device_id="phone-1",
        device_key=DEVICE_KEY,
    )
    return sealed.envelope, sealed.response_key


def _sample() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((DATA / "synth_dataset_v2.json").read_text())
    return [x for x in items if any(s["entity_type"] in STRUCTURED for s in x["spans"])]


@pytest.fixture(scope="module")
def privacy() -> PrivacyFilter:
    return PrivacyFilter.from_config()


def test_gateway_plaintext_holds_no_annotated_structured_value(privacy: PrivacyFilter) -> None:
    sample = _sample()
    assert len(sample) > 250  # every item of the shared data with structured PII
    for item in sample:
        envelope, _ = _device_sends(privacy, Vault(), item["full_text"])
        opened = open_request(envelope, _lookup)
        seen_by_gateway = json.loads(opened.body)["messages"][0]["content"]
        for span in item["spans"]:
            if span["entity_type"] in STRUCTURED:
                assert span["entity_value"] not in seen_by_gateway, item["full_text"]
                assert span["entity_value"].encode() not in envelope


def test_gateway_sees_only_placeholders_for_a_whole_profile(privacy: PrivacyFilter) -> None:
    profile = (
        "Hello, this is Dr. Maria Schmidt. Please update my file: phone +41 44 668 18 00, "
        "email maria.schmidt@example.com, card 4111 1111 1111 1111, IBAN "
        "DE89 3704 0044 0532 0130 00, SSN 536-22-1234, home 24 Clarke Avenue, Springfield. "
        "My server is 203.0.113.7 and my API key is AKIAIOSFODNN7EXAMPLE."
    )
    values = [
        "Maria", "Schmidt", "+41 44 668 18 00", "maria.schmidt@example.com",
        "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "536-22-1234",
        "24 Clarke Avenue", "Springfield", "203.0.113.7", "AKIAIOSFODNN7EXAMPLE",
    ]  # fmt: skip
    vault = Vault()
    envelope, response_key = _device_sends(privacy, vault, profile)
    seen = json.loads(open_request(envelope, _lookup).body)["messages"][0]["content"]
    for value in values:
        assert value not in seen
    assert "<PERSON_1>" in seen and "<CARD_1>" in seen

    # The gateway answers with the placeholders, as a model would, sealed to the device.
    answer = "Done, <person_1>: card <CARD_1> is blocked and a letter goes to < ADDRESS 1 >."
    reply = open_response(response_key, seal_response(response_key, answer.encode()))
    restored = privacy.restore(reply.decode(), vault)
    assert restored.text == (
        "Done, Maria Schmidt: card 4111 1111 1111 1111 is blocked and a letter goes to "
        "24 Clarke Avenue, Springfield."
    )


def test_streamed_answer_is_restored_across_sealed_frames(privacy: PrivacyFilter) -> None:
    vault = Vault()
    _, response_key = _device_sends(privacy, vault, "Write to maria.schmidt@example.com")
    chunks = ["Sent to <EMA", "IL_1", "> just now"]
    sealer = FrameSealer(response_key)
    wire = b"".join(
        sealer.seal(c.encode(), final=i == len(chunks) - 1) for i, c in enumerate(chunks)
    )
    opener = FrameOpener(response_key)
    restorer = privacy.stream_restorer(vault)
    shown = [restorer.feed(plain.decode()) for plain, _final in opener.feed(wire)]
    opener.close()
    shown.append(restorer.flush())
    assert "".join(shown) == "Sent to maria.schmidt@example.com just now"
    assert shown[0] == "Sent to "  # the split placeholder was held back, not shown raw
