"""The privacy filter: detect, apply the policy, substitute placeholders through the vault."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from kernels.base import Message
from runtime.errors import PrivacyBlockError
from runtime.privacy.entities import RAW, Detector, Span, resolve
from runtime.privacy.placeholders import ESCAPE
from runtime.privacy.policy import PrivacyConfig, PrivacyPolicy
from runtime.privacy.restore import Restored, StreamRestorer, restore
from runtime.privacy.vault import Vault

M = TypeVar("M", Message, Mapping[str, Any])


@dataclass(frozen=True, slots=True)
class Redaction:
    """A redacted text. `counts` has one entry per entity type replaced or dropped.

    `blocked` is the reason this request must stay on the device (None: it may leave).
    Neither field ever holds a personal value, so both may be logged and reported.
    """

    text: str
    counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    blocked: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `redactions` entry of a response's `tandem` object."""
        return {"counts": dict(sorted(self.counts.items())), "blocked": self.blocked}

    def raise_if_blocked(self) -> None:
        """Raise `PrivacyBlockError` if the request must not leave the device."""
        if self.blocked is not None:
            raise PrivacyBlockError(f"request kept on the device: {self.blocked}")


@dataclass(frozen=True, slots=True)
class MessagesRedaction:
    """Redacted chat messages (same kinds and order as given) and their combined counts."""

    messages: tuple[Any, ...]
    counts: Mapping[str, int]
    blocked: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "blocked": self.blocked}

    def raise_if_blocked(self) -> None:
        if self.blocked is not None:
            raise PrivacyBlockError(f"request kept on the device: {self.blocked}")


class _PlaceholderEcho:
    """Text that already looks like a placeholder: vaulted as RAW so restore stays exact."""

    def detect(self, text: str) -> list[Span]:
        return [Span(m.start(), m.end(), RAW, "echo") for m in ESCAPE.finditer(text)]


class PrivacyFilter:
    """Replaces personal data with placeholders before a request leaves the device.

    Thread-safe: detectors are stateless after construction and the vault locks itself.
    """

    def __init__(self, detectors: Sequence[Detector], policy: PrivacyPolicy | None = None):
        self._detectors: tuple[Detector, ...] = (_PlaceholderEcho(), *detectors)
        self.policy = policy if policy is not None else PrivacyPolicy()

    @classmethod
    def from_config(cls, config: PrivacyConfig | None = None) -> PrivacyFilter:
        """The filter a `[privacy]` section describes (models load on first use)."""
        config = config if config is not None else PrivacyConfig()
        return cls(build_detectors(config), PrivacyPolicy.from_config(config))

    def detect(self, text: str) -> list[Span]:
        """Non-overlapping spans of personal data in `text`, sorted by position."""
        found: list[Span] = []
        for detector in self._detectors:
            found.extend(detector.detect(text))
        return resolve(found, text)

    def redact(self, text: str, vault: Vault) -> Redaction:
        """`text` with personal data replaced according to the policy."""
        blocked = self.policy.stay_local_reason(text)
        if blocked is not None:
            blocked = "stay-local topic " + blocked.split(":", 1)[0]
        counts: Counter[str] = Counter()
        parts: list[str] = []
        pos = 0
        for span in self.detect(text):
            action = "placeholder" if span.label == RAW else self.policy.action(span.label)
            if action == "allow":
                continue
            if action == "block" and blocked is None:
                blocked = f"contains {span.label}"
            parts.append(text[pos : span.start])
            value = text[span.start : span.end]
            parts.append(
                f"[{span.label}]" if action == "drop" else vault.placeholder(span.label, value)
            )
            pos = span.end
            if span.label != RAW:
                counts[span.label] += 1
        parts.append(text[pos:])
        return Redaction("".join(parts), MappingProxyType(dict(counts)), blocked)

    def redact_messages(self, messages: Iterable[M], vault: Vault) -> MessagesRedaction:
        """Redact the content of every message (dicts or `Message`s), with one shared vault."""
        out: list[Any] = []
        counts: Counter[str] = Counter()
        blocked: str | None = None
        for message in messages:
            content = message.content if isinstance(message, Message) else message.get("content")
            if not isinstance(content, str):
                out.append(message)  # non-text content (e.g. images) is the caller's concern
                continue
            red = self.redact(content, vault)
            counts.update(red.counts)
            blocked = blocked or red.blocked
            if isinstance(message, Message):
                out.append(Message(role=message.role, content=red.text))
            else:
                out.append({**message, "content": red.text})
        return MessagesRedaction(tuple(out), MappingProxyType(dict(counts)), blocked)

    def restore(self, text: str, vault: Vault) -> Restored:
        """Put the vault's values back into `text` (the cloud's answer)."""
        return restore(text, vault)

    def stream_restorer(self, vault: Vault) -> StreamRestorer:
        """A restorer for a streamed answer (feed chunks, then flush)."""
        return StreamRestorer(vault)


def structured_detectors(config: PrivacyConfig) -> list[Detector]:
    """The validator-backed layer, always on: secrets, e-mail, URL, IP, card, IBAN, IDs,
    dates and phone numbers."""
    from runtime.privacy.credentials import SecretDetector
    from runtime.privacy.phones import DEFAULT_REGIONS, PhoneDetector
    from runtime.privacy.structured import StructuredDetector

    return [
        SecretDetector(),
        StructuredDetector(dates=config.dates),
        PhoneDetector(config.phone_regions or DEFAULT_REGIONS),
    ]


def build_detectors(config: PrivacyConfig) -> list[Detector]:
    """The detectors a config asks for. Heavy modules are imported here, not at import time."""
    from runtime.privacy.addresses import AddressDetector

    detectors = [*structured_detectors(config), AddressDetector()]
    if config.ner in ("names", "names+spacy"):
        from runtime.privacy.names import NameDetector

        detectors.append(NameDetector())
    if config.ner in ("spacy", "names+spacy"):
        from runtime.privacy.ner import SpacyDetector

        detectors.append(SpacyDetector(config.spacy_model))
    return detectors
