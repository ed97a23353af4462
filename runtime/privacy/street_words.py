"""Street vocabulary of many countries, and a fast scan for where a street word stands.

The address detector's patterns are too slow to run over a whole prompt (~8 ms per KB):
`street_hits` finds the few words that can end a street line (a USPS suffix, a compound
ending such as "-straße" or "-katu", a street-type word such as "utca") with one pass over
the words, and the patterns then run on a short window before each hit.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from runtime.privacy.gazetteer import words

# USPS street suffixes (Publication 28, appendix C1), common abbreviations included.
SUFFIX_EN = (
    r"(?:Street|St|Str|Avenue|Ave|Av|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|"
    r"Place|Pl|Ways?|Parks|Manors|Mills|Terrace|Ter|Square|Sq|Crescent|Cres|Close|Parkway|Pkwy|Highway|Hwy|Row|"
    r"Walk|Gardens?|Gdns|Grove|Mews|Trail|Trl|Circle|Cir|Alley|Path|Pike|Plaza|Quay|Rise|"
    r"Wharf|Forges?|Views?|Heights|Hollow|Meadows?|Ridge|Springs?|Crossing|Estates?|Loop|"
    r"Run|Points?|Pass|Bypass|Junction|Green|Hills?|Park|Broadway|Annex|Arcade|Bayou|Beach|"
    r"Bend|Bluffs?|Bottom|Branch|Bridge|Brooks?|Burgs?|Camp|Canyon|Cape|Causeway|Center|"
    r"Centre|Cliffs?|Club|Commons?|Corners?|Course|Courts|Cove|Creek|Crest|Curve|Dale|Dam|"
    r"Divide|Expressway|Extension|Falls|Ferry|Fields?|Flats?|Fords?|Forest|Forks?|Fort|"
    r"Freeway|Gateway|Glens?|Harbou?rs?|Haven|Inlet|Islands?|Isle|Keys?|Knolls?|Lakes?|"
    r"Landing|Lights?|Lock|Lodge|Mall|Manor|Mill|Mission|Motorway|Mount|Mountain|Neck|"
    r"Orchard|Oval|Overpass|Pines?|Plains?|Ports?|Prairie|Ramp|Ranch|Rapids?|Rest|Shoals?|"
    r"Shores?|Skyway|Spur|Squares|Station|Stravenue|Stream|Summit|Throughway|Trace|Track|"
    r"Trafficway|Tunnel|Turnpike|Underpass|Union|Valley|Viaduct|Village|Ville|Vista|Wall|"
    r"Wells?|gate|tér|utca|u)"
)
# Street words written before the name (French, Italian, Iberian, Polish, Greek ...).
PREFIX = (
    r"(?i:Rue|Via|Viale|Vicolo|Corso|Piazza|Piazzale|Largo|Strada|Calle|Carrer|Camino|Paseo|"
    r"Ronda|Avenida|Av\.?|Avda\.?|Rua|Praça|Travessa|Estrada|Alameda|Chemin|Allée|Bd|Quai|"
    r"Impasse|Ulica|Aleja|Plac|Odos|Οδός|Λεωφόρος|Πλατεία|Rte|Str\.|Place|Route|Boulevard|"
    r"Avenue|Plaza)"
)
# More of them, ambiguous enough in English text that they need a house number.
PREFIX_NUMBERED = (
    r"(?:ul\.|al\.|pl\.|Intrarea|[SȘŞ]oseaua|Calea|Aleea|Bulevardul|Splaiul|Drumul|Pia[tțţ]a|Jalan|Jl\.|"
    r"Rotonda|Contrada|Borgo|Lungomare|Salita|Travesía|Carretera|Pasaje|Callejón|Glorieta|"
    r"Calzada|Cerrada|Privada|Prolongación|Continuación|Andador|Retorno|Rodovia|Ladeira|"
    r"Viela|Chaussée|Sentier|Cours|Faubourg|Rambla|Corredor|Trevo|Colônia|Residencial|Núcleo|"
    r"Quadra|Conjunto|Setor|Vila|Jardim|Chácara|Sítio|Loteamento|Vereda|Esplanada|Recanto|"
    r"Nábřeží|Náměstí|Nám\.|Incrocio|Favela)"
)
HOUSE_NUMBER = r"(?:(?:Nr|No|N[º°o]|n[º°o])\.?[ \t]*)?"
# Street-type endings of a compound name ("Koskikatu"), or a word after it ("Tiha ulica").
COMPOUND = (
    r"(?:stra(?:ss|ß)e|str\.|gasse|weg|allee|platz|damm|ufer|gade|vej|vænget|gatan|"
    r"gata|vägen|väg|veien|vegen|gaten|stræti|straeti|stræde|braut|stien|stigen|vei|"
    r"katu|tie|kuja|polku|raitti|straat|laan|"
    r"gracht|plein|kade|dijk|steeg|utca|út|útja|tér|körút|tänav|maantee|iela|gatve|ulica|"
    r"cesta|náměstí|třída|sokak|caddesi)"
)
TYPE_WORD = (
    r"(?:ulica|ulice|cesta|trg|utca|út|útja|tér|körút|krt\.|köz|sor|fasor|rakpart|rkp\.|"
    r"sétány|sugárút|nábřeží|náměstí|třída|nabrežje|prospekt|prospektas|bulvar|bulvarı|"
    r"sokak|sokağı|caddesi|kuja|polku|raitti|kaari|stra(?:ss|ß)e|gasse|weg|allee|platz|ring|damm|ufer|laan|straat|"
    r"plein|kade|gracht|singel|katu|tie|vej|gade|gatan|vägen|väg|gata|gate|veien|vei|iela|"
    r"gatve)"
)

STRONG_SUFFIX = words(
    """
    street st str avenue ave road rd lane ln drive dr boulevard blvd court ct place pl way
    terrace square crescent close parkway highway turnpike utca u
    """
)

FUNCTION = words(
    """
    a an the to on in at of by for with and or my your his her our their this that is are
    was were be it its as from into over per least most about around approximately nearly
    almost roughly
    """
)

CALENDAR = words(
    """
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday
    saturday sunday
    """
)
# Words that a number follows without being a house number ("Chapter 12, 2019 Edition").
NOT_STREET = words(
    """
    version chapter section page room gate flight level season episode part volume vol no nr
    number step phase table figure fig item line article model series class grade year week
    day team group unit order invoice ticket case ref id code pin box windows iphone ios
    android release update module lesson stage round match game score size rank top
    """
)


_TOKEN = re.compile(r"[^\W\d_][\w'’-]*")
_NUMBER_AFTER = re.compile(r"\.?[ \t]+\d")
_SUFFIX_WORD = re.compile(rf"(?i){SUFFIX_EN}")
# The same words without their dots: a token never holds the dot ("Hauptstr." "krt.").
_COMPOUND_WORD_END = re.compile("(?i)" + COMPOUND.replace(r"str\.", "str") + "$")
_TYPE_WORD_ONLY = re.compile("(?i)" + TYPE_WORD.replace(r"\.", ""))
_EN, _COMPOUND_END, _TYPE = 1, 2, 4


@dataclass(frozen=True, slots=True)
class StreetHits:
    """(start, end) of the words that can end a street line, by kind."""

    suffix: list[tuple[int, int]]  # "Avenue", "St": may follow the name
    compound: list[tuple[int, int]]  # "Koskikatu" followed by a number
    typed: list[tuple[int, int]]  # "utca" followed by a number


@functools.lru_cache(maxsize=16384)
def _kind(word: str) -> int:
    kind = _EN if _SUFFIX_WORD.fullmatch(word) else 0
    if _COMPOUND_WORD_END.search(word):
        kind |= _COMPOUND_END
    if _TYPE_WORD_ONLY.fullmatch(word):
        kind |= _TYPE
    return kind


def street_hits(text: str) -> StreetHits:
    """The street words of `text`, found in one pass (a cached lookup per word)."""
    hits = StreetHits([], [], [])
    for m in _TOKEN.finditer(text):
        kind = _kind(m.group())
        if not kind:
            continue
        span = (m.start(), m.end())
        if kind & _EN:
            hits.suffix.append(span)
        if kind & (_COMPOUND_END | _TYPE) and _NUMBER_AFTER.match(text, m.end()):
            if kind & _COMPOUND_END:
                hits.compound.append(span)
            if kind & _TYPE:
                hits.typed.append(span)
    return hits
