"""Name lists for the person detector: first names, surnames, and common English words.

The lists ship in `runtime/privacy/data/` (about 500 KB, gzip). The names, common words and
places were extracted from the person, lorem and address providers of Faker (MIT licence, ~90
locales), which keeps well-curated name lists per country; `python -m
runtime.privacy.gazetteer --rebuild` regenerates them from the installed Faker. The frequent
English words that are no one's name come from wordfreq's English list (data CC BY-SA 4.0);
`--rebuild-english` regenerates them from the installed wordfreq. Neither is needed at run
time.

`not_people.txt` (hand-written, beside them) lists words and phrases that look like names but
name things (software, dishes, eponymous algorithms, non-English function words); the person
detectors consult it only on weak evidence (`load_not_people`, `names.not_a_person`).
Lookups fold case and accents: "Siobhán" finds "siobhan", "NGUYỄN" finds "nguyen".
"""

from __future__ import annotations

import argparse
import functools
import gzip
import importlib
import pkgutil
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
FIRST_NAMES = DATA_DIR / "first_names.txt.gz"
LAST_NAMES = DATA_DIR / "last_names.txt.gz"
COMMON_WORDS = DATA_DIR / "common_words.txt.gz"
PLACES = DATA_DIR / "places.txt.gz"
ENGLISH_WORDS = DATA_DIR / "english_words.txt.gz"
NOT_PEOPLE = DATA_DIR / "not_people.txt"

# Words that are never a name on their own in English text, on top of Faker's list of
# ~1000 common English words: function words, greetings, calendar words, titles.
_EXTRA_COMMON = """
i me my mine we us our you your he him his she her they them their it its this that these
those who whom whose what which where when why how yes no not nor and or but if then else so
too very just also only even still yet ever never always please thanks thank hello hi hey
dear ok okay sorry welcome bye goodbye regards sincerely cheers best kind warm love monday
tuesday wednesday thursday friday saturday sunday today tomorrow yesterday tonight january
february march april may june july august september october november december mr mrs ms miss
dr prof sir madam lord lady saint st mt jr sr can could will would shall should may might
must do does did done have has had having be is am are was were been being get got go went
come came see saw say said tell told ask let make made take took give gave put keep kept
know knew think thought want need like here there now new old good great big small little
high low first last next other same one two three four five six seven eight nine ten hundred
thousand million the a an of in on at to for from by with about as into over under after
before between again all any both each few more most some such own than out up down off once
per via bank card account address street road avenue lane drive court place square park city
north south east west central upper lower royal grand saint port mount lake river god jesus
christ allah buddha
email e-mail text schedule remind update cancel remove delete translate summarize summarise
draft reply contact transfer ship print invite book rewrite compose describe compare
calculate convert generate suggest recommend imagine pretend act
mom mum dad mommy daddy grandma grandpa granny auntie
"""


@dataclass(frozen=True, slots=True)
class NameLists:
    """Case-folded first names, surnames, common (non-name) English words, and places.

    `places` holds country and US state names (multi-word ones as one string).
    """

    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]
    places: frozenset[str] = frozenset()
    english: frozenset[str] = frozenset()

    def is_name(self, word: str) -> bool:
        return any(key in self.first or key in self.last for key in _forms(word))

    def is_first(self, word: str) -> bool:
        return any(key in self.first for key in _forms(word))

    def is_common(self, word: str) -> bool:
        return any(key in self.common for key in _forms(word))

    def is_place(self, phrase: str) -> bool:
        return any(key in self.places for key in _forms(phrase))

    def is_english(self, word: str) -> bool:
        """A frequent English word that the name lists do not hold ("period", "speed")."""
        return any(key in self.english for key in _forms(word))


def words(text: str) -> frozenset[str]:
    """The whitespace-separated words of `text` (readable word lists in source code)."""
    return frozenset(text.split())


def fold(word: str) -> str:
    """The lookup key of a word: case-folded, accents stripped ("Máire" -> "maire"), NFC.

    Letters that are not a base letter plus marks keep their form ("ø", "đ", "ł"); "ß"
    folds to "ss".
    """
    key = word.casefold()
    if key.isascii():
        return key
    bare = "".join(c for c in unicodedata.normalize("NFD", key) if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare)


def _entry(word: str) -> str:
    """A word as the shipped lists hold it: NFC, case-folded, accents kept ("hà")."""
    return unicodedata.normalize("NFC", word).casefold()


def _forms(word: str) -> tuple[str, ...]:
    """The keys `NameLists` tries: the word as written (`_entry`: "hà"), then without
    accents (`fold`: "siobhan" for "Siobhán")."""
    if word.isascii():
        return (word.casefold(),)
    return (_entry(word), fold(word))


