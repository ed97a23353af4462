"""People's names without a neural model: name lists, capitalisation and context cues.

A run of capitalised words ("Krisztián Szöllösy", "John A. Leiva") is a person when one of
its words is a known first name or surname, or when a cue stands next to it: a title
("Mr.", "Dr."), a naming phrase ("my name is", "called", "Name:"), the key of a record
(`"name": "`, `first_name=`, `<fullName>`) or a column of names in a delimited table (under
`name` beside a column of people such as `age` or `email`, or under `first_name`, `Full
Name`), a greeting ("Dear", "Hi"), a relation ("my daughter", "beneficiary"), or a speech
verb after it ("said").
Lower-case names ("patricia desrosiers") need a first name followed by another name, or a
naming cue. Words that are common English words ("Will", "Rich", "Page") count as weak
evidence; function words, days and months never do. In upper or lower case, "DOE, JOHN"
is one name, and after a naming label ("name: okafor chidi") a word the lists do not hold
continues it.

Weak evidence (one word, with no title, greeting, sign-off or naming phrase before it and
no surname after it) is overruled by the "not a person" list (`not_a_person`, shared with
the spaCy detector): software, dishes, eponymous algorithms, cooking words, non-English
function words and form labels, some only in context ("Ruby" near "code"); and by the shape
of the text around it: a literal or an identifier in a line of code (`return True`, `x =
Max(a, b)`), a verb that opens an instruction ("Mark the correct answer", "Bill the client"),
a greeting ("Good evening").
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass

from runtime.privacy.entities import LOCATION, ORG, PERSON, Span
from runtime.privacy.gazetteer import NameLists, NotPeople, fold, load, load_not_people, words
from runtime.privacy.street_words import STRONG_SUFFIX

_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*\.?")
_PARTICLES = words(
    """
    van von der den de del della di da dos das du la le ten ter bin ibn al el y zu
    """
)
# Words that are never (part of) a name, whatever the lists say ("Can", "Will" are names).
NOT_NAMES = words(
    """
    i me my we our you your he him his she her they them their it its this that these those
    who what which where when why how yes no not and or but if so the a an of in on at to
    for from by with as is am are was were be been please thanks thank hello hi hey dear ok
    okay sorry monday tuesday wednesday thursday friday saturday sunday today january
    february march april may june july august september october november december mr mrs ms
    miss mx dr prof sir madam mme mlle herr frau jr sr st mt had has have do does did done
    will would can could should shall might must get got gets said says say tell told ask
    asked lives lived live living went go goes come came see saw make made take took give
    gave given want wants need needs like likes know knew think thought just also only very
    really then there here now all any some every each both one two three than into onto
    over under after before about again still even never always ever not don't i'm i've i'd
    i'll it's that's there's what's let's english french german spanish italian dutch polish
    swedish norwegian danish finnish russian chinese japanese korean american british
    european african asian arabic greek turkish portuguese czech hungarian true false none
    null undefined
    """
)
_TITLE = (
    r"(?:mr|mrs|ms|miss|mx|dr|prof|professor|sir|dame|madam|mme|mlle|herr|frau|señora?|"
    r"sra?|signora?|capt|captain|lt|col|gen|rev|fr|sgt|judge|president|senator|mayor)\.?"
)
# Titles that start a new name inside a run of capitalised words ("Patient Mr. O'Neil"):
# abbreviations and forms of address only, not words that are also names ("Judge", "Dame").
_RUN_TITLES = frozenset(
    fold(w)
    for w in words(
        """
        mr mrs ms miss mx dr prof professor sir madam mme mlle herr frau señor señora sra
        signor signora capt captain rev sgt
        """
    )
)
_RELATION = (
    r"(?:son|daughter|wife|husband|mother|father|mom|mum|dad|brother|sister|aunt|uncle|"
    r"cousin|niece|nephew|friend|boss|colleague|partner|kid|child|grandfather|grandmother|"
    r"grandson|granddaughter|guardian|beneficiary|fianc[eé]e?|boyfriend|girlfriend|"
    r"neighbou?r|roommate|landlord|tenant|lawyer|doctor|nurse|teacher|student|patient|"
    r"client|customer|employee|manager|assistant|ceo|cto|cfo|founder|director|producer|"
    r"singer|songwriter|author|writer|actor|actress|player|coach|commenter|member)"
)
# The key or column of a record that holds a person's name, qualified: `first_name`,
# `fullName`, `customer_name`, `<LastName>`, `"patient full name"`.
_NAME_QUALIFIER = (
    r"(?:full|first|last|given|family|middle|maiden|legal|sur|customer|patient|client|"
    r"contact|employee|guest|passenger|applicant|holder|account[ _-]?holder|card[ _-]?holder)"
)
_QUALIFIED_NAME = rf"(?:{_NAME_QUALIFIER}[ _-]?){{1,2}}name"
# As a key (`first_name: `, `"fullName": "`, `'last_name' => '`) or an XML element.
_QUALIFIED_KEY = rf"\b{_QUALIFIED_NAME}[\"'`]?\s*(?:[:=]|=>)\s*[\"'`]?|<{_QUALIFIED_NAME}>"
# A plain `name` key, quoted (`"name": "`, `'name': '`) or an element (`<name>`): a cue, not
# a strong one, since records of things have names too (`{"name": "Grafana"}`).
_PLAIN_KEY = r"[\"'`]name[\"'`]\s*(?:[:=]|=>)\s*[\"'`]?|<name>"
# Searched apart from the cues below, and only where "name" occurs: they cost a search at
# every position of the text before each candidate.
_QUALIFIED_KEY_CUE = re.compile(rf"(?i)(?:{_QUALIFIED_KEY})\s*$")
_KEY_CUE = re.compile(rf"(?i)(?:{_QUALIFIED_KEY}|{_PLAIN_KEY})\s*$")
# A cue that makes the next capitalised (or any non-common) word a name.
_CUE_BEFORE = re.compile(
    rf"(?i)(?:\b{_TITLE}"
    r"|\b(?:my|his|her|their|your|our|the)\s+(?:full\s+|real\s+|maiden\s+|last\s+|first\s+|"
    r"middle\s+|family\s+|nick|sur|user)?name\s+(?:is|was|=)"
    r"|\bname(?:\s+on\s+the\s+\w+)?\s*(?:is|was|:|=|\?)"
    r"|\b(?:i\s+am|i'm|this\s+is|it'?s|called|named|call\s+me|calls\s+me|known\s+as|aka|"
    r"dear|hi|hello|hey|thanks|thank\s+you|cheers|regards|sincerely|signed|attn|cc|"
    r"under|beneficiary|guardian|add|meet|met|ask|tell|contact|email|invite|follow\s+up\s+with|"
    r"talk\s+to|speak\s+to|spoke\s+to|spoke\s+with|married|marry|user|bot|from|by|with|"
    r"and|or|to|of|about|for|said|says|heard|version|novel|song|fan|directed\s+by|"
    r"starring|featuring|feat\.?)"
    rf"|\b(?:my|his|her|their|your|our|a|the)\s+{_RELATION}s?(?:'s)?"
    r")[\s:,>\"“]*$"
)
# Cues that are not specific (by, with, and, from, ...): they only back a run of two or
# more words, or a single word that is itself in the name lists.
_WEAK_CUE = re.compile(
    r"(?i)\b(?:from|by|with|and|or|to|of|about|for|heard|version|novel|song|fan|"
    r"under|add|meet|met|ask|tell|contact|email|invite|user|bot)[\s:,>\"“]*$"
)
_CUE_AFTER = re.compile(
    r"(?i)^(?:\s*,?\s+(?:said|says|wrote|asked|replied|explained|told|shouted|smiled|"
    r"laughed|added|noted|lives|lived|is\s+from|was\s+born|listed|spent|began|had\s+given|"
    r"points\s+out|will\s+be|is\s+(?:a|an|very|the)\s)"
    r"|'s\s+(?:" + _RELATION + r"|killers?|address|phone|email|account|song|novel|kid)"
    r"|\s*:\s*[\"“]|,\s+(?:who|whose|the)\b"
    r"|,\s+(?:can|could|would|will|please|do|did|are|have|thanks|thank|how|where|what)\b)"
)
# Strong cues: a title, a naming phrase, a greeting or sign-off, a relation ("my sister"),
# and after the name a speech verb or a relation ("Ruby's husband"). Only these overrule the
# "not a person" list.
_STRONG_BEFORE = re.compile(
    rf"(?i)(?:\b{_TITLE}"
    r"|\b(?:my|his|her|their|your|our|the)\s+(?:full\s+|real\s+|maiden\s+|last\s+|first\s+|"
    r"middle\s+|family\s+|nick|sur|user)?name\s+(?:is|was|=)"
    r"|\bname(?:\s+on\s+the\s+\w+)?\s*(?:is|was|:|=|\?)"
    r"|\b(?:i\s+am|i'm|this\s+is|called|named|call\s+me|calls\s+me|known\s+as|aka|dear|hi|"
    r"hello|hey|thanks|thank\s+you|cheers|regards|sincerely|signed|attn|cc)"
    rf"|\b(?:my|his|her|their|your|our|a|the)\s+{_RELATION}s?(?:'s)?"
    r")[\s:,>\"“]*$"
)
_STRONG_AFTER = re.compile(
    r"(?i)^(?:\s*,?\s+(?:said|says|wrote|asked|replied|explained|told|shouted|smiled|laughed)\b"
    r"|'s\s+" + _RELATION + r"s?\b)"
)
# A vocative ("Julia, can you ...") is strong at the start of a sentence only: "In Excel,
# how do I" is no address.
_VOCATIVE = re.compile(r"(?i)^,\s+(?:can|could|would|will|please|do|did|thanks|thank)\b")
# Labels that name the value after them ("name: okafor chidi"): there, in upper or lower
# case, a word the lists do not hold continues the name. Not "called", "known as": in prose
# they name things ("a process known as myogenesis").
_NAMING = re.compile(
    r"(?i)(?:\b(?:my|his|her|their|your|our|the)\s+(?:full\s+|real\s+|maiden\s+|last\s+|"
    r"first\s+|middle\s+|family\s+|sur)?name\s+(?:is|was|=)"
    r"|\b(?:full\s+|last\s+|first\s+|family\s+|sur|given\s+)?name\s*(?::|=)"
    r"|\b(?:patient|client|customer|employee|beneficiary|guardian|applicant|holder|insured|"
    r"member)\s*:)[\s\"“]*$"
)
# "The battle of Hastings": a place, whatever the name lists say.
_PLACE_OF = re.compile(
    r"(?i)\b(?:battle|battles|siege|treaty|congress|council|edict|duke|duchess|earl|marquess|"
    r"archbishop|bishop)\s+of\s+$"
)
_SENTENCE_BREAK = re.compile(r"[.!?](?=\s)|\n")
_NUMBER_BEFORE = re.compile(r"\d[.,]?\s{0,2}$")
_NUMBER_AFTER = re.compile(r"^[\s,.]{0,2}\d")
_PLAIN = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
_COMPANY = words(
    """
    inc ltd llc llp plc gmbh ag sa sas bv nv ab oy oyj asa corp corporation co company group
    holdings partners associates software technologies systems labs bank
    """
)
# Words that end the name of an organisation that is not a company.
_ORG_ENDS = words(
    """
    agency association institute foundation university college academy hospital clinic
    council committee ministry society museum
    """
)
# Words that end a street's name ("Main Street"); run through `_judge` alone, the suffix
# (also a surname) was taken for a person.
_STREET_ENDS = STRONG_SUFFIX - {"st", "str", "dr", "u", "utca", "pl", "ct", "ln", "rd"}
_SENTENCE_END = re.compile(r"(?:^|[.!?;\n]|[.!?][\"”')\]]|\n\s*[>?#*-]+)\s*$")
# The header of a column of names in a delimited table ("name,age,role", "First Name;...").
_NAME_COLUMN = re.compile(rf"(?i)[\s\"'`]*(?:(?P<qualified>{_QUALIFIED_NAME})|names?)[\s\"'`]*")
_FIELD_DELIMITERS = ",;\t|"
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")
# Columns that only a table of people has beside a plain `name` column.
_PERSON_COLUMN = re.compile(
    r"(?i)\b(?:age|e-?mail|phone|mobile|tel|cell|dob|birth\w*|born|gender|sex|address|"
    r"street|city|zip|postcode|ssn|role|title|department|dept|salary|manager|employee|patient|"
    r"customer|member|student|grade|class|nationality|occupation|job|position|team|"
    r"username|user|contact|relation\w*|surname)\b"
)
# Literals of programming languages: never a person, whatever the lists hold ("True").
_CODE_LITERALS = frozenset(
    ["True", "False", "None", "Null", "NULL", "NaN", "Nil", "Infinity", "TRUE", "FALSE"]
)
# A line of code, and a word in it that is an identifier, not a person: after `=`, `(`, `[`,
# `,`, `:` or a leading `return`, before `)`, `]`, `}`, `,`, `;`, `(` or the line end.
_CODE_LINE = re.compile(
    r"\w\(|[=!<>]=|\w=[\w\"'(\[]|;\s*$|[{}]"
    r"|^\s*(?:return|yield|def|lambda|assert|const|let|var|elif)\b"
)
_CODE_BEFORE = re.compile(r"(?:[=(\[,{:]|^\s*(?:return|yield))\s*$")
_CODE_AFTER = re.compile(r"\s*(?:[)\]};,(:]|[=!<>]=|$)")
# Verbs that are also names, at the start of an instruction before their object: "Mark the
# correct answer", "Bill the client", "Sue them", "Grant access". Not "Jack the Ripper".
# Only verbs common in instructions: "Carol the ..." or "Bob the ..." are more likely people.
_IMPERATIVES = words("mark bill sue will grant pat rob drew chase jack skip page trace echo win")
_OBJECT_AFTER = re.compile(
    r"(?i)\s+(?:(?P<the>the)|an?|this|that|these|those|your|my|our|his|her|their|its|all|"
    r"each|every|any|some|both|no|it|them|him|me|us|as|up|down|off|out|access|"
    r"permissions?|privileges|rights)\b(?P<next>\s+\w)?"
)
_CLAUSE_START = re.compile(r"(?:^|[.!?;:\n]|[.!?][\"”')\]])\s*(?:[-*•>#]+\s*|\d+[.)]\s*|[\"“'(])?$")
# Greetings and wishes that hold a word of the name lists ("Good" is a surname).
_GREETINGS = frozenset(
    ["good morning", "good evening", "good afternoon", "good night", "good day", "good luck"]
) | {"merry christmas"}


@dataclass(frozen=True, slots=True)
class _Token:
    start: int
    end: int  # excludes a trailing period unless the token is an initial or a title
    word: str
    dotted: bool


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    for m in _WORD.finditer(text):
        raw = m.group()
        dotted = raw.endswith(".")
        word = raw[:-1] if dotted else raw
        if len(word) > 3 and word[-2:].casefold() in ("'s", "’s"):
            word, dotted = word[:-2], False  # "Arne's": the name is "Arne"
        keep_dot = dotted and len(word) == 1
        out.append(_Token(m.start(), m.start() + len(word) + keep_dot, word, dotted))
    return out


class NameDetector:
    """Finds people's names using name lists and context; no model, ~1 ms per KB."""

    def __init__(self, lists: NameLists | None = None, not_people: NotPeople | None = None) -> None:
        self._lists = lists if lists is not None else load()
        self._not_people = not_people if not_people is not None else load_not_people()

    @property
    def lists(self) -> NameLists:
        """The name and English word lists it judges by."""
        return self._lists

    def detect(self, text: str) -> list[Span]:
        """Spans of `text` that are people's names."""
        tokens = _tokens(text)
        tables = _Tables(text)
        spans: list[Span] = []
        i = 0
        while i < len(tokens):
            inverted = self._inverted(text, tokens, i, tables)
            if inverted is not None:
                spans.append(inverted)
                while i < len(tokens) and tokens[i].start < inverted.end:
                    i += 1
                continue
            run = self._run(text, tokens, i, tables)
            if not run:
                i += 1
                continue
            span = self._judge(text, run, tables)
            if span is not None:
                spans.append(span)
            i += len(run)
        return spans

    def _kind(self, tok: _Token) -> str:
        w = tok.word
        if len(w) == 1:
            return "initial" if w.isupper() else "other"
        if w.isupper():
            return "upper"
        if w[0].isupper():
            return "title"
        if fold(w) in _PARTICLES:
            return "particle"
        return "lower"

    def _run(self, text: str, tokens: list[_Token], i: int, tables: _Tables) -> list[_Token]:
        """The longest run of name-shaped tokens from `tokens[i]`, one case style, one line."""
        first = self._kind(tokens[i])
        if first in ("other", "particle"):
            return []
        style = "title" if first == "initial" else first
        if style in ("lower", "upper"):
            return self._caseless_run(text, tokens, i, tables)
        run = [tokens[i]]
        # islice, not tokens[i + 1 :]: a copy of the rest per run was quadratic in the text
        for tok in itertools.islice(tokens, i + 1, None):
            gap = text[run[-1].end : tok.start]
            if gap not in (" ", ". ", "  ") or (gap == ". " and not run[-1].dotted):
                break
            kind = self._kind(tok)
            if fold(tok.word) in _RUN_TITLES:
                break  # the title is the cue for the name after it, judged as its own run
            if kind == style or (style == "title" and kind in ("initial", "particle")):
                run.append(tok)
            else:
                break
            if len(run) == 5:
                break
        while run and self._kind(run[-1]) == "particle":
            run.pop()
        return run

    def _caseless_run(
        self, text: str, tokens: list[_Token], i: int, tables: _Tables
    ) -> list[_Token]:
        """In lower- or upper-case text only name-list words can start a run."""
        lists = self._lists
        head = tokens[i]
        style = self._kind(head)
        if (
            lists.is_common(head.word)
            or fold(head.word) in NOT_NAMES
            or self._not_people.is_listed(head.word)  # "dot org", "guten morgen"
        ):
            return [head]  # judged (and rejected) on its own
        # After a naming label a word the lists do not hold is a name too ("okafor chidi").
        named = _naming_label(text, head.start, tables)
        if not (lists.is_name(head.word) or named and _unlisted(lists, head.word)):
            return [head]
        run = [head]
        for tok in tokens[i + 1 : i + 3]:
            if text[run[-1].end : tok.start] != " " or self._kind(tok) != style:
                break
            key = fold(tok.word)
            if key in NOT_NAMES or lists.is_common(tok.word) or len(tok.word) < 3:
                break
            if not lists.is_name(tok.word) and not (
                (len(run) == 1 and lists.is_first(head.word) or named)
                and not lists.is_english(tok.word)
            ):
                break  # "patricia desrosiers", not "grace period" nor "max speed"
            run.append(tok)
        return run

    def _inverted(self, text: str, tokens: list[_Token], i: int, tables: _Tables) -> Span | None:
        """A surname, a comma and given names in the same case, as forms and records write
        them: "DOE, JOHN", or "doe, john" after a naming label."""
        if i + 1 >= len(tokens):
            return None
        last, given = tokens[i], tokens[i + 1]
        style = self._kind(last)
        if style not in ("upper", "lower") or self._kind(given) != style:
            return None
        if text[last.end : given.start] != ", ":
            return None
        lists = self._lists
        if not (
            lists.is_name(last.word)
            and lists.is_first(given.word)
            and not any(lists.is_common(t.word) or fold(t.word) in NOT_NAMES for t in (last, given))
        ):
            return None
        if style == "lower" and not _naming_label(text, last.start, tables):
            return None  # "smith, john" in running lower-case text may be a list
        run = self._caseless_run(text, tokens, i + 1, tables)
        return Span(last.start, run[-1].end, PERSON, "names-inverted")

    def _judge(self, text: str, run: list[_Token], tables: _Tables) -> Span | None:
        lists = self._lists
        for k in range(len(run)):  # "Visit New Zealand": a place, whatever precedes it
            if lists.is_place(" ".join(t.word for t in run[k:])):
                return Span(run[k].start, run[-1].end, LOCATION, "places")
        if (
            len(run) > 1
            and fold(run[-1].word) in _STREET_ENDS
            and not lists.is_first(run[0].word)
        ):
            return None  # "Main Street", "Baker Street": a street; "Lois Lane" is a person
        # Leading/trailing function words and plain common words ("Call", "Thanks") are
        # context, not part of the name.
        while run and (fold(run[0].word) in NOT_NAMES or _plain_word(lists, run[0].word)):
            run = run[1:]
        if len(run) > 1 and fold(run[-1].word) in _COMPANY:
            return Span(run[0].start, run[-1].end, ORG, "company-suffix")
        if len(run) > 1 and fold(run[-1].word) in _ORG_ENDS:
            return None  # "Kroll Bond Ratings Agency": named after people, not a person
        while run and (fold(run[-1].word) in NOT_NAMES or _plain_word(lists, run[-1].word)):
            if len(run) > 2 and _given_name_last(lists, run):
                break  # "Nguyễn Văn An": a listed given name, not the article
            run = run[:-1]
        if not run:
            return None
        span = self._person(text, run, tables)
        if span is None or not_a_person(text, span.start, span.end, self._not_people, tables):
            return None
        return span

    def _person(self, text: str, run: list[_Token], tables: _Tables) -> Span | None:
        """`run` (trimmed of context words) judged as a person."""
        lists = self._lists
        start, end = run[0].start, run[-1].end
        words = [t.word for t in run if len(t.word) > 1 and fold(t.word) not in _PARTICLES]
        if not words:
            return None
        strong = sum(lists.is_name(w) and not lists.is_common(w) for w in words)
        weak = sum(lists.is_name(w) and lists.is_common(w) for w in words)
        unknown = sum(not lists.is_name(w) for w in words)
        common_unknown = sum(lists.is_common(w) and not lists.is_name(w) for w in words)
        before = text[max(0, start - 60) : start]
        after = text[end : end + 40]
        cue = bool(
            _CUE_BEFORE.search(before) or _CUE_AFTER.match(after) or _key_cue(_KEY_CUE, before)
        )
        weak_cue = cue and bool(_WEAK_CUE.search(before)) and not _CUE_AFTER.match(after)
        if (weak_cue or not cue) and tables.column(start) is not None:
            # a field under a column of names ("name,age" above "Jane Roe,42")
            cue, weak_cue = True, False
        sentence_start = bool(_SENTENCE_END.search(before))
        style = self._kind(run[0])
        if common_unknown:
            return None  # "Weekly", "Software": a capitalised common word is not a name part
        if style in ("lower", "upper"):
            # Case carries no signal: need a first name plus another name, or a cue.
            has_first = lists.is_first(words[0]) and not lists.is_common(words[0])
            if (has_first and len(words) >= 2) or (cue and not weak_cue and strong):
                return Span(start, end, PERSON, "names")
            if _naming_label(text, start, tables) and not any(map(lists.is_english, words)):
                return Span(start, end, PERSON, "names-cue")  # "name: chidi"
            return None
        if strong and (unknown <= strong or (cue and not weak_cue)):
            return Span(start, end, PERSON, "names")
        if weak and (not sentence_start or len(words) > 1 or (cue and not weak_cue)):
            return Span(start, end, PERSON, "names")
        if cue and not weak_cue:
            return Span(start, end, PERSON, "names-cue")
        if any(t.word.isupper() and len(t.word) == 1 for t in run[1:-1]):
            return Span(start, end, PERSON, "names-initial")  # "Szabina J Gelencsér"
        return None


