"""Secrets: private keys, API keys and tokens, by their published shapes and by entropy;
passwords and PINs after the word that names them."""

from __future__ import annotations

import math
import re
from collections import Counter

from runtime.privacy.entities import SECRET, Span

# Shapes published by the issuers (AWS, GitHub, GitLab, Slack, Stripe, Google, OpenAI,
# Anthropic, JWT). Each is specific enough to need no entropy check.
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
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
)
# `password: hunter2`, `api_key="..."`: the value after a credential word is a secret.
_ASSIGNED = re.compile(
    r"(?i)\b(?:password|passwd|pwd|passphrase|secret|client_secret|token|access_token|"
    r"refresh_token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|auth)"
    r"[\"']?\s*(?:[:=]|is)\s*[\"']?(?P<value>[^\s\"',;]{6,})"
    # With no colon or "is" ("password Tr0ub4dor&3"): a value that mixes letters with digits
    # or symbols, not a word ("password reset").
    r"|\b(?:password|passwd|pwd|passphrase)\s+"
    r"(?P<bare>(?=[^\s\"',;]*[A-Za-z])(?=[^\s\"',;]*[\d!#$%&*?@^~])[^\s\"',;]{6,})"
)
# A PIN or passcode: digits after the word ("PIN 4821", "pin code: 0000", "passcode is 123456").
_PIN = re.compile(
    r"(?i)\b(?:pin|passcode)(?:\s*(?:code|number|no\.?|#))?\s*(?:[:=]|is\b|was\b)?\s*"
    r"(?P<value>\d{4,8})(?!\d|[/.,:-]\d)"
)
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


class SecretDetector:
    """Private keys, API keys, tokens, assigned passwords and PINs."""

    def detect(self, text: str) -> list[Span]:
        """Spans of `text` that are credentials."""
        spans = [Span(m.start(), m.end(), SECRET, "known-shape") for m in _KNOWN.finditer(text)]
        for m in _ASSIGNED.finditer(text):
            group = "value" if m.group("value") is not None else "bare"
            spans.append(Span(m.start(group), m.end(group), SECRET, "assigned"))
        for m in _PIN.finditer(text):
            spans.append(Span(m.start("value"), m.end("value"), SECRET, "pin"))
        for m in _TOKEN.finditer(text):
            if _looks_random(m.group()):
                spans.append(Span(m.start(), m.end(), SECRET, "entropy"))
        return spans
