"""The rest of a postal block after its street line: city, region, postcode, country.

Addresses are written as one line ("Rüeggstrasse 83, 3803 Burgdorf", "12 Main St Apt. 4
Lyss Chile") or as blocks of short lines ("52 Main St\nSpringfield\n, IL\n USA 62704").
`grow` extends a street span over the parts that follow it while they look like places or
postcodes; `block_follows` says whether a line is followed by such a block, which is what
makes a bare "66 storgatan" line an address.
"""

from __future__ import annotations

import re

from runtime.privacy.gazetteer import words

# Postal codes of many countries. The strict form (4+ digits, or a known letter shape) may
# start a block on its own; the loose one (3 digits too) only continues one.
POSTCODE_STRICT = (
    r"(?:[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}"  # UK
    r"|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d"  # Canada
    r"|[A-Z]\d[\dW][ \t]?(?=[A-Z\d]{0,3}[A-Z])[A-Z\d]{4}"  # Ireland (Eircode)
    r"|\d{4}[ \t]?[A-Z]{2}(?![\w])"  # Netherlands
    r"|\d{5}-\d{3,4}|\d{4}-\d{3}|\d{2}-\d{3}"  # US ZIP+4, Brazil; Portugal; Poland
    r"|[A-Z]{1,2}-\d{4,5}"  # with a country prefix (H-7317, D-10115)
    r"|\d{3}[ \t]\d{2}(?!\d)"  # Czechia, Slovakia, Sweden, Greece
    r"|\d{4,6})"
)
POSTCODE = (
    rf"(?:{POSTCODE_STRICT}|[A-Z]{{1,3}}[ -]?\d{{3,5}}|\d{{2,3}}[ -]\d{{2,3}}|\d{{8}}|\d{{3}})"
)
# A postcode must not be the start of a longer number (a phone: "082 490 1693").
_CODE = re.compile(rf"{POSTCODE}\b(?![ \t.-]?\d)")
_STRICT_CODE = re.compile(rf"{POSTCODE_STRICT}\b(?![ \t.-]?\d)")
UNIT_WORD = (
    r"(?:Apt\.?|Apartment|Appartamento|Suite|Ste\.?|Unit|Flat|Floor|Fl\.?|Room|Rm\.?|Bldg\.?|"
    r"Building|Piso|Depto\.?|Dpto\.?|Edif\.?|Interno|Scala|Ap\.|Bl\.|Sc\.|Whg\.?|Etage)"
)
UNIT = re.compile(rf"\b{UNIT_WORD}[ \t]*#?[ \t]*\d{{1,5}}[A-Za-z]?\b", re.IGNORECASE)
_HAS_POSTCODE = re.compile(
    r"\d{4}|\d{3}[ \t-]\d{2}|\b[A-Z]\d[A-Z]|\b[A-Z]{1,2}\d[A-Z\d]? \d[A-Z]{2}"
)
_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['’-](?=[^\W\d_]))*\.?(?![\w'’-])")
_REGION = re.compile(
    r"[ \t]*\((?:[A-Z]{1,3}|[A-Z][^\W\d_]+(?:[ -][A-Z][^\W\d_]+){0,3})\)|[ \t]+/[ \t]*[A-Z]{2}\b"
)
_SEPARATOR = re.compile(
    r"[ \t]*(?:,[ \t]*\n?|\n(?:[ \t]*[>?#*|]*[ \t]*\n)?)(?:[ \t]*[>?#*|]+)?[ \t]*(?:,[ \t]*)?"
)
# Lower-case words allowed inside a place name ("Bystřice pod Hostýnem", "Turks and Caicos").
PARTICLES = words(
    """
    de di du do da das dos del della des la le les l' sur sous pod nad an am im und and of
    upon en y e el al bei ob na der den van von ter
    """
)
# Words that end a place: the sentence goes on.
_STOP = words(
    """
    phone tel fax mobile desk e-mail email website name date for the is was were are be been
    please i we you he she it they this that these those my your his her our their me him
    them us from to with at by before after near next tonight today tomorrow yesterday thanks
    thank bring if when then so but or because as since until via on monday tuesday
    wednesday thursday friday saturday sunday january february march april may june july
    august september october november december hi hello dear regards cheers best kind
    sincerely have has had will would can could should shall not no yes ok okay
    last this next every current previous
    """
)
_JOINERS = words("and und och og y e i of upon")
_ABBREVIATIONS = words("st mt ft sta sto ste str no nr bd av ave rd pl dr gen col")
_MAX_WORDS = 6
_LINE_WORDS = re.compile(r"[^\W\d_][\w'’()-]*(?:[ \t]+[\w'’()-]+){0,5}")


def grow(text: str, start: int, end: int, strong: bool = False) -> int:
    """The end of the postal block whose street line is `text[start:end]`.

    `strong`: the line has a street word or a unit, so lower-case words after it on the
    same line are its town and country too ("schwarzstrasse 314 koper brasilia").
    """
    lowercase_ok = not any(c.isupper() for c in text[start:end])
    numbered = any(c.isdigit() for c in text[start:end])
    for _ in range(8):
        places_follow = strong or (numbered and not lowercase_ok)
        nxt = _same_line(text, end, lowercase_ok, places_follow)
        if nxt is None:
            nxt = _next_part(text, end, lowercase_ok, numbered)
        if nxt is None or nxt <= end:
            break
        end = nxt
    return end