def _plain_word(lists: NameLists, word: str) -> bool:
    """A common English word that is nobody's name."""
    return lists.is_common(word) and not lists.is_name(word)


def _unlisted(lists: NameLists, word: str) -> bool:
    """A word of three letters or more that neither the name lists nor English hold."""
    return len(word) >= 3 and not lists.is_name(word) and not lists.is_english(word)


def _given_name_last(lists: NameLists, run: list[_Token]) -> bool:
    """Whether `run` ends in a capitalised listed first name after listed names only
    ("Nguyễn Văn An"), so its last word is a name though also a function word."""
    last = run[-1].word
    return (
        last[0].isupper()
        and not last.isupper()
        and lists.is_first(last)
        and all(lists.is_name(t.word) and not lists.is_common(t.word) for t in run[:-1])
    )


class _Tables:
    """The delimited tables of one text ("name,age,role" above "Jane Roe,42,admin"): which
    column a field lies in. A table is a block of lines up to a blank line whose first line
    names the columns. The blocks are found once per text, so that a pasted table of
    thousands of rows costs a line per row, not the block."""

    __slots__ = ("_headers", "_starts", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts: list[int] | None = None
        # (block, delimiter) -> the header's columns, and whether it is a table of people
        self._headers: dict[tuple[int, str], tuple[list[str], bool]] = {}

    def column(self, start: int) -> str | None:
        """Whether the field that starts at `text[start]` (after spaces or a quote) lies in a
        column of names: "qualified" under `first_name`, `Full Name`, `customer_name`;
        "plain" under `name` in a table of people (another column says so: `age`, `email`,
        `role`; not "name,price"); None if not, or not in a table."""
        text = self._text
        line_start = text.rfind("\n", 0, start) + 1
        field_start = start
        while field_start > line_start and text[field_start - 1] in " \"'":
            field_start -= 1
        if field_start > line_start and text[field_start - 1] not in _FIELD_DELIMITERS:
            return None  # not the first word of a field
        line_end = text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        if field_start == line_start and not any(
            text.find(d, start, line_end) >= 0 for d in _FIELD_DELIMITERS
        ):
            return None  # a line with one field
        if self._starts is None:
            self._starts = [0, *(m.end() for m in _BLANK_LINES.finditer(text))]
        block = self._starts[bisect.bisect_right(self._starts, line_start) - 1]
        if block == line_start:
            return None  # the header itself, or no table
        for delimiter in _FIELD_DELIMITERS:
            if field_start > line_start and text[field_start - 1] != delimiter:
                continue
            columns, people = self._header(block, delimiter)
            if len(columns) < 2 or len(columns) != text.count(delimiter, line_start, line_end) + 1:
                continue
            m = _NAME_COLUMN.fullmatch(columns[text.count(delimiter, line_start, field_start)])
            if m is not None and m.group("qualified"):
                return "qualified"
            if m is not None and people:
                return "plain"
        return None

    def _header(self, block: int, delimiter: str) -> tuple[list[str], bool]:
        """The columns of the block's first line, and whether one of them is of people."""
        key = (block, delimiter)
        if key not in self._headers:
            end = self._text.find("\n", block)
            columns = self._text[block : len(self._text) if end < 0 else end].split(delimiter)
            people = any(_PERSON_COLUMN.search(c) for c in columns)
            self._headers[key] = (columns, people)
        return self._headers[key]


def name_column(text: str, start: int) -> str | None:
    """Whether the field of a delimited table that starts at `text[start]` lies in a column
    of names: "qualified", "plain" or None (see `_Tables.column`)."""
    return _Tables(text).column(start)


def _key_cue(pattern: re.Pattern[str], before: str) -> bool:
    """Whether `before` ends with the key of a name (`pattern`: `_KEY_CUE` or
    `_QUALIFIED_KEY_CUE`), looked for only where "name" occurs."""
    return "name" in before.lower() and pattern.search(before) is not None


def _naming_label(text: str, start: int, tables: _Tables | None = None) -> bool:
    """Whether a naming label stands before `text[start]` ("name: ", `"first_name": "`), or
    it opens a field under a qualified column of names (`first_name`), where a word the
    lists do not hold is a name too."""
    before = text[max(0, start - 40) : start]
    if _NAMING.search(before) or _key_cue(_QUALIFIED_KEY_CUE, before):
        return True
    return (tables or _Tables(text)).column(start) == "qualified"


def _code_identifier(text: str, start: int, end: int) -> bool:
    """Whether the word text[start:end] is a literal or an identifier in a line of code:
    `return True`, `x = Max(a, b)`, `f(x, Will)`; not a word in a string literal."""
    if text[start:end] in _CODE_LITERALS:
        return True
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start : len(text) if line_end < 0 else line_end]
    head = text[line_start:start]
    if head.count('"') % 2 or head.count("'") % 2:
        return False  # inside a string: `"Anna, Mark, Sue"` lists people
    return bool(
        _CODE_BEFORE.search(text, line_start, start)
        and _CODE_AFTER.match(text, end, line_start + len(line))
        and _CODE_LINE.search(line)
    )


