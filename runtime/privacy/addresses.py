"""Street addresses: a street line found by its shape, grown into the whole postal block.

A street line is a house number with a street word ("24 Clarke Avenue", "Via Roma 131",
"Koskikatu 25", "107 Rue Abdelaziz Thâalbi"), a military address ("PSC 3294, Box 9168"),
a unit ("Apt. 864"), or a capitalised name with a number after an address cue ("lives at
Pagari 18"). From there the block grows over the next short lines or comma-separated parts
that look like a city, a region, a postal code or a country, so the whole address becomes
one placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from runtime.privacy.entities import ADDRESS, Span, merge_adjacent
from runtime.privacy.gazetteer import words

# One word of a street name (never a function word: "88 and Whittaker Street").
_NAME = r"(?!(?i:and|or|the|of|at|on|in|to|is|a|an|for|from|with|by|it)\b)[^\W\d_][\w'’.-]*"
_NUM = r"\d{1,5}(?:[-/]\d{1,4})?[A-Za-z]?\b"
# USPS street suffixes (Publication 28, appendix C1), common abbreviations included.
_SUFFIX_EN = (
    r"(?:Street|St|Str|Avenue|Ave|Av|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|"
    r"Place|Pl|Way|Terrace|Ter|Square|Sq|Crescent|Cres|Close|Parkway|Pkwy|Highway|Hwy|Row|"
    r"Walk|Gardens?|Gdns|Grove|Mews|Trail|Trl|Circle|Cir|Alley|Path|Pike|Plaza|Quay|Rise|"
    r"Wharf|Forges?|Views?|Heights|Hollow|Meadows?|Ridge|Springs?|Crossing|Estates?|Loop|"
    r"Run|Points?|Pass|Bypass|Junction|Green|Hills?|Park|Broadway|Annex|Arcade|Bayou|Beach|"
    r"Bend|Bluffs?|Bottom|Branch|Bridge|Brooks?|Burgs?|Camp|Canyon|Cape|Causeway|Center|"
    r"Centre|Cliffs?|Club|Commons?|Corners?|Course|Courts|Cove|Creek|Crest|Curve|Dale|Dam|"
    r"Divide|Expressway|Extension|Falls|Ferry|Fields?|Flats?|Fords?|Forest|Forks?|Fort|"
    r"Freeway|Gateway|Glens?|Harbou?rs?|Haven|Inlet|Islands?|Isle|Keys?|Knolls?|Lakes?|"
    r"Landing|Lights?|Lock|Lodge|Mall|Manor|Mill|Mission|Motorway|Mount|Mountain|Neck|"
    r"Orchard|Oval|Overpass|Pines?|Plains?|Ports?|Prairie|Ramp|Ranch|Rapids?|Rest|Shoals?|"
    r"Shores?|Skyway|Spur|Squares|Station|Stravenue|Stream|Summit|Throughway|Trace|Track|"
    r"Trafficway|Tunnel|Turnpike|Underpass|Union|Valley|Viaduct|Village|Ville|Vista|Wall|"
    r"Wells?|gate|tér|utca|u)"
)
_PREFIX = (
    r"(?:Rue|Via|Viale|Vicolo|Corso|Piazza|Piazzale|Largo|Strada|Calle|Carrer|Camino|Paseo|"
    r"Plaza|Ronda|Avenida|Av\.|Avda\.?|Rua|Praça|Travessa|Estrada|Alameda|Chemin|Allée|"
    r"Boulevard|Bd|Quai|Route|Place|Impasse|Ulica|ul\.|Aleja|al\.|Plac|Odos|Οδός|Λεωφόρος|"
    r"Πλατεία|Avenue|Rte|Str\.)"
)
_COMPOUND = (
    r"(?:stra(?:ss|ß)e|str\.|gasse|weg|allee|platz|damm|ufer|gade|vej|vænget|gatan|"
    r"gata|vägen|väg|veien|vegen|gaten|stræti|straeti|stræde|braut|stien|stigen|vei|"
    r"katu|tie|kuja|polku|raitti|straat|laan|"
    r"gracht|plein|kade|dijk|steeg|utca|út|útja|tér|körút|tänav|maantee|iela|gatve|ulica|"
    r"cesta|náměstí|třída|sokak|caddesi)"
)
_EN_STREET = re.compile(
    rf"(?P<num>(?:\b{_NUM}[ \t]+){{1,2}})?(?P<name>(?:{_NAME}[ \t]+){{0,3}}?{_NAME})[ \t]+"
    rf"(?P<suffix>(?i:{_SUFFIX_EN}))\b\.?(?:[ \t]+{_NUM})?"
)
_PREFIX_STREET = re.compile(
    rf"(?P<num>(?:\b{_NUM}[ \t]+){{1,2}})?(?i:{_PREFIX})[ \t]+"
    rf"(?P<name>(?:{_NAME}[ \t]+){{0,3}}?{_NAME})(?P<after>[ \t,]+{_NUM})?"
)
_COMPOUND_STREET = re.compile(
    rf"(?:\b{_NUM}[ \t]+){{0,2}}(?:{_NAME}[ \t]+){{0,2}}?[^\W\d_][\w'’-]*(?i:{_COMPOUND})\.?"
    rf"[ \t]+{_NUM}"
)
_MILITARY = re.compile(
    r"\b(?:PSC|Unit|CMR)[ \t]+\d{3,5},?[ \t]+Box[ \t]+\d{3,5}"
    r"|\b(?:USNS|USNV|USS|USCGC)[ \t]+[A-Z][\w'-]*(?:[ \t]+[A-Z][\w'-]*)?"
    r"|\b(?:APO|FPO|DPO)[ \t]+(?:AA|AE|AP)[ \t]+\d{5}"
    r"|\b(?:P\.?O\.?[ \t]+)?Box[ \t]+\d{1,6}",
    re.IGNORECASE,
)
# Cheap scans that find where a street may end; the full patterns then run on a short
# window before each hit (running them over the whole text costs ~8 ms per KB).
_EN_TRIGGER = re.compile(rf"(?i)\b{_SUFFIX_EN}\b")
_COMPOUND_TRIGGER = re.compile(rf"(?i){_COMPOUND}\.?[ \t]+\d")
_WINDOW = 90
_STRONG_SUFFIX = words(
    """
    street st str avenue ave road rd lane ln drive dr boulevard blvd court ct place pl way
    terrace square crescent close parkway highway turnpike utca u
    """
)
# "20789 Allika 46" alone on a line, followed by a unit or a place line: a European street.
_STREET_LINE = re.compile(
    r"(?m)^[ \t>?#*|-]*(?P<line>(?:\d{1,5}[ \t]+)?[^\W\d_][\w'’.-]*(?:[ \t]+[^\W\d_][\w'’.-]*){0,3}"
    r"[ \t]+\d{1,5}[A-Za-z]?\.?)[ \t]*$"
)
_QUOTE = r"(?:[ \t]*[>?#*|]+)?"
_FUNCTION = words(
    """
    a an the to on in at of by for with and or my your his her our their this that is are
    was were be it its as from into over
    """
)
_UNIT = re.compile(
    r"\b(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Fl\.?|Room|Rm\.?|Bldg\.?|"
    r"Building)[ \t]*#?[ \t]*\d{1,5}[A-Za-z]?\b",
    re.IGNORECASE,
)
# After these words a capitalised name with a number is an address ("lives at Pagari 18").
_CUE = re.compile(
    r"(?i)\b(?:lives?\s+(?:at|on|in)|living\s+at|address(?:\s+is)?|located\s+at|meet\s+(?:me\s+)?at|"
    r"sent\s+to|send\s+(?:it\s+)?to|deliver(?:ed)?\s+to|moved\s+to|move\s+to|stop\s+at|"
    r"off\s+at|return\s+to|taxi\s+to|arrived\s+at|corner\s+of|is\s+at|is\s+on|are\s+at|"
    r"billing|shipping|mailing|postal)\b(?:[^.\n]{0,12}?[:\s]|:\s*\n\s*)\s*"
)
_CUED_STREET = re.compile(
    rf"(?:{_NUM}[ \t]+){{0,2}}(?P<name>(?:{_NAME}[ \t]+){{0,3}}{_NAME})[ \t]+{_NUM}"
)
# The parts after a street line: "Artilleros", ", CO", " Uruguay 64677", "SAVONLINNA",
# "Springfield, IL 62704", "BUNDALAGUAH VIC".
_POSTCODE_RE = (
    r"(?:[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}"  # UK
    r"|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d"  # Canada
    r"|\d{4}[ \t]?[A-Z]{2}\b"  # Netherlands
    r"|\d{5}-\d{3,4}"  # US ZIP+4, Brazil
    r"|[A-Z]{1,3}[ -]?\d{3,5}"  # with a country prefix / US state-less letters
    r"|\d{2,3}[ -]\d{2,3}|\d{3,6})"
)
_PLACE_WORDS = (
    r"[^\W\d_](?:[^\W\d_]|['’.()-])*(?!\d)(?:[ \t]+[^\W\d_](?:[^\W\d_]|['’.()-])*(?!\d)){0,4}"
)
_TAIL_PART = re.compile(
    rf"{_PLACE_WORDS}(?:[ \t,]*{_POSTCODE_RE}\b)?"
    # A postcode alone on its part must not be the start of a phone number ("082 490 1693").
    r"|(?:[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}|\d{3,6})\b(?![ \t.-]?\d)"
)
_POSTCODE_CUE = re.compile(
    r"(?i)\b(?:zip\s+code|postal\s+code|post\s+code|postcode|zip)\s*(?:is\s+|:\s*)?"
)
_POSTCODE = re.compile(_POSTCODE_RE)
_SEPARATOR = re.compile(
    r"[ \t]*(?:,[ \t]*\n?|\n(?:[ \t]*[>?#*|]*[ \t]*\n)?)(?:[ \t]*[>?#*|]+)?[ \t]*(?:,[ \t]*)?"
)
_STOP_WORDS = words(
    """
    phone tel fax mobile desk e-mail email website name date for the and is was please i we
    you it this that
    """
)


class AddressDetector:
    """Finds street addresses and grows each into its postal block."""

    def detect(self, text: str) -> list[Span]:
        """Spans of `text` that are (parts of) postal addresses, one span per block."""
        cores: list[Span] = []
        for m in _windowed(_EN_TRIGGER, _EN_STREET, text):
            if _plausible_street(m.group("name"), bool(m.group("num")), m.group("suffix")):
                cores.append(Span(m.start(), m.end(), ADDRESS, "street"))
        for m in _PREFIX_STREET.finditer(text):
            has_num = bool(m.group("num") or m.group("after"))
            if _plausible_street(m.group("name"), has_num, None):
                cores.append(Span(m.start(), m.end(), ADDRESS, "street"))
        for m in _windowed(_COMPOUND_TRIGGER, _COMPOUND_STREET, text):
            start = _skip_lowercase_words(text, m.start(), m.end())
            if start < m.end() and not text[start].islower():
                cores.append(Span(start, m.end(), ADDRESS, "street"))
        for m in _STREET_LINE.finditer(text):
            line = m.group("line")
            parts = [w for w in line.split() if not w[0].isdigit()]
            if all(w[0].isupper() for w in parts) and _block_follows(text, m.end()):
                cores.append(Span(m.start("line"), m.end("line"), ADDRESS, "street-line"))
        for m in _MILITARY.finditer(text):
            cores.append(Span(m.start(), m.end(), ADDRESS, "military"))
        for m in _UNIT.finditer(text):
            cores.append(Span(m.start(), m.end(), ADDRESS, "unit"))
        for cue in _CUE.finditer(text):
            cued = _CUED_STREET.match(text, cue.end())
            if cued and _plausible_street(cued.group("name"), True, None):
                cores.append(Span(cued.start(), cued.end(), ADDRESS, "cued"))
        for m in _POSTCODE_CUE.finditer(text):
            code = _POSTCODE.match(text, m.end())
            if code:
                cores.append(Span(code.start(), code.end(), ADDRESS, "postcode"))
        if not cores:
            return []
        cores = _union(cores)
        blocks = merge_adjacent(cores, text, joiners=" \t,\n")
        return [self._grow(text, span) for span in blocks]

    def _grow(self, text: str, span: Span) -> Span:
        """Extend a street line over the city / region / postcode / country parts after it."""
        end = span.end
        for _ in range(5):
            # A postcode or number right after the street on the same line: "Uruguay 64677".
            same_line = re.match(
                r"[ \t]+(?:\d{3,6}(?:[ -]\d{2,3})?|[A-Z]{1,2}\d[\dA-Z]? \d[A-Z]{2})\b", text[end:]
            )
            if same_line:
                end += same_line.end()
                continue
            sep = _SEPARATOR.match(text, end)
            if sep is None:
                break
            part = _TAIL_PART.match(text, sep.end())
            if part is None or part.end() == sep.end():
                break
            value = part.group()
            if ". " in value:  # a sentence ends inside: "Springfield. Born in 1990"
                value = value[: value.index(". ")]
            if not value or not _looks_like_place(
                value, lowercase_ok=text[span.start : end].islower()
            ):
                break
            if "\n\n" in sep.group() and not re.search(r"\d{3}", value):
                break  # a blank line ends the block unless a postcode follows
            end = sep.end() + len(value)
        return Span(span.start, end, ADDRESS, span.source)


def _windowed(
    trigger: re.Pattern[str], pattern: re.Pattern[str], text: str
) -> Iterator[re.Match[str]]:
    """Matches of `pattern` that end near a hit of `trigger`, each found once."""
    seen: set[tuple[int, int]] = set()
    for hit in trigger.finditer(text):
        line_start = text.rfind("\n", 0, hit.start()) + 1
        lo = max(line_start, hit.start() - _WINDOW)
        hi = min(len(text), hit.end() + 16)
        for m in pattern.finditer(text, lo, hi):
            if m.start() <= hit.start() < m.end() and (m.start(), m.end()) not in seen:
                seen.add((m.start(), m.end()))
                yield m


def _block_follows(text: str, end: int) -> bool:
    """The next line is a unit ("Apt. 12") or a place line with a postcode."""
    nxt = _SEPARATOR.match(text, end)
    if nxt is None or "\n" not in nxt.group():
        return False
    line = text[nxt.end() : text.find("\n", nxt.end()) if "\n" in text[nxt.end() :] else None]
    return bool(_UNIT.match(line)) or bool(re.search(r"\b\d{4,6}\b", line))


def _skip_lowercase_words(text: str, start: int, end: int) -> int:
    """Move `start` past leading lower-case words ("lives on Nassaustraat 12")."""
    while start < end and text[start].islower():
        space = text.find(" ", start, end)
        if space < 0:
            break
        start = space + 1
    return start


def _plausible_street(name: str, has_number: bool, suffix: str | None) -> bool:
    """Capitalised street names pass; lower-case ones need a house number and a real suffix."""
    parts = name.split()
    if any(w.casefold() in _FUNCTION for w in parts):
        return False
    if all(w[0].isupper() for w in parts):
        return has_number or suffix is None or suffix.casefold().rstrip(".") in _STRONG_SUFFIX
    strong = suffix is not None and suffix.casefold().rstrip(".") in _STRONG_SUFFIX
    return has_number and len(parts) <= 3 and (strong or suffix is None)


def _looks_like_place(part: str, lowercase_ok: bool = False) -> bool:
    """A short run of capitalised words and/or a postal code: a city, region or country."""
    tokens = [w for w in re.split(r"[ \t,]+", part.strip()) if w]
    if not tokens or len(tokens) > 6:
        return False
    for word in tokens:
        if word.casefold().rstrip(":") in _STOP_WORDS:
            return False
        if not (word[0].isupper() or word[0].isdigit() or lowercase_ok or word == "nan"):
            return False
    return True


def _union(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if merged and span.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, span.end), ADDRESS, last.source)
        else:
            merged.append(span)
    return merged
