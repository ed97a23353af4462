"""Street addresses: a street line found by its shape, grown into the whole postal block.

A street line is a house number with a street word ("24 Clarke Avenue", "Via Roma 131",
"Koskikatu 25", "Tiha ulica 23", "107 Rue Abdelaziz Thâalbi"), a name and number followed by
a postcode and a town ("Belianska 2, 855 05 Hronovce"), a numbered line that starts a postal
block ("66 Storgatan\\nBeroun\\n, CZ\\n Monaco 8511"), a military address ("PSC 3294, Box
9168"), a unit ("Apt. 864", with the numbered street before it), or a capitalised name with a
number after an address cue ("lives at Pagari 18"). `postal.grow` then extends it over the
city / region / postcode / country parts, so the whole address becomes one placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from runtime.privacy.entities import ADDRESS, Span, merge_adjacent
from runtime.privacy.postal import (
    PARTICLES,
    POSTCODE,
    POSTCODE_STRICT,
    UNIT,
    UNIT_WORD,
    block_follows,
    grow,
)
from runtime.privacy.street_words import (
    CALENDAR,
    COMPOUND,
    FUNCTION,
    HOUSE_NUMBER,
    NOT_STREET,
    PREFIX,
    PREFIX_NUMBERED,
    STRONG_SUFFIX,
    SUFFIX_EN,
    TYPE_WORD,
    street_hits,
)

# One word of a street name (never a function word: "88 and Whittaker Street").
_NAME = r"(?!(?i:and|or|the|of|at|on|in|to|is|a|an|for|from|with|by|it)\b)[^\W\d_][\w'’.-]*"
# Numbered streets of US grids ("350 5th Ave", "77 W 23rd St."): an ordinal is a name word too.
_ORDINAL = r"\d{1,3}(?:st|nd|rd|th)\b"
_STREET_NAME = rf"(?:{_NAME}|{_ORDINAL})"
# Matches start on a word boundary even when the search starts inside a word (`_windowed`).
_START = r"(?<![\w'’.-])"
_NUM = r"\d{1,5}[A-Za-z]?(?:[-/]\d{1,4}[A-Za-z]?)?\b"
_EN_STREET = re.compile(
    rf"{_START}(?P<num>(?:\b{_NUM}[ \t]+){{1,2}})?"
    rf"(?P<name>(?:{_STREET_NAME}[ \t]+){{0,3}}?{_STREET_NAME})[ \t]+"
    rf"(?P<suffix>(?i:{SUFFIX_EN}))\b\.?(?:[ \t]+{_NUM})?"
)
_PREFIX_STREET = re.compile(
    rf"(?P<num>(?:\b{_NUM},?[ \t]+){{1,2}})?\b(?:{PREFIX}|{PREFIX_NUMBERED})"
    rf"[ \t]+(?P<name>{_NAME}(?:[ \t]+{_NAME}){{0,4}})(?P<after>,?[ \t]+{HOUSE_NUMBER}{_NUM})?"
)
_COMPOUND_STREET = re.compile(
    rf"{_START}(?:\b{_NUM}[ \t]+){{0,2}}(?:{_NAME}[ \t]+){{0,2}}?[^\W\d_][\w'’-]*(?i:{COMPOUND})\.?"
    rf"[ \t]+{_NUM}"
)
# A street word or a unit: strong enough to take lower-case place words after it.
_STRONG = re.compile(rf"(?i){COMPOUND}\.?[ \t]+\d|\b{UNIT_WORD}[ \t]*#?[ \t]*\d")
_COMPOUND_END = re.compile(rf"(?i){COMPOUND}$")
_TYPED_STREET = re.compile(
    rf"{_START}(?:\b{_NUM}\.?[ \t]+){{0,2}}(?P<name>(?:{_NAME}[ \t]+){{0,2}}{_NAME})[ \t]+"
    rf"(?i:{TYPE_WORD})\.?[ \t]+{_NUM}\.?"
)
# "Belianska 2, 855 05 Hronovce": a name and number, then a postcode and a town.
_CODED_STREET = re.compile(
    rf"{_START}(?P<name>(?:{_NAME}[ \t]+){{0,3}}?{_NAME})[ \t]+{_NUM}"
    rf"(?=\.?(?:[ \t]*,[ \t]*|[ \t]*\n[ \t>]*){POSTCODE_STRICT}[ \t]+(?P<town>[^\W\d_][\w'’-]*))"
)
_MILITARY = re.compile(
    r"\b(?:PSC|Unit|CMR)[ \t]+\d{3,5},?[ \t]+Box[ \t]+\d{3,5}"
    r"|\b(?:USNS|USNV|USS|USCGC)[ \t]+[A-Z][\w'-]*(?:[ \t]+[A-Z][\w'-]*)?"
    r"|\b(?:APO|FPO|DPO)[ \t]+(?:AA|AE|AP)[ \t]+\d{5}"
    r"|\bP\.?O\.?[ \t]+Box[ \t]+\d{1,6}",
    re.IGNORECASE,
)
_BOX = re.compile(r"\bBox[ \t]+\d{1,6}")  # capitalised: "lunch box 5" is not an address
# Where a postcode follows a number; `_CODED_STREET` then runs on a window before it.
_CODED_TRIGGER = re.compile(rf"\d[A-Za-z]?\.?(?:[ \t]*,[ \t]*|[ \t]*\n[ \t>]*){POSTCODE_STRICT}")
_WINDOW = 90  # characters before a hit that a street line may take
# "20789 Allika 46" alone on a line, followed by a postal block: a European street.
_STREET_LINE = re.compile(
    r"(?m)^[ \t>?#*|-]*(?P<line>(?:\d{1,5}[ \t]+)?[^\W\d_][\w'’.-]*(?:[ \t]+[^\W\d_][\w'’.-]*){0,3}"
    r"[ \t]+\d{1,5}[A-Za-z]?\.?)[ \t]*$"
)
# "... at 66 storgatan" ending a line that a postal block follows.
_NUMBERED_LINE = re.compile(
    r"(?m)(?:^|(?<=[ \t>]))(?P<line>\d{1,5}[A-Za-z]?(?:/\d{1,4})?\.?"
    r"(?:[ \t]+[^\W\d_][\w'’.-]*){1,5}(?:[ \t]+\d{1,5}[A-Za-z]?\.?)?)[ \t]*$"
)
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)[^\w\s]*\w")
# A unit alone is an address part only with an unambiguous word ("Room 12" is not).
_STRONG_UNIT = re.compile(
    r"\b(?:Apt\.?|Apartment|Appartamento|Suite|Ste\.|Piso|Depto\.?|Dpto\.?)[ \t]*#?[ \t]*"
    r"\d{1,5}[A-Za-z]?\b",
    re.IGNORECASE,
)
# A numbered street just before a unit: "11 Edwards Rosebowl Apt. 678".
_UNIT_STREET = re.compile(
    rf"(?:\b{_NUM}[ \t]+(?P<name>(?:{_NAME}[ \t]+){{0,2}}{_NAME})"
    rf"|(?P<name2>(?:{_NAME}[ \t]+){{0,2}}{_NAME})[ \t]+{_NUM})"
    rf"(?=[ \t]+(?i:{UNIT_WORD})[ \t]*#?\d)"
)
# After these words a capitalised name with a number is an address ("lives at Pagari 18").
_CUE = re.compile(
    r"(?i)\b(?:lives?\s+(?:at|on|in)|living\s+at|address(?:es)?|located\s+at|"
    r"meet\s+(?:me\s+)?at|sent\s+to|send\s+(?:it\s+)?to|deliver(?:ed)?\s+to|moved\s+to|"
    r"move\s+to|stop\s+at|off\s+at|up\s+at|return\s+to|taxi\s+to|arrived\s+at|corner\s+of|"
    r"is\s+at|is\s+on|are\s+at|billing|shipping|mailing|postal|"
    r"(?:flat|house|home|apartment|office|shop|store|studio)\s+(?:at|on)|"
    r"(?:find|visit|reach)\s+(?:us|me)\s+at)\b[\s:,?-]*"
)
_CUE_BEFORE = re.compile(_CUE.pattern + r"(?:[\w.'’-]+[ \t]+){0,2}$")
_HAS_NUMBER = re.compile(r"\d")
# Words between a cue and the street: "address with 52 ...", "address? it is 05 ...".
_FILLER = re.compile(r"(?i)(?:is|it|to|with|as|at|on|the|my|our|new|now|be|here|:)\b[\s:,]*")
_CUED_STREET = re.compile(
    rf"(?:{_NUM}[ \t]+){{0,2}}(?P<name>(?:{_STREET_NAME}[ \t]+){{0,3}}{_STREET_NAME})[ \t]+{_NUM}"
)
_POSTCODE_CUE = re.compile(  # also as a JSON key or attribute: "zip": "94043", zip='…'
    r"(?i)\b(?:zip\s+code|postal\s+code|post\s+code|postcode|zip|postal_code|zip_code)"
    r"[\"']?\s*(?:is\s+|[:=]\s*)?[\"']?"
)
_POSTCODE = re.compile(POSTCODE)
# A whole UK or Canadian postcode needs no cue: its shape is its own (the UK inward code's
# letters avoid C, I, K, M, O and V; Canada's letters avoid D, F, I, O, Q and U), and one
# covers a street or a few houses ("Leeds LS11 5QE" alone says where someone is).
_POSTCODE_OWN = re.compile(
    r"(?<![\w-])(?:[A-PR-UWYZ][A-HK-Y]?\d[A-HJKPSTUW\d]? \d[ABD-HJLNP-UW-Z]{2}"
    r"|[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] \d[ABCEGHJ-NPRSTV-Z]\d)(?![\w-])"
)
_UNIT_BEFORE = re.compile(rf"(?i)\b{UNIT_WORD}[ \t]*#?[ \t]*\d{{1,5}}[A-Za-z]?[ \t]*,?[ \t]*\Z")


class AddressDetector:
    """Finds street addresses and grows each into its postal block."""

    def detect(self, text: str) -> list[Span]:
        """Spans of `text` that are (parts of) postal addresses, one span per block."""
        cores = list(self._streets(text))
        for m in _STREET_LINE.finditer(text):
            line = m.group("line")
            parts = [w for w in line.split() if not w[0].isdigit()]
            if all(w[0].isupper() for w in parts) and block_follows(text, m.end("line")):
                cores.append(Span(m.start("line"), m.end("line"), ADDRESS, "street-line"))
        for m in _NUMBERED_LINE.finditer(text):
            parts = [w.rstrip(".").casefold() for w in m.group("line").split()[1:]]
            if _street_words(parts) and block_follows(text, m.end("line")):
                cores.append(Span(m.start("line"), m.end("line"), ADDRESS, "numbered-line"))
        for m in (*_MILITARY.finditer(text), *_BOX.finditer(text)):
            cores.append(Span(m.start(), m.end(), ADDRESS, "military"))
        for m in _STRONG_UNIT.finditer(text):
            cores.append(Span(m.start(), m.end(), ADDRESS, "unit"))
        for m in _unit_streets(text):
            start = _skip_lowercase_words(text, m.start(), m.end())
            name = " ".join(w for w in text[start : m.end()].split() if not w[0].isdigit())
            if name and _plausible_street(name, True, None):
                cores.append(Span(start, m.end(), ADDRESS, "unit"))
        for cue in _CUE.finditer(text):
            cued = _after_cue(text, cue.end())
            if cued and _cued_street(text, cued):
                cores.append(Span(cued.start(), cued.end(), ADDRESS, "cued"))
        for m in _POSTCODE_CUE.finditer(text):
            code = _POSTCODE.match(text, m.end())
            if code:
                cores.append(Span(code.start(), code.end(), ADDRESS, "postcode"))
        blocks = merge_adjacent(_union(cores), text, joiners=" \t,\n") if cores else []
        found = [
            Span(
                _unit_before(text, s.start),
                grow(text, s.start, s.end, bool(_STRONG.search(text, s.start, s.end))),
                ADDRESS,
                s.source,
            )
            for s in blocks
        ]
        # A whole postcode on its own, where no address block took it in.
        for m in _POSTCODE_OWN.finditer(text):
            if not any(s.start < m.end() and m.start() < s.end for s in found):
                found.append(Span(m.start(), m.end(), ADDRESS, "postcode"))
        return sorted(found, key=lambda s: s.start)

    def _streets(self, text: str) -> Iterator[Span]:
        """Street lines recognised by a street word or a postcode after them."""
        hits = street_hits(text)
        for m in _windowed(hits.suffix, _EN_STREET, text):
            numbered = bool(m.group("num"))
            capitalised = _capitalised(m.group("name"))
            # "Wall Street", "Supreme Court", "3 per square foot": names of places, or not
            # streets at all, unless an address cue or a postal block goes with them.
            weak = not (numbered and capitalised)
            if _plausible_street(m.group("name"), numbered, m.group("suffix")) and (
                not weak or _postal_context(text, m.start(), m.end())
            ):
                yield Span(m.start(), m.end(), ADDRESS, "street")
        for m in _PREFIX_STREET.finditer(text):
            has_num = bool(m.group("num") or m.group("after"))
            name = [w for w in m.group("name").split() if w not in PARTICLES]
            capitalised = bool(name) and name[0][0].isupper()  # "avenue Mercier", not "take place"
            if (
                (capitalised or _lowercase_line(text, m.start()))
                and _plausible_street(m.group("name"), has_num, None)
                and (has_num or _postal_context(text, m.start(), m.end()))
            ):
                yield Span(m.start(), m.end(), ADDRESS, "street")
        for pattern, found in ((_COMPOUND_STREET, hits.compound), (_TYPED_STREET, hits.typed)):
            for m in _windowed(found, pattern, text):
                # Never skip the street word itself: "Is vogtstrasse 75 ...".
                last = m.group().split()[-2 if pattern is _COMPOUND_STREET else -3]
                limit = m.start() + m.group().rindex(last)
                start = _skip_lowercase_words(text, m.start(), limit)
                name = [w for w in text[start : m.end()].split()[:-2] if not w[0].isdigit()]
                capitalised = all(w[0].isupper() for w in name) and not text[start].islower()
                if start < m.end() and (capitalised or _lowercase_line(text, start)):
                    yield Span(start, m.end(), ADDRESS, "street")
        coded = [m.span() for m in _CODED_TRIGGER.finditer(text)]
        for m in _windowed(coded, _CODED_STREET, text):
            start = _skip_lowercase_words(text, m.start(), m.end())
            name = text[start : m.end()].split()[:-1]
            if name and _street_words([w.casefold() for w in name]):
                # Lower case is fine for "vogtstrasse 75, 9894 münchenstein".
                caseless = _lowercase_line(text, start) or bool(_COMPOUND_END.search(name[-1]))
                if (m.group("town")[0].isupper() and not text[start].islower()) or caseless:
                    yield Span(start, m.end(), ADDRESS, "coded")


def _unit_before(text: str, start: int) -> int:
    """Where an address that begins at `start` begins with the unit written just before it
    ("Flat 3, 12 High Street"): a unit word is ambiguous alone ("a flat 3 % fee"), not
    there."""
    m = _UNIT_BEFORE.search(text, max(0, start - 40), start)
    return m.start() if m else start


def _unit_streets(text: str) -> Iterator[re.Match[str]]:
    """Numbered streets right before a unit ("11 Edwards Rosebowl Apt. 678")."""
    for unit in UNIT.finditer(text):
        lo = max(text.rfind("\n", 0, unit.start()) + 1, unit.start() - _WINDOW)
        for m in _UNIT_STREET.finditer(text, lo, unit.end()):
            if not text[m.end() : unit.start()].strip(" \t"):
                yield m
                break


def _after_cue(text: str, pos: int) -> re.Match[str] | None:
    """The street right after an address cue, skipping up to three filler words."""
    for _ in range(4):
        cued = _CUED_STREET.match(text, pos)
        if cued:
            return cued
        filler = _FILLER.match(text, pos)
        if filler is None:
            return None
        pos = filler.end()
    return None


def _postal_context(text: str, start: int, end: int) -> bool:
    """An address cue just before `text[start:end]`, or a postcode or unit just after it."""
    if _CUE_BEFORE.search(text, max(0, start - 40), start):
        return True
    return bool(_HAS_NUMBER.search(text, end, grow(text, start, end)))


def _cued_street(text: str, cued: re.Match[str]) -> bool:
    """A cued name is a street if capitalised (or on a lower-case line) and not a date."""
    name = cued.group("name").split()
    if any(w.casefold().rstrip(".") in CALENDAR for w in name):
        return False  # "on January 31"
    if not any(w[0].isalpha() for w in name):
        return False  # "is on 3rd 15 May": an ordinal alone is a day
    if not (_capitalised(name[0]) or _lowercase_line(text, cued.start())):
        return False  # "is at least 21"
    return _plausible_street(" ".join(name), True, None)


def _windowed(
    hits: Iterable[tuple[int, int]], pattern: re.Pattern[str], text: str
) -> Iterator[re.Match[str]]:
    """Matches of `pattern` that span a hit (start, end), each found once; the pattern
    runs only on a short window around each hit."""
    seen: set[tuple[int, int]] = set()
    for start, end in hits:
        line_start = text.rfind("\n", 0, start) + 1
        lo = max(line_start, start - _WINDOW)
        hi = min(len(text), end + 16)
        for m in pattern.finditer(text, lo, hi):
            if m.start() <= start < m.end() and m.span() not in seen:
                seen.add(m.span())
                yield m


def _skip_lowercase_words(text: str, start: int, end: int) -> int:
    """Move `start` past leading lower-case words ("lives on Nassaustraat 12"), unless the
    whole line is lower case."""
    if _lowercase_line(text, start):
        return start
    while start < end and text[start].islower():
        space = text.find(" ", start, end)
        if space < 0:
            break
        start = space + 1
    return start


def _lowercase_line(text: str, pos: int) -> bool:
    """The line around `pos` is written without capitals (but for a sentence's first
    letter): case says nothing there."""
    lo = text.rfind("\n", 0, pos) + 1
    hi = text.find("\n", pos)
    line = text[lo : hi if hi >= 0 else len(text)]
    return not any(c.isupper() for c in _SENTENCE_START.sub("", line))


def _street_words(parts: list[str]) -> bool:
    """Words that can name a street: some, none a function word or a counted thing."""
    return bool(parts) and not any(w in FUNCTION or w in NOT_STREET for w in parts)


def _plausible_street(name: str, has_number: bool, suffix: str | None) -> bool:
    """Capitalised street names pass; lower-case ones need a house number and a real suffix."""
    parts = name.split()
    if any(w.casefold() in FUNCTION for w in parts):
        return False
    parts = [w for w in parts if w not in PARTICLES] or parts  # "Largo do Alto de São João"
    if all(_capitalised(w) for w in parts):
        return has_number or suffix is None or suffix.casefold().rstrip(".") in STRONG_SUFFIX
    strong = suffix is not None and suffix.casefold().rstrip(".") in STRONG_SUFFIX
    return has_number and len(parts) <= 3 and (strong or suffix is None)


def _capitalised(word: str) -> bool:
    """A word written as a name: capitalised, or an ordinal ("5th"), which has no case."""
    return word[0].isupper() or word[0].isdigit()


def _union(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if merged and span.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, span.end), ADDRESS, last.source)
        else:
            merged.append(span)
    return merged