def _instruction(text: str, start: int, end: int, word: str, tables: _Tables) -> bool:
    """Whether `word` is a verb that opens an instruction ("Mark the correct answer", "Bill
    the client monthly", "Grant access to ..."): at the start of a sentence, a line or a
    clause after ":", before its object. "Jack the Ripper" keeps its epithet."""
    if word not in _IMPERATIVES:
        return False
    m = _OBJECT_AFTER.match(text, end)
    if m is None or m.group("the") and m.group("next") and m.group("next")[-1].isupper():
        return False  # no object, or an epithet ("Jack the Ripper")
    if not _CLAUSE_START.search(text, max(0, start - 12), start):
        return False
    # "Patient: Mark the ...", "Contact: Bill the ...": a label of a person before it
    before = text[max(0, start - 60) : start]
    return not (
        _CUE_BEFORE.search(before)
        or _key_cue(_KEY_CUE, before)
        or _naming_label(text, start, tables)
    )


def strong_cue(text: str, start: int, end: int, tables: _Tables | None = None) -> bool:
    """Whether text[start:end] has a strong sign of a person around it: a title, naming
    phrase, greeting or sign-off, or relation before it; a speech verb or relation after
    it; or a vocative at the start of a sentence ("Julia, can you ...")."""
    before, after = text[max(0, start - 60) : start], text[end : end + 40]
    if _STRONG_BEFORE.search(before) or _STRONG_AFTER.match(after):
        return True
    if _key_cue(_QUALIFIED_KEY_CUE, before):
        return True
    if _VOCATIVE.match(after) and _SENTENCE_END.search(before):
        return True
    return (tables or _Tables(text)).column(start) == "qualified"


