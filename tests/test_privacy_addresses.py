"""Postal addresses in many national formats, and look-alikes that are not addresses."""

from __future__ import annotations

import pytest

from runtime.privacy import PrivacyConfig, PrivacyFilter, Vault
from runtime.privacy.addresses import AddressDetector
from runtime.privacy.street_words import street_hits


@pytest.fixture(scope="module")
def addresses() -> AddressDetector:
    return AddressDetector()


def found(addresses: AddressDetector, text: str) -> list[str]:
    return [text[s.start : s.end] for s in addresses.detect(text)]


# (text before, the address, text after): the detector must return exactly the address.
CASES = [
    # street, postcode and town on one line (Scandinavia, Central Europe, Switzerland)
    ("Ship to ", "Rüeggstrasse 83, 3803 Burgdorf", " please"),
    ("I rent at ", "Belianska 2, 855 05 Hronovce", " now."),
    ("Return address - ", "Glogovac 2c\n65350 Lipik", ""),
    ("at ", "Heßplatz 28\n61400 Pfaffenhofen an der Ilm", ""),
    # a street-type word after the name (Slovene, Hungarian, Finnish)
    ("", "Tiha ulica 23, Ljubljana", ""),
    ("Invoice to ", "Törökháti utca 44.", " please"),
    ("Ship to:\n", "Eerik Pyhän kuja 1 Apt. 450 Espoo Finland", ""),
    # street words before the name, with "Nr." or a comma before the number
    ("Mail it to ", "Intrarea Popa Nr. 26, Sibiu, 284994", ""),
    ("Invoice: ", "972, rue Paris, 12132 Pierrefonds", ""),
    ("", "Via Roth, 37\n52041, Civitella In Val Di Chiana (AR)", ""),
    ("", "Trevo Lorena, 25\nCentro\n42690-503 Ferreira de Mendonça / AM", ""),
    # units before and after the street; the town and country on the same line
    ("How far is ", "1 Thornton Lodge Apt. 949 Lieksa Finland", " from here?"),
    ("Mail it to ", "Panuškova 65 Apt. 126 Brno Czechia", " before Friday"),
    ("", "Strada Capone, 19 Appartamento 35, 50058, Signa (FI)", ""),
    # postal blocks of short lines whose first line is only a number and words
    ("The party is at ", "66 Storgatan\nBeroun\n, CZ\n Monaco 8511", " tonight"),
    ("", "72 Nábřeží Ludvíka Svobody\nBukittinggi\n, Rapin\n Mayotte H-8219", ""),
    # an Irish Eircode
    ("", "34 Dempsey Street, Dublin D02 X285", ""),
    # lower case throughout: the structure is the evidence
    ("my address is ", "vogtstrasse 75\n9894 münchenstein", ""),
    ("ship to ", "schwarzstrasse 314 koper slovenia", ""),
    # a street without a number needs a cue or a postcode
    ("she lives on ", "Beacon Street, Boston", ""),
    ("", "Regent Street, London W1B 5AH", ""),
    # US grid streets named by an ordinal
    ("I live at ", "350 5th Ave", ""),
    ("Send it to ", "350 5th Avenue, New York, NY 10118", ""),
    ("She lives at ", "77 W 23rd St.", " in Chelsea"),
    ("", "123 N 3rd Street", ""),
]


@pytest.mark.parametrize(("before", "address", "after"), CASES)
def test_addresses_of_many_countries_are_found_whole(
    addresses: AddressDetector, before: str, address: str, after: str
) -> None:
    assert found(addresses, before + address + after) == [address]


@pytest.mark.parametrize(
    "text",
    [
        "The Supreme Court ruled on Monday.",
        "He worked on Wall Street for years.",
        "The Wolf of Wall Street, Fleet Street, Off Road, Freestyle and Pro Racing",
        "His contractor charges $4 per square foot.",
        "She puts 4 cookies in her son's lunch box 5 days a week.",
        "A driver who is at least 21 years old.",
        "The original ended on January 31, 1865.",
        "It took place approximately 5 miles away.",
        "Room 12 is booked from 9 to 11.",
        "Read Chapter 12, 2019 Edition, page 4.",
        "Flight LH 441 leaves Gate 22 at 14:35.",
        "novel by Olivia Goldsmith. Amber ran 52 miles in total. How many?",
        "game consoles (PlayStation 4, Wii U, and Xbox One)",
        "Windows 11 Pro keeps restarting after update 23H2.",
        "I finished 3rd Place in 2019 and we walked down 5th Avenue.",
        "The meeting is on 3rd 15 May, on the 2nd Floor.",
    ],
)
def test_look_alikes_are_not_addresses(addresses: AddressDetector, text: str) -> None:
    assert found(addresses, text) == []


def test_street_words_are_found_in_one_pass() -> None:
    text = "24 Clarke Avenue, Koskikatu 25, Tiha ulica 23 and Hauptstr. 5"
    hits = street_hits(text)
    assert [text[a:b] for a, b in hits.suffix] == ["Avenue"]
    assert [text[a:b] for a, b in hits.compound] == ["Koskikatu", "ulica", "Hauptstr"]
    assert [text[a:b] for a, b in hits.typed] == ["ulica"]


def test_a_whole_postal_block_becomes_one_placeholder() -> None:
    privacy = PrivacyFilter.from_config(PrivacyConfig(ner="none"))
    text = "Send it to Jenssenmarka 66, 2412 Sverrefjord, Norway. Thanks!"
    red = privacy.redact(text, Vault())
    assert red.text == "Send it to <ADDRESS_1>. Thanks!"