def _read(path: Path) -> frozenset[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


def _keys(entries: frozenset[str], taken: frozenset[str] = frozenset()) -> frozenset[str]:
    """`entries` (case-folded, with accents) plus their forms without accents, except those
    of two letters ("Hà", "Lê" would find "Ha", "Le") and those that are a word of `taken`
    ("Åge", "Côme" would find "age", "come"): the accented entries still find themselves."""
    bare = {fold(w) for w in entries if not w.isascii()}
    return entries | frozenset(w for w in bare if len(w) > 2 and w not in taken)


@functools.cache
def load() -> NameLists:
    """The shipped lists, read once per process (~60k names and ~33k English words, ~15 MB
    of Python strings)."""
    first, last, english = _read(FIRST_NAMES), _read(LAST_NAMES), _read(ENGLISH_WORDS)
    common = _read(COMMON_WORDS) | words(_EXTRA_COMMON)
    english_keys = _keys(english, first | last)  # "rosé" folds to "rose", a name: it stays one
    words_taken = english_keys | common  # "Åge", "Ås" fold to "age", "as": they stay words
    return NameLists(
        first=_keys(first, words_taken),
        last=_keys(last, words_taken),
        common=_keys(common),
        places=_keys(_read(PLACES)),
        english=english_keys,
    )


@dataclass(frozen=True, slots=True)
class NotPeople:
    """Folded words and phrases that name things, not people (`not_people.txt`).

    `things` are things whenever the evidence for a person is weak; each of `contextual`
    is (words, context): its words are things when a context word is nearby.
    """

    things: frozenset[str]
    contextual: tuple[tuple[frozenset[str], frozenset[str]], ...] = ()

    def is_thing(self, phrase: str) -> bool:
        return fold(phrase) in self.things

    def is_thing_in(self, phrase: str, context: Iterable[str]) -> bool:
        """Whether `phrase` is a thing among `context` (folded words of its sentence)."""
        key = fold(phrase)
        if key in self.things:
            return True
        near = frozenset(context)
        return any(
            key in members and not cues.isdisjoint(near) for members, cues in self.contextual
        )

    def is_listed(self, word: str) -> bool:
        """Whether `word` is in any group (a thing in some context)."""
        key = fold(word)
        return key in self.things or any(key in members for members, _ in self.contextual)


@functools.cache
def load_not_people() -> NotPeople:
    """The shipped `not_people.txt`, read once per process."""
    return parse_not_people(NOT_PEOPLE.read_text(encoding="utf-8"))


def parse_not_people(text: str) -> NotPeople:
    """A `NotPeople` from the text format of `not_people.txt`: `[group]` headers, entries
    separated by commas or line ends, `context:` lines, comment lines starting with `#`;
    `[things]` has no context."""
    groups: dict[str, tuple[set[str], set[str]]] = {}
    members, context = groups.setdefault("things", (set(), set()))
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            members, context = groups.setdefault(line[1:-1].strip(), (set(), set()))
            continue
        if line.startswith("context:"):
            target, line = context, line.removeprefix("context:")
        else:
            target = members
        target.update(" ".join(fold(w) for w in item.split()) for item in line.split(","))
    things = frozenset(groups.pop("things")[0] - {""})
    contextual = tuple((frozenset(m - {""}), frozenset(c - {""})) for m, c in groups.values() if c)
    return NotPeople(things, contextual)


def _faker_names() -> tuple[set[str], set[str], set[str], set[str]]:
    """Names, common words and places from Faker's providers (dev-time only)."""
    # importlib, not import statements: Faker is a dev-time tool, absent where this ships.
    address = importlib.import_module("faker.providers.address.en_US")
    lorem = importlib.import_module("faker.providers.lorem.en_US")
    person = importlib.import_module("faker.providers.person")
    first: set[str] = set()
    last: set[str] = set()
    for info in pkgutil.iter_modules(person.__path__):
        provider = importlib.import_module(f"{person.__name__}.{info.name}").Provider
        for attr in dir(provider):
            target = first if attr.startswith("first_names") else None
            target = last if attr.startswith("last_names") else target
            if target is None:
                continue
            values = getattr(provider, attr)
            items = values.keys() if isinstance(values, dict) else values
            if isinstance(items, str) or not hasattr(items, "__iter__"):
                continue
            for name in items:
                if isinstance(name, str) and len(name) > 1:
                    target.update(_entry(part) for part in name.split() if len(part) > 1)
    common = {_entry(w) for w in lorem.Provider.word_list}
    places = {_entry(p) for p in (*address.Provider.countries, *address.Provider.states)}
    return first, last, common, places


def rebuild() -> None:
    """Regenerate the shipped lists from the installed Faker."""
    first, last, common, places = _faker_names()
    lists = ((FIRST_NAMES, first), (LAST_NAMES, last), (COMMON_WORDS, common), (PLACES, places))
    for path, words in lists:
        _write(path, words)


ENGLISH_TOP = 40_000  # wordfreq's most frequent English words, before the names are taken out


def rebuild_english() -> None:
    """Regenerate the frequent English words from the installed wordfreq (dev-time only):
    its top `ENGLISH_TOP` English words, alphabetic, 3 letters or more, without any word of
    the shipped name lists (so "smith" and "grace" stay names)."""
    wordfreq = importlib.import_module("wordfreq")
    first, last = _read(FIRST_NAMES), _read(LAST_NAMES)
    top = (_entry(w) for w in wordfreq.top_n_list("en", ENGLISH_TOP))
    _write(ENGLISH_WORDS, {w for w in top if w.isalpha() and len(w) >= 3} - first - last)


def _write(path: Path, words: set[str] | frozenset[str]) -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the files byte-identical across rebuilds.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(("\n".join(sorted(words)) + "\n").encode("utf-8"))
    print(f"{path.name}: {len(words)} entries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rebuild", action="store_true", help="regenerate from Faker")
    parser.add_argument(
        "--rebuild-english", action="store_true",
        help="regenerate the English words from wordfreq (after --rebuild if both)",
    )
    args = parser.parse_args()
    if args.rebuild:
        rebuild()
    if args.rebuild_english:
        rebuild_english()
    if not (args.rebuild or args.rebuild_english):
        lists = load()
        print(
            f"{len(lists.first)} first names, {len(lists.last)} surnames, "
            f"{len(lists.common)} common words, {len(lists.places)} places, "
            f"{len(lists.english)} English words"
        )


if __name__ == "__main__":
    main()
