"""Phone numbers: phone-shaped digit groups, confirmed by `phonenumbers` or by context.

`phonenumbers.PhoneNumberMatcher` only finds numbers valid for one region at a time and
misses local formats (`780 6326`, `0487 98 11 92` without a region), which leak. So the
detector finds every phone-*shaped* run of digit groups and keeps it when:

* it has an international prefix (`+41`, `0041`) and `phonenumbers` calls it possible, or
* its grouping is typical of a phone number (an area code in parentheses or before a slash,
  2+ groups that are not a thousands-separated amount), or
* `phonenumbers` calls it a valid number of one of the configured regions, or
* a phone word (`phone`, `call`, `fax`, `mobile`, ...) stands next to it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import phonenumbers

from runtime.privacy.entities import PHONE, Span

DEFAULT_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "NO", "DK", "FI", "PL",
    "CZ", "PT", "IE", "GR", "HU", "AU", "CA", "BR", "IN", "ZA", "JP",
)  # fmt: skip

_CANDIDATE = re.compile(
    # ASCII letters only around it: Chinese, Japanese and Korean text has no spaces
    # ("电话13800138000"), and `\w` would count its characters as part of a word.
    r"(?:(?<![A-Za-z0-9_+/.-])|(?<=[A-Za-z]\.)(?=\+))"  # "tel.+4930…" too
    r"(?P<intl>(?:\+|00)\d{1,3}[ .-]?)?"
    r"(?:\(0\)[ .-]?)?"
    r"(?P<paren>\(\d{1,5}\)[ .-]?)?"
    # German style "089/12345678", "030 / 123 45 67": an area code (with a trunk 0 unless
    # after +49), then a slash; "12/05/2024" and "3/4" do not start with one.
    r"(?P<area>(?(intl)\d{1,5}|0\d{1,4})[ \t]?/[ \t]?)?"
    r"\d{1,15}(?:[ .-]\d{1,8}){0,6}"
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
_NOT_PHONE_BEFORE = re.compile(
    r"(?i)\b(?:isbn(?:-1[03])?|issn|doi|version|ver\.?|v|pi|is\s+pi)[\s:#]*$"
)


class PhoneDetector:
    """Finds phone numbers in any common national or international format."""

    def __init__(self, regions: Sequence[str] = DEFAULT_REGIONS) -> None:
        self._regions = tuple(regions)

    def detect(self, text: str) -> list[Span]:
        """Spans of `text` that are phone numbers."""
        spans: list[Span] = []
        for m in _CANDIDATE.finditer(text):
            value = m.group()
            core = re.split(r"[ ]?(?:x|ext\.?|extension)[ ]?(?=\d)", value, maxsplit=1)[0]
            digits = re.sub(r"\D", "", core)
            if not 7 <= len(digits) <= 15:
                continue
            if self._is_phone(text, m.start(), m.end(), core, digits, m):
                spans.append(Span(m.start(), m.end(), PHONE, "phone"))
        return spans

    def _is_phone(
        self, text: str, start: int, end: int, core: str, digits: str, m: re.Match[str]
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
        if m.group("intl"):
            return cue or self._possible_international(core)
        if m.group("paren"):
            return True
        if m.group("area") and not cue:
            return len(digits) >= 9  # a whole national number; "0123/4567" may be anything
        groups = re.split(r"[ \t]?/[ \t]?|[ .-]", core)
        if all(_YEAR.fullmatch(g) for g in groups):
            return cue  # "1990 2004": years, not a number to call
        listed = len(groups) >= 2 and _number_list(core, groups)
        if cue_match is not None:
            # "number" / "no" also name numbers that are not phones ("the binary number
            # 1001 0011", "the eighth number in the pattern? 160 240 320 640").
            return not (listed and re.match(r"(?i:number|no)\b", cue_match[0]))
        if listed or _OPERATOR_BEFORE.search(before) or _OPERATOR_AFTER.search(after):
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
    """The sentence or line around `text[start:end]`."""
    left = max(text.rfind(stop, 0, start) for stop in (". ", "? ", "! ", "\n"))
    rights = [i for i in (text.find(stop, end) for stop in (". ", "? ", "! ", "\n")) if i >= 0]
    return text[left + 1 : min(rights, default=len(text))]
