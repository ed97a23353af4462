"""Phone numbers: phone-shaped digit groups, confirmed by `phonenumbers` or by context.

`phonenumbers.PhoneNumberMatcher` only finds numbers valid for one region at a time and
misses local formats (`780 6326`, `0487 98 11 92` without a region), which leak. So the
detector finds every phone-*shaped* run of digit groups and keeps it when:

* it has an international prefix (`+41`, `0041`) and `phonenumbers` calls it possible, or
* its grouping is typical of a phone number (an area code in parentheses or before a slash,
  2+ groups that are not a thousands-separated amount), or
* `phonenumbers` calls it a valid number of one of the configured regions, or
* a phone word (`phone`, `call`, `fax`, `mobile`, ...) stands next to it.

Groups are split by one space, dot or hyphen; a looser gap (a run of spaces or tabs, a
spaced hyphen or dot: `555 - 123 - 4567`, `+44  20  7946  0958`) needs a phone word or an
international prefix, and one line break inside a number (`415 555\\n2671`) needs a phone
word and a number `phonenumbers` validates; otherwise the parts are judged one by one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import phonenumbers

from runtime.privacy.entities import PHONE, Span

DEFAULT_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "NO", "DK", "FI", "PL",
    "CZ", "PT", "IE", "GR", "HU", "AU", "CA", "BR", "IN", "ZA", "JP",
)  # fmt: skip

# Between digit groups: one space, dot or hyphen, or a loose gap (`_LOOSE_GAP`): a run of
# spaces or tabs, a spaced dot or hyphen, or one line break in the whole number.
_GAP = r"(?:[ \t]{1,3}|[ \t]{0,2}[.-][ \t]{0,2})"
_LINE_BREAK = r"[ \t]{0,2}\n[ \t]{0,2}"
_LOOSE_GAP = re.compile(r"(?<=\d)(?:[ \t.-]*\n[ \t.-]*|[ \t.-]{2,}|\t)(?=\d)")
_CANDIDATE = re.compile(
    # ASCII letters only around it: Chinese, Japanese and Korean text has no spaces
    # ("电话13800138000"), and `\w` would count its characters as part of a word.
    # "tel.+4930…", "Tel.030 1234567", "Mob.01711234567" too (then a phone word must be there).
    r"(?:(?<![A-Za-z0-9_+/.-])|(?<=[A-Za-z]\.)(?=\+|0))"
    r"(?P<intl>(?:\+|00)\d{1,3}(?:[ \t]{1,3}|[ \t]{0,2}[.-][ \t]{0,2})?)?"
    r"(?:\(0\)[ .-]?)?"
    r"(?P<paren>\(\d{1,5}\)[ .-]?)?"
    # German style "089/12345678", "030 / 123 45 67": an area code (with a trunk 0 unless
    # after +49), then a slash; "12/05/2024" and "3/4" do not start with one.
    r"(?P<area>(?(intl)\d{1,5}|0\d{1,4})[ \t]?/[ \t]?)?"
    rf"\d{{1,15}}(?:{_GAP}\d{{1,8}}){{0,6}}(?:{_LINE_BREAK}\d{{1,8}}(?:{_GAP}\d{{1,8}}){{0,5}})?"
    r"(?:[ ]?(?:x|ext\.?|extension)[ ]?\d{1,6})?"
    r"(?![A-Za-z0-9_]|[.,]\d)"
)
_CUE_BEFORE = re.compile(
    r"(?i)\b(?:phone|ph|tel|telephone|mobile|mob|cell|fax|call|calling|text|sms|whatsapp|"
    r"number|no|desk|office|reach|contact|ring|dial|hotline|registered)\b"
    r"[^\n\d]{0,30}(?:\n[^\n\d]{0,4})?$"
)
_CUE_AFTER = re.compile(r"(?i)^[\s-]{0,3}(?:office|fax|mobile|cell|home|work|desk|tel)\b")
_MONEY_BEFORE = re.compile(r"[$€£¥₹]\s?$|(?i:\b(?:usd|eur|gbp|chf|sek|nok|dkk|rs\.?)\s?)$")
_MONEY_AFTER = re.compile(
    r"(?i)^\s?(?:%|[$€£¥₹]|usd|eur|gbp|chf|sek|nok|dkk|dollars?|euros?|pounds?|kr|km|kg|"
    r"people|users|years?|times|units|items|rows|bytes|tokens)\b"
)
_YEAR = re.compile(r"(?:19|20)\d\d")
# Arithmetic next to the number: "3000-2000 = 1000", "1234567 * 7654321", "range(1000000)".
_OPERATOR_BEFORE = re.compile(r"(?:[=+*/×÷^<>(%]|\*\*)\s*$")
_OPERATOR_AFTER = re.compile(r"^\s*(?:[=+*/×÷^<>)%]|-\s*\d)")
# A sentence about numbers as numbers, not as something to dial.
_MATH_WORDS = re.compile(
    r"(?i)\b(?:prime|primes|factori[sz]e|factors?|divisible|divisors?|modulo|mod|gcd|lcm|"
    r"compute|calculate|solve|sum|product|multiply|divide|square|cube|root|sqrt|log|digits?|"
    r"integer|binary|hex|hexadecimal|decimal|octal|convert|timestamp|epoch|unix|seconds|"
    r"milliseconds|bytes|range|array|loop|revenue|sales|profit|income|budget|salary|cost|"
    r"price|population|total|average|mean|median|count)\b"
)
# A list, a data set, a sort: groups of numbers to work with, not a number to dial.
# Not "list", "data", "max": "my contact list: Jane 415 555 2671", "Max 415 555 2671".
_LIST_WORDS = re.compile(
    r"(?i)\b(?:sort|sorted|sorting|ascending|descending|median|mean|average|avg|sequence|"
    r"series|dataset|numbers|deviation|variance|sum|values|scores|elements|integers|"
    r"maximum|minimum|trace|histogram|frequency|quartiles?|percentiles?|statistics)\b"
)
_NOT_PHONE_BEFORE = re.compile(
    r"(?i)(?:\b(?:isbn(?:-1[03])?|issn|doi|version|ver\.?|v|pi|is\s+pi)[\s:#]*"
    # An order, invoice, ticket ... number ("Order #1234567"), even after "number".
    r"|\b(?:order|invoice|ticket|tracking|receipt|booking|confirmation|transaction|"
    r"reference|ref|(?:case|issue|item|sku|po|pr)(?=\s*(?:#|no\b|nr\b|number|id\b)))"
    r"(?:\s*(?:#|no\.?|nr\.?|number|id))?[\s:#]*)$"
)


class PhoneDetector:
    """Finds phone numbers in any common national or international format."""

    def __init__(self, regions: Sequence[str] = DEFAULT_REGIONS) -> None:
        self._regions = tuple(regions)

    def detect(self, text: str) -> list[Span]:
        """Spans of `text` that are phone numbers."""
        spans: list[Span] = []
        for m in _CANDIDATE.finditer(text):
            spans.extend(self._phones_in(text, m))
        return spans

    def _phones_in(self, text: str, m: re.Match[str]) -> Iterator[Span]:
        """The phone numbers in the candidate `m`: all of it, or, split at its loose gaps,
        the longest runs of parts that are one, from left to right."""
        gaps = list(_LOOSE_GAP.finditer(m[0]))
        if not gaps:
            if self._accept(text, m, loose=False):
                yield Span(m.start(), m.end(), PHONE, "phone")
            return
        starts = [m.start(), *(m.start() + g.end() for g in gaps)]
        ends = [*(m.start() + g.start() for g in gaps), m.end()]
        sizes = [sum(c.isdigit() for c in text[a:b]) for a, b in zip(starts, ends, strict=True)]
        cue_before = _CUE_BEFORE.search(text[max(0, m.start() - 40) : m.start()]) is not None
        i = 0
        while i < len(starts):
            for j in range(len(starts) - 1, i - 1, -1):
                if not 7 <= sum(sizes[i : j + 1]) <= 21:  # 15 digits and an extension
                    continue
                if (
                    j > i
                    and not (i == 0 and cue_before)
                    and not text.startswith(("+", "00"), starts[i])
                    and not _CUE_AFTER.search(text[ends[j] : ends[j] + 20])
                ):
                    continue  # loose gaps need a phone word (none ends in digits before it)
                part = _CANDIDATE.fullmatch(text, starts[i], ends[j])
                if part is not None and self._accept(text, part, loose=j > i):
                    yield Span(part.start(), part.end(), PHONE, "phone")
                    i = j
                    break
            i += 1

    def _accept(self, text: str, m: re.Match[str], *, loose: bool) -> bool:
        value = m.group()
        core = re.split(r"[ ]?(?:x|ext\.?|extension)[ ]?(?=\d)", value, maxsplit=1)[0]
        digits = re.sub(r"\D", "", core)
        if not 7 <= len(digits) <= 15:
            return False
        return self._is_phone(text, m.start(), m.end(), core, digits, m, loose=loose)

    def _is_phone(
        self,
        text: str,
        start: int,
        end: int,
        core: str,
        digits: str,
        m: re.Match[str],
        *,
        loose: bool = False,
    ) -> bool:
        before = text[max(0, start - 40) : start]
        after = text[end : end + 20]
        if _MONEY_BEFORE.search(before) or _MONEY_AFTER.search(after):
            return False
        if _NOT_PHONE_BEFORE.search(before):
            return False
        if re.fullmatch(r"\d+\.\d+", core):
            return False  # a decimal number, not "123.4567"
        cue_match = _CUE_BEFORE.search(before) or _CUE_AFTER.search(after)
        cue = cue_match is not None
        if before.endswith(".") and not (cue or m.group("intl")):
            return False  # glued to a word ("Tel.030 1234567"): only after a phone word
        weak = cue_match is not None and re.match(r"(?i:number|no)\b", cue_match[0]) is not None
        if loose and not self._loose_ok(core, cue, weak, m.group("intl") is not None):
            return False
        if m.group("intl"):
            return cue or self._possible_international(core)
        if m.group("paren"):
            return True
        if m.group("area") and not cue:
            return len(digits) >= 9  # a whole national number; "0123/4567" may be anything
        groups = re.split(r"\s*/\s*|[\s.-]+", core)
        if all(_YEAR.fullmatch(g) for g in groups):
            return cue  # "1990 2004": years, not a number to call
        listed = len(groups) >= 2 and _number_list(core, groups)
        if cue_match is not None:
            # "number" / "no" also name numbers that are not phones ("the binary number
            # 1001 0011", "the eighth number in the pattern? 160 240 320 640", "What is the
            # number? 38 42 638 642").
            return not (weak and (listed or _small_numbers(core, groups)))
        if listed or _OPERATOR_BEFORE.search(before) or _OPERATOR_AFTER.search(after):
            return False
        if len(groups) >= 2 and _spaced_numbers(core, groups, _sentence(text, start, end)):
            return False
        if len(groups) >= 2 and not _thousands_shaped(groups):
            return True
        if len(groups) == 1 and (
            before.endswith(",")
            and before[-2:-1].isdigit()
            or (after[:1] == "," and after[1:2].isdigit())
        ):
            return False  # a field of a CSV row ("153.80,15678900"), not a number to call
        if _MATH_WORDS.search(_sentence(text, start, end)):
            return False  # "Is 1000000007 prime?": any 7-10 digits are valid somewhere
        return self._valid_somewhere(core)

    def _loose_ok(self, core: str, cue: bool, weak: bool, intl: bool) -> bool:
        """A number with loose gaps: after a phone word or with a "+" (that `phonenumbers`
        calls possible); across one line break, only a number it validates, after a phone
        word other than "number" or "no", or with its country code. Lines of numbers (a
        question's options: "What is the number?\\n38\\n42\\n638\\n642") are judged one by
        one."""
        spaced = re.sub(r"\s+", " ", core)
        if core.count("\n") > 1:
            return False
        if "\n" in core:
            if intl:
                return self._valid_international(spaced)
            return cue and not weak and self._valid_somewhere(spaced)
        return cue or (intl and self._possible_international(spaced))

    def _valid_international(self, value: str) -> bool:
        number = "+" + value[2:] if value.startswith("00") else value
        try:
            return phonenumbers.is_valid_number(phonenumbers.parse(number, None))
        except phonenumbers.NumberParseException:
            return False

    def _possible_international(self, value: str) -> bool:
        number = "+" + value[2:] if value.startswith("00") else value
        try:
            return phonenumbers.is_possible_number(phonenumbers.parse(number, None))
        except phonenumbers.NumberParseException:
            return False

    def _valid_somewhere(self, value: str) -> bool:
        for region in self._regions:
            try:
                if phonenumbers.is_valid_number(phonenumbers.parse(value, region)):
                    return True
            except phonenumbers.NumberParseException:
                continue
        return False


def _thousands_shaped(groups: Sequence[str]) -> bool:
    """`1 250 000` or `12.500.000`: a first group of 1-3 digits, then groups of exactly 3."""
    return 1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])


# Four groups of 1-3 digits as national numbers are written: Danish and Norwegian
# "12 34 56 78", Spanish "612 34 56 78", Polish and Spanish "12 345 67 89".
_PHONE_SHAPES = frozenset([(2, 2, 2, 2), (3, 2, 2, 2), (2, 3, 2, 2)])


def _small_numbers(core: str, groups: Sequence[str]) -> bool:
    """Four or more space-separated groups of 1-3 digits, in any order, without a trunk 0 and
    not grouped as a national number: numbers ("23 45 12 67 34", "64 34 25 12 22 11 90",
    "38 42 638 642"), not one to call."""
    return (
        len(groups) >= 4
        and re.fullmatch(r"[\d\s]+", core) is not None
        and not groups[0].startswith("0")
        and all(len(g) <= 3 for g in groups)
        and tuple(len(g) for g in groups) not in _PHONE_SHAPES
    )


def _spaced_numbers(core: str, groups: Sequence[str], sentence: str) -> bool:
    """Numbers written with spaces between them, with no phone word near: a list, not a
    number to call. `_small_numbers`, or any groups without a trunk 0 in a sentence about
    numbers ("Find the median of ...", "Sort in ascending order: ...", "the average of
    85 92 78 64")."""
    if _small_numbers(core, groups):
        return True
    return (
        re.fullmatch(r"[\d\s]+", core) is not None
        and not groups[0].startswith("0")
        and (_LIST_WORDS.search(sentence) or _MATH_WORDS.search(sentence)) is not None
    )


def _number_list(core: str, groups: Sequence[str]) -> bool:
    """Digit groups that read as numbers, not as one number to call (no phone word near).

    A phone number's groups are digits chosen by a numbering plan; these are not:
    decimals among spaced numbers ("0.4 2.5 16.7"), a range of years ("1776-1788"), binary
    ("1001 0011"), a lone digit after the first group ("5 3 8 1 9"), or four or more groups of
    one length in increasing order ("225 320 400 450", options of a question), unless the
    first has a trunk 0 ("01 23 45 67 89", a French number written the usual way). Three
    groups are left alone: "541-714-1388" increases too.
    """
    if " " in core and "." in core:
        return True
    if len(groups) == 2 and all(len(g) == 4 for g in groups):
        first, last = int(groups[0]), int(groups[1])
        if 1000 <= first < last <= 2100 and last - first <= 300:
            return True
    if set("".join(groups)) <= {"0", "1"}:
        return True
    if any(len(g) == 1 for g in groups[1:]) or groups[0] not in "01" and len(groups[0]) == 1:
        return True
    values = [int(g) for g in groups]
    return (
        len(groups) >= 4
        and len({len(g) for g in groups}) == 1
        and not groups[0].startswith("0")
        and all(a < b for a, b in zip(values, values[1:], strict=False))
    )


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence or line around `text[start:end]` (at most 300 characters either side:
    the search must not cost the whole text for each number in a long table)."""
    low, high = max(0, start - 300), min(len(text), end + 300)
    left = max(text.rfind(stop, low, start) for stop in (". ", "? ", "! ", "\n"))
    rights = [text.find(stop, end, high) for stop in (". ", "? ", "! ", "\n")]
    return text[max(left + 1, low) : min((i for i in rights if i >= 0), default=high)]
