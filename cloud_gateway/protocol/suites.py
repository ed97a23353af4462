"""HPKE suites and the raw encodings of their keys.

Two KEMs, one KDF, one AEAD (RFC 9180 via `cryptography.hazmat.primitives.hpke`):
`x25519` (DHKEM(X25519, HKDF-SHA256)) and the post-quantum hybrid `mlkem768-x25519`, both
with HKDF-SHA256 and ChaCha20-Poly1305. Keys are stored and published as raw bytes: X25519
keys are 32 bytes; hybrid public keys are the ML-KEM-768 public key (1184 bytes) followed by
the X25519 public key, hybrid private keys the ML-KEM-768 seed (64 bytes) followed by the
X25519 private key.
"""

from __future__ import annotations

from typing import Literal, get_args

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

Kem = Literal["x25519", "mlkem768-x25519"]
KEMS: tuple[Kem, ...] = get_args(Kem)

# The one-byte suite identifier carried in the envelope header (and bound through `info`).
SUITE_IDS: dict[Kem, int] = {"x25519": 1, "mlkem768-x25519": 2}
SUITE_BY_ID: dict[int, Kem] = {v: k for k, v in SUITE_IDS.items()}
SUITE_NAMES: dict[Kem, str] = {
    "x25519": "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/ChaCha20Poly1305",
    "mlkem768-x25519": "MLKEM768-X25519/HKDF-SHA256/ChaCha20Poly1305",
}

_SUITES: dict[Kem, hpke.Suite] = {
    "x25519": hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
    "mlkem768-x25519": hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305
    ),
}

_MLKEM_PUB = 1184
_MLKEM_SEED = 64
_X25519 = 32

PublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
PrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey


def suite(kem: Kem) -> hpke.Suite:
    """The HPKE suite for `kem`."""
    return _SUITES[kem]


def enc_length(kem: Kem) -> int:
    """Length of the KEM's encapsulated key, the first bytes of every HPKE ciphertext."""
    return {"x25519": 32, "mlkem768-x25519": 1120}[kem]


def check_kem(value: str) -> Kem:
    """`value` as a `Kem`, or ValueError naming the choices."""
    for kem in KEMS:
        if value == kem:
            return kem
    raise ValueError(f"unknown KEM {value!r} (choose {', '.join(KEMS)})")


def generate_secret(kem: Kem) -> bytes:
    """A fresh private key for `kem`, as raw bytes (keep them secret)."""
    x_raw = x25519.X25519PrivateKey.generate().private_bytes_raw()
    if kem == "x25519":
        return x_raw
    return mlkem.MLKEM768PrivateKey.generate().private_bytes_raw() + x_raw


def private_key(kem: Kem, secret: bytes) -> PrivateKey:
    """The HPKE private key object for raw `secret` bytes (ValueError if the size is wrong)."""
    if kem == "x25519":
        if len(secret) != _X25519:
            raise ValueError("an x25519 private key is 32 bytes")
        return x25519.X25519PrivateKey.from_private_bytes(secret)
    if len(secret) != _MLKEM_SEED + _X25519:
        raise ValueError("an mlkem768-x25519 private key is 96 bytes")
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(secret[:_MLKEM_SEED]),
        x25519.X25519PrivateKey.from_private_bytes(secret[_MLKEM_SEED:]),
    )


def public_bytes(kem: Kem, secret: bytes) -> bytes:
    """The raw public key that goes with raw private key `secret`."""
    if kem == "x25519":
        return x25519.X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
    ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(secret[:_MLKEM_SEED])
    xk = x25519.X25519PrivateKey.from_private_bytes(secret[_MLKEM_SEED:])
    return ml.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()


def public_key(kem: Kem, raw: bytes) -> PublicKey:
    """The HPKE public key object for raw bytes (ValueError if they are not a valid key)."""
    if kem == "x25519":
        if len(raw) != _X25519:
            raise ValueError("an x25519 public key is 32 bytes")
        return x25519.X25519PublicKey.from_public_bytes(raw)
    if len(raw) != _MLKEM_PUB + _X25519:
        raise ValueError("an mlkem768-x25519 public key is 1216 bytes")
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUB]),
        x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM_PUB:]),
    )
