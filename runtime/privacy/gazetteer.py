"""Name lists for the person detector: first names, surnames, and common English words.

The lists ship in `runtime/privacy/data/` (about 500 KB, gzip). The names, common words and
places were extracted from the person, lorem and address providers of Faker (MIT licence, ~90
locales), which keeps well-curated name lists per country; `python -m
runtime.privacy.gazetteer --rebuild` regenerates them from the installed Faker. The frequent
English words that are no one's name come from wordfreq's English list (data CC BY-SA 4.0);
`--rebuild-english` regenerates them from the installed wordfreq. Neither is needed at run
time.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import importlib
import pkgutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
FIRST_NAMES = DATA_DIR / "first_names.txt.gz"
LAST_NAMES = DATA_DIR / "last_names.txt.gz"
COMMON_WORDS = DATA_DIR / "common_words.txt.gz"
PLACES = DATA_DIR / "places.txt.gz"
ENGLISH_WORDS = DATA_DIR / "english_words.txt.gz"

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
        key = fold(word)
        return key in self.first or key in self.last

    def is_first(self, word: str) -> bool:
        return fold(word) in self.first

    def is_common(self, word: str) -> bool:
        return fold(word) in self.common

    def is_place(self, phrase: str) -> bool:
        return fold(phrase) in self.places

    def is_english(self, word: str) -> bool:
        """A frequent English word that the name lists do not hold ("period", "speed")."""
        return fold(word) in self.english


def words(text: str) -> frozenset[str]:
    """The whitespace-separated words of `text` (readable word lists in source code)."""
    return frozenset(text.split())


def fold(word: str) -> str:
    """The lookup key of a word: NFC, case-folded."""
    return unicodedata.normalize("NFC", word).casefold()


def _read(path: Path) -> frozenset[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


@functools.cache
def load() -> NameLists:
    """The shipped lists, read once per process (~60k names and ~33k English words, ~15 MB
    of Python strings)."""
    return NameLists(
        first=_read(FIRST_NAMES),
        last=_read(LAST_NAMES),
        common=_read(COMMON_WORDS) | words(_EXTRA_COMMON),
        places=_read(PLACES),
        english=_read(ENGLISH_WORDS),
    )


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
                    target.update(fold(part) for part in name.split() if len(part) > 1)
    common = {fold(w) for w in lorem.Provider.word_list}
    places = {fold(p) for p in (*address.Provider.countries, *address.Provider.states)}
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
    top = (fold(w) for w in wordfreq.top_n_list("en", ENGLISH_TOP))
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
