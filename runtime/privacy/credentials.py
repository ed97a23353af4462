"""Secrets: private keys, API keys and tokens, by their published shapes and by entropy;
passwords, keys and tokens after the word that names them (in several languages, in
snake_case, dotted or camelCase keys), passwords and PINs set "to" a value, passwords on
command lines (mysql, curl, sshpass, `--password`), cookie values, passwords in URLs, seed
phrases and PINs."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

from runtime.privacy.entities import SECRET, Span
from runtime.privacy.gazetteer import words

# Shapes published by the issuers (AWS, GitHub, GitLab, Slack, Stripe, Google, OpenAI,
# Anthropic, Hugging Face, npm, PyPI, SendGrid, JWT). Each is specific enough to need no
# entropy check.
_KNOWN = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
    r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
    r"|\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA)[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"
    r"|\bgithub_pat_[A-Za-z0-9_]{40,}\b"
    r"|\bglpat-[A-Za-z0-9_-]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
    r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"
    r"|\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|\bAIza[0-9A-Za-z_-]{35}"
    r"|\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"
    r"|\bhf_[A-Za-z0-9]{30,}\b"
    r"|\bnpm_[A-Za-z0-9]{36}\b"
    r"|\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"
    r"|\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
)
# Words for a password in other languages (each unambiguous: no English word, no name).
_FOREIGN_PASSWORDS = (
    "mot de passe", "contraseña", "contrasena", "kennwort", "senha", "wachtwoord", "hasło",
    "haslo", "пароль", "lösenord", "losenord", "salasana", "passord", "adgangskode", "heslo",
    "jelszó", "jelszo",
)  # fmt: skip
# A credential word, alone or as the last part of a key: `password`, `DB_PASSWORD`,
# `"db_password"`, `spring.datasource.password`, `X-API-Key`, `Twilio auth token`, the
# camelCase `dbPassword`, `slackToken`, the glued `PGPASSWORD`, `mot de passe`.
_LABELED = re.compile(
    r"(?i)(?<![\w.-])(?P<open>[\"'`])?"
    r"(?P<key>(?P<prefix>(?:[a-z0-9]+[_.-])*"
    # camelCase: lower-case words before the capitalised label (`dbPassword`, `slackApiToken`)
    r"(?-i:[a-z][a-z0-9]*(?:[A-Z][a-z0-9]+)*(?=[A-Z])"
    # an upper-case prefix glued to PASSWORD (`PGPASSWORD`, `MYSQLPASSWORD`)
    r"|(?!NOPASSW)[A-Z][A-Z0-9]*(?=PASSW(?:OR)?D\b))?)"
    r"(?:password|passwd|passwort|passphrase|passcode|pwd|pass|pw"
    r"|mot[ _-]de[ _-]passe|contrase[ñn]a|kennwort|senha|wachtwoord|has[łl]o|пароль"
    r"|l[öo]senord|salasana|passord|adgangskode|heslo|jelsz[óo]"
    r"|(?:api|access|secret|private|signing|master|encryption|auth)[ _.-]?key"
    r"|(?:auth|access|refresh|api|bearer|session|id)[ _-]?token"
    r"|(?:client|app)[ _-]secret|secret|token|key|auth|authorization|bearer))"
    r"(?![\w-])[\"'`]?"
    # `password for the wifi is ...`: a qualifier, then a separator, is not optional.
    r"(?:(?P<qualifier>[ \t]+(?:for|of|on|to|at)(?:[ \t]+[\w@.'-]+){1,3}?)[ \t]*"
    r"(?P<qsep>[:=]|(?:is|was)(?:[ \t]+(?:now|still|currently))?\b)"
    # `Password - Tr0ub4dor&3`, `password → x`: a dash or an arrow, spaced, is a weak
    # separator, like "is": the value must look like a credential.
    r"|[ \t]*(?P<sep>=>|[:=](?![=:])|(?:is|was)(?:[ \t]+(?:now|still|currently))?\b"
    r"|(?<=[ \t])(?:->|→|[-–—])(?=[ \t]))?)[ \t]*"
)
_LABEL_HINTS = (
    "pass", "pw", "pwd", "key", "token", "secret", "auth", "bearer", *_FOREIGN_PASSWORDS,
)  # fmt: skip


def _flat(key: str) -> str:
    """`key` lower-cased without its separators: `DB_PASSWORD`, `mot de passe` ->
    `dbpassword`, `motdepasse`."""
    return re.sub(r"[ _.-]", "", key.lower())


# The credential words a key may end with, longest first, so that `_label_of` takes the most
# specific one ("secretkey" before "key").
_COMPOUND_LABELS = tuple(
    sorted(
        words(
            """
            apikey accesskey secretkey privatekey signingkey masterkey encryptionkey authkey
            authtoken accesstoken refreshtoken apitoken bearertoken sessiontoken idtoken
            clientsecret appsecret password passwd passwort passphrase passcode pwd pass pw
            secret token key authorization auth bearer
            """
        )
        | {_flat(label) for label in _FOREIGN_PASSWORDS},
        key=len,
        reverse=True,
    )
)
_PASSWORD_LABELS = frozenset(
    ["password", "passwd", "passwort", "passphrase", "passcode", "pwd", "pass", "pw"]
) | {_flat(label) for label in _FOREIGN_PASSWORDS}
# Labels that are ordinary English words: their value must look like a credential unless
# the key is written as one (`HF_TOKEN=`, `"secret": ...`, `TOKEN=`).
_WORD_LABELS = frozenset(["pass", "pw", "secret", "token", "auth", "bearer"])
_AUTH_SCHEME = re.compile(r"(?i)(?:bearer|basic|token|digest)[ \t]+")
_VALUE = re.compile(r"[^\s\"'`;,]+")
_NEXT_WORD = re.compile(r" (?P<word>[^\s\"'`;,]+)")
_SENTENCE_END = re.compile(r"[.?:)\]}]+$")
_PASSPHRASE_WORDS = 8
# A passphrase holds no function words: `password: hunter2 and the user is bob` is prose
# after a one-word password, `password: a secret word` is a definition.
_PROSE = words(
    """
    a an the is are was were be been being to of in on at by for with from and or but not no
    so if then than that this these those it its you your i me my we our he she they them
    his her their must should can could will would may might do does did has have had as
    into about please thanks how what why when where which who here there just also only
    very too more most all any some each every see below above following
    """
)
_CREDENTIAL = re.compile(r"(?=\S*[A-Za-z])(?=\S*[\d!#$%&*?@^~])\S{6,}")
_TOKEN_LIKE = re.compile(r"(?=\S*[A-Za-z])(?=\S*\d)[A-Za-z0-9+/._~=-]{8,}|[0-9a-fA-F]{32,}")
# Values that stand for a secret rather than being one.
_PLACEHOLDER = re.compile(
    r"(?i)[*xX•.#_-]*|\.\.\.|…|\$\{?\w+\}?|%\(?\w*\)?s|your[\s_-].*|.*[_-]here"
    r"|none|null|nil|n/a|undefined|true|false|str|string|bytes|int|bool|optional|required"
    r"|empty|hidden|redacted|example|placeholder|dummy|tbd|todo|replace[_-]?me"
    r"|(?-i:[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"
)
_BRACKETED = re.compile(r"<[^<>\n]*>|\[[^\[\]\n]*\]|\{\{[^{}\n]*\}\}")
# Code rather than a literal: `password = input(...)`, `token = self.token`, `new_password`.
_CODE = re.compile(
    r"[A-Za-z_][\w.]*[(\[].*|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[{(\[].*"
    r"|(?i:\w*_\w*(?:pass|pwd|token|secret|key)\w*|\w*(?:pass|pwd|token|secret|key)\w*_\w*)"
    r"|(?i:password|passwd|pwd|pass|pw|token|secret|key|api_?key)"
)
# scheme://user:password@host: the password only.
_URL_PASSWORD = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s/?#@:]*:(?P<value>[^\s/?#@]+)@")
_URL_PLACEHOLDERS = frozenset(["password", "passwd", "pass", "pwd", "secret", "token"])
# A BIP-39 seed phrase: 12 to 24 lowercase words of 3-8 letters after its name.
_MNEMONIC = re.compile(
    r"(?i)(?<![\w.-])(?:(?:secret[ _-])?(?:seed|recovery|backup|mnemonic|wallet)[ _-]"
    r"(?:phrase|words?)|mnemonic)[\"']?[ \t]*(?:[:=]|is\b)?[ \t]*[\"']?"
    r"(?P<value>(?-i:[a-z]{3,8}(?:[ \t]+[a-z]{3,8}){11,23}))\b"
)
# A PIN or passcode: digits after the word ("PIN 4821", "pin code: 0000", "passcode is 123456").
_PIN = re.compile(
    r"(?i)\b(?:pin|passcode)(?:\s*(?:code|number|no\.?|#))?\s*(?:[:=]|is\b|was\b)?\s*"
    r"(?P<value>\d{4,8})(?!\d|[/.,:-]\d)"
)
# `I changed my password to X`, `set my PIN to 4821`, `the password was reset to X`: a verb
# of setting before the label, "to" or "as" after it. The value must look like a credential.
_SET_TO = re.compile(
    r"(?i)(?:\b(?:chang(?:e|ed|es|ing)|set(?:s|ting)?|reset(?:s|ting)?|updat(?:e|ed|es|ing))"
    r"(?:[ \t]+up)?(?:[ \t]+[\w'’-]+){0,3}?[ \t]+(?P<label>password|passcode|passphrase|pin)"
    r"|\b(?P<plabel>password|passcode|passphrase|pin)(?:[ \t]+(?:code|number))?[ \t]+"
    r"(?:was|is|has[ \t]+been|had[ \t]+been|got)[ \t]+(?:chang|set|reset|updat)(?:ed)?)"
    r"[ \t]+(?:to|as)(?:[ \t]+be)?[ \t]+"
)
_PIN_VALUE = re.compile(r"\d{4,8}(?!\d|[/.,:-]\d)")
# A password of letters only, with a capital inside ("BlueMonkey"): after "to" or "pass:",
# where a lower-case or capitalised word would be prose ("to default", "pass: Yes").
_INNER_CAPITAL = re.compile(r"(?-i:[A-Za-z]*[a-z][A-Z][A-Za-z]*)")
# A passphrase of dashed words ("correct-horse-battery-staple"), three or more.
_DASHED_WORDS = re.compile(r"[A-Za-z]{3,}(?:-[A-Za-z]{3,}){2,}")
# Command lines that carry a password: `mysql -pSECRET`, `sshpass -p SECRET`, `curl -u
# user:SECRET`, `docker login -p SECRET`, and any `--password=SECRET` / `--token SECRET`.
# A command runs to the end of its line or to `|`, `;`, `&`; its options are looked for in it
# (one pass over the command: a lazy scan from each command name was quadratic).
_COMMAND = re.compile(
    r"\b(?P<cmd>mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck"
    r"|mariadb(?:-dump|-admin)?|docker[ \t]+login|curl)\b[^\n|;&]*"
)
_COMMAND_OPTIONS = {
    "mysql": re.compile(r"[ \t]-p(?=[^\s-])"),  # `-pSECRET`; `-p` alone prompts, `-P` is a port
    "docker": re.compile(r"[ \t]-p[ \t]+"),
    "curl": re.compile(r"[ \t](?:-[uU][ \t]*|--(?:proxy-)?user[ \t=]+)[\"']?[^\s:\"']*:"),
}
_CURL_COOKIE = re.compile(r"[ \t](?:-b|--cookie)[ \t]*[\"']?")
_SSHPASS = re.compile(r"\bsshpass[ \t]+-p[ \t]*")
_PASSWORD_FLAG = re.compile(
    r"(?i)(?<![\w-])--(?:password|passwd|pass|pwd|token|secret|(?:api|auth|access)[-_]?"
    r"(?:key|token)|client[-_]secret)(?:=|[ \t]+)"
)
_CLI_VALUE = re.compile(r"\"(?P<dq>[^\"\n]+)\"|'(?P<sq>[^'\n]+)'|(?P<bare>[^\s\"'`;|&]+)")
# An HTTP cookie header (`Cookie: a=1; b=2`, `Set-Cookie: id=...; Path=/`) or curl's
# `--cookie` / `-b`: the values of its name=value pairs.
_COOKIE = re.compile(r"(?i)(?<![\w-])(?P<set>set-)?cookie[\"']?[ \t]*:[ \t]*[\"']?")
_COOKIE_PAIR = re.compile(r"[ \t]*(?P<name>[^\s=;,\"']+)=(?P<value>[^\s;,\"']*)[ \t]*;?")
_TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_=-]{24,}(?![\w+/=-])")
_HEX = re.compile(r"[0-9a-fA-F]+")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def shannon_entropy(value: str) -> float:
    """Bits per character of `value` under its own character distribution."""
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_random(token: str) -> bool:
    """A long token mixing letters and digits with high entropy, not a hash or a UUID."""
    if _UUID.fullmatch(token) or _HEX.fullmatch(token):
        return False  # hashes and ids: identifiers, not credentials
    has_digit = any(c.isdigit() for c in token)
    has_upper = any(c.isupper() for c in token)
    has_lower = any(c.islower() for c in token)
    if not (has_digit and has_upper and has_lower):
        return False
    return shannon_entropy(token) >= 4.0


def _not_a_value(value: str) -> bool:
    """A placeholder, a type or code: `******`, `YOUR_API_KEY`, `str`, `os.environ[...]`."""
    return _PLACEHOLDER.fullmatch(value) is not None or _CODE.fullmatch(value) is not None


def _label_of(key: str) -> str:
    """The credential word that ends `key`, the longest one: `AWS_SECRET_ACCESS_KEY` is an
    access key, `primary_key` only a key."""
    flat = _flat(key)
    return next((label for label in _COMPOUND_LABELS if flat.endswith(label)), flat)


def _labeled_value(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    """Where the value after a credential label lies, or None if it is not a secret.

    After `:` or `=` any value is a secret; after `is`, a bare space or a qualifier
    ("password for the wifi is ...") only one that looks like a credential.
    """
    key = m.group("key")
    label = _label_of(key)
    sep = (m.group("sep") or m.group("qsep") or "").lower()
    pos = m.end()
    if label == "authorization":
        if sep not in (":", "="):
            return None  # "authorization required"
        scheme = _AUTH_SCHEME.match(text, pos)
        pos = scheme.end() if scheme else pos  # `Authorization: Basic dXNlcjpwYXNz`
    elif not sep and (pos == m.end("key") or not text[pos - 1].isspace()):
        return None
    password = label in _PASSWORD_LABELS
    written_as_key = bool(m.group("prefix") or m.group("open")) or key.isupper() and sep == "="
    any_value = (
        sep in (":", "=", "=>")
        and not m.group("qualifier")
        and (label not in _WORD_LABELS | {"key"} or written_as_key and label != "key")
    )
    if pos < len(text) and text[pos] in "\"'`":
        end = text.find(text[pos], pos + 1)
        if end < 0 or "\n" in text[pos:end]:
            return None
        value = text[pos + 1 : end]
        if not value or _PLACEHOLDER.fullmatch(value) or not (any_value or sep or password):
            return None
        return (pos + 1, end) if any_value or _CREDENTIAL.fullmatch(value) else None
    if _BRACKETED.match(text, pos):
        return None  # `<your key>`, `[REDACTED]`, `{{ token }}`
    first = _VALUE.match(text, pos)
    if first is None:
        return None
    value = _SENTENCE_END.sub("", first.group())
    if not value or _not_a_value(value):
        return None
    end = pos + len(value)
    looks = _CREDENTIAL.fullmatch(value) if password else _TOKEN_LIKE.fullmatch(value)
    if not looks and label in ("pass", "pw") and sep == ":" and not key.isupper():
        # `pass: BlueMonkey`; not `PASS: TestLogin` (test runners), nor `pass: Yes`
        looks = _INNER_CAPITAL.fullmatch(value)
    if not any_value:
        if not sep and not password and len(value) < 16:
            return None  # "key 3rd-party": a bare word after the label must be long
        if not sep and label in ("pass", "pw"):
            return None  # "pass 2nd-round"
        return (pos, end) if looks else None
    if value.lower() in _PROSE:
        return None  # "password: a secret word"
    if not password:
        return pos, end
    phrase_end = _passphrase_end(text, end, first.end() > end or value.endswith("!"))
    if phrase_end is None:
        return (pos, end) if looks else None
    return pos, phrase_end


def _passphrase_end(text: str, end: int, stopped: bool) -> int | None:
    """End of a passphrase whose first word ends at `end` (`stopped`: and so does the phrase).

    The words run to the end of the line or the sentence; None if they read as prose.
    """
    count = 1
    while not stopped:
        m = _NEXT_WORD.match(text, end)
        if m is None or m.group("word").startswith(("#", "//")):
            break
        word = _SENTENCE_END.sub("", m.group("word"))
        stopped = len(word) < len(m.group("word")) or word.endswith("!")
        if word.lower() in _PROSE or not word:
            return None
        count += 1
        end = m.start("word") + len(word)
    return end if count <= _PASSPHRASE_WORDS else None


def _set_to(text: str) -> Iterator[Span]:
    """Values a password or PIN is set to: `I changed my password to Tr0ub4dor&3`, `set my
    PIN to 4821`. Not `set the pin to high`, `reset the password to default`."""
    for m in _SET_TO.finditer(text):
        label = (m.group("label") or m.group("plabel")).lower()
        pos = m.end()
        if label == "pin":
            pin = _PIN_VALUE.match(text, pos)
            if pin is not None:
                yield Span(pin.start(), pin.end(), SECRET, "pin")
            continue
        if pos < len(text) and text[pos] in "\"'`":
            end = text.find(text[pos], pos + 1)
            value = text[pos + 1 : end]
            if end > pos + 1 and "\n" not in value and not _PLACEHOLDER.fullmatch(value):
                yield Span(pos + 1, end, SECRET, "assigned")
            continue
        first = _VALUE.match(text, pos)
        if first is None:
            continue
        value = _SENTENCE_END.sub("", first.group())
        if not value or _not_a_value(value) or value.lower() in _PROSE:
            continue
        if (
            _CREDENTIAL.fullmatch(value)
            or _INNER_CAPITAL.fullmatch(value)
            or _DASHED_WORDS.fullmatch(value)
        ):
            yield Span(pos, pos + len(value), SECRET, "assigned")


def _command_line(text: str) -> Iterator[Span]:
    """Passwords given on a command line: `mysql -pSECRET`, `curl -u user:SECRET`,
    `sshpass -p SECRET`, `--password=SECRET`; not `$VARS`, `<placeholders>`, `-p` alone."""
    starts = [m.end() for m in _SSHPASS.finditer(text)]
    starts += [m.end() for m in _PASSWORD_FLAG.finditer(text)]
    for command in _COMMAND.finditer(text):
        name = command.group("cmd")
        kind = name if name == "curl" else "docker" if name.startswith("docker") else "mysql"
        options = _COMMAND_OPTIONS[kind]
        starts += [m.end() for m in options.finditer(text, command.end("cmd"), command.end())]
    for pos in starts:
        v = _CLI_VALUE.match(text, pos)
        if v is None:
            continue
        group = next(g for g in ("dq", "sq", "bare") if v.group(g) is not None)
        value = v.group(group)
        if group == "bare":
            value = _SENTENCE_END.sub("", value)
        if not value or value.startswith("-") or _not_a_value(value):
            continue
        if _BRACKETED.fullmatch(value):
            continue
        yield Span(v.start(group), v.start(group) + len(value), SECRET, "command-line")


def _cookies(text: str) -> Iterator[Span]:
    """The values of a cookie header's pairs (`Cookie: sessionid=...; csrftoken=...`), the
    first pair only of a `Set-Cookie` (the rest are attributes: `Path=/`). Short words and
    numbers (`theme=dark`, `lang=en`, `consent=1`) and placeholders stay."""
    headers = [(m.end(), bool(m.group("set"))) for m in _COOKIE.finditer(text)]
    for command in _COMMAND.finditer(text) if "curl" in text else ():
        if command.group("cmd") == "curl":
            found = _CURL_COOKIE.finditer(text, command.end("cmd"), command.end())
            headers += [(m.end(), False) for m in found]
    for pos, first_only in headers:
        while pair := _COOKIE_PAIR.match(text, pos):
            value = pair.group("value")
            mixed = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
            if (len(value) >= 6 or mixed) and not _PLACEHOLDER.fullmatch(value):
                yield Span(pair.start("value"), pair.end("value"), SECRET, "cookie")
            if first_only or pair.end() == pos:
                break
            pos = pair.end()


class SecretDetector:
    """Private keys, API keys, tokens, assigned passwords, seed phrases and PINs."""

    def detect(self, text: str) -> list[Span]:
        """Spans of `text` that are credentials."""
        spans = [Span(m.start(), m.end(), SECRET, "known-shape") for m in _KNOWN.finditer(text)]
        lower = text.lower()  # the word scans below run only where their words occur
        if any(word in lower for word in _LABEL_HINTS):
            for m in _LABELED.finditer(text):
                found = _labeled_value(text, m)
                if found is not None:
                    spans.append(Span(found[0], found[1], SECRET, "assigned"))
        for m in _URL_PASSWORD.finditer(text) if "://" in text else ():
            value = m.group("value")
            if not _PLACEHOLDER.fullmatch(value) and value.lower() not in _URL_PLACEHOLDERS:
                spans.append(Span(m.start("value"), m.end("value"), SECRET, "url-password"))
        seed = any(word in lower for word in ("mnemonic", "phrase", "word"))
        for m in _MNEMONIC.finditer(text) if seed else ():
            spans.append(Span(m.start("value"), m.end("value"), SECRET, "seed-phrase"))
        for m in _PIN.finditer(text):
            spans.append(Span(m.start("value"), m.end("value"), SECRET, "pin"))
        if "pass" in lower or "pin" in lower:
            spans.extend(_set_to(text))
        if "-" in text:
            spans.extend(_command_line(text))
        if "cookie" in lower or "curl" in lower:
            spans.extend(_cookies(text))
        for m in _TOKEN.finditer(text):
            if _looks_random(m.group()):
                spans.append(Span(m.start(), m.end(), SECRET, "entropy"))
        return spans
