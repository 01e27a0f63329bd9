"""The formats behind :mod:`rlft.responsible.pii`: a regular expression for each type of PII,
and the checks that turn a candidate match into a detection (Luhn and the card networks' prefixes,
ISO 7064 mod-97 and the country's length for IBANs, the ``ipaddress`` parser, the UK National
Insurance prefixes). Where in a text to look, and which detection wins, is ``pii``'s business.
"""

from __future__ import annotations

import ipaddress
import re

# Unicode-aware: \w covers internationalised local parts and domains (RFC 6531); an apostrophe may
# sit inside a local part (o'neil@...). The TLD is letters or an xn-- label.
EMAIL = re.compile(
    r"(?<![\w.+-])[^\W_](?:[\w.!#$%&'*+/=?^`{|}~-]*[\w!#$%&*+/=?^`{|}~-])?"
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})(?![\w-])"
)
CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")  # not in a decimal or a hash
IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d]|\.\d)"
)
# Candidates only; ipaddress.IPv6Address decides.
IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?::\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)")
# Candidates only; pii._find_phones decides (with libphonenumber's metadata when installed).
PHONE = re.compile(
    r"""(?<![\w+/.=*-])
    (?:(?:\+|00)\d{1,3}[ \u00a0.-]?)?        # country code
    (?:\(0\)[ \u00a0.-]?)?                    # (0): the trunk prefix in an international number
    (?:\(0?\d{1,4}\)[ \u00a0./-]?)?           # area code in parentheses, e.g. (555) or (02)
    \d{1,15}(?:(?:[ \u00a0./-]|\ /\ )\d{1,8}){0,5}  # digit groups
    (?![\w]|[.:/-]\d)""",
    re.VERBOSE,
)
# A phone word shortly before a number, with no other digits in between.
PHONE_CONTEXT = re.compile(
    r"""(?:\b(?:call|phone|tel|telephone|mobile|mob|cell|fax|ring|text\s+me|sms|whats\s?app|contact|
        reach|dial|landline|hotline|helpline|llama|llámame|appel\w*|anruf\w*|ruf|telefon\w*|
        t[ée]l[ée]phone|handy|mobil\w*|portable|cellulare|chiamami)\b)[^\d\n]{0,20}$""",
    re.VERBOSE | re.IGNORECASE,
)
NANP_SHAPE = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\)[ ]?|\d{3}([ .-]))\d{3}[ .-]\d{4}")
DECIMAL = re.compile(r"[+-]?\d+\.\d+")  # +35236450.6 is a signed decimal, not Luxembourg
# Shapes that are not phone numbers: dates, US ZIP+4 codes.
NOT_PHONE_SHAPE = re.compile(r"\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{5}-\d{4}")
SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
# Upper or lower case ("qq 12 34 56 c"): the prefix rules are checked on the upper-cased value.
UK_NI = re.compile(r"\b[A-Z]{2}([ -]?)\d{2}\1\d{2}\1\d{2}\1[A-D]\b", re.IGNORECASE)
UK_NI_PREFIX = re.compile(r"(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]")
ID_AFTER_KEYWORD = re.compile(
    r"""(?:\b(?:SSN|social\s+security\s+(?:number|no\.?)|passport(?:\s+(?:number|no\.?))?|
        national\s+(?:id|insurance)(?:\s+(?:number|no\.?))?|driver'?s?\s+licen[cs]e(?:\s+(?:number|no\.?))?|
        tax\s+id|NI\s+number|NINO|ID\s+(?:number|no\.?))\s*(?:is\s+|:|\#|-)?\s*)
    ([A-Z0-9][A-Z0-9-]{4,14}[A-Z0-9])(?![A-Za-z0-9])""",
    re.VERBOSE | re.IGNORECASE,
)
# IBAN: country code, two check digits, then the BBAN in groups of four (or none).
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}\b")
# Lengths from the SWIFT IBAN registry; a country not listed is not an IBAN country.
IBAN_LENGTHS = dict(
    AD=24, AE=23, AL=28, AT=20, AZ=28, BA=20, BE=16, BG=22, BH=22, BR=29, BY=28, CH=21, CR=22,
    CY=28, CZ=24, DE=22, DK=18, DO=28, EE=20, EG=29, ES=24, FI=18, FO=18, FR=27, GB=22, GE=22,
    GI=23, GL=18, GR=27, GT=28, HR=21, HU=28, IE=22, IL=23, IQ=23, IS=26, IT=27, JO=30, KW=30,
    KZ=20, LB=28, LC=32, LI=21, LT=20, LU=20, LV=21, LY=25, MC=27, MD=24, ME=22, MK=19, MR=27,
    MT=31, MU=30, NL=18, NO=15, PK=24, PL=28, PS=29, PT=25, QA=29, RO=24, RS=22, SA=24, SC=31,
    SE=24, SI=19, SK=24, SM=27, ST=25, SV=28, TL=23, TN=24, TR=26, UA=29, VA=22, VG=24, XK=20,
)

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DATE = (
    rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[./-]\d{{1,2}}[./-](?:\d{{4}}|\d{{2}})"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}"
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})"
)
# A date is a date of birth only when the text says so: an invoice date is not personal data.
DOB = re.compile(
    rf"""\b(?:date\s+of\s+birth|birth\s?date|birthday|d\.?o\.?b\.?|born(?:\s+(?:on|in))?|
        geburtsdatum|geb\.|geboren(?:\s+am)?|date\s+de\s+naissance|n[ée]e?\s+le|
        fecha\s+de\s+nacimiento|nacid[oa](?:\s+el)?|data\s+di\s+nascita|nat[oa]\s+il)
    [\s:,)-]*(?:(?:is|was|on|the|:)\s+)*({_DATE})(?![\d.]\d)""",
    re.VERBOSE | re.IGNORECASE,
)
_STREET_SUFFIX = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|"
    r"Close|Crescent|Parkway|Pkwy|Square|Sq|Highway|Hwy|Circle|Cir|Row|Gardens|Grove|Hill|Walk|"
    r"Loop|Trail|Mews|Plaza|Alley"
)
_UNIT = r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|\#)"
ADDRESS = re.compile(
    rf"""\b\d{{1,5}}[A-Za-z]?,?\s+
    (?:(?:[NSEW]\.?|North|South|East|West)\s+)?                   # direction
    (?:(?:[A-Z][a-z'’]+|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,3}}          # street name
    (?:{_STREET_SUFFIX})\b\.?
    (?:,?\s+{_UNIT}\.?\s*\#?[A-Za-z0-9-]+)?""",
    re.VERBOSE,
)
# Flat 3, Rose Court: a unit first, then a building or street name with a suffix.
ADDRESS_UNIT_FIRST = re.compile(
    rf"\b{_UNIT}\.?\s*\d{{1,4}}[A-Za-z]?,\s+(?:\d{{1,5}}[A-Za-z]?\s+)?(?:[A-Z][a-z'’]+\s+){{1,3}}"
    rf"(?:{_STREET_SUFFIX}|House|Mansions|Building|Tower)\b"
)
# Hauptstraße 12, Lindenweg 4a: German-speaking countries write the number after the street.
ADDRESS_NAME_FIRST = re.compile(
    r"\b[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜ][a-zäöüß]+)*(?:straße|strasse|str\.|weg|gasse|allee|platz|ufer)"
    r"\s+\d{1,4}[a-z]?\b"
)
# 12 rue de Rivoli, Calle Mayor 5, Via Roma 10.
ADDRESS_ROMANCE = re.compile(
    r"""\b(?:\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|cours)
         \s+(?:(?:de\s+la|de|du|des|la|le|l'|d')\s*)?[A-ZÉ][\w'’-]+(?:\s+[A-ZÉ][\w'’-]+)?
       |(?:Calle|Avenida|Avda\.|Paseo|Plaza|Via|Viale|Piazza|Corso|Rua|Carrer)
         \s+(?:(?:de\s+la|de|del|dei|della|di|do|da)\s+)?[A-Z][\w'’-]+(?:\s+[A-Z][\w'’-]+)?,?\s+(?:n[º°o]\.?\s*)?\d{1,4})\b""",
    re.VERBOSE,
)
PO_BOX = re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b", re.IGNORECASE)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only): every second digit from the right is
    doubled (minus 9 above 9) and the sum must be divisible by 10."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Issuer prefixes (IIN ranges) and lengths of the card networks: (first, last, lengths).
