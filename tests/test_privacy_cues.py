"""Cues the privacy audit found missing or misread.

Secrets: passwords and PINs set "to" a value, labels in other languages and in camelCase
keys, spaced dashes and arrows as separators, command lines (mysql, curl, sshpass, `--password`)
and cookie headers. People: names in JSON, XML and CSV records. Things: code literals and
identifiers ("return True"), instructions that open with a verb that is also a name ("Mark
the correct answer") and greetings ("Good evening"). Each case also has its look-alike that
must reach the cloud unchanged.
"""

from __future__ import annotations

import pytest

from runtime.privacy import PrivacyConfig, PrivacyFilter, Vault
from runtime.privacy.names import NameDetector
from runtime.privacy.ner import DEFAULT_MODEL, SpacyDetector, spacy_available


@pytest.fixture(scope="module")
def default() -> PrivacyFilter:
    """The runtime's default filter (names+spacy when spaCy is installed)."""
    return PrivacyFilter.from_config(PrivacyConfig())


def sent(privacy: PrivacyFilter, text: str) -> str:
    """What would leave the device for a user message `text`."""
    messages = [{"role": "user", "content": text}]
    return str(privacy.redact_messages(messages, Vault()).messages[0]["content"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A password or PIN set "to" a value.
        (
            "I changed my password to Tr0ub4dor&3 yesterday",
            "I changed my password to <SECRET_1> yesterday",
        ),
        ("set my PIN to 4821", "set my PIN to <SECRET_1>"),
        (
            "the password was changed to Xyz12345 today",
            "the password was changed to <SECRET_1> today",
        ),
        (
            "I set my bank password to correct-horse-battery-staple",
            "I set my bank password to <SECRET_1>",
        ),
        ('reset my wifi password to "BlueMonkey"', 'reset my wifi password to "<SECRET_1>"'),
        ("my password is now Summer2024!", "my password is now <SECRET_1>"),
        # Labels in other languages.
        ("mot de passe : Soleil2024!", "mot de passe : <SECRET_1>"),
        ("contraseña: Soleil2024!", "contraseña: <SECRET_1>"),
        ("Kennwort: Soleil2024!", "Kennwort: <SECRET_1>"),
        ("senha: Soleil2024!", "senha: <SECRET_1>"),
        ("wachtwoord: Soleil2024!", "wachtwoord: <SECRET_1>"),
        ("hasło: Soleil2024!", "hasło: <SECRET_1>"),
        ("пароль: Soleil2024!", "пароль: <SECRET_1>"),
        # camelCase and glued keys.
        ('const dbPassword = "Sup3rS3cret!";', 'const dbPassword = "<SECRET_1>";'),
        ('slackToken: "abcd1234efgh5678"', 'slackToken: "<SECRET_1>"'),
        ('String adminPass = "letmein123";', 'String adminPass = "<SECRET_1>";'),
        ('{"clientSecret": "abcdefgh"}', '{"clientSecret": "<SECRET_1>"}'),
        ("PGPASSWORD=s3cret psql -h db", "PGPASSWORD=<SECRET_1>"),
        # A spaced dash or an arrow after the label; `pass:` before a password-like word.
        ("Password - Tr0ub4dor&3", "Password - <SECRET_1>"),
        ("password → Tr0ub4dor&3", "password → <SECRET_1>"),
        ("pass: BlueMonkey", "pass: <SECRET_1>"),
        ("wifi: MyHomeNet / pass: BlueMonkey", "wifi: MyHomeNet / pass: <SECRET_1>"),
        # Command lines.
        (
            "curl -u admin:Sup3rS3cret https://api.example.com",
            "curl -u admin:<SECRET_1> <URL_1>",
        ),
        ("mysql -u root -pSup3rS3cret mydb", "mysql -u root -p<SECRET_1> mydb"),
        ("sshpass -p Sup3rS3cret ssh deploy@host", "sshpass -p <SECRET_1> ssh deploy@host"),
        # ssh's `-p` is a port
        ("sshpass -p Sup3rS3cret ssh -p 2222 host", "sshpass -p <SECRET_1> ssh -p 2222 host"),
        (
            "docker login -u deploy -p Sup3rS3cret",
            "docker login -u deploy -p <SECRET_1>",
        ),
        (
            "cat dump.sql | mariadb -u root -pMar1aPw",
            "cat dump.sql | mariadb -u root -p<SECRET_1>",
        ),
        (
            "docker login -u deploy --password Sup3rS3cret",
            "docker login -u deploy --password <SECRET_1>",
        ),
        ("./run --password=s3cret --verbose", "./run --password=<SECRET_1> --verbose"),
        # Cookies: the values of the pairs (a Set-Cookie's first pair only).
        (
            'curl -H "Cookie: sessionid=k3j4h5g6f7d8s9a0q1w2e3r4t5y6u7i8" https://x',
            'curl -H "Cookie: sessionid=<SECRET_1>" <URL_1>',
        ),
        (
            "Cookie: sessionid=abc12345678; csrftoken=xyz98765432; theme=dark",
            "Cookie: sessionid=<SECRET_1>; csrftoken=<SECRET_2>; theme=dark",
        ),
        (
            "Set-Cookie: id=a3fWa45b6c7d; Path=/; Secure; HttpOnly",
            "Set-Cookie: id=<SECRET_1>; Path=/; Secure; HttpOnly",
        ),
        ('curl -b "sessionid=abc123def456" x', 'curl -b "sessionid=<SECRET_1>" x'),
    ],
)
def test_credentials_in_more_forms_are_redacted(
    default: PrivacyFilter, text: str, expected: str
) -> None:
    assert sent(default, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # "to" after a setting that is no secret, or a value that is a word.
        "set the pin to high",
        "set pin 13 to HIGH",
        'git commit -m "set pin to 5V"',
        "set my pin as my birthday",
        "change the password policy to 12 characters",
        "reset the password to default",
        "I changed my password to something stronger",
        "Change your password to something unique",
        "set the passcode to expire",
        "How do I set a password as an env var?",
        # "pass", dashes and arrows in prose and test output.
        "pass: the ball",
        "pass: Yes",
        "Tests pass: 42, fail: 3",
        "PASS: test_login",
        "--- PASS: TestLoginHandler (0.00s)",
        "Password - Forgot?",
        "API key - what is it?",
        "pass - fail - pass",
        "password -> hash -> db",
        "Passwort vergessen?",
        # camelCase code that names a credential without holding one.
        "if (user.getPassword() == null)",
        "maxTokens: 64",
        'primaryKey: "id"',
        "sessionToken: null",
        "bob ALL=(ALL) NOPASSWD: ALL",
        # Command lines without a password on them.
        "ssh -p 2222 host",
        "ssh -p2222 deploy@host",
        "docker run -u 1000:1000 img",
        "mysql -u root -p mydb",
        "mysql -h db -P3306 -u root -p",
        "mysqldump -u root -p$MYSQL_PWD db",
        "echo $PW | docker login --password-stdin",
        "run --password <your-password>",
        "pip install --token-file x",
        # Cookies without a secret, and the word in prose.
        "Cookie: theme=dark; lang=en",
        "Cookie: consent=1; visited=2",
        "Set-Cookie: theme=dark; Path=/",
        "fortune cookie: you will travel",
    ],
)
def test_look_alike_prose_and_code_stay(default: PrivacyFilter, text: str) -> None:
    assert sent(default, text) == text


