"""Secrets through the default filter: labelled values, URL passwords, token shapes, seed
phrases; and the prose around credential words, which must reach the cloud unchanged."""

from __future__ import annotations

import pytest

from runtime.privacy import PrivacyConfig, PrivacyFilter, Vault

SEED = "abandon ability able about above absent absorb abstract absurd abuse access accident"


@pytest.fixture(scope="module")
def privacy() -> PrivacyFilter:
    return PrivacyFilter.from_config(PrivacyConfig())


def redacted(privacy: PrivacyFilter, text: str) -> str:
    return privacy.redact(text, Vault()).text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Labels inside keys: env files, JSON, dotted and dashed names.
        ("DB_PASSWORD=hunter2!x", "DB_PASSWORD=<SECRET_1>"),
        ("DB_PASSWORD=Winter2024", "DB_PASSWORD=<SECRET_1>"),
        (
            '{"db_password": "s3cr3t pass", "port": 5432}',
            '{"db_password": "<SECRET_1>", "port": 5432}',
        ),
        ("spring.datasource.password=letmein", "spring.datasource.password=<SECRET_1>"),
        ("SECRET_KEY = 'django-insecure-abc'", "SECRET_KEY = '<SECRET_1>'"),
        ("X-API-Key: abc123def456", "X-API-Key: <SECRET_1>"),
        ("HF_TOKEN=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", "HF_TOKEN=<SECRET_1>"),
        ("use 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 here", "use <SECRET_1> here"),
        # Passwords in a URL's userinfo: the password only.
        (
            "postgres://admin:hunter2@10.0.0.5:5432/prod",
            "postgres://admin:<SECRET_1>@<IP_1>:5432/prod",
        ),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:<SECRET_1>@<IP_1>:6379/0"),
        # Tokens after their label, whatever their entropy (hex, letters only).
        (
            "Authorization: Bearer 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
            "Authorization: Bearer <SECRET_1>",
        ),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic <SECRET_1>"),
        ("api key: 4f3c2b1a0987654321fedcba", "api key: <SECRET_1>"),
        ("api key: abcdefghijkl", "api key: <SECRET_1>"),
        (
            "Twilio auth token 0123456789abcdef0123456789abcdef",
            "Twilio auth token <SECRET_1>",
        ),
        ("my key is 0123456789abcdef0123456789abcdef", "my key is <SECRET_1>"),
        # Passwords after short labels, after "is", after a qualifier.
        ("pass: Tr0ub4dor&3", "pass: <SECRET_1>"),
        ("pw: hunter2", "pw: <SECRET_1>"),
        ("my password is hunter2", "my password is <SECRET_1>"),
        ("the password for my wifi is Tr0ub4dor&3", "the password for my wifi is <SECRET_1>"),
        # Passphrases: to the end of the line or of the sentence, not into the next one.
        ("password: correct horse battery staple", "password: <SECRET_1>"),
        ("password: correct horse battery staple\nthanks", "password: <SECRET_1>\nthanks"),
        (
            "password: hunter2. Then restart the server.",
            "password: <SECRET_1>. Then restart the server.",
        ),
        (
            "password: hunter2 and then restart the server",
            "password: <SECRET_1> and then restart the server",
        ),
        ("password: Summer2024! Then restart it.", "password: <SECRET_1> Then restart it."),
        ("password: hunter2 # staging", "password: <SECRET_1> # staging"),
        ('password="correct horse battery"', 'password="<SECRET_1>"'),
        # BIP-39 seed phrases.
        (f"seed phrase: {SEED}", "seed phrase: <SECRET_1>"),
        (f"my mnemonic is {SEED}.", "my mnemonic is <SECRET_1>."),
    ],
)
def test_credentials_are_redacted(privacy: PrivacyFilter, text: str, expected: str) -> None:
    assert redacted(privacy, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # Empty values and placeholders.
        "password:",
        "password: ******",
        "password: <empty>",
        "api key: YOUR_API_KEY",
        "api key: <your key>",
        "token: xxx",
        "password: ${DB_PASSWORD}",
        "postgres://user:password@localhost/db",
        # Prose about credentials.
        "password reset",
        "the password field is empty",
        "What is a good password policy?",
        "My api key is not working",
        "Set the password to something long",
        "A passphrase is similar to a password in usage.",
        "Password: a secret string of characters.",
        "Reset your password: click the link below.",
        "The secret: practice every day.",
        "The secret is patience.",
        "a boarding pass is required for each leg",
        "using the following translation key: Ax: x is an apartment",
        "Yes, the key is k = m xor c.",
        "mnemonic: a device such as a rhyme used to remember",
        "Authorization required",
        # Code that names a credential without holding one.
        'password = input("Enter your password: ")',
        "def login(user: str, password: str) -> bool:",
        'token = request.headers["token"]',
        "self.password = new_password",
        "primary_key=id",
        "max_tokens=64",
    ],
)
def test_prose_and_placeholders_are_not_secrets(privacy: PrivacyFilter, text: str) -> None:
    assert redacted(privacy, text) == text
