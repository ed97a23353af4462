"""The wire protocol on its own: sealing, opening, frames, signed keys, credentials."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_gateway import protocol
from cloud_gateway.errors import (
    BadCredential,
    BadSignature,
    DecryptionFailed,
    FrameError,
    MalformedEnvelope,
    ProtocolError,
    StaleKeys,
    UnknownKeyId,
    UnsupportedVersion,
    UntrustedKeys,
)
from cloud_gateway.protocol import (
    DeviceCredential,
    FrameOpener,
    FrameSealer,
    Kem,
    PublishedKey,
    open_request,
    open_response,
    read_keys_document,
    seal_request,
    seal_response,
    sign_keys_document,
    verify_keys_document,
)
from cloud_gateway.protocol.suites import PrivateKey, generate_secret, private_key, public_bytes

BODY = json.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}).encode()
DEVICE_KEY = Ed25519PrivateKey.generate()
SECRETS: dict[Kem, bytes] = {kem: generate_secret(kem) for kem in ("x25519", "mlkem768-x25519")}
KEY_IDS: dict[Kem, str] = {"x25519": "x25519-test-1", "mlkem768-x25519": "mlkem-test-1"}


def lookup(key_id: str) -> tuple[Kem, PrivateKey] | None:
    for kem, kid in KEY_IDS.items():
        if kid == key_id:
            return kem, private_key(kem, SECRETS[kem])
    return None


def seal(kem: Kem = "x25519", body: bytes = BODY, **kw: object) -> bytes:
    sealed = seal_request(
        body,
        kem=kem,
        key_id=KEY_IDS[kem],
        gateway_key=public_bytes(kem, SECRETS[kem]),
        device_id="phone",
        device_key=DEVICE_KEY,
        **kw,  # type: ignore[arg-type]
    )
    return sealed.envelope


@pytest.mark.parametrize("kem", ["x25519", "mlkem768-x25519"])
def test_sealed_request_opens_to_the_same_request_device_and_keys(kem: Kem) -> None:
    response_key, nonce = os.urandom(32), os.urandom(16)
    opened = open_request(seal(kem, now_ms=1234, nonce=nonce, response_key=response_key), lookup)
    assert opened.body == BODY
    assert opened.device_id == "phone"
    assert opened.ts_ms == 1234
    assert opened.nonce == nonce
    assert opened.response_key == response_key
    assert opened.key_id == KEY_IDS[kem]
    opened.verify_signature(DEVICE_KEY.public_key())


def test_signature_of_another_device_key_is_rejected() -> None:
    opened = open_request(seal(), lookup)
    with pytest.raises(BadSignature):
        opened.verify_signature(Ed25519PrivateKey.generate().public_key())


def test_envelope_for_an_unknown_key_id_names_the_key() -> None:
    with pytest.raises(UnknownKeyId, match="x25519-test-1"):
        open_request(seal(), lambda _kid: None)


def test_each_defect_has_its_own_error() -> None:
    envelope = seal()
    with pytest.raises(MalformedEnvelope):
        open_request(b"XXX" + envelope[3:], lookup)
    with pytest.raises(UnsupportedVersion):
        open_request(envelope[:3] + b"\x02" + envelope[4:], lookup)
    with pytest.raises(UnsupportedVersion):
        open_request(envelope[:4] + b"\x09" + envelope[5:], lookup)
    with pytest.raises(DecryptionFailed):
        open_request(envelope[:-1] + bytes([envelope[-1] ^ 1]), lookup)
    with pytest.raises(MalformedEnvelope):
        open_request(envelope[:40], lookup)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_changed_byte_of_a_sealed_request_is_rejected(data: st.DataObject) -> None:
    envelope = bytearray(seal())
    index = data.draw(st.integers(0, len(envelope) - 1), label="index")
    envelope[index] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(ProtocolError):
        opened = open_request(bytes(envelope), lookup)
        # A change that still opens would have to pass the device signature too.
        opened.verify_signature(DEVICE_KEY.public_key())


@settings(max_examples=200, deadline=None)
@given(junk=st.binary(max_size=2048))
def test_arbitrary_bytes_never_open(junk: bytes) -> None:
    with pytest.raises(ProtocolError):
        open_request(junk, lookup)


def test_response_and_stream_frames_round_trip() -> None:
    key = os.urandom(32)
    assert open_response(key, seal_response(key, b'{"a": 1}')) == b'{"a": 1}'
    sealer, opener = FrameSealer(key), FrameOpener(key)
    wire = sealer.seal(b"one") + sealer.seal(b"two") + sealer.seal(b"end", final=True)
    # Delivered one byte at a time, the frames still come out whole and in order.
    out = [frame for i in range(len(wire)) for frame in opener.feed(wire[i : i + 1])]
    opener.close()
    assert out == [(b"one", False), (b"two", False), (b"end", True)]


def _stream(key: bytes, parts: list[bytes]) -> list[bytes]:
    sealer = FrameSealer(key)
    frames = [sealer.seal(p) for p in parts[:-1]]
    return [*frames, sealer.seal(parts[-1], final=True)]


def _open_all(key: bytes, wire: bytes) -> list[tuple[bytes, bool]]:
    opener = FrameOpener(key)
    out = opener.feed(wire)
    opener.close()
    return out


def test_truncated_reordered_and_spliced_streams_are_detected() -> None:
    key = os.urandom(32)
    frames = _stream(key, [b"a", b"b", b"c", b"end"])
    with pytest.raises(FrameError, match="truncated"):
        _open_all(key, b"".join(frames[:3]))
    with pytest.raises(FrameError):
        _open_all(key, frames[1] + frames[0] + frames[2] + frames[3])
    with pytest.raises(FrameError):
        _open_all(key, frames[0] + frames[2] + frames[3])  # a dropped frame
    with pytest.raises(FrameError):
        _open_all(key, b"".join(frames) + frames[0])  # data after the final frame
    other = _stream(os.urandom(32), [b"x", b"y", b"end"])
    with pytest.raises(FrameError):
        _open_all(key, frames[0] + other[1] + other[2])  # frames from another response


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_changed_byte_of_a_stream_is_rejected(data: st.DataObject) -> None:
    key = bytes(32)
    wire = bytearray(b"".join(_stream(key, [b"hello", b" world", b'{"usage": null}'])))
    index = data.draw(st.integers(0, len(wire) - 1), label="index")
    wire[index] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(FrameError):
        _open_all(key, bytes(wire))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_changed_byte_of_a_sealed_response_is_rejected(data: st.DataObject) -> None:
    key = bytes(range(32))
    wire = bytearray(seal_response(key, b'{"choices": []}'))
    index = data.draw(st.integers(0, len(wire) - 1), label="index")
    wire[index] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(FrameError):
        open_response(key, bytes(wire))


def _published() -> tuple[PublishedKey, ...]:
    return (
        PublishedKey("x25519-test-1", "x25519", public_bytes("x25519", SECRETS["x25519"]), 2**40),
    )


def test_keys_document_verifies_only_under_the_gateway_identity() -> None:
    identity = Ed25519PrivateKey.generate()
    doc = sign_keys_document(_published(), identity)
    assert verify_keys_document(doc, identity.public_key()) == _published()
    with pytest.raises(UntrustedKeys):
        verify_keys_document(doc, Ed25519PrivateKey.generate().public_key())
    forged = json.loads(json.dumps(doc))
    forged["keys"][0]["public_key"] = forged["keys"][0]["public_key"][::-1]
    with pytest.raises(UntrustedKeys):
        verify_keys_document(forged, identity.public_key())


def test_expired_keys_are_dropped_from_a_genuine_document() -> None:
    identity = Ed25519PrivateKey.generate()
    (key,) = _published()
    old = PublishedKey("old-1", "x25519", key.public_key, 1000)
    doc = sign_keys_document((old, key), identity)
    assert verify_keys_document(doc, identity.public_key(), now=2000) == (key,)


def test_old_or_rolled_back_keys_documents_are_refused_as_stale() -> None:
    identity = Ed25519PrivateKey.generate()
    now = 1_800_000_000
    old = sign_keys_document(_published(), identity, issued_at=now - 601)
    with pytest.raises(StaleKeys, match="601 s ago"):
        read_keys_document(old, identity.public_key(), now=now)
    recent = sign_keys_document(_published(), identity, issued_at=now - 300)
    assert read_keys_document(recent, identity.public_key(), now=now).issued_at == now - 300
    # Within the age limit, but well older than a list already accepted: a rollback.
    with pytest.raises(StaleKeys, match="older than one already accepted"):
        read_keys_document(recent, identity.public_key(), now=now, not_before=now - 10)
    same = read_keys_document(recent, identity.public_key(), now=now, not_before=now - 300)
    assert same.keys == _published()  # the same list again (a cache) is fine


def test_a_list_from_a_replica_a_little_behind_is_accepted_within_the_tolerance() -> None:
    # Two replicas whose clocks put them in different minutes sign lists 60 s apart; an HTTP
    # cache may add 60 s more. Up to KEYS_ROLLBACK_TOLERANCE_S (120 s) older is accepted.
    identity = Ed25519PrivateKey.generate()
    now = 1_800_000_000
    newest = now - 10
    for behind in (0, 1, 60, 120):
        doc = sign_keys_document(_published(), identity, issued_at=newest - behind)
        read = read_keys_document(doc, identity.public_key(), now=now, not_before=newest)
        assert read.issued_at == newest - behind
    for behind in (121, 300):
        doc = sign_keys_document(_published(), identity, issued_at=newest - behind)
        with pytest.raises(StaleKeys, match=f"by {behind} s, at most 120"):
            read_keys_document(doc, identity.public_key(), now=now, not_before=newest)
    # The tolerance never extends the age limit.
    doc = sign_keys_document(_published(), identity, issued_at=now - 601)
    with pytest.raises(StaleKeys, match="601 s ago"):
        read_keys_document(doc, identity.public_key(), now=now, not_before=now - 600)
    # A caller may ask for the strict rule.
    doc = sign_keys_document(_published(), identity, issued_at=newest - 1)
    with pytest.raises(StaleKeys, match="older than one already accepted"):
        read_keys_document(doc, identity.public_key(), now=now, not_before=newest, tolerance_s=0)
    assert protocol.KEYS_ROLLBACK_TOLERANCE_S == 120


def test_credential_round_trips_and_hides_its_secret() -> None:
    cred = DeviceCredential("phone", os.urandom(32), os.urandom(32))
    text = cred.encode()
    assert text.startswith("tdc1.")
    assert DeviceCredential.parse(text) == cred
    assert "device_key" not in repr(cred) and cred.device_key.hex() not in repr(cred)
    for bad in ("", "tdc1.", "tdc1.!!!", text[:-3], "xyz" + text):
        with pytest.raises(BadCredential):
            DeviceCredential.parse(bad)