CARD_NETWORKS = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)), (2221, 2720, (16,)),  # Mastercard
    (34, 34, (15,)), (37, 37, (15,)),  # American Express
    (6011, 6011, range(16, 20)), (644, 649, range(16, 20)), (65, 65, range(16, 20)),  # Discover
    (3528, 3589, range(16, 20)),  # JCB
    (300, 305, (14, 16)), (36, 36, (14,)), (38, 39, (16,)),  # Diners Club
    (62, 62, range(16, 20)),  # UnionPay
    (50, 50, range(16, 20)), (56, 69, range(16, 20)),  # Maestro (the rare 12-15-digit ones are missed)
)


def card_number_valid(digits: str) -> bool:
    """A card network's prefix and length, and the Luhn checksum: a random 14-digit number (the
    product of two 7-digit numbers) passes Luhn one time in ten, but rarely all three."""
    network = any(
        int(digits[: len(str(first))]) in range(first, last + 1) and len(digits) in lengths
        for first, last, lengths in CARD_NETWORKS
    )
    return network and luhn_valid(digits)


def card_ok(value: str) -> bool:
    """A valid card number, grouped as cards are printed (4-4-4-4, Amex 4-6-5) or not grouped at
    all: a subtraction such as 3089432-2965625 is not a card number."""
    groups = re.split(r"[ -]", value)
    shapes = ([4] * (len(groups) - 1), [4, 6])
    if len(groups) > 1 and [len(g) for g in groups[:-1]] not in shapes:
        return False
    return card_number_valid("".join(groups))


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country's length, then ISO 7064 mod 97-10 (letters as 10..35, the first
    four characters moved to the end) must leave 1."""
    iban = iban.replace(" ", "").upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def uk_ni_ok(value: str) -> bool:
    return bool(UK_NI_PREFIX.match(value[:2].upper()))


def ipv6_ok(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return value.count(":") >= 2