def not_a_person(
    text: str,
    start: int,
    end: int,
    not_people: NotPeople | None = None,
    tables: _Tables | None = None,
) -> bool:
    """Whether the person-shaped text[start:end] names a thing on weak evidence.

    Strong cues (`strong_cue`) keep a person. Otherwise it is a thing when the span, alone or
    with the word before or after it, is a listed phrase ("Eggs Benedict", "Caesar salad",
    "Gas Mark"); when it follows "battle of", "treaty of"; when it is all listed words
    ("Guten Morgen"); or when it is one listed word, in the context its group needs ("Ruby"
    with "code", "Mai" by a number).
    """
    things = not_people if not_people is not None else load_not_people()
    found = [fold(w) for w in _PLAIN.findall(text, start, end)]
    tables = tables or _Tables(text)
    if not found or strong_cue(text, start, end, tables):
        return False
    if _PLACE_OF.search(text[max(0, start - 40) : start]):
        return True
    phrase = " ".join(found)
    prev = re.search(r"([^\W\d_]+) $", text[max(0, start - 40) : start])
    nxt = re.match(r" ([^\W\d_]+)", text[end : end + 40])
    around = [phrase]
    if prev:
        around.append(f"{fold(prev.group(1))} {phrase}")
    if nxt:
        around.append(f"{phrase} {fold(nxt.group(1))}")
    if any(things.is_thing(p) or p in _GREETINGS for p in around):
        return True  # "Eggs Benedict", "Good evening"
    if len(found) > 1:
        return all(things.is_thing(w) for w in found)
    if _code_identifier(text, start, end) or _instruction(text, start, end, phrase, tables):
        return True
    lo = _sentence_start(text, start)
    hi = next((m.start() for m in _SENTENCE_BREAK.finditer(text, end)), len(text))
    context = {fold(w) for w in _PLAIN.findall(text, lo, hi)}
    if _NUMBER_BEFORE.search(text[max(0, start - 6) : start]) or _NUMBER_AFTER.match(
        text[end : end + 4]
    ):
        context.add("#number")
    return things.is_thing_in(phrase, context)


def _sentence_start(text: str, start: int) -> int:
    """Where the sentence holding `text[start]` begins: just after the last `_SENTENCE_BREAK`
    that ends before `start` (a "." "!" "?" followed by white space, or a line end), else 0.

    Found by walking back from `start`, so it costs the sentence's length; matching every
    break from the start of the text cost the whole text per candidate, quadratic on long
    inputs (46 KB of short sentences took 0.74 s).
    """
    for p in range(start - 1, -1, -1):
        c = text[p]
        if c == "\n" or c in ".!?" and p + 1 < start and text[p + 1].isspace():
            return p + 1
    return 0