NER = [
    "names",
    pytest.param(
        "names+spacy",
        marks=pytest.mark.skipif(
            not spacy_available(DEFAULT_MODEL), reason=f"{DEFAULT_MODEL} not installed"
        ),
    ),
]


@pytest.fixture(scope="module", params=NER)
def people(request: pytest.FixtureRequest) -> PrivacyFilter:
    """The person detectors only: the name lists, alone or with spaCy behind them."""
    names = NameDetector()
    return PrivacyFilter([names] if request.param == "names" else [names, SpacyDetector()])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # JSON, Python and XML records; names neither the lists nor spaCy know.
        (
            '{"name": "Liesl Oberholzer", "role": "admin"}',
            '{"name": "<PERSON_1>", "role": "admin"}',
        ),
        ("{'name': 'Xochitl Tlacuilo'}", "{'name': '<PERSON_1>'}"),
        ("<name>Liesl Oberholzer</name>", "<name><PERSON_1></name>"),
        ("<FirstName>Xochitl</FirstName>", "<FirstName><PERSON_1></FirstName>"),
        ('{"customerName": "Liesl Oberholzer"}', '{"customerName": "<PERSON_1>"}'),
        ('{"full_name": "Liesl Oberholzer"}', '{"full_name": "<PERSON_1>"}'),
        (
            '{"first_name": "liesl", "last_name": "oberholzer"}',
            '{"first_name": "<PERSON_1>", "last_name": "<PERSON_2>"}',
        ),
        ("patient_name = 'Xochitl Tlacuilo'", "patient_name = '<PERSON_1>'"),
        # CSV: a column of names, under a header of people.
        (
            "name,age,role\nOluwaseun Adebayo,42,admin",
            "name,age,role\n<PERSON_1>,42,admin",
        ),
        (
            "name\temail\nLiesl Oberholzer\tx@y.z",
            "name\temail\n<PERSON_1>\tx@y.z",
        ),
        (
            "id;Full Name;role\n1;Xochitl Tlacuilo;admin",
            "id;Full Name;role\n1;<PERSON_1>;admin",
        ),
        (
            "first_name,last_name,age\noluwaseun,adebayo,42",
            "first_name,last_name,age\n<PERSON_1>,<PERSON_2>,42",
        ),
    ],
)
def test_names_in_records_are_people(people: PrivacyFilter, text: str, expected: str) -> None:
    assert people.redact(text, Vault()).text == expected


