"""Regenerate `address_tuning.json`: Faker addresses in chat sentences, to tune address rules.

    .venv/bin/pip install Faker==40.63.0
    .venv/bin/python benchmarks/data/pii/make_address_tuning.py

A development set, separate from the evaluation data: the templates below were written
here, and the addresses come from Faker's providers (MIT) in 30 locales, in each locale's
own postal format, as one line, and as multi-line postal blocks whose parts come from
different locales (the shape of the presidio-research generator's addresses). About one
item in six is a near-miss without an address (amounts, versions, rooms, chapters). Seeded,
and run with PYTHONHASHSEED=0 (some Faker providers iterate sets): the output is the same on
every run with the same Faker version.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

from faker import Faker

OUT = Path(__file__).with_name("address_tuning.json")
LOCALES = [
    "en_US",
    "en_GB",
    "en_AU",
    "en_CA",
    "en_IE",
    "en_NZ",
    "de_DE",
    "de_AT",
    "de_CH",
    "fr_FR",
    "fr_CH",
    "it_IT",
    "es_ES",
    "nl_NL",
    "nl_BE",
    "pl_PL",
    "hu_HU",
    "fi_FI",
    "da_DK",
    "sv_SE",
    "no_NO",
    "pt_BR",
    "pt_PT",
    "cs_CZ",
    "sk_SK",
    "hr_HR",
    "sl_SI",
    "ro_RO",
    "es_MX",
    "id_ID",
]
TEMPLATES = (
    "Please send the package to {a}.",
    "My new address is {a}",
    "we moved to {a} last spring",
    "Ship to:\n{a}\n\nThanks!",
    "{p}\n{a}",
    "The clinic is located at {a}, next to the pharmacy.",
    "billing address: {a}",
    "Can you change my delivery address to {a}?",
    "I live at {a} with my two cats",
    "Return address - {a}",
    "Invoice recipient: {p}, {a}",
    "Hi, I'm {p} and I rent a flat at {a}. The heating is broken.",
    "Our office moved. Find us at {a} from Monday on.",
    "Mail the forms to {p} at {a} before Friday",
    "Is {a} in a safe neighbourhood?",
    "Driver, pick me up at {a} please",
    "How far is {a} from the airport?",
    "> {a}\n> is my parents' place",
    "Previous address: {a}. Current address: {b}",
    "The party is at {a} tonight, bring snacks",
)
NEGATIVES = (
    "I ordered 12 Large Pizzas for the team on Friday.",
    "Read Chapter 12 Section 3 before the exam.",
    "Windows 11 Pro keeps restarting after update 23H2.",
    "We scored 3 goals in the second half, final score 3-1.",
    "Room 12 is booked from 9 to 11 for the Data Science meetup.",
    "The invoice total is 1 250 EUR, due in 30 days.",
    "Flight LH 441 leaves Gate 22 at 14:35.",
    "Highway 61 Revisited is my favourite Bob Dylan album.",
    "Version 2.4.1 fixed the Memory Leak in Module 7.",
    "Add 2 cups of Flour and 3 Eggs, then bake for 40 minutes.",
    "Our team of 25 Engineers ships a Release every 2 weeks.",
    "Apple Park and Central Park are both on my list.",
    "The Main Street Bakery sells bread from 7 am.",
    "Call of Duty 4 runs at 60 frames per second on my PC.",
    "Station 5 of the Tour de France ends in the Alps.",
    "She lives near the Lake District and loves Hill Walking.",
)


def _native(fake: Faker) -> str:
    return str(fake.address())


def _one_line(fake: Faker) -> str:
    return re.sub(r"\s*\n\s*", ", ", str(fake.address()))


def _block(fakes: list[Faker], rng: random.Random) -> str:
    """Street, city, region, country and postcode, each part from a random locale."""
    street, city, region, country = (rng.choice(fakes) for _ in range(4))
    first = f"{street.building_number()} {street.street_name()}"
    if rng.random() < 0.5:
        first += f" {street.building_number()}"
    if rng.random() < 0.3:
        first += f"\n{rng.choice(('Apt.', 'Suite', 'Unit', 'apt.'))} {rng.randint(1, 999)}"
    state = region.state_abbr() if hasattr(region, "state_abbr") else region.city()
    return f"{first}\n{city.city()}\n, {state}\n {country.country()} {country.postcode()}"


def _spaced(fakes: list[Faker], rng: random.Random) -> str:
    """The same parts on one line with spaces only ("12 Main St Apt. 4 Lyss Chile")."""
    street, city, country = (rng.choice(fakes) for _ in range(3))
    unit = f" Apt. {rng.randint(1, 999)}" if rng.random() < 0.5 else ""
    line = f"{street.street_address()}{unit} {city.city()} {country.country()}"
    return re.sub(r"\s*\n\s*", " ", line)


def _item(text: str, values: list[tuple[str, str]]) -> dict[str, Any]:
    spans = []
    pos = 0
    for kind, value in values:
        start = text.index(value, pos)
        spans.append({
            "entity_type": kind, "entity_value": value,
            "start_position": start, "end_position": start + len(value),
        })  # fmt: skip
        pos = start + len(value)
    return {"full_text": text, "spans": spans}


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, __file__], env)
    rng = random.Random(20240611)
    fakes = [Faker(loc) for loc in LOCALES]
    for i, fake in enumerate(fakes):
        fake.seed_instance(1000 + i)
    people = Faker("en_US")
    people.seed_instance(7)
    items: list[dict[str, Any]] = []
    for n in range(480):
        if n % 6 == 5:
            items.append(_item(rng.choice(NEGATIVES), []))
            continue
        template = rng.choice(TEMPLATES)
        addresses = []
        for _ in range(template.count("{a}") + template.count("{b}")):
            kind = rng.choice(("native", "line", "block", "spaced"))
            fake = rng.choice(fakes)
            if kind == "native":
                addresses.append(_native(fake))
            elif kind == "line":
                addresses.append(_one_line(fake))
            elif kind == "block":
                addresses.append(_block(fakes, rng))
            else:
                addresses.append(_spaced(fakes, rng))
        person = people.name()
        fields = {"a": addresses[0], "b": addresses[-1], "p": person}
        text = template.format(**fields)
        if rng.random() < 0.1:  # people who never press shift
            text = text.lower()
            fields = {k: v.lower() for k, v in fields.items()}
        order = sorted(
            (template.index("{" + k + "}"), k) for k in "abp" if "{" + k + "}" in template
        )
        values = [("PERSON" if k == "p" else "STREET_ADDRESS", str(fields[k])) for _, k in order]
        items.append(_item(text, values))
    OUT.write_text(json.dumps(items, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{OUT.name}: {len(items)} items")


if __name__ == "__main__":
    main()
