"""Admission: from envelope bytes to a request fit to forward, or a precise 4xx.

The checks run cheapest-and-least-trusting first, and nothing is remembered (nonce, usage)
for a sender that has not proven to be an enrolled device:
decrypt (key id, tag) -> device signature -> device not revoked -> timestamp window -> nonce
unseen -> chat body valid -> rate limit and quota.

An unknown device gets the same answer as a bad signature (401 `bad_signature`), and a revoked
one is told so only after its signature verified: a sender without a device key learns nothing
about which names are enrolled or revoked.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_gateway.chat import ChatRequest, parse_chat_request
from cloud_gateway.devices import DeviceDirectory
from cloud_gateway.errors import RevokedDevice
from cloud_gateway.keys import KeyRing
from cloud_gateway.limits import RateLimiter
from cloud_gateway.protocol.envelope import open_request
from cloud_gateway.replay import ReplayGuard

# Unknown devices are checked against this key, so that they cost the same signature check.
_NOBODY = Ed25519PrivateKey.generate().public_key()


@dataclass(frozen=True, slots=True, repr=False)
class Admitted:
    """An authenticated, fresh, in-quota request and the key its answer is sealed under."""

    device_id: str
    key_id: str
    response_key: bytes
    chat: ChatRequest

    def __repr__(self) -> str:  # keep the key and the content out of logs and tracebacks
        return f"Admitted(device_id={self.device_id!r}, key_id={self.key_id!r})"


@dataclass(frozen=True, slots=True, repr=False)
class Admission:
    """The gate every sealed request passes; raises a `GatewayError` subclass on refusal."""

    keys: KeyRing
    devices: DeviceDirectory
    replay: ReplayGuard
    limiter: RateLimiter
    max_tokens_cap: int
    upstream_model: str = ""

    async def admit(self, envelope: bytes, now: float) -> Admitted:
        """Open, authenticate and count one envelope received at unix time `now`."""
        opened = open_request(envelope, self.keys.lookup)
        found = self.devices.lookup(opened.device_id)
        opened.verify_signature(_NOBODY if found is None else found[0])  # BadSignature
        if found is not None and found[1]:
            raise RevokedDevice("this device's credential was revoked")
        self.replay.check_timestamp(opened.ts_ms, now)
        await self.replay.check_nonce(opened.device_id, opened.nonce)
        chat = parse_chat_request(
            opened.body, max_tokens_cap=self.max_tokens_cap, model=self.upstream_model
        )
        await self.limiter.admit(opened.device_id, now)
        return Admitted(opened.device_id, opened.key_id, opened.response_key, chat)