@pytest.mark.parametrize(
    ("text", "name"),
    [
        # An epithet, a vocative, a name after a naming label, a name mid-sentence: the
        # instruction rule ("Mark the correct answer") leaves them people.
        ("Jack the Ripper was never caught.", "Jack"),
        ("Mark, the meeting moved.", "Mark"),
        ("I met Mark the other day.", "Mark"),
        ("Patient: Mark the next of kin", "Mark"),
        ("Dear Bill, the invoice is attached.", "Bill"),
        # a word in a string literal is no identifier, even in a line of code
        ('team = f("Anna Kowalska, Mark, Sue")', "Mark"),
    ],
)
def test_names_before_a_determiner_can_still_be_people(
    people: PrivacyFilter, text: str, name: str
) -> None:
    assert name not in people.redact(text, Vault()).text


@pytest.mark.parametrize(
    "text",
    [
        # Code literals and identifiers.
        "def f(x):\n    return True",
        "Set verbose=False and debug=True",
        "if value is None: return NaN",
        "x = Max(a, b)",
        # Instructions that open with a verb that is also a name.
        "Mark the correct answer",
        "- Mark the task as done",
        "Mark all as read",
        "Bill the client monthly",
        "Sue the company",
        "Grant access to the repo",
        "Pat the dough dry",
        "Drew the curtains",
        "Chase the ball",
        "Skip the intro",
        "Translate: Mark the answer",
        # Greetings.
        "Translate: Good evening",
        "I said Good evening to them",
        "Merry Christmas, everyone",
    ],
)
def test_code_instructions_and_greetings_are_not_people(people: PrivacyFilter, text: str) -> None:
    assert people.redact(text, Vault()).text == text


@pytest.mark.parametrize(
    "text",
    [
        # Records of things: a `name` column beside no column of people, a lower-case
        # identifier under a quoted `name` key, a key that names a thing.
        "name,price\nChromebook,299",
        '{"name": "lodash", "version": "4.17.21"}',
        '{"product_name": "Blue Widget"}',
        "Page the on-call engineer",
    ],
)
def test_records_of_things_stay(people: PrivacyFilter, text: str) -> None:
    assert people.redact(text, Vault()).text == text


def test_true_is_not_a_person_anywhere_in_the_conversation(default: PrivacyFilter) -> None:
    """A detected value is replaced everywhere: "True" taken for a person once would be
    replaced in every message."""
    messages = [
        {"role": "user", "content": "def f(x):\n    return True"},
        {"role": "assistant", "content": "It always returns True."},
    ]
    out = default.redact_messages(messages, Vault()).messages
    assert [m["content"] for m in out] == [m["content"] for m in messages]


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("name,age\nJane Roe,42", "plain"),
        ("first_name,age\nJane,42", "qualified"),
        ('"Full Name";"Role"\n"Jane Roe";"admin"', "qualified"),
        ("name,price\nWidget,3", None),
        ("Jane Roe went home, then left", None),
    ],
)
def test_name_column_reads_the_header(text: str, column: str | None) -> None:
    from runtime.privacy.names import name_column

    assert name_column(text, text.index("J" if "J" in text else "W")) == column
