"""Sealed responses: a sequence of AEAD frames under the request's response key.

Wire format (version 1), integers big-endian:

    frame = length:u32 || flag:u8 || ChaCha20-Poly1305(response_key, nonce, plaintext, aad)
    nonce = counter:u88 || flag:u8        (counter 0, 1, 2, ... in order; flag 1 = final)
    aad   = "tandem/1 frame"
    length counts flag and ciphertext.

This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizar 2015): a reordered or
dropped frame fails its tag (wrong counter), a stream cut short has no final frame, bytes after
the final frame are rejected, and frames from another response fail (each request draws a fresh
response key). A non-streamed response is a single final frame.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from cloud_gateway.errors import FrameError

FLAG_DATA = 0
FLAG_FINAL = 1
MAX_FRAME_BYTES = 16 * 1024 * 1024
_AAD = b"tandem/1 frame"
_LEN = struct.Struct(">I")
_MAX_COUNTER = 2**88 - 1


def _nonce(counter: int, flag: int) -> bytes:
    return counter.to_bytes(11, "big") + bytes((flag,))


class FrameSealer:
    """Seals the frames of one response, in order; nothing may follow the final frame."""

    def __init__(self, response_key: bytes) -> None:
        self._aead = ChaCha20Poly1305(response_key)
        self._counter = 0
        self.finished = False

    def seal(self, plaintext: bytes, *, final: bool = False) -> bytes:
        """The wire bytes of the next frame."""
        if self.finished:
            raise FrameError("the final frame was already sealed")
        if self._counter > _MAX_COUNTER:
            raise FrameError("too many frames")
        flag = FLAG_FINAL if final else FLAG_DATA
        ct = self._aead.encrypt(_nonce(self._counter, flag), plaintext, _AAD)
        self._counter += 1
        self.finished = final
        return _LEN.pack(1 + len(ct)) + bytes((flag,)) + ct


class FrameOpener:
    """Opens the frames of one response as they arrive; `close()` detects truncation."""

    def __init__(self, response_key: bytes) -> None:
        self._aead = ChaCha20Poly1305(response_key)
        self._counter = 0
        self._buffer = bytearray()
        self.finished = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Add received bytes; return the (plaintext, is_final) of every frame now complete."""
        self._buffer += data
        out: list[tuple[bytes, bool]] = []
        while len(self._buffer) >= _LEN.size:
            if self.finished:
                raise FrameError("data after the final frame")
            (length,) = _LEN.unpack_from(self._buffer)
            if length < 1 + 16 or length > MAX_FRAME_BYTES:
                raise FrameError(f"invalid frame length {length}")
            if len(self._buffer) < _LEN.size + length:
                break
            frame = bytes(self._buffer[_LEN.size : _LEN.size + length])
            del self._buffer[: _LEN.size + length]
            out.append(self._open(frame[0], frame[1:]))
        if self.finished and self._buffer:
            raise FrameError("data after the final frame")
        return out

    def close(self) -> None:
        """The byte stream ended: raise `FrameError` unless it ended with the final frame."""
        if not self.finished:
            raise FrameError("the response was truncated (no final frame)")
        if self._buffer:
            raise FrameError("data after the final frame")

    def _open(self, flag: int, ciphertext: bytes) -> tuple[bytes, bool]:
        if flag not in (FLAG_DATA, FLAG_FINAL):
            raise FrameError(f"unknown frame flag {flag}")
        try:
            plaintext = self._aead.decrypt(_nonce(self._counter, flag), ciphertext, _AAD)
        except InvalidTag:
            raise FrameError(
                f"frame {self._counter} does not authenticate (modified, reordered or spliced)"
            ) from None
        self._counter += 1
        self.finished = flag == FLAG_FINAL
        return plaintext, self.finished


def seal_response(response_key: bytes, plaintext: bytes) -> bytes:
    """A whole (non-streamed) response: one final frame."""
    return FrameSealer(response_key).seal(plaintext, final=True)


def open_response(response_key: bytes, body: bytes) -> bytes:
    """Open a non-streamed response: exactly one final frame, nothing else."""
    opener = FrameOpener(response_key)
    frames = opener.feed(body)
    opener.close()
    if len(frames) != 1:
        raise FrameError(f"expected one frame, got {len(frames)}")
    return frames[0][0]