def block_follows(text: str, end: int) -> bool:
    """The next 1-4 lines are place parts, and one of them holds a postcode."""
    pos = end
    for _ in range(4):
        sep = _SEPARATOR.match(text, pos)
        if sep is None or "\n" not in sep.group() and "," not in sep.group():
            return False
        part_end = _part(text, sep.end(), lowercase_ok=True)
        if part_end is None:
            return False
        if _HAS_POSTCODE.search(text, sep.end(), part_end):
            return True
        pos = part_end
    return False


def _same_line(text: str, end: int, lowercase_ok: bool, places_follow: bool) -> int | None:
    """A postcode, a "(region)", a unit, or a place name after a number, on the same line.

    `places_follow`: the block has a house number and capitals, or a street word, so the
    words right after it are its town and country ("8 Jones Stream Port Jeffreybury").
    """
    region = _REGION.match(text, end)
    if region:
        return region.end()
    if end >= len(text) or text[end] not in " \t":
        return None
    pos = end
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    code = _CODE.match(text, pos) or UNIT.match(text, pos)
    if code:
        return code.end()  # "Uruguay 64677", "Lyss 3800", "Apt. 12"
    if text[end - 1] == "." and text[end - 2].isalpha():
        return None  # the sentence ended: "1598 Main Street. Then"
    if places_follow or (_ends_with_number(text, end) and not lowercase_ok):
        # "Apt. 949 Lieksa Finland", "4286 Skødstrup": after a number, words are places.
        return _place_run(text, pos, lowercase_ok, strict=True)
    return None


def _next_part(text: str, end: int, lowercase_ok: bool, numbered: bool) -> int | None:
    """The next comma- or line-separated part, if it is a place or a postcode."""
    sep = _SEPARATOR.match(text, end)
    if sep is None or sep.end() >= len(text):
        return None
    part_end = _part(text, sep.end(), lowercase_ok)
    if "\n" in sep.group():
        part_end = _whole_line(text, sep.end(), part_end)
    if part_end is None:
        return None
    value = text[sep.end() : part_end]
    if not numbered and not _HAS_POSTCODE.search(value):
        # A street without a number is weak evidence: it takes a short place name only
        # ("Regent Street, London"), not a list ("Off Road, Freestyle and Pro Racing").
        parts = value.split()
        if len(parts) > 2 or any(w.casefold() in PARTICLES for w in parts):
            return None
    if "\n\n" in sep.group() and not re.search(r"\d{3}", value):
        return None  # a blank line ends the block unless a postcode follows
    return part_end


def _whole_line(text: str, pos: int, part_end: int | None) -> int | None:
    """In a block of short lines a whole line is one part, whatever its case ("San Mauro
    los altos"), if it is a few words with no sentence in it."""
    nl = text.find("\n", pos)
    line_end = len(text) if nl < 0 else nl
    if part_end is not None and part_end >= line_end:
        return part_end
    line = text[pos:line_end].rstrip(" \t")
    found = _LINE_WORDS.fullmatch(line)
    if found is None or any(w.casefold() in _STOP for w in line.split()):
        return part_end
    return pos + len(line)


def _part(text: str, pos: int, lowercase_ok: bool) -> int | None:
    """A unit, or [postcode] [place words] [postcode] [(region)], at least one of them."""
    unit = UNIT.match(text, pos)
    if unit:
        return unit.end()
    end = pos
    code = _CODE.match(text, end)
    if code:
        end = code.end()
        after = re.match(r"[ \t]+", text[end:])
        if after:
            run = _place_run(text, end + after.end(), lowercase_ok)
            end = run if run is not None else end
    else:
        run = _place_run(text, end, lowercase_ok)
        if run is None:
            return None
        end = run
        after = re.match(r"[ \t]*,?[ \t]*", text[end:])
        code = _CODE.match(text, end + after.end()) if after else None
        if code:
            end = code.end()
    region = _REGION.match(text, end)
    return region.end() if region else end


def _place_run(text: str, pos: int, lowercase_ok: bool, strict: bool = False) -> int | None:
    """The end of up to six words that can be a place name starting at `pos`, or None.

    In lower-case text a common English word ends the run (`strict`: even the first one).
    """
    end: int | None = None
    count = 0
    while count < _MAX_WORDS:
        m = _WORD.match(text, pos)
        if m is None:
            break
        word = m.group()
        bare = word.rstrip(".")
        key = bare.casefold()
        if key in _STOP and not (bare.isupper() and len(bare) <= 3):
            break  # ... but "BE", "OR", "TO" are regions
        particle = key in PARTICLES
        if not count and key in _JOINERS:
            break  # ", and Xbox One": a place does not start with "and"
        if not (bare[0].isupper() or particle or lowercase_ok or key == "nan"):
            break
        count += 1
        if (count or strict) and lowercase_ok and bare.islower() and not particle and _common(key):
            break  # "16726 alingsås in a safe neighbourhood": case cannot end the run
        sentence_end = word.endswith(".") and key not in _ABBREVIATIONS and len(bare) > 1
        word_end = m.start() + len(bare) if sentence_end else m.end()
        if not particle:
            end = word_end
        if sentence_end:
            break
        gap = re.match(r"[ \t]", text[m.end() :])
        if gap is None:
            break
        pos = m.end() + 1
    return end


def _common(word: str) -> bool:
    """A common English word (the name lists' list, loaded once, only for lower-case text)."""
    from runtime.privacy.gazetteer import load

    lists = load()
    return lists.is_common(word) and not lists.is_name(word)


def _ends_with_number(text: str, end: int) -> bool:
    """The street part ends with a number ("... 25", "Apt. 949", "4c", "44.")."""
    return bool(re.search(r"\d[A-Za-z]?\.?$", text[max(0, end - 8) : end]))
