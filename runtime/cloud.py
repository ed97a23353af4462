"""The cloud path of one request: redact → seal and send → unseal → restore.

Personal data is replaced before anything is sealed; the vault that maps placeholders back
to values lives only in this process (one vault per request: the whole conversation is
redacted together, so a value maps to the same placeholder throughout it).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernels import GenerationParams, Message
from runtime.errors import PrivacyBlockError
from runtime.offload import CloudReply, CloudStream, OffloadClient
from runtime.privacy import PrivacyConfig, PrivacyFilter, StreamRestorer, Vault

DRAFT_INSTRUCTION = (
    "The answer above is a draft from a small on-device model. Check it and reply with a "
    "correct, complete answer to my previous message (only the answer)."
)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready to leave the device: redacted body, its vault, what was redacted."""

    body: dict[str, Any]
    vault: Vault
    redactions: dict[str, Any]  # {"counts": {TYPE: n}, "blocked": reason | None}
    # The request as the user wrote it (messages, stop strings): never sent, kept so that a
    # draft added later is redacted together with it (`CloudPath.with_draft`).
    plain: tuple[dict[str, str], ...] = field(default=(), repr=False)
    plain_stops: tuple[str, ...] = field(default=(), repr=False)

    @property
    def blocked(self) -> str | None:
        value = self.redactions.get("blocked")
        return str(value) if value else None


class RestoredStream(Iterator[str]):
    """The cloud's answer as restored text deltas (`CloudPath.stream`). Once read,
    `unknown_placeholders` lists the placeholders it held that this request's vault never
    issued (the cloud made them up): they stay in the text as written. `close()` closes the
    cloud stream."""

    def __init__(self, raw: CloudStream, restorer: StreamRestorer | None) -> None:
        self._restorer = restorer
        self._pieces = self._restore(raw, restorer)

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()

    @property
    def unknown_placeholders(self) -> tuple[str, ...]:
        return self._restorer.unknown_placeholders if self._restorer is not None else ()

    @staticmethod
    def _restore(raw: CloudStream, restorer: StreamRestorer | None) -> Generator[str, None, None]:
        if restorer is None:
            try:
                yield from raw
            finally:
                raw.close()
            return
        try:
            for chunk in raw:
                out = restorer.feed(chunk)
                if out:
                    yield out
        finally:
            raw.close()
        tail = restorer.flush()
        if tail:
            yield tail


class CloudPath:
    """Offload with the privacy filter in front. Thread-safe."""

    def __init__(self, client: OffloadClient, privacy: PrivacyConfig, model: str = "") -> None:
        self.client = client
        self._privacy_config = privacy
        self._filter: PrivacyFilter | None = None
        self._filter_lock = threading.Lock()
        self._model = model

    @property
    def privacy(self) -> PrivacyFilter | None:
        """The filter (built on first use: loading the name lists takes ~0.2 s)."""
        if not self._privacy_config.enabled:
            return None
        if self._filter is None:
            with self._filter_lock:
                if self._filter is None:
                    self._filter = PrivacyFilter.from_config(self._privacy_config)
        return self._filter

    def available(self) -> tuple[bool, str]:
        return self.client.available()

    def prepare(self, messages: Sequence[Message], params: GenerationParams) -> Prepared:
        """Redact `messages` and build the chat body. Never raises for a block: see `blocked`."""
        vault = Vault()
        plain = tuple(m.to_dict() for m in messages)
        stops = tuple(params.stop)
        wire, red_stops, redactions = self._redact(plain, stops, vault)
        body: dict[str, Any] = {
            "model": self._model,
            "messages": wire,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if red_stops:
            body["stop"] = red_stops
        if params.seed is not None:
            body["seed"] = params.seed
        return Prepared(body, vault, redactions, plain, stops)

    def _redact(
        self, plain: Sequence[dict[str, str]], stops: Sequence[str], vault: Vault
    ) -> tuple[list[dict[str, str]], list[str], dict[str, Any]]:
        """The messages and stop strings redacted *together*, with `vault`: a value found
        by its context in any of them ("my PIN is 4821" in a draft, "\nBob Smith:" in a
        stop string) is replaced in all. Stop strings leave the device too, redacted so
        that they name what the cloud sees and match its placeholder text."""
        privacy = self.privacy
        if privacy is None:
            return [dict(m) for m in plain], list(stops), {"counts": {}, "blocked": None}
        texts = [*plain, *({"role": "user", "content": stop} for stop in stops)]
        red = privacy.redact_messages(texts, vault)
        wire = [dict(m) for m in red.messages[: len(plain)]]
        red_stops = [str(m["content"]) for m in red.messages[len(plain):]]
        blocked = red.blocked
        if blocked:  # say where: the messages, or only a stop string
            in_messages = privacy.redact_messages(plain, Vault()).blocked
            if not in_messages:
                blocked = f"a stop string: {blocked}"
        return wire, red_stops, {"counts": dict(sorted(red.counts.items())), "blocked": blocked}

    def with_draft(self, prepared: Prepared, draft: str) -> tuple[Prepared, str]:
        """The request plus the device's draft answer, for the cloud to check and refine,
        and "" — or, when the draft must stay on the device (a stay-local topic or a blocked
        type in it), the request unchanged and why.

        The draft is redacted together with the request, with its vault: a value the draft
        repeats gets the request's placeholder, and one found only in the draft ("your PIN
        4821") is replaced in the request's messages too, not just in the draft.
        """
        privacy = self.privacy
        draft_msg = {"role": "assistant", "content": draft}
        if privacy is not None:
            red = privacy.redact(draft, Vault())
            if red.blocked:
                return prepared, red.blocked
        wire, stops, redactions = self._redact(
            [*prepared.plain, draft_msg], prepared.plain_stops, prepared.vault)
        body = {**prepared.body,
                "messages": [*wire, {"role": "user", "content": DRAFT_INSTRUCTION}]}
        if stops:
            body["stop"] = stops
        return Prepared(body, prepared.vault, redactions, (*prepared.plain, draft_msg),
                        prepared.plain_stops), ""

    def complete(
        self, prepared: Prepared, deadline_s: float | None = None
    ) -> tuple[str, CloudReply]:
        """The whole answer, restored. Raises `OffloadError` (or `PrivacyBlockError`)."""
        self._check(prepared)
        reply = self.client.complete(prepared.body, deadline_s)
        privacy = self.privacy
        text = privacy.restore(reply.text, prepared.vault).text if privacy else reply.text
        return text, reply

    def stream(
        self, prepared: Prepared, deadline_s: float | None = None
    ) -> tuple[RestoredStream, CloudStream]:
        """Restored text deltas, and the underlying stream (usage etc. once exhausted)."""
        self._check(prepared)
        raw = self.client.stream(prepared.body, deadline_s)
        privacy = self.privacy
        restorer = privacy.stream_restorer(prepared.vault) if privacy is not None else None
        return RestoredStream(raw, restorer), raw

    @staticmethod
    def _check(prepared: Prepared) -> None:
        if prepared.blocked:
            raise PrivacyBlockError(f"request kept on the device: {prepared.blocked}")
