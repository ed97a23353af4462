"""Structured personal data: found by pattern, kept only if a validator agrees.

E-mail addresses, URLs and domains, IP addresses, card numbers (Luhn) and their security
data (CVV, expiry), IBANs and national identifiers (`python-stdnum` checksums), and full
dates. Phone numbers live in `phones`, credentials in `credentials`.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.cn import ric
from stdnum.de import idnr
from stdnum.dk import cpr
from stdnum.es import dni, nie
from stdnum.fi import hetu
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.no import fodselsnummer
from stdnum.pl import pesel
from stdnum.se import personnummer
from stdnum.us import ssn as us_ssn

from runtime.privacy.entities import (
    CARD,
    CARD_CVV,
    CARD_EXPIRY,
    DATE,
    EMAIL,
    IBAN,
    IP,
    NATIONAL_ID,
    SSN,
    URL,
    Span,
)

# An apostrophe between letters belongs to the name part ("john.o'reilly@example.ie").
_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.%+-]+(?:(?<=\w)'(?=\w)[\w.%+-]+)*@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}"
    r"(?![\w-])"
)
_URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"'`]+")
# Bare domains need a TLD from this list: 2-letter ccTLDs that are also file extensions
# (.py, .md, .rs, .sh, .pl ...) would turn every file name into a "domain".
_TLDS = (
    "com|org|net|edu|gov|mil|int|info|biz|io|ai|app|dev|co|me|tv|xyz|online|site|tech|"
    "shop|store|blog|cloud|eu|uk|de|fr|it|es|nl|be|ch|at|se|no|dk|fi|is|ie|pt|gr|cz|sk|"
    "hu|ro|bg|hr|si|rs|ee|lv|lt|ua|ru|tr|us|ca|mx|br|ar|cl|au|nz|jp|cn|kr|in|za|il|cy"
)
_DOMAIN = re.compile(
    rf"(?i)(?<![\w@.-])(?P<host>(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?P<tld>{_TLDS}))"
    r"(?![\w-])(?P<path>/[^\s<>\"'`]*)?"
)
# TLDs that are also English or code words: "late.is", "logging.info", "self.app", "ASP.NET",
# "Socket.IO". A bare name.tld with one of them is a domain only with a path, "www." or a
# scheme (found as a URL then); "jdoe.github.io", with more labels, stays a domain.
_WORD_TLDS = frozenset(
    ["is", "it", "in", "at", "no", "me", "be", "us", "info", "app", "io", "net", "int"]
)
# A bare name followed by a call, an index or more of a dotted name is code: "df.info()",
# "self.app.run()", "np.int[...]".
_CODE_AFTER = re.compile(r"[(\[]|\.\w")
# Every country-code TLD, for addresses spelled out against scrapers ("raj at company dot sg"),
# where file extensions do not turn up; the ones that are English words need an address-like
# name there, as "com" does.
_CCTLDS = frozenset([
    "ac", "ad", "ae", "af", "ag", "ai", "al", "am", "ao", "aq", "ar", "as", "at", "au", "aw",
    "ax", "az", "ba", "bb", "bd", "be", "bf", "bg", "bh", "bi", "bj", "bm", "bn", "bo", "br",
    "bs", "bt", "bw", "by", "bz", "ca", "cc", "cd", "cf", "cg", "ch", "ci", "ck", "cl", "cm",
    "cn", "co", "cr", "cu", "cv", "cw", "cx", "cy", "cz", "de", "dj", "dk", "dm", "do", "dz",
    "ec", "ee", "eg", "er", "es", "et", "eu", "fi", "fj", "fk", "fm", "fo", "fr", "ga", "gd",
    "ge", "gf", "gg", "gh", "gi", "gl", "gm", "gn", "gp", "gq", "gr", "gs", "gt", "gu", "gw",
    "gy", "hk", "hm", "hn", "hr", "ht", "hu", "id", "ie", "il", "im", "in", "io", "iq", "ir",
    "is", "it", "je", "jm", "jo", "jp", "ke", "kg", "kh", "ki", "km", "kn", "kp", "kr", "kw",
    "ky", "kz", "la", "lb", "lc", "li", "lk", "lr", "ls", "lt", "lu", "lv", "ly", "ma", "mc",
    "md", "me", "mg", "mh", "mk", "ml", "mm", "mn", "mo", "mp", "mq", "mr", "ms", "mt", "mu",
    "mv", "mw", "mx", "my", "mz", "na", "nc", "ne", "nf", "ng", "ni", "nl", "no", "np", "nr",
    "nu", "nz", "om", "pa", "pe", "pf", "pg", "ph", "pk", "pl", "pm", "pn", "pr", "ps", "pt",
    "pw", "py", "qa", "re", "ro", "rs", "ru", "rw", "sa", "sb", "sc", "sd", "se", "sg", "sh",
    "si", "sk", "sl", "sm", "sn", "so", "sr", "ss", "st", "sv", "sx", "sy", "sz", "tc", "td",
    "tf", "tg", "th", "tj", "tk", "tl", "tm", "tn", "to", "tr", "tt", "tv", "tw", "tz", "ua",
    "ug", "uk", "us", "uy", "uz", "va", "vc", "ve", "vg", "vi", "vn", "vu", "wf", "ws", "ye",
    "yt", "za", "zm", "zw",
])  # fmt: skip
_WORD_CCTLDS = frozenset(["am", "as", "at", "be", "by", "do", "id", "in", "is", "it", "me", "my",
                          "no", "so", "to", "us"])  # fmt: skip
_MAIL_TLDS = "|".join(sorted(set(_TLDS.split("|")) | set(_CCTLDS), key=lambda t: (-len(t), t)))
# An address spelled out against scrapers: "jane.doe [at] example [dot] com", "jane dot doe
# at gmail dot com", "j.doe (at) example.org". A bare " at " counts only when the name looks
# like an address's (a dot, digit, underscore, plus or a spelled dot in it) or the domain is a
# mail provider's, since "look at this dot com" is prose.
_SPELLED_DOT = r"(?:\s*[\[({<]\s*dot\s*[\])}>]\s*|\s+dot\s+|\.)"
# Found from its "at" (rarer than words, so the scan stays cheap): the name before it, the
# domain after it.
_SPELLED_AT = re.compile(r"(?i)[\[({<]\s*at\s*[\])}>]|@|(?P<word_at>(?<=\s)at(?=\s))")
_LOCAL_BEFORE = re.compile(
    rf"(?i)(?<![\w.+-])(?P<local>[\w+-]+(?:{_SPELLED_DOT}[\w+-]+){{0,4}})\s*\Z"
)
# Greedy: "acme(dot)co(dot)uk" whole, not "acme(dot)co".
_DOMAIN_AFTER = re.compile(
    rf"(?i)\s*(?P<domain>[\w-]+(?:{_SPELLED_DOT}[\w-]+){{0,3}}{_SPELLED_DOT}(?P<tld>{_MAIL_TLDS}))"
    r"(?![\w-])"
)
_WORD_DOT = re.compile(r"(?i)\s+dot\s+|[\[({<]\s*dot")
_ADDRESS_LIKE = re.compile(r"(?i)[._+\d]|\sdot\s|[\[({<]")
_MAIL_PROVIDER = re.compile(
    r"(?i)(?:gmail|googlemail|yahoo|hotmail|outlook|live|icloud|aol|proton(?:mail)?|gmx|"
    r"yandex|zoho|fastmail|mail|web|hey|tutanota)(?:\s*[\[({<]\s*dot|\s+dot\s|\.)"
)
_TRAILING = ".,;:!?)]}'\""
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\d]|\.\d)")
# "package==1.2.3.4", "lib>=10.0.0.1": a version pin, unless the name is an address's;
# "version 1.2.3.4", "v1.2.3.4": a version.
_VERSION_PIN = re.compile(
    r"(?<![\w.-])(?P<name>[A-Za-z][\w.\[\],-]*)\s*(?:===|[=<>!~]=)\s*$"
    r"|(?i:\b(?:version|ver\.?|release|build)\s*[:#]?\s*|(?<![\w.-])v)$"
)
_ADDRESS_NAME = re.compile(
    r"(?i)(?:^|[._\[-])(?:ip|ipv[46]|addr|address|host|src|dst|server|client|gateway|gw|dns|"
    r"subnet|mask|peer|remote|local)(?:$|[._\]-])"
)
_IPV6 = re.compile(r"(?i)(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?:/\d{1,3})?(?![\w:])")
# Between the digit groups of a card, an IBAN or an SSN: a space or a hyphen, or a looser gap:
# a run of spaces or tabs ("4532  0151"), a spaced hyphen ("4111 - 1111"), a line break
# ("4111 1111\n1111 1111"). The looser the gap, the more the validator or a cue must say.
_GAP = r"(?:[ \t]{1,3}|[ \t]{0,2}-[ \t]{0,2}|[ \t]{0,2}\n[ \t]{0,2})"
# Spaces or dashes anywhere; dots only in groups of four (4111.1111.1111.1111), since dotted
# digit runs are otherwise amounts, versions and IP addresses. A run may hold several cards
# (one a line) and what comes before or after them: `_cards` looks for them in it.
_CARD = re.compile(
    rf"(?<![\d+.-])(?:\d{{4}}(?:\.\d{{4}}){{2,3}}(?:\.\d{{1,3}})?(?![\d])|\d(?:{_GAP}?\d){{11,}})"
    r"(?![\d])"
)
_DIGIT_GROUP = re.compile(r"\d+")
_DIGIT_GAP = re.compile(r"\D+")
# A gap a printed number does not have: several spaces, a tab, a line break, a spaced hyphen.
_LOOSE_GAP = re.compile(r"\s\S|\S\s|\s\s|[\t\n]")
_YEAR_GROUP = re.compile(r"(?:19|20)\d\d")
_IBAN_COMPACT = re.compile(r"(?i)\b[a-z]{2}\d{2}[a-z0-9]{11,30}\b")
# The same separator between the groups (one space or hyphen, a run of spaces or tabs, a
# spaced hyphen), or a line break; the checksum decides.
_IBAN_SPACED = re.compile(
    r"(?i)\b[a-z]{2}\d{2}(?P<sep>[ \t]{1,3}|[ \t]{0,2}-[ \t]{0,2})[a-z0-9]{4}"
    r"(?:(?:(?P=sep)|[ \t]{0,2}\n[ \t]{0,2})[a-z0-9]{4}){1,6}"
    r"(?:(?:(?P=sep)|[ \t]{0,2}\n[ \t]{0,2})[a-z0-9]{1,4})?\b"
)
_LAST_IBAN_GROUP = re.compile(r"[\s-]+[A-Za-z0-9]*\Z")
_DIGIT_SPACE = re.compile(r"[\s-]+")
# Any grouping ("DE89 370400440532013000", "DE 89 3704 …", dots), next to any script
# ("IBAN是DE89…"): a candidate, cut back until the checksum and the country's format agree.
# An upper-case country code only: lower-case words are most of a text, and the patterns
# above take lower-case IBANs in their usual groupings.
_IBAN_LOOSE = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[ .-]?\d{2}(?:[ .-]?[A-Za-z0-9]){11,30}")
# 123-45-6789 or 123 45 6789; with other gaps (123 - 45 - 6789, 123  45  6789, a line break,
# mixed) only after an SSN cue: spaced hyphens are also subtraction.
_SSN = re.compile(rf"(?<![\d-])\d{{3}}(?P<a>{_GAP})\d{{2}}(?P<b>{_GAP})\d{{4}}(?![\d-])")
_SSN_BARE = re.compile(r"(?<!\d)\d{9}(?!\d)")
_SSN_CUE = re.compile(
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?)(?:\s*(?:is|:|#|number|no\.?))*\W{0,3}$"
)

_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DATES = (
    re.compile(  # 1990-07-21, 1990-07-21 10:22:05, 1990-07-21T10:22
        r"(?<![\d-])(?:19|20)\d\d-(?:0?[1-9]|1[0-2])-(?:0?[1-9]|[12]\d|3[01])"
        r"(?:[ T]\d\d:\d\d(?::\d\d)?)?(?![\d-])"
    ),
    re.compile(  # 21/07/1990, 7/21/90, 21.07.1990
        r"(?<![\d/.])(?:\d{1,2}/\d{1,2}/(?:19|20)?\d\d|\d{1,2}\.\d{1,2}\.(?:19|20)\d\d)"
        r"(?![\d/]|\.\d)"
    ),
    re.compile(rf"(?i)\b\d{{1,2}}(?:st|nd|rd|th)?(?: of)? {_MONTHS},? (?:19|20)\d\d\b"),
    re.compile(rf"(?i)\b{_MONTHS} \d{{1,2}}(?:st|nd|rd|th)?,? (?:19|20)\d\d\b"),
)
# After a birth cue ("DOB", "born", "Geburtsdatum", ...), any common way to write a date,
# in English, French, Spanish, German or Italian: 3-5-1985, 1985/05/03, 03.05.85, 3-May-85,
# 03MAY1985, May 3rd '85, 3 mai 1985, 3 de mayo de 1985, 3. Mai 1985.
_MONTH_NAMES = (
    rf"(?:{_MONTHS}|janvier|f[ée]vrier|mars|avril|mai|juin|juillet|ao[uû]t|septembre|"
    r"octobre|novembre|d[ée]cembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto|"
    r"septiembre|octubre|noviembre|diciembre|januar|februar|m[äa]rz|juni|juli|oktober|"
    r"dezember|gennaio|febbraio|aprile|maggio|giugno|luglio|settembre|ottobre|dicembre)"
)
_BIRTH_DATE = re.compile(
    r"(?i)(?<![^\W\d_])(?:d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|birthday|born|"
    r"n[ée]e?\s+le|geboren(?:\s+am)?|geburtsdatum|fecha\s+de\s+nacimiento|nacid[oa]\s+el|"
    r"data\s+di\s+nascita|nat[oa]\s+il|date\s+de\s+naissance)"
    r"(?:\s+on)?[\s:.,=\"'-]{0,4}"
    r"(?P<date>(?:19|20)\d\d[-/.]\d{1,2}[-/.]\d{1,2}"
    r"|\d{1,2}[-/. ]\d{1,2}[-/. ](?:19|20)?\d\d"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\.?[- ]?(?:de\s+)?{_MONTH_NAMES}\.?[- ]?(?:de\s+)?"
    r"(?:(?:19|20)?\d\d|'\d\d)"
    rf"|{_MONTH_NAMES}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:(?:19|20)\d\d|'\d\d))"
    r"(?![\d/])"
)

# A card's security data (PCI DSS: the CVV must never be sent; the expiry next to a card
# number is card data too). Anywhere in the text after a label ("CVV 123", "exp 09/27",
# "Exp/CVV: 09/27 123"); right after a card number also unlabelled, as cards print it
# ("4111 ... 1111 12/26 987": a month/year, then maybe the CVV; or the CVV, then the date;
# or the CVV alone, "4111 ... 1111 987").
# A labelled expiry counts only in a text about a card (a card number, a card word or a CVV
# label in it): "the coupon expires 12/31" and "milk exp 5/20" are not card data.
_CVV_LABEL = (
    r"(?:cvv2?|cvc2?|cvn2?|cav2|cvd|csc|cid|(?:card\s+)?security\s+code|"
    r"(?:card\s+)?verification\s+value|card\s+verification(?:\s+(?:code|number))?)"
)
_EXPIRY_LABEL = (
    r"(?:exp(?:iry|iration|ire[sd]?|iring)?\b\.?(?:\s*date\b)?|"
    r"(?:valid|good)\s+(?:thru|through)\b)(?:\s*\(\s*mm\s*/\s*yy(?:yy)?\s*\))?"
)
# Between a label and its value: "is", "no.", "on", a colon, a dash ... Repeats are bounded,
# so that no run of labels or joining words costs more than linear time.
_BACK = r"(?:on|at)\s+the\s+back(?:\s+of\s+(?:the|my|your)\s+card)?"
# Quotes and ">" too, for machine formats: '"cvv": "123"', "cvv: '123'", "<cvv>123</cvv>";
# and a note on the length, "CVV (3 digits): 123".
_QUOTED = r"[:=#>\"'\u2014-]"
_CVV_JOIN = (
    rf"(?:\s*(?:{_QUOTED}|\(\s*[34]\s*digits?\s*\)|(?:is|code|number|no|nr)\b\.?|"
    rf"{_BACK}\b)){{0,4}}\s*"
)
_EXPIRY_JOIN = rf"(?:\s*(?:{_QUOTED}|(?:is|on|in|of|date)\b)){{0,4}}\s*"
_MONTH_NUMBER = r"(?:0?[1-9]|1[0-2])"
_MONTH_YEAR = rf"{_MONTH_NUMBER}\s?[/-]\s?(?:20)?\d\d"  # 09/27, 9/2027, 09-27, 09 / 27
_EXPIRY_VALUE = (
    rf"(?:{_MONTH_YEAR}|20\d\d[/-]{_MONTH_NUMBER}|"  # 2027-09
    r"(?:0[1-9]|1[0-2])(?:20)?\d\d|"  # 0927, 092027: only after a label
    rf"{_MONTHS}\s*(?:'\d\d|20\d\d))"  # Sep 2027, September '27
    r"(?!\d|[/.-]\d)"  # not the start of a full date (09/27/2024) or a longer number
)
_CVV_VALUE = r"\d{3,4}(?!\d|[/.,:-]\d)"
# The lookaheads on the labels' first letters only make the scan ~3x faster.
_CVV = re.compile(
    # A label may follow "_", "." or "<" (card_cvv=123, payment.cvc, <cvv>): not "\b".
    rf"(?i)(?=[cvs])(?:(?<![a-z0-9]){_CVV_LABEL}(?:\s*/\s*{_CVV_LABEL}){{0,2}}\b{_CVV_JOIN}"
    rf"(?P<cvv>{_CVV_VALUE})|\b(?:cvv|cvc|cvn)2?(?P<glued>{_CVV_VALUE}))"  # cvv123, unspaced
)
# "the 3 digits on the back are 123", "code on the back: 123": a CVV in a text about a card.
_CVV_BACK = re.compile(
    rf"(?i)\b(?:(?:3|4|three|four)[-\s]?digits?(?:\s+(?:code|number))?|code|numbers?)\s+{_BACK}"
    rf"(?:\s*(?:[:=-]|is\b|are\b))?\s*(?P<cvv>{_CVV_VALUE})"
)
_EXPIRY = re.compile(
    rf"(?i)(?=[evg])(?<![a-z0-9])(?:{_EXPIRY_LABEL}|exp(?=\d))"  # exp0927: typed without a space
    rf"(?:\s*(?:/|&|and)\s*(?P<both>{_CVV_LABEL})\b)?{_EXPIRY_JOIN}"
    rf"(?P<exp>{_EXPIRY_VALUE})(?(both)[\s,;|/]{{1,3}}(?P<cvv>{_CVV_VALUE}))?"
)
_CARD_CUE = re.compile(  # also in identifiers: card_number, cardNumber, payment.cvc
    rf"(?i)(?<![a-z])(?:cards?|visa|master\s?card|amex|american\s+express|maestro|credit|"
    rf"debit|{_CVV_LABEL})(?-i:(?![a-z]))"
)
_SEP = r"[\s,;|]{1,3}"
_CURRENCY = r"(?i:eur|usd|gbp|chf|jpy|cad|aud|euros?|dollars?|pounds?|bucks|cents?)"
_AFTER_CARD = re.compile(
    rf"(?i){_SEP}(?:{_EXPIRY_LABEL}{_EXPIRY_JOIN})?(?P<exp>{_MONTH_YEAR})(?!\d|[/.-]\d)"
    rf"(?:{_SEP}(?:{_CVV_LABEL}\b{_CVV_JOIN})?(?P<cvv>{_CVV_VALUE}))?"
    rf"|{_SEP}(?P<cvv_first>{_CVV_VALUE}){_SEP}(?P<exp_last>{_MONTH_YEAR})(?!\d|[/.-]\d)"
    # A CVV alone ("4111 ... 1111 737"): not an amount ("250 EUR") nor the start of a
    # longer run of digit groups (a phone number: "555 123 4567").
    rf"|{_SEP}(?P<cvv_alone>{_CVV_VALUE})(?![\s,;|]*\d)(?!\s*(?:{_CURRENCY})\b|\s*%)"
)

# Document numbers without a checksum: only after the document's name.
_DOC_NUMBER = r"(?:number|no\.?|nr\.?|#|id)"
_DOCUMENT = re.compile(
    r"(?i)\b(?:(?:driver'?s?\s+licen[cs]e|driving\s+licen[cs]e|licen[cs]e\s+plate|"
    r"number\s+plate|passport|id\s+card|identity\s+card|membership|account|customer|"
    r"employee|student|medical\s+record|mrn|vin|user\s*name|user\s+id|login|"
    r"d\.?l\.?(?=\s*(?:#|:|no\b|number\b)))"  # "DL# D123-…", not "DL link"
    rf"(?:\s+{_DOC_NUMBER})?\s*(?:is|:|=|#)?"
    # Words that are also verbs or a text's topic ("handle UTF-16 files", "the license
    # Apache-2.0", "the patient 45-year-old"): only with a number word, ":" or "is" after
    # them ("policy no. AB-123456", "patient ID 55-1234"), or a handle's "@".
    r"|(?:licen[cs]e|policy|patient|handle)"
    rf"(?:\s+{_DOC_NUMBER}(?:\s*(?:is|:|=|#))?|\s*[:=#]|\s+is\b|(?<=handle)(?=\s+@)))\s*"
    r"(?P<value>@?(?=[\w.-]*\d)[A-Z0-9][\w.-]{4,19})\b"
)
# Values after those words that name no one: an SPDX licence, an encoding, an age.
_NOT_DOCUMENT = re.compile(
    r"(?i)(?:a?gpl|lgpl|g?fdl|apache|mit|0?bsd|mpl|epl|eupl|cc0|cc-by|cddl|artistic|isc|zlib|"
    r"ofl|bsl|psf|python|afl|osl|unicode|wtfpl|upl|ms-[pr]l|cecill|lppl|sspl|elastic|"
    r"postgresql|x11|curl|zpl|ecl|apsl|openssl)-[\w.+-]*"
    r"|(?:utf|ucs|iso|iec|rfc|windows|latin)-?\d[\w.-]*"
    r"|\d+-(?:year|month|week|day)s?-old"
)
# The account name in a home directory: /home/alice.wong/…, /Users/jsmith, C:\Users\Bob.
_HOME_USER = re.compile(
    r"(?:(?<![\w.-])/home/|(?<![\w.-])/Users/|(?<![\w])[A-Za-z]:\\+Users\\+)"
    r"(?P<value>[A-Za-z][\w.-]{1,31})(?=[/\\\s\"'`,;:)]|$)"
)
# Placeholders and system accounts, not people.
_GENERIC_USERS = frozenset([
    "root", "user", "username", "admin", "administrator", "ubuntu", "pi", "runner", "me",
    "you", "guest", "default", "public", "shared", "all", "users", "ec2-user", "vagrant",
    "docker", "git", "www-data", "nobody", "test", "tester", "dev", "developer", "name",
    "your-name", "yourname", "your_name", "myuser",
])  # fmt: skip
_ID_CUE = re.compile(
    r"(?i)\b(?:id|identity|identification|national|personal|pesel|cpr|bsn|nir|"
    r"personnummer|f[øo]dselsnummer|fnr|steuer-?id|idnr|tax|aadhaar|sin|cpf|hetu|dni|nie|"
    r"insurance|citizen|number|no\.?|nr\.?)\b[^\n]{0,24}$"
)


@dataclass(frozen=True, slots=True)
class _IdFormat:
    pattern: re.Pattern[str]
    is_valid: Callable[[str], bool]
    needs_cue: bool  # formats that random digits (phone numbers) also match need a cue word


def _nino_valid(value: str) -> bool:
    compact = value.replace(" ", "").upper()
    return compact[:2] not in {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


_ID_FORMATS: tuple[_IdFormat, ...] = (
    _IdFormat(re.compile(r"\b\d{8}-?[A-Z]\b"), dni.is_valid, False),
    _IdFormat(re.compile(r"\b[XYZ]-?\d{7}-?[A-Z]\b"), nie.is_valid, False),
    _IdFormat(
        re.compile(r"(?i)\b[a-z]{6}\d{2}[a-z]\d{2}[a-z]\d{3}[a-z]\b"), codicefiscale.is_valid, False
    ),
    _IdFormat(
        re.compile(r"\b[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b"),
        nir.is_valid,
        False,
    ),
    _IdFormat(
        re.compile(r"(?<![\d-])(?:\d{2})?\d{6}[-+]\d{4}(?![\d-])"), personnummer.is_valid, False
    ),
    _IdFormat(re.compile(r"(?<![\d-])\d{6}-\d{4}(?![\d-])"), cpr.is_valid, False),
    _IdFormat(re.compile(r"\b\d{6}[-+A]\d{3}[0-9A-Y]\b"), hetu.is_valid, False),
    _IdFormat(re.compile(r"(?<![\d.])\d{3}\.\d{3}\.\d{3}-\d{2}(?!\d)"), cpf.is_valid, False),
    _IdFormat(
        re.compile(r"(?i)\b[a-ceghj-pr-tw-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[a-d]\b"), _nino_valid, False
    ),
    # China's resident ID: a birth date and an ISO 7064 check character make it specific.
    _IdFormat(re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])"), ric.is_valid, False),
    _IdFormat(re.compile(r"(?<!\d)\d{11}(?!\d)"), fodselsnummer.is_valid, True),
    _IdFormat(re.compile(r"(?<!\d)\d{11}(?!\d)"), pesel.is_valid, True),
    _IdFormat(re.compile(r"(?<!\d)\d{11}(?!\d)"), idnr.is_valid, True),
    _IdFormat(re.compile(r"(?<!\d)\d{9}(?!\d)"), bsn.is_valid, True),
    _IdFormat(re.compile(r"(?<![\d-])\d{3}[- ]\d{3}[- ]\d{3}(?![\d-])"), sin.is_valid, True),
    _IdFormat(re.compile(r"(?<!\d)\d{4} ?\d{4} ?\d{4}(?!\d)"), aadhaar.is_valid, True),
)


def _strip_trailing(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1] in _TRAILING:
        end -= 1
    return end


def _emails(text: str) -> Iterator[Span]:
    if "@" in text:
        for m in _EMAIL.finditer(text):
            yield Span(m.start(), m.end(), EMAIL, "email")
    for at in _SPELLED_AT.finditer(text):
        domain = _DOMAIN_AFTER.match(text, at.end())  # first: rarely there in prose
        if domain is None:
            continue
        local = _LOCAL_BEFORE.search(text, max(0, at.start() - 100), at.start())
        if local is None:
            continue
        value = text[local.start("local") : domain.end()]
        if _EMAIL.fullmatch(value):
            continue  # a plain address: found above
        if at.group("word_at") and not (
            _ADDRESS_LIKE.search(local.group("local"))
            or _MAIL_PROVIDER.match(domain.group("domain"))
            or _spelled_country_domain(domain)
        ):
            continue  # "look at this dot com": a bare " at " needs an address-like name
        yield Span(local.start("local"), domain.end(), EMAIL, "spelled-email")


def _spelled_country_domain(domain: re.Match[str]) -> bool:
    """Whether a spelled-out domain ends in a spelled dot and a country's TLD that is no
    English word ("company dot sg", "acme dot co dot uk"), which prose does not write
    ("look at this dot com" is left)."""
    tld = domain.group("tld").lower()
    return (
        tld in _CCTLDS
        and tld not in _WORD_CCTLDS
        and _WORD_DOT.search(domain.group("domain")) is not None
    )


def _urls(text: str) -> Iterator[Span]:
    for m in _URL.finditer(text):
        end = _strip_trailing(text, m.start(), m.end())
        if end - m.start() > 4:
            yield Span(m.start(), end, URL, "url")
    if "." in text:
        for m in _DOMAIN.finditer(text):
            if m.group("path") is None and not _bare_domain(text, m):
                continue
            end = _strip_trailing(text, m.start(), m.end())
            if end > m.start():
                yield Span(m.start(), end, URL, "domain")


def _bare_domain(text: str, m: re.Match[str]) -> bool:
    """Whether `m`, a name.tld with no scheme, "www." or path, is a domain, not a sentence
    run together ("running late.Is that ok?", "the help.It worked") nor code ("df.info()",
    "self.app.run()", "ASP.NET", "Socket.IO")."""
    host, tld = m.group("host"), m.group("tld")
    if _CODE_AFTER.match(text, m.end()):
        return False
    if tld[0].isupper() and host[-len(tld) - 2].islower():
        return False  # a capitalised word after a lower-case one: a sentence break
    return not (tld.lower() in _WORD_TLDS and host.count(".") == 1)


def _ips(text: str) -> Iterator[Span]:
    for m in _IPV4.finditer(text):
        if _is_ip(m.group()) and not _version_pin(text, m.start()):
            yield Span(m.start(), m.end(), IP, "ipv4")
    if "::" in text or text.count(":") >= 3:
        for m in _IPV6.finditer(text):
            if (
                m.group().count(":") >= 2
                and _is_ip(m.group())
                and sum(c.isalnum() for c in m.group()) >= 3
            ):
                yield Span(m.start(), m.end(), IP, "ipv6")


def _version_pin(text: str, start: int) -> bool:
    """Whether the dotted quad at `start` is a pinned version ("package==1.2.3.4")."""
    pin = _VERSION_PIN.search(text, max(0, start - 80), start)
    return pin is not None and _ADDRESS_NAME.search(pin.group("name") or "") is None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return False
    return True


def _cards(text: str) -> Iterator[Span]:
    for m in _CARD.finditer(text):
        run = _DigitRun(text, m)
        i, card_before = 0, False
        while i < len(run.groups):
            found = None
            if i == 0 or card_before or run.loose[i - 1]:
                found = _card_at(run, i)
            card_before = found is not None
            if found is None:
                i += 1
                continue
            start, end, i = found
            yield Span(start, end, CARD, "luhn")
            yield from _after_card(text, end)


class _DigitRun:
    """A run of digit groups that may hold card numbers: a card may start at its first
    group, after a loose gap (a line break, a tab: the next field; several spaces) or right
    after a card found in it, and end at any group (a card followed by an expiry or CVV,
    "4111 ... 1111 05/27"). The cues are looked for once, not for every candidate: a run
    may cover a whole table."""

    __slots__ = ("_cue_ends", "_cue_starts", "_header", "gaps", "groups", "loose", "spans",
                 "start", "text")  # fmt: skip

    def __init__(self, text: str, m: re.Match[str]) -> None:
        self.text, self.start = text, m.start()
        offset = m.start()
        self.spans = [(offset + g.start(), offset + g.end()) for g in _DIGIT_GROUP.finditer(m[0])]
        self.groups = [text[a:b] for a, b in self.spans]
        self.gaps = [text[a[1] : b[0]] for a, b in zip(self.spans, self.spans[1:], strict=False)]
        self.loose = [_LOOSE_GAP.search(gap) is not None for gap in self.gaps]
        self._cue_starts: list[int] | None = None
        self._cue_ends: list[int] = []
        self._header: bool | None = None

    def _cues(self) -> list[int]:
        if self._cue_starts is None:
            region = (max(0, self.start - 60), self.spans[-1][1])
            found = list(_CARD_CUE.finditer(self.text, *region))
            self._cue_starts = [c.start() for c in found]
            self._cue_ends = [c.end() for c in found]
        return self._cue_starts

    def any_cue(self) -> bool:
        """Whether a card word is near the run at all (in it, before it or in a header)."""
        return bool(self._cues()) or self.header()

    def cued(self, start: int) -> bool:
        """Whether a card word lies within the 60 characters before `start`."""
        i = bisect.bisect_left(self._cues(), start - 60)
        return i < len(self._cues()) and self._cue_ends[i] <= start

    def header(self) -> bool:
        """Whether the first line of the block of lines the run starts in (a table's
        header) names a card."""
        if self._header is None:
            line_start = self.text.rfind("\n", 0, self.start) + 1
            first = _block_first_line(self.text, line_start)
            self._header = _CARD_CUE.search(first) is not None
        return self._header


def _card_at(run: _DigitRun, i: int) -> tuple[int, int, int] | None:
    """The longest card number in `run` that starts at its group `i`: its span and the
    index of the group after it, or None."""
    total = n = 0
    for group in run.groups[i : i + 19]:  # 19 digits at most
        if total + len(group) > 19:
            break
        total += len(group)
        n += 1
    start = run.spans[i][0]
    # With no card word near, only a printed grouping passes: 4 digits first, or one group.
    one_group = len(run.groups[i]) != 4 and not run.any_cue()
    for j in range(i + n - 1, i - 1, -1):
        if total < 12:
            break
        if j == i or not one_group:
            groups = run.groups[i : j + 1]
            digits = "".join(groups)
            if (
                len(set(digits)) > 1
                and _card_grouped(run, start, groups, run.gaps[i:j])
                and luhn.is_valid(digits)
            ):
                return start, run.spans[j][1], j + 1
        total -= len(run.groups[j])
    return None


def _card_grouped(run: _DigitRun, start: int, groups: list[str], gaps: list[str]) -> bool:
    """Grouped as cards are printed (4-4-4-4, the last group shorter; Amex 4-6-5, Diners
    4-6-4) or unbroken; other groupings only in a text about a card (a card word in the 60
    characters before). One in ten digit runs passes Luhn by chance, and "160 240 320 640"
    or "2 3 5 7 11 13 17 19 23" are lists. Split by a tab or a line break (a table's fields,
    lines of figures) only in a text about a card, or in a table whose header names one; by
    runs of spaces or a spaced hyphen, as printed if the gaps are alike ("4532  0151  1283
    0366"); never a run of years without a cue."""
    if len(groups) == 1:
        return True
    tab = any("\t" in gap for gap in gaps)
    if tab and len({gap for gap in gaps if "\n" not in gap}) > 1:
        return False  # "42\t4532 0151 …": a table's fields, the card one of them
    if tab or any("\n" in gap for gap in gaps):
        return run.cued(start) or run.header()
    sizes = [len(g) for g in groups]
    printed = (
        not all(_YEAR_GROUP.fullmatch(g) for g in groups)
        and not (len(set(gaps)) > 1 and any(len(gap) > 1 for gap in gaps))
        and (
            (sizes[:2] == [4, 6] and len(sizes) == 3 and sizes[2] in (4, 5))
            or (all(n == 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4)
        )
    )
    return printed or run.cued(start)


def _after_card(text: str, end: int) -> Iterator[Span]:
    """The expiry and CVV printed right after a card number that ends at `end`."""
    m = _AFTER_CARD.match(text, end)
    if m is None:
        return
    for group, value in m.groupdict().items():
        if value is not None:
            label = CARD_EXPIRY if group.startswith("exp") else CARD_CVV
            yield Span(m.start(group), m.end(group), label, "after-card")


def _card_security(text: str) -> Iterator[Span]:
    """Labelled CVVs anywhere in `text`; labelled expiry dates, and the digits said to be "on
    the back", if it is about a card."""
    for m in _CVV.finditer(text):
        group = "cvv" if m.group("cvv") is not None else "glued"
        yield Span(m.start(group), m.end(group), CARD_CVV, "cvv")
    expiries = list(_EXPIRY.finditer(text))
    backs = list(_CVV_BACK.finditer(text))
    if not (expiries or backs) or not (
        _CARD_CUE.search(text) or any(s.label == CARD for s in _cards(text))
    ):
        return
    for m in backs:
        yield Span(m.start("cvv"), m.end("cvv"), CARD_CVV, "cvv")
    for m in expiries:
        yield Span(m.start("exp"), m.end("exp"), CARD_EXPIRY, "expiry")
        if m.group("cvv") is not None:
            yield Span(m.start("cvv"), m.end("cvv"), CARD_CVV, "cvv")


def _ibans(text: str) -> Iterator[Span]:
    for pattern in (_IBAN_COMPACT, _IBAN_SPACED):
        for m in pattern.finditer(text):
            value = m.group()
            # A spaced IBAN may have swallowed a following word: drop groups until valid.
            while value:
                if std_iban.is_valid(_DIGIT_SPACE.sub("", value)):
                    yield Span(m.start(), m.start() + len(value), IBAN, "iban")
                    break
                shorter = _LAST_IBAN_GROUP.sub("", value)
                if shorter == value:
                    break
                value = shorter
    for m in _IBAN_LOOSE.finditer(text):
        end = m.end()
        while end - m.start() >= 15:
            value = text[m.start() : end]
            if value[-1].isalnum() and std_iban.is_valid(value.replace(".", "")):
                yield Span(m.start(), end, IBAN, "iban")
                break
            end -= 1


def _ssns(text: str) -> Iterator[Span]:
    for m in _SSN.finditer(text):
        printed = m.group("a") == m.group("b") and m.group("a") in ("-", " ")
        if (printed or _ssn_cued(text, m.start(), m.end())) and us_ssn.is_valid(
            _DIGIT_GAP.sub("", m.group())
        ):
            yield Span(m.start(), m.end(), SSN, "us-ssn")
    for m in _SSN_BARE.finditer(text):
        if _ssn_cued(text, m.start(), m.end()) and us_ssn.is_valid(m.group()):
            yield Span(m.start(), m.end(), SSN, "us-ssn")


def _ssn_cued(text: str, start: int, end: int) -> bool:
    """An SSN word just before `text[start:end]`, or the column it is in headed by one."""
    return bool(
        _SSN_CUE.search(text, max(0, start - 30), start)
        or _SSN_COLUMN.search(csv_header(text, start, end) or "")
    )


_SSN_COLUMN = re.compile(r"(?i)^\W*(?:ssn|social[\s_-]*security(?:[\s_-]*(?:number|no))?)\W*$")
_DELIMITERS = ",;\t|"


def csv_header(text: str, start: int, end: int) -> str | None:
    """The header of the column `text[start:end]` is a field of, in a delimited table whose
    first row names the columns ("name,ssn,dob" above "Jane Doe,123456789,1980-01-02"), or
    None. The table is the block of lines around it up to a blank line; the delimiter is
    the one that ends or starts the field."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start : len(text) if line_end < 0 else line_end]
    before, after = text[line_start:start], text[end : end + 1]
    delimiter = next(
        (d for d in _DELIMITERS if before.endswith(d) or after == d), None
    )
    if delimiter is None or line_start == 0:
        return None
    header = _block_first_line(text, line_start).split(delimiter)
    index = before.count(delimiter)
    if len(header) != line.count(delimiter) + 1 or index >= len(header):
        return None
    return header[index]


def _national_ids(text: str) -> Iterator[Span]:
    for fmt in _ID_FORMATS:
        for m in fmt.pattern.finditer(text):
            if fmt.needs_cue and not _ID_CUE.search(text, max(0, m.start() - 40), m.start()):
                continue
            try:
                valid = fmt.is_valid(m.group())
            except Exception:  # a validator must never break redaction
                valid = False
            if valid:
                yield Span(m.start(), m.end(), NATIONAL_ID, "stdnum")


def _block_first_line(text: str, end: int) -> str:
    """The first line of the last blank-line-separated block of `text[:end]` (trailing line
    ends ignored): `text[:end].rstrip("\n").split("\n\n")[-1].split("\n")[0]`, found from
    `end` backwards, so it costs the block, not the text before it (a pasted table has one
    candidate per row)."""
    while end > 0 and text[end - 1] == "\n":
        end -= 1
    start = 0
    pair = text.rfind("\n\n", 0, end)
    if pair >= 0:  # the run of line ends holding it; split takes them two at a time
        run_end, run_start = pair + 2, pair
        while run_start > 0 and text[run_start - 1] == "\n":
            run_start -= 1
        start = run_start + (run_end - run_start) // 2 * 2
    stop = text.find("\n", start, end)
    return text[start : end if stop < 0 else stop]


def _home_users(text: str) -> Iterator[Span]:
    for m in _HOME_USER.finditer(text):
        if m.group("value").lower() not in _GENERIC_USERS:
            yield Span(m.start("value"), m.end("value"), NATIONAL_ID, "home-dir")


def _documents(text: str) -> Iterator[Span]:
    for m in _DOCUMENT.finditer(text):
        if not _NOT_DOCUMENT.fullmatch(m.group("value")):
            yield Span(m.start("value"), m.end("value"), NATIONAL_ID, "document")


def _dates(text: str) -> Iterator[Span]:
    for pattern in _DATES:
        for m in pattern.finditer(text):
            yield Span(m.start(), m.end(), DATE, "date")
    for m in _BIRTH_DATE.finditer(text):
        yield Span(m.start("date"), m.end("date"), DATE, "birth-date")


class StructuredDetector:
    """E-mail, URL/domain, IP, card (and its CVV and expiry), IBAN, SSN, national ID and date
    detection. Card expiry dates are card data, found whatever `dates` says."""

    def __init__(self, *, dates: bool = True) -> None:
        self._finders: list[Callable[[str], Iterator[Span]]] = [
            _emails, _urls, _ips, _cards, _card_security, _ibans, _ssns, _national_ids,
            _documents, _home_users,
        ]  # fmt: skip
        if dates:
            self._finders.append(_dates)

    def detect(self, text: str) -> list[Span]:
        """Every validated structured value in `text` (may overlap; the filter resolves)."""
        found: list[Span] = []
        for finder in self._finders:
            found.extend(finder(text))
        return found
