"""The device's sealed offload client: seal, send, unseal, stream, within a deadline.

Synchronous (the runtime calls it from worker threads). Each call runs its HTTP exchange in a
helper thread and waits for it with the remaining deadline, so the caller gets control back
on time even if the gateway hangs mid-answer; the runtime then answers locally.

Retries happen only where the request surely never reached the upstream model: fetching
keys, a refused or timed-out connect, `421 unknown_key_id` (the gateway rotated its keys), or
`425 stale_timestamp` (the device's clock is off, or the gateway restarted: the envelope is
resealed once, stamped by the clock the gateway reported, and later envelopes keep to it;
corrections beyond `MAX_CLOCK_CORRECTION_S` are refused). Each retry seals a fresh envelope
(new nonce, new response key). After `breaker_failures`
failures in a row the cloud is skipped for `breaker_reset_s` seconds.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from cloud_gateway.protocol import (
    REQUEST_CONTENT_TYPE,
    RESPONSE_CONTENT_TYPE,
    STREAM_CONTENT_TYPE,
    FrameError,
    FrameOpener,
    PublishedKey,
    seal_request,
)
from runtime.errors import OffloadError
from runtime.monitor.snapshot import NetworkState
from runtime.offload_breaker import CircuitBreaker
from runtime.offload_errors import (
    CircuitOpen,
    GatewayRejected,
    GatewayUnreachable,
    OffloadNotConfigured,
    OffloadTimeout,
    SealedReplyInvalid,
)
from runtime.offload_keys import KeyCache, load_credential
from runtime.offload_reply import (
    ClockSkew,
    CloudReply,
    FrameReader,
    KeyRotated,
    StreamEnd,
    rejection,
    retry_after_s,
)

__all__ = ["MAX_CLOCK_CORRECTION_S", "CloudReply", "CloudStream", "OffloadClient",
           "OffloadConfig"]

# The largest clock error the client corrects by the gateway's word (an unsigned error body):
# as far as the keys list's freshness rule already tolerates (KEYS_MAX_AGE_S). Beyond it the
# device clock needs setting; a forged 425 can shift stamps by at most this much.
MAX_CLOCK_CORRECTION_S = 600.0


@dataclass(frozen=True, slots=True)
class OffloadConfig:
    """The `[offload]` section: where the cloud is and how long to wait for it."""

    url: str = ""  # the gateway's base URL, e.g. http://127.0.0.1:8089
    credential: str = ""  # the `tdc1.…` string from `tandem gateway enroll`, or a file holding it
    deadline_s: float = 20.0  # after this the runtime answers locally
    connect_timeout_s: float = 3.0
    retries: int = 1  # extra attempts, only for failures before the request was sent
    backoff_s: float = 0.2  # first retry delay; doubles, with jitter
    breaker_failures: int = 3
    breaker_reset_s: float = 30.0
    kem: Literal["x25519", "mlkem768-x25519"] = "x25519"
    keys_ttl_s: float = 3600.0

    def __post_init__(self) -> None:
        times = (self.deadline_s, self.connect_timeout_s, self.backoff_s, self.breaker_reset_s,
                 self.keys_ttl_s)
        if not all(math.isfinite(t) for t in times):
            raise ValueError("deadline_s, connect_timeout_s, backoff_s, breaker_reset_s and "
                             "keys_ttl_s must be finite numbers")
        if self.deadline_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("deadline_s and connect_timeout_s must be positive")
        if self.retries < 0 or self.breaker_failures < 1 or self.breaker_reset_s < 0:
            raise ValueError("retries >= 0, breaker_failures >= 1, breaker_reset_s >= 0")
        if self.url:
            _check_url(self.url)

    @property
    def configured(self) -> bool:
        return bool(self.url and self.credential)


def _check_url(url: str) -> None:
    """ValueError unless `url` is an http(s) URL with a host (and a valid port): checked when
    the config loads, not as a traceback on the first offload."""
    example = "such as http://127.0.0.1:8089"
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"url {url!r} is not a valid URL ({exc}); use one {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
        c.isspace() for c in url
    ):
        raise ValueError(f"url must be an http(s) URL with a host, {example}, not {url!r}")


_END = object()
_CANCELLED = object()  # put by `CloudStream.cancel`, from any thread
_STARTED = object()


class CloudStream(Iterator[str]):
    """Text deltas of a streamed cloud answer; `usage`, `model`, `finish_reason` and
    `timings` are set once it is exhausted. `close()` abandons it, read or not (the gateway
    stops, and the call counts neither for nor against the circuit breaker)."""

    def __init__(self, items: Iterator[object], timings: dict[str, float],
                 cancel: Callable[[], None] | None = None) -> None:
        self._items = items
        self._cancel = cancel
        self.timings = timings
        self.usage: dict[str, int] = {}
        self.model = ""
        self.finish_reason = ""

    def __iter__(self) -> CloudStream:
        return self

    def __next__(self) -> str:
        while True:
            item = next(self._items)
            if isinstance(item, str):
                return item
            if isinstance(item, StreamEnd):
                self.usage, self.model = item.usage, item.model
                self.finish_reason = item.finish_reason

    def cancel(self) -> None:
        """From any thread: end the stream now, even while the gateway sends nothing (the
        reading thread's wait ends at once; the call counts neither way for the breaker)."""
        self.finish_reason = "cancelled"
        if self._cancel is not None:
            self._cancel()

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


class OffloadClient:
    """Sends chat requests to the gateway, sealed. Thread-safe; one per runtime.

    `on_outcome(ok, rtt_ms)` is told about every call that reached a verdict on the network
    (feed it to `Monitor.report_gateway`); `network_state()` lets the monitor veto calls
    when it knows the device is offline. `keys_state_path` keeps the newest keys list seen
    per gateway across restarts (`offload_keys.default_state_path()`; None: in memory).
    `clock` is the device's wall clock in seconds (tests give a skewed one).
    """

    def __init__(
        self,
        config: OffloadConfig,
        *,
        on_outcome: Callable[[bool, float | None], None] | None = None,
        network_state: Callable[[], NetworkState | None] | None = None,
        transport: httpx.BaseTransport | None = None,
        keys_state_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        # Gateway clock minus device clock, learned from a 425 stale_timestamp (0 until then).
        self._clock_offset_ms = 0
        self._on_outcome = on_outcome
        self._network_state = network_state
        self._breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_s)
        self._credential = load_credential(config.credential) if config.configured else None
        self._signing_key = self._credential.signing_key() if self._credential else None
        self._url = config.url.rstrip("/") + "/v1/sealed/chat/completions"
        self._keys = (
            KeyCache(config.url, self._credential, config.kem, config.keys_ttl_s,
                     state_path=keys_state_path)
            if self._credential
            else None
        )
        self._http = httpx.Client(
            transport=transport,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=4),
            headers={"User-Agent": "tandem-offload/1"},
        )

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def clock_offset_s(self) -> float:
        """How far the gateway's clock is ahead of this device's (learned from a 425)."""
        return self._clock_offset_ms / 1000

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OffloadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def available(self) -> tuple[bool, str]:
        """(True, "") if a cloud call may be tried now, else (False, the reason)."""
        if not self.config.configured:
            return False, "cloud offload is not configured (offload.url, offload.credential)"
        network = self._network_state() if self._network_state else None
        if network is not None and network.reachable is False:
            return False, "offline: the monitor reports the gateway unreachable"
        ok, wait = self._breaker.peek()
        if not ok:
            return False, self._open_reason(wait)
        return True, ""

    def complete(self, request: dict[str, Any], deadline_s: float | None = None) -> CloudReply:
        """Send a chat request and return the whole answer, or raise an `OffloadError`."""
        timings: dict[str, float] = {}
        reply: CloudReply | None = None
        # Drain to the end (the worker's end marker follows the reply at once) so that the
        # call's outcome is recorded now rather than when the generator is collected.
        for item in self._call(request, False, deadline_s, timings):
            if isinstance(item, CloudReply):
                reply = item
        if reply is None:
            raise OffloadError("the gateway sent no answer")
        return reply

    def stream(self, request: dict[str, Any], deadline_s: float | None = None) -> CloudStream:
        """Send a chat request and iterate the answer's text deltas as they arrive.

        The deadline covers the whole stream; iteration raises an `OffloadError` on failure.
        """
        timings: dict[str, float] = {}
        items: queue.Queue[object] = queue.Queue()
        return CloudStream(self._call(request, True, deadline_s, timings, items), timings,
                           cancel=lambda: items.put(_CANCELLED))

    # --- the call, its deadline, its bookkeeping ----------------------------------------------

    def _open_reason(self, wait: float) -> str:
        return (
            f"cloud skipped: {self._breaker.failures} failed calls in a row "
            f"(circuit open, next try in {wait:.0f} s)"
        )

    def _call(
        self,
        request: dict[str, Any],
        stream: bool,
        deadline_s: float | None,
        timings: dict[str, float],
        items: queue.Queue[object] | None = None,
    ) -> Iterator[object]:
        if not self.config.configured:
            raise OffloadNotConfigured(
                "cloud offload is not configured (offload.url, offload.credential)"
            )
        network = self._network_state() if self._network_state else None
        if network is not None and network.reachable is False:
            raise GatewayUnreachable("offline: the monitor reports the gateway unreachable")
        ok, wait = self._breaker.check()
        if not ok:
            raise CircuitOpen(self._open_reason(wait), wait)
        budget = deadline_s if deadline_s is not None else self.config.deadline_s
        deadline = time.monotonic() + budget
        body = json.dumps({**request, "stream": stream}).encode()
        items = queue.Queue() if items is None else items
        stop = threading.Event()
        worker = threading.Thread(
            target=self._worker,
            args=(body, stream, deadline, items, stop, timings),
            name="tandem-offload",
            daemon=True,
        )
        drain = self._drain(items, stop, deadline, budget, timings)
        # Run it to its first `yield` (inside its try): from then on closing or collecting it,
        # even before anyone iterates, runs its `finally` — which settles the breaker's
        # half-open trial claimed above and stops the worker.
        next(drain)
        worker.start()
        return drain

    def _drain(
        self,
        items: queue.Queue[object],
        stop: threading.Event,
        deadline: float,
        budget: float,
        timings: dict[str, float],
    ) -> Iterator[object]:
        verdict: bool | None = None
        try:
            yield _STARTED  # consumed by `_call`, never seen by the caller
            while True:
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise queue.Empty
                    item = items.get(timeout=remaining)
                except queue.Empty:
                    raise OffloadTimeout(
                        f"the cloud did not answer within the {budget:.1f} s deadline"
                    ) from None
                if item is _END:
                    verdict = True
                    break
                if item is _CANCELLED:  # the caller gave up: no verdict on the cloud
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        except (GatewayRejected, CircuitOpen, OffloadNotConfigured) as exc:
            # The gateway answered (it is healthy) but refused, e.g. 429; not a cloud failure.
            verdict = (
                None if not (isinstance(exc, GatewayRejected) and exc.status >= 500) else False
            )
            raise
        except OffloadError:
            verdict = False
            raise
        finally:
            stop.set()
            self._settle(verdict, timings)

    def _settle(self, verdict: bool | None, timings: dict[str, float]) -> None:
        if verdict is True:
            self._breaker.record_success()
        elif verdict is False:
            self._breaker.record_failure()
        else:
            self._breaker.release()
        if self._on_outcome is not None and verdict is not None:
            self._on_outcome(verdict, timings.get("first_byte_ms") if verdict else None)

    def _worker(
        self,
        body: bytes,
        stream: bool,
        deadline: float,
        items: queue.Queue[object],
        stop: threading.Event,
        timings: dict[str, float],
    ) -> None:
        try:
            self._exchange(body, stream, deadline, items.put, stop, timings)
        except OffloadError as exc:
            items.put(exc)
        except Exception as exc:  # noqa: BLE001 - an unexpected failure still reaches the caller
            err = OffloadError(f"the cloud call failed: {type(exc).__name__}")
            err.__cause__ = exc
            items.put(err)
        finally:
            items.put(_END)

    def _exchange(
        self,
        body: bytes,
        stream: bool,
        deadline: float,
        emit: Callable[[object], None],
        stop: threading.Event,
        timings: dict[str, float],
    ) -> None:
        assert self._keys is not None
        attempt, rotated, reclocked = 0, False, False
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return  # the caller raises OffloadTimeout
            timeout = httpx.Timeout(
                remaining, connect=min(self.config.connect_timeout_s, remaining)
            )
            try:
                key = self._keys.current(self._http, timeout)
                self._send(body, stream, key, timeout, emit, stop, timings)
                return
            except KeyRotated:
                if rotated:
                    raise GatewayRejected(
                        421, "unknown_key_id", "the gateway keeps refusing its own keys"
                    ) from None
                # One free retry: the gateway refused before forwarding, so nothing ran.
                rotated = True
                self._keys.invalidate()
            except ClockSkew as exc:
                # The gateway refused before opening the request, so nothing ran: reseal once,
                # stamped by the clock it reported.
                offset_ms = exc.gateway_time_ms - exc.local_time_ms
                if reclocked or abs(offset_ms) > MAX_CLOCK_CORRECTION_S * 1000:
                    raise GatewayRejected(425, "stale_timestamp", self._skew_message(
                        exc.message, offset_ms, reclocked)) from None
                reclocked = True
                if abs(offset_ms - self._clock_offset_ms) > 1000:
                    logging.getLogger(__name__).warning(
                        "this device's clock is %+.1f s off the gateway's: sealing by the "
                        "gateway's clock", -offset_ms / 1000,
                    )
                self._clock_offset_ms = offset_ms
            except GatewayUnreachable as exc:
                if not exc.retry_safe or attempt >= self.config.retries:
                    raise
                attempt += 1
                delay = self.config.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                if stop.wait(min(delay, max(0.0, deadline - time.monotonic()))):
                    return

    @staticmethod
    def _skew_message(message: str, offset_ms: int, retried: bool) -> str:
        if retried:
            return f"{message} (again, after resealing by the gateway's clock)"
        skew = f"{-offset_ms / 1000:+.0f} s" if abs(offset_ms) < 10**15 else "centuries"
        return (f"{message}; this device's clock is {skew} off the gateway's, more than the "
                f"{MAX_CLOCK_CORRECTION_S:.0f} s corrected automatically: set the device clock")

    def _send(
        self,
        body: bytes,
        stream: bool,
        key: PublishedKey,
        timeout: httpx.Timeout,
        emit: Callable[[object], None],
        stop: threading.Event,
        timings: dict[str, float],
    ) -> None:
        assert self._credential is not None and self._signing_key is not None
        started = time.perf_counter()
        sent_ms = int(self._clock() * 1000)
        sealed = seal_request(
            body,
            kem=key.kem,
            key_id=key.key_id,
            gateway_key=key.public_key,
            device_id=self._credential.device_id,
            device_key=self._signing_key,
            now_ms=sent_ms + self._clock_offset_ms,
        )
        timings["seal_ms"] = round((time.perf_counter() - started) * 1000, 3)
        headers = {"Content-Type": REQUEST_CONTENT_TYPE}
        reader = FrameReader(stream, key.key_id, timings, started)
        try:
            with self._http.stream(
                "POST", self._url, content=sealed.envelope, headers=headers, timeout=timeout
            ) as resp:
                timings["first_byte_ms"] = round((time.perf_counter() - started) * 1000, 3)
                ctype = resp.headers.get("content-type", "").split(";")[0].strip()
                if ctype not in (RESPONSE_CONTENT_TYPE, STREAM_CONTENT_TYPE):
                    error = rejection(resp)
                    if isinstance(error, ClockSkew):
                        # The gateway read its clock between our send and its answer.
                        error.local_time_ms = (sent_ms + int(self._clock() * 1000)) // 2
                    raise error
                opener = FrameOpener(sealed.response_key)
                wait = retry_after_s(resp)
                for data in resp.iter_bytes():
                    if stop.is_set():
                        return
                    for plaintext, final in opener.feed(data):
                        for item in reader.frame(plaintext, final, resp.status_code, wait):
                            emit(item)
                opener.close()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise GatewayUnreachable(
                f"cannot connect to the gateway: {type(exc).__name__}", retry_safe=True
            ) from exc
        except httpx.TimeoutException as exc:
            raise OffloadTimeout("the gateway stopped answering") from exc
        except httpx.TransportError as exc:
            raise GatewayUnreachable(
                f"the connection to the gateway broke: {type(exc).__name__}"
            ) from exc
        except FrameError as exc:
            raise SealedReplyInvalid(f"the sealed answer is invalid: {exc}") from exc
