"""PII gate: find personal data in every text column of a row, then reject the row or redact it, per kind.

Kinds (in detection priority: where two detectors claim overlapping characters the earlier kind wins):

* ``email`` — RFC 5322-ish addresses (``local@domain.tld``; image names such as ``icon@2x.png`` are not).
* ``iban`` — an ISO 13616 IBAN, compact or in groups of four: a known country code, that country's exact length
  and the mod-97 check (ISO 7064) must all hold.
* ``payment_card`` — 12 to 19 digits (contiguous, or in groups split by one kind of separator) that pass the Luhn
  check and start with a card network's prefix at a length it issues (Visa, Mastercard, Amex, Discover, JCB,
  Diners, UnionPay, Mir, Maestro): a 16-digit number that fails Luhn is not a card; "the card ending 4242" is not.
* ``ip_address`` — IPv4 and IPv6 (validated by :mod:`ipaddress`); a dotted quad after "version", "firmware",
  "build"... is a version. See the choices below for which ranges count.
* ``account_id`` — order / account / reference / ticket numbers (:data:`DEFAULT_ACCOUNT_ID_PATTERNS`): Larkspur's
  ``LK-#####`` order numbers and ``RT-#####`` return references, and 5+ digits (optionally after a short letter
  prefix) right after "order", "account", "reference", "ticket", "case", "invoice", "tracking", ... (with an
  optional "number" / "no." / "#" / "id"). Error codes (``PAY-051``, ``AUTH-423``) and intent ids are not ids.
* ``phone`` — candidates of phone shape (7 to 15 digits in groups), judged by Google's libphonenumber
  (``phonenumbers``): written internationally (``+44 …``, ``0044 …``) it must be a possible number of its country;
  written nationally it must be valid (or possible, with a phone word such as "call me on" / "tel" earlier on the
  same line, or in NANP ``(415) 555-0123`` shape, or 10+ digits after a trunk ``0``) in one of ``phone_regions``.
  A GB number must carry its trunk ``0`` ("1234567890" is not one) and a NANP number must be grouped 3-3-4.
  Dates, decimals, IPv4-shaped strings, sums ("28980 - 18480 = 10500") and lists of small numbers are not phones.
* ``street_address`` — a house number, one to three capitalised words and a street suffix (``12 Acacia Avenue``,
  ``Flat 4, 221B Baker Street``, ``1600 Pennsylvania Avenue NW``), extended over a following town and UK postcode
  or US state (+ ZIP); lower-case addresses only after an address cue ("I live at", "deliver to", "address is");
  a full UK postcode after "postcode". A ZIP alone, a street without a number and "… Solid State Hard Drive" are not.
* ``person_name`` — a person's name in customer context. Strong contexts take any capitalised word that is not a
  known non-name (:data:`NON_NAMES`: "Customer", "Sir", "Sorry", days, nationalities, product names...): "my name
  is X" (also lower case, for listed names), "full name: X", "Dear X", "Dear Mr X", sign-offs ("Regards,\\nX",
  "Kind regards, X", "Thanks,\\nX", "Thanks, X" ending the line), "for my son X" and other family words (unless the
  sentence is in Title Case). Weak contexts take only names of the first-name list (built once from the first
  names of Faker's person providers, :data:`DEFAULT_NAME_LOCALES`): "I'm X", "I am X", "this is X", "it's X",
  "Hi X", "Hello X", "Thanks X" mid-sentence, "Name: X" with one word, "From: X". Following capitalised words are
  taken as the surname. "The name of the plan is Plus", "It's Ava's turn", "I'm British" are not names.

Decisions. Every configured text column (default ``instruction``, ``response``, ``text``) is scanned and redacted
on its own with the same detectors, so ``text`` (the newline-join of the others) ends up with the same
placeholders; the ``conversation`` column (a JSON list of ``{"role", "content"}`` messages) is redacted message by
message and re-serialised (``ensure_ascii=False``), so it stays valid JSON. A row with a hit of a ``reject`` kind
is dropped with category ``pii_<kind>`` (the first reject hit) and is *also* rewritten with every non-allowed hit
replaced by its typed placeholder (``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[ADDRESS]``, ``[IP]``,
``[ACCOUNT_ID]``, ``[NAME]``), so the reject log never holds the raw value; a row with only ``redact`` hits is
rewritten and kept; ``allow`` kinds are only counted (metrics). The reason names each kind and where, masked
(reject hits first): ``PII: payment_card in response[40:59] (Luhn-valid visa, ••••4242); email in text[3:20]
(j•••@•••.com)``. Score: the number of non-allowed hits (spans over all scanned columns). Edits (lineage):
``{"kind", "column", "start", "end", "placeholder"}`` with offsets into the column's original value (for
``conversation`` also ``"message"``: the message index; offsets are into that message's original ``content``).

Choices:
* Documentation values are still PII-shaped values: ``jane@example.com``, ``192.0.2.7`` (RFC 5737), ``2001:db8::1``,
  Ofcom's drama numbers ``07700 900xxx`` and NANP ``555-01xx`` are flagged. The gate cannot tell a made-up contact
  from a copied real one (a generator that copies a real contact may as well write it on a real domain), and a
  model trained on rows full of contact details learns to emit them; the cost is redacting a harmless value,
  which the default action (redact) keeps cheap.
* Non-identifying IPs are *not* flagged by default: private (RFC 1918, ULA), loopback, link-local, carrier-grade
  NAT, multicast and reserved ranges (``192.168.1.1`` is everyone's router; ``255.255.255.0`` is a netmask).
* Placeholders already present (``[EMAIL]``, ``{customer_name}``, ``<NAME>``) are not re-flagged: no detector
  matches them.
* Regexes + checksums + libphonenumber rather than Presidio: Presidio's analyzer needs a spaCy model, and none of
  spaCy's ``en_core_web_*`` models is on the package index this project installs from (they ship as GitHub release
  assets); the rule-based detectors are also what Presidio itself uses for these kinds (its pattern recognizers
  plus Luhn / IBAN checksums), at a fraction of the cost.

Measured (``docs/measurements/pii.md``, ``scripts/measure_pii.py``): planted values in real sentences are found
with 100% recall for email, IBAN, card, IP, account id and phone, 88% for addresses (misses: street suffixes not
in the list) and 83% for names (names outside the list in weak contexts); no hit on 1,200 planted look-alikes;
≤ 0.3% of rows flagged on BANKING77, SST-2, TweetEval and GSM8K (mostly real names and phone numbers in tweets);
about 5,000 rows/s with four text columns on one core.

The gate is pure (no Dagster, no network) and deterministic; all heavy state (compiled regexes, the first-name
set, phonenumbers' metadata) is built once in :class:`PiiGate`'s ``__init__``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from synqa_dagster.gates.base import Gate, GateResult
from synqa_dagster.gates.text import is_missing

__all__ = [
    "ACTIONS",
    "DEFAULT_ACCOUNT_ID_PATTERNS",
    "DEFAULT_ACTIONS",
    "DEFAULT_NAME_LOCALES",
    "IBAN_LENGTHS",
    "KINDS",
    "NON_NAMES",
    "PLACEHOLDERS",
    "PiiDetector",
    "PiiGate",
    "PiiGateConfig",
    "PiiHit",
    "iban_valid",
    "luhn_valid",
]

PiiKind = Literal[
    "email", "iban", "payment_card", "ip_address", "account_id", "phone", "street_address", "person_name"
]
PiiAction = Literal["reject", "redact", "allow"]

#: Every kind, in detection priority (an earlier kind wins characters claimed by two detectors).
KINDS: tuple[str, ...] = (
    "email", "iban", "payment_card", "ip_address", "account_id", "phone", "street_address", "person_name"
)
ACTIONS: tuple[str, ...] = ("reject", "redact", "allow")

#: Typed placeholder per kind.
PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "payment_card": "[CARD]",
    "iban": "[IBAN]",
    "street_address": "[ADDRESS]",
    "ip_address": "[IP]",
    "account_id": "[ACCOUNT_ID]",
    "person_name": "[NAME]",
}

#: Payment data is never worth keeping in a training row; everything else is redacted and the row kept.
DEFAULT_ACTIONS: dict[str, str] = {k: ("reject" if k in ("payment_card", "iban") else "redact") for k in KINDS}

_ACCOUNT_WORDS = (
    r"order|account|acct|customer|member(?:ship)?|reference|ref|ticket|case|invoice|tracking|confirmation|booking|"
    r"reservation|policy|claim|return|transaction|subscription|contract|consignment|parcel|shipment"
)

#: Order / account / reference ids (case-insensitive; a named group ``id`` is the span redacted, else the match).
#: Larkspur's ids in the seed corpus and reference traffic are ``LK-#####`` (orders) and ``RT-#####`` (returns);
#: its error codes (``PAY-051``, ``AUTH-423``, ``HUB-102``) identify nobody and are left alone.
DEFAULT_ACCOUNT_ID_PATTERNS: tuple[str, ...] = (
    r"\b(?:LK|RT)-?\d{4,12}\b",
    r"\b(?:" + _ACCOUNT_WORDS + r")\b(?:\s+(?:number|no\.?|num(?:ber)?\.?|id|code|ref(?:erence)?))?\s*"
    r"(?:is\s+|was\s+|:\s*|#\s*|-\s*|=\s*)?(?:#\s*)?(?P<id>(?:[A-Z]{1,5}-?)?\d{5,}(?:[-/]\d+)*)\b",
)

#: Faker locales whose first names make up the name list of the weak name contexts ("I'm X", "Hi X").
DEFAULT_NAME_LOCALES: tuple[str, ...] = (
    "en_US", "en_GB", "en_IE", "en_IN", "en_NZ", "es_ES", "es_MX", "fr_FR", "de_DE", "it_IT", "pt_BR", "pt_PT",
    "pl_PL", "nl_NL", "ga_IE", "sv_SE", "tr_TR", "id_ID", "sw", "yo_NG", "zu_ZA", "tw_GH", "ha_NG", "ig_NG",
)

#: IBAN length per country (ISO 13616 registry, as in python-stdnum's ``iban.dat``).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}


class PiiGateConfig(BaseModel):
    """Configuration of :class:`PiiGate`.

    Attributes:
        actions: per kind (:data:`KINDS`), ``reject`` (drop the row, logged redacted), ``redact`` (replace the span
            by its placeholder, keep the row) or ``allow`` (count only). Kinds left out get
            :data:`DEFAULT_ACTIONS`: ``payment_card`` and ``iban`` reject, every other kind redacts.
        columns: plain-text columns to scan and redact; columns the rows do not have are skipped.
        conversation_column: the column holding a JSON list of ``{"role", "content"}`` messages (redacted inside
            each ``content`` and re-serialised); ``None`` or a missing column skips it. A value that is not such a
            JSON list is scanned as plain text.
        phone_regions: ISO 3166 regions in which a nationally written number (no ``+``) is tried, in order.
        account_id_patterns: regexes (compiled case-insensitive) of order / account / reference ids; a named group
            ``id`` marks the span to redact (default :data:`DEFAULT_ACCOUNT_ID_PATTERNS`).
        account_id_min_digits: the account-id patterns only run on texts holding a run of at least this many
            digits (a cheap gate: every id the patterns should find must contain such a run).
        ip_skip_non_identifying: leave private, loopback, link-local, CGNAT, multicast and reserved IPs alone.
        card_require_network_prefix: a Luhn-valid digit run is a card only if it starts with a card network's
            prefix (IIN) and has a length that network issues.
        name_locales: Faker locales whose first names form the name list of the weak name contexts.
        extra_names: more first names for that list.
        extra_non_names: capitalised words never taken for a name (added to the built-in list: "Customer", "Sir",
            "Sorry", days, nationalities, product names...).
        max_reason_hits: at most this many hits are spelled out in a reason (the rest as "+N more").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    actions: dict[PiiKind, PiiAction] = Field(
        default_factory=lambda: dict(DEFAULT_ACTIONS), description="Per-kind action: reject | redact | allow."
    )
    columns: tuple[str, ...] = Field(("instruction", "response", "text"), description="Text columns to scan.")
    conversation_column: str | None = Field("conversation", description="JSON list of {role, content} messages.")
    phone_regions: tuple[str, ...] = Field(("GB", "US"), min_length=1, description="Regions for national numbers.")
    account_id_patterns: tuple[str, ...] = Field(
        DEFAULT_ACCOUNT_ID_PATTERNS, description="Regexes of order/account/reference ids (group 'id' = span)."
    )
    account_id_min_digits: int = Field(
        4, ge=1, le=12, description="Account-id patterns only run on texts with a run of this many digits."
    )
    ip_skip_non_identifying: bool = Field(True, description="Skip private/loopback/link-local/reserved IPs.")
    card_require_network_prefix: bool = Field(True, description="Cards must start with a network's IIN.")
    name_locales: tuple[str, ...] = Field(DEFAULT_NAME_LOCALES, description="Faker locales of the name list.")
    extra_names: tuple[str, ...] = Field((), description="More first names.")
    extra_non_names: tuple[str, ...] = Field((), description="Capitalised words never taken for a name.")
    max_reason_hits: int = Field(10, ge=1, description="Hits spelled out in a reason.")

    @field_validator("actions", mode="after")
    @classmethod
    def _fill_actions(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: value.get(k, DEFAULT_ACTIONS[k]) for k in KINDS}

    @field_validator("account_id_patterns")
    @classmethod
    def _regexes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern, re.IGNORECASE)
            except re.error as err:
                raise ValueError(f"invalid account_id pattern {pattern!r}: {err}") from err
        return value

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import phonenumbers

        bad = [r for r in value if r.upper() not in phonenumbers.SUPPORTED_REGIONS]
        if bad:
            raise ValueError(f"unknown phone region(s) {bad}")
        return tuple(r.upper() for r in value)


# ------------------------------------------------------------------------------------------------ checksums


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 IBAN check: known country, that country's length, and mod-97 (ISO 7064) == 1. Spaces ignored."""
    s = iban.replace(" ", "").upper()
    if IBAN_LENGTHS.get(s[:2]) != len(s) or not s.isalnum() or not s[2:4].isdigit():
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _card_network(digits: str) -> str | None:
    """The card network whose IIN ranges and lengths fit ``digits``, else None."""
    n = len(digits)
    p2, p3, p4, p6 = int(digits[:2]), int(digits[:3]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925) and 16 <= n <= 19:
        return "discover"
    if 3528 <= p4 <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (300 <= p3 <= 305 or p2 in (36, 38, 39)) and 14 <= n <= 19:
        return "diners"
    if p2 == 62 and 16 <= n <= 19:
        return "unionpay"
    if 2200 <= p4 <= 2204 and 16 <= n <= 19:
        return "mir"
    if (p2 == 50 or 56 <= p2 <= 69) and 12 <= n <= 19:
        return "maestro"
    return None


# ---------------------------------------------------------------------------------------------------- masks


def _mask_email(v: str) -> str:
    local, _, domain = v.partition("@")
    return f"{local[:1]}•••@•••.{domain.rsplit('.', 1)[-1]}"


def _mask_tail(v: str, keep: int) -> str:
    digits = [c for c in v if c.isalnum()]
    return "•" * max(4, len(digits) - keep) + "".join(digits[-keep:])


def _mask_ip(v: str) -> str:
    return v.split(".")[0] + ".•.•.•" if "." in v and ":" not in v else v.split(":")[0] + ":•••"


# ---------------------------------------------------------------------------------------------------- regexes

_UPPER = "A-ZÀ-ÖØ-Þ"
_LOWER = "a-zß-öø-ÿ"
#: A capitalised name word ("Siobhán", "O'Brien", "McDonald", "Mary-Jane", the "Sarah" of "Sarah's"; not the
#: "Face" of "FaceTimed").
_NAME_TOKEN = (
    rf"(?:Mc|Mac|O['’]|D['’])?[{_UPPER}][{_LOWER}]+(?:-[{_UPPER}][{_LOWER}]+)?(?!\w|-\w|['’](?!s\b)\w)"
)

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
_NOT_EMAIL_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "pdf"})

_IBAN_RE = re.compile(r"\b([A-Za-z]{2})(\d{2})((?:[ ]?[A-Za-z0-9]){10,34})")
_CARD_RE = re.compile(r"(?<![\w+.,-])\d(?:[ -]?\d){11,18}(?![\w-]|[.,]\d)")
_IPV4_RE = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
)
_IPV6_RE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_VERSION_CUE = re.compile(r"(?i)(?:\bv|\bversion|\bver\.?|\bfirmware|\bbuild|\brelease|\bupdate|\bapp|\bos|\bios)\s*$")
_NON_IDENTIFYING_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128", "fe80::/10", "fc00::/7", "ff00::/8",
    )
)

_PHONE_RE = re.compile(
    r"(?<![\w+#@/.,:=<>*-])(?=[\d()+ .-]{7})(?:\+[ ]?)?\(?\d++\)?(?:(?:[ .-]|[ ]-[ ]|(?<=\)))\(?\d++\)?){0,7}"
    r"(?![\w@/]|[.,:]\d|[ ]?[=*/<>])"
)
_PHONE_CUE = re.compile(
    r"(?i)\b(?:call(?:ed|ing)?|phone|mobile|mob|cell|tel|telephone|number|no\.|text|sms|whats\s?app|ring|reach|"
    r"contact|fax|landline|dial|ph)\b[^\n\d]{0,25}$"
)
_NANP_SHAPE = re.compile(r"^(?:\+?1[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}$")
_DATE_SHAPE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")

_SUFFIX = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Close|Way|Court|Ct|Crescent|Cres|Place|Pl|Terrace|Gardens|"
    r"Gdns|Grove|Square|Sq|Boulevard|Blvd|Parkway|Pkwy|Highway|Hwy|Mews|Row|Hill|Walk|Rise|View|Parade|Circle|Cir|"
    r"Trail|Green|Park|Vale|Wharf|Quay|Heights|Meadows?|Loop|Pike|Plaza|Broadway|Embankment|Esplanade|Alley|"
    r"Path|Hollow|Ridge|Crossing|Chase|Fold|Wynd|Brae|Croft)"
)
_DIRECTION = r"(?:[ \t]+(?:N|S|E|W|NE|NW|SE|SW)\b)?"
_HOUSE = r"\d{1,5}[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?"
_UNIT = r"(?:(?:Flat|Apt\.?|Apartment|Unit|Suite|Ste\.?|Room)[ \t]*#?[ \t]*\d{1,5}[A-Za-z]?,?[ \t]+)?"
_UK_POSTCODE = r"(?:[A-Z]{1,2}\d[A-Z\d]?|GIR)[ ]?\d[A-Z]{2}"
_US_STATE = (
    r"(?:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|"
    r"OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY)"
)
_STREET_WORD = r"(?:[A-Z][A-Za-z'’.-]*|\d{1,3}(?:st|nd|rd|th))"
_TOWN_WORD = r"[A-Z][a-z][A-Za-z'’.-]*"
_ADDRESS_TAIL = (
    r"(?:,?[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor)\.?[ \t]*#?[ \t]*\w{1,5})?"
    r"(?:[,\n][ \t]*" + _TOWN_WORD + r"(?:[ \t]+(?:upon|on|under|in|le|de)?[ \t]*" + _TOWN_WORD + r"){0,2})?"
    r"(?:,?[ \t\n]*(?:" + _US_STATE + r"(?:[ \t]+\d{5}(?:-\d{4})?)?|\d{5}(?:-\d{4})?|" + _UK_POSTCODE + r")\b)?"
)
_ADDRESS_RE = re.compile(
    r"\b" + _UNIT + _HOUSE + r"[ \t]+(?:" + _STREET_WORD + r"[ \t]+){1,3}?(?P<suffix>" + _SUFFIX + r")\b\.?"
    + _DIRECTION + _ADDRESS_TAIL
)
#: A house number followed by a capitalised word: the cheap gate of the address regex.
_ADDRESS_GATE = re.compile(r"\d[A-Za-z]?[ \t]+[A-Z]")
#: "Hard Drive", "Test Drive": words that make a suffix part of something other than a street.
_NOT_STREET_BEFORE_SUFFIX = frozenset({"hard", "disk", "flash", "usb", "thumb", "test", "optical", "cd", "dvd",
                                       "ssd", "solid", "state", "pen", "theme", "water", "car", "ball", "national"})
#: Lower-case addresses only after a cue; the street words may not be function words ("3 people on my road").
_ADDRESS_STOP = (
    r"(?!(?:on|in|at|the|my|a|an|of|to|for|and|or|from|with|by|this|that|next|last|more|days?|weeks?|months?|"
    r"years?|hours?|minutes?|times?|people|items?|miles?|km|doors?|houses?|blocks?|steps?)\b)"
)
_ADDRESS_CUES = ("live", "living", "address", "deliver", "ship", "send", "sent", "moved", "located", "post", "home")
_ADDRESS_CUE_RE = re.compile(
    r"(?i)\b(?:live[sd]? at|living at|address is|address:|deliver(?:ed|y)?(?: it| them)? to|ship(?:ped)?(?: it| them)? "
    r"to|sen[dt](?: it| them)? to|moved to|located at|post(?:ed)?(?: it)? to|home is)[ \t]+"
    r"(?P<addr>" + _UNIT + _HOUSE + r"[ \t]+(?:" + _ADDRESS_STOP + r"[a-z][a-z'’.-]*[ \t]+){1,3}?" + _SUFFIX
    + r"\b\.?)"
)
_POSTCODE_CUE_RE = re.compile(
    r"(?i)\b(?:post\s?code|postal\s+code)[ \t]*(?:is[ \t]+|:[ \t]*|-[ \t]*)?"
    r"(?P<pc>(?:[A-Z]{1,2}\d[A-Z\d]?|GIR)[ ]?\d[A-Z]{2})\b"
)

#: Name contexts, found on the lower-cased text (then the name is read from the original text at the end of the
#: context). Strong contexts accept any capitalised word that is not a known non-name; weak ones only names of
#: the first-name list. Each family has a cheap substring gate.
_TITLE_NAME_RE = re.compile(
    r"(?P<title>(?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Professor|Sr|Sra|Herr|Frau|Mme|Mlle)\.?[ \t]+)?)"
    r"(?P<name>" + _NAME_TOKEN + r"(?:[ \t]+" + _NAME_TOKEN + r"){0,2})"
)
_LOWER_NAME_AT = re.compile(r"(?P<title>)(?P<name>[a-z][a-z'’-]+(?:[ \t]+[a-z][a-z'’-]+)?)")
_MY_NAME_RE = re.compile(r"my\s+name\s+is\s*:?[ \t]+|my\s+name['’]s[ \t]+")
_FAMILY = (
    r"son|daughter|wife|husband|partner|mum|mom|mother|dad|father|brother|sister|friend|colleague|boss|grandson|"
    r"granddaughter|grandma|grandmother|grandpa|grandfather|nephew|niece|uncle|aunt|auntie|cousin|fiance|fiancé|"
    r"fiancée|girlfriend|boyfriend|child|kid|flatmate|roommate|neighbour|neighbor|landlord|landlady|tenant"
)
#: (gate substrings, regex on the lower-cased text, strength). Strength: "strong", "weak"; "family" (strong unless
#: the context itself is in Title Case); "field" ("Name: X": strong for a full name, else weak); "signoff"
#: ("Thanks, X": strong where a comma precedes the name and the name ends the line, else weak).
#: A name ends a line: the "signoff" test.
_ENDS_LINE = re.compile(r"[ \t]*[.!]?[ \t]*(?:\n|$)")
_NAME_CONTEXTS: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    (("name",), _MY_NAME_RE, "strong"),
    (("name",), re.compile(r"(?m:^)[ \t]*(?:full|customer|account\s+holder['’]?s?)\s+name[ \t]*:[ \t]*"), "strong"),
    (("name",), re.compile(r"(?m:^)[ \t]*name[ \t]*:[ \t]*"), "field"),
    (("from", "sender"), re.compile(r"(?m:^)[ \t]*(?:from|sender)[ \t]*:[ \t]*"), "weak"),
    (("called", "go by"), re.compile(r"i\s+am\s+called[ \t]+|i['’]m\s+called[ \t]+|i\s+go\s+by[ \t]+"), "strong"),
    (("dear",), re.compile(r"dear[ \t]+"), "strong"),
    (("regards", "sincerely", "faithfully", "truly", "respectfully", "wishes"), re.compile(
        r"(?:regards|best\s+wishes|sincerely|yours\s+faithfully|yours\s+truly|respectfully)[ \t]*,?[ \t]*\n?[ \t]*"
    ), "strong"),
    (("thank", "cheers", "best", "love", "ta,", "thx", "care"), re.compile(
        r"(?:thanks|thank\s+you|many\s+thanks|cheers)[ \t]*,?[ \t]*\n[ \t]*"
        r"|(?:best|love|ta|thx|all\s+the\s+best|take\s+care)[ \t]*,[ \t]*\n[ \t]*"
    ), "strong"),
    (("my ", "our "), re.compile(
        r"(?:for\s+)?(?:my|our)\s+(?:" + _FAMILY + r")(?:['’]s\s+name\s+is|\s+named|\s+called|,)?[ \t]+"
    ), "family"),
    (("thank", "cheers"), re.compile(r"(?:thanks|thank\s+you|many\s+thanks|cheers)[ \t]*,?[ \t]+"), "signoff"),
    (("i'm", "i’m", "i am", "this is", "it's", "it’s", "it is", "hi", "hello", "hey", "call me", "speaking",
      "talking"), re.compile(
        r"(?:i['’]m|i\s+am|this\s+is|it['’]s|it\s+is|hi|hello|hey|hiya|call\s+me|speaking\s+with|talking\s+to)"
        r"[ \t]*,?[ \t]+"
    ), "weak"),
)

#: Capitalised words that follow the name contexts but are not names (plus nationalities, days, months...).
NON_NAMES: frozenset[str] = frozenset(
    w.lower()
    for w in """
    All Everyone Everybody Anyone Someone Guys Folks Team Teams Support Customer Customers Service Services Care
    Sir Sirs Madam Madams Ma'am Sir/Madam Friend Friends Colleague Colleagues Member Members User Users Client
    Clients Manager Managers Admin Administrator Moderator Officer Agent Agents Staff Department Hiring Recruiter
    Applicant Candidate Reader Readers Viewer Viewers Fan Fans Followers Subscriber Subscribers Valued Whom It
    There Here Again Sorry Not No Yes Ok Okay So Very Just Really Still Also Now Then Please Thanks Thank Hello Hi
    Hey Sure Happy Glad Good Great Fine Ready Done Back Confused Frustrated Tired Sick Lost New Old Interested
    Concerned Unhappy Disappointed Angry Annoyed Worried Writing Trying Going Looking Having Getting Calling
    Contacting Reaching Currently Unable Able Pleased Afraid Fed Over Certain Responsible Offended Assuming
    Excited Curious Wondering Sad Upset Stuck Late Early Home Away Out In On Off Up Down At From To For With About
    The A An And But Or Nor Yet If My Your Our Their His Her Its This That These Those What Why How When Where Who
    Which Whose I Me We Us You He She They Them Him It Myself Yourself Everything Nothing Something Anything
    God Lord Jesus Christ Allah Buddha Satan Devil Heaven Hell Santa President Prime Minister Professor Doctor
    Dr Mr Mrs Ms Miss Mx Prof Mum Mom Mother Dad Father Son Daughter Wife Husband Partner Brother Sister Baby
    Darling Dear Honey Sweetie Love Mate Buddy Bro Dude Man Woman Boy Girl Kid Kids Child Children Parents Family
    Larkspur Hub Plus Premium Pro Basic Free Family Annual Monthly Trial App Apple Google Alexa Siri Amazon Cortana
    Facebook Twitter Instagram Netflix Spotify Microsoft Windows Android Samsung Visa Mastercard PayPal Stripe
    Customer-Service Helpdesk Help Desk Bot Chatbot Assistant AI Human Robot Computer Machine System Model
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday Today Tomorrow Yesterday Tonight Morning Afternoon
    Evening Night Weekend January February March April May June July August September October November December
    American British English Scottish Welsh Irish Canadian Australian Mexican Greek German French Spanish Italian
    Indian Chinese Japanese Korean Russian Polish Dutch Swedish Norwegian Danish Finnish Portuguese Brazilian
    African European Asian Arab Arabic Muslim Christian Jewish Catholic Protestant Hindu Sikh Buddhist Atheist
    Black White Latino Latina Hispanic Gay Lesbian Bisexual Trans Straight Liberal Conservative Democrat
    Republican Labour Tory Vegan Vegetarian America Britain England Scotland Wales Ireland Europe Asia Africa
    London Paris Berlin Twitter Gun Guns Us Them
    Regards Sincerely Cheers Best Kind Warm Warmest Wishes Yours Faithfully Truly Respectfully Signed Name
    Cordially Gratefully Warmly Thankfully Affectionately Hugs Xoxo Xx Ps
    Account Order Orders Refund Payment Card Bank Billing Delivery Parcel Package Device Product Item Problem
    Issue Error Update Version Password Email Phone Number Address Info Information Details Request Question
    Complaint Feedback Review Note Notice Message Reply Response Answer Subject Re Fw Fwd Attn Attention Ref
    Step Steps Example Examples Input Output Instruction Instructions Task Tasks Solution Total Answer Question
    Part Chapter Section Table Figure List Option Options Yes/No True False None Null Undefined Unknown Test
    """.split()
)


@dataclass(frozen=True)
class PiiHit:
    """One detected span: ``kind``, ``[start, end)`` offsets into the scanned string, a masked ``detail``."""

    kind: str
    start: int
    end: int
    detail: str


def _first_names(locales: Iterable[str], extra: Iterable[str]) -> frozenset[str]:
    """Lower-cased single-token first names from Faker's person providers of ``locales`` (+ ``extra``)."""
    import importlib

    names: set[str] = set()
    for locale in locales:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ImportError:
            continue
        for attr in ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary"):
            for full in getattr(provider, attr, ()) or ():
                for token in str(full).replace("-", " ").split():
                    if len(token) >= 2 and token[0].isupper() and token.isalpha():
                        names.add(token.lower())
    names.update(n.lower() for n in extra)
    return frozenset(names)


class PiiDetector:
    """All detectors of :data:`KINDS` over one string (built once; :meth:`find` is pure and thread-safe)."""

    def __init__(self, config: PiiGateConfig | None = None) -> None:
        import phonenumbers

        self.config = config or PiiGateConfig()
        self._pn = phonenumbers
        self._regions = self.config.phone_regions
        self._trunk: dict[str, str] = {}
        for region in self._regions:
            meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
            self._trunk[region] = (meta.national_prefix or "") if meta is not None else ""
        self._account_res = [re.compile(p, re.IGNORECASE) for p in self.config.account_id_patterns]
        self._account_gate = re.compile(r"\d{%d}" % self.config.account_id_min_digits)
        self.non_names = NON_NAMES | frozenset(w.lower() for w in self.config.extra_non_names)
        self.first_names = _first_names(self.config.name_locales, self.config.extra_names) - self.non_names
        self._detectors = (
            ("email", self._emails),
            ("iban", self._ibans),
            ("payment_card", self._cards),
            ("ip_address", self._ips),
            ("account_id", self._account_ids),
            ("phone", self._phones),
            ("street_address", self._addresses),
            ("person_name", self._names),
        )

    # -- public

    def find(self, text: str, kinds: Iterable[str] | None = None) -> list[PiiHit]:
        """Non-overlapping hits in ``text`` sorted by offset (an earlier kind of :data:`KINDS` wins overlaps)."""
        if not text:
            return []
        wanted = None if kinds is None else set(kinds)
        # 0: no digit; 1: digits; 2: a run of 4+ digits (cards, IBANs and the default ids all hold one)
        digits = 0 if _HAS_DIGIT.search(text) is None else (2 if _D4.search(text) is not None else 1)
        low = text.lower()
        if len(low) != len(text):  # a few characters lower-case to two ("İ"): keep offsets aligned
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        taken: list[PiiHit] = []
        for kind, detect in self._detectors:
            if wanted is not None and kind not in wanted:
                continue
            for hit in detect(text, low, digits):
                if all(hit.end <= t.start or hit.start >= t.end for t in taken):
                    taken.append(hit)
        taken.sort(key=lambda h: (h.start, h.end))
        return taken

    # -- detectors (each yields candidate hits; find() resolves overlaps)

    def _emails(self, text: str, low: str, digits: int) -> Iterable[PiiHit]:
        if "@" not in text:
            return
        for m in _EMAIL_RE.finditer(text):
            value = m.group(0)
            if value.rsplit(".", 1)[-1].lower() in _NOT_EMAIL_TLDS:
                continue
            yield PiiHit("email", m.start(), m.end(), _mask_email(value))

    def _ibans(self, text: str, low: str, digits: int) -> Iterable[PiiHit]:
        if digits < 2:
            return
        for m in _IBAN_RE.finditer(text):
            country = m.group(1).upper()
            length = IBAN_LENGTHS.get(country)
            if length is None:
                continue
            # take exactly `length` alphanumerics from the start; the next character must not continue the token
            count, end = 0, m.start()
            for j in range(m.start(), min(len(text), m.start() + 2 * length)):
                if text[j].isalnum():
                    count += 1
                    if count == length:
                        end = j + 1
                        break
                elif text[j] != " " or not text[j + 1:j + 2].isalnum():
                    break
            if count != length or (end < len(text) and text[end].isalnum()):
                continue
            value = text[m.start():end]
            if iban_valid(value):
                compact = value.replace(" ", "").upper()
                yield PiiHit("iban", m.start(), end, f"mod-97 valid, {compact[:2]}••••••{compact[-2:]}")

    def _cards(self, text: str, low: str, digits: int) -> Iterable[PiiHit]:
        if digits < 2:
            return
        for m in _CARD_RE.finditer(text):
            value = m.group(0)
            if len({c for c in value if not c.isdigit()}) > 1:
                continue  # one kind of separator
            digits = value.replace(" ", "").replace("-", "")
            if not 12 <= len(digits) <= 19 or len(set(digits)) == 1 or not luhn_valid(digits):
                continue  # 0000 0000 0000 0000 passes Luhn
            network = _card_network(digits)
            if network is None and self.config.card_require_network_prefix:
                continue
            detail = f"Luhn-valid {network or 'card'}, ••••{digits[-4:]}"
            yield PiiHit("payment_card", m.start(), m.end(), detail)

    def _ips(self, text: str, low: str, digits: int) -> Iterable[PiiHit]:
        if not digits:
            return
        if "." in text:
            for m in _IPV4_RE.finditer(text):
                if _VERSION_CUE.search(low, max(0, m.start() - 24), m.start()):
                    continue
                if self._ip_ok(m.group(0)):
                    yield PiiHit("ip_address", m.start(), m.end(), f"IPv4 {_mask_ip(m.group(0))}")
        if "::" in text or text.count(":") >= 7:
            for m in _IPV6_RE.finditer(text):
                value = m.group(0)
                if value.count(":") < 2 or not any(c.isdigit() for c in value) or not value.strip(":"):
                    continue
                if "::" not in value and value.count(":") != 7:
                    continue
                if self._ip_ok(value):
                    yield PiiHit("ip_address", m.start(), m.end(), f"IPv6 {_mask_ip(value)}")

    def _ip_ok(self, value: str) -> bool:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return False
        if not self.config.ip_skip_non_identifying:
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return not any(ip.version == net.version and ip in net for net in _NON_IDENTIFYING_NETS)

    def _account_ids(self, text: str, low: str, digits: int) -> Iterable[PiiHit]:
        if not digits:
            return
        if self.config.account_id_min_digits == 4:
            if digits < 2:
                return
        elif self._account_gate.search(text) is None:
            return
        for rx in self._account_res:
            for m in rx.finditer(text):
                group = "id" if "id" in rx.groupindex and m.group("id") is not None else 0
                start, end = m.span(group)
                yield PiiHit("account_id", start, end, _mask_tail(text[start:end], 2))

    def _phones(self, text: str, low: str, digits: int) -> Iterable[PiiHit]:
        if not digits:
            return
        for m in _PHONE_RE.finditer(text):
            value = m.group(0).rstrip(" ")
            start, end = m.start(), m.start() + len(value)
            if self._is_phone(value, low, start):
                digits = "".join(c for c in value if c.isdigit())
                yield PiiHit("phone", start, end, f"{'•' * max(4, len(digits) - 2)}{digits[-2:]}")

    def _is_phone(self, value: str, low: str, start: int) -> bool:
        """Whether a phone-shaped candidate is a phone number (see the module docstring for the rules)."""
        pn = self._pn
        digits = "".join(c for c in value if c.isdigit())
        if not 7 <= len(digits) <= 15 or _DATE_SHAPE.match(value):
            return False
        core = value.lstrip("+").replace("(", " ").replace(")", " ").strip()
        groups = [g for g in _NON_DIGITS.split(core) if g]
        seps = {sep.strip() or " " for sep in _NON_DIGITS.findall(core)}
        if len(seps) > 1 and not seps <= {" ", "-"}:
            return False  # "0.5 0.25 0.125", mixed punctuation
        if "." in seps and (any(len(g) < 2 for g in groups) or (len(groups) == 4 and max(map(len, groups)) <= 3)):
            return False  # decimals, IPv4-shaped
        intl = value.startswith("+") or (value.startswith("00") and not value.startswith("000"))
        if sum(len(g) == 1 for g in groups) > (2 if intl else 1):
            return False  # "1 2 3 4 5 6 7"
        formatted = len(groups) > 1
        line_start = low.rfind("\n", 0, start) + 1
        cue = _PHONE_CUE.search(low, max(line_start, start - 40), start) is not None
        is_possible = pn.ValidationResult.IS_POSSIBLE
        if intl:
            try:
                number = pn.parse("+" + digits[2:] if value.startswith("00") else value, None)
            except pn.NumberParseException:
                return False
            if pn.is_possible_number_with_reason(number) != is_possible:
                return False
            return formatted or cue or pn.is_valid_number(number)
        for region in self._regions:
            try:
                number = pn.parse(value, region)
            except pn.NumberParseException:
                continue
            trunk = self._trunk[region]
            nanp = number.country_code == 1
            with_trunk = bool(trunk) and digits.startswith(trunk) and not nanp
            if nanp:
                shape = [len(g) for g in groups]
                if shape not in ([3, 3, 4], [1, 3, 3, 4], [3, 7], [1, 3, 7], [10], [11]):
                    continue  # "28980 - 18480" is a subtraction, not (289) 801-8480
            elif not with_trunk:
                continue  # a national number written without its trunk prefix ("1234567890" in GB) is not one
            if pn.is_valid_number(number) and (formatted or cue or len(digits) >= 10):
                return True
            if pn.is_possible_number_with_reason(number) != is_possible:
                continue
            if cue or (nanp and _NANP_SHAPE.match(value)) or (with_trunk and len(digits) >= 10):
                return True
        return False

    def _addresses(self, text: str, low: str, digits: int) -> Iterable[PiiHit]:
        if not digits:
            return
        if _ADDRESS_GATE.search(text) is not None:
            for m in _ADDRESS_RE.finditer(text):
                before = text[: m.start("suffix")].rstrip().rsplit(None, 1)[-1].lower()
                if before in _NOT_STREET_BEFORE_SUFFIX:
                    continue  # "Solid State Hard Drive"
                value = m.group(0).rstrip(" ,\n\t")
                yield PiiHit("street_address", m.start(), m.start() + len(value), f"{len(value)} chars")
        if any(cue in low for cue in _ADDRESS_CUES):
            for m in _ADDRESS_CUE_RE.finditer(text):
                s, e = m.span("addr")
                yield PiiHit("street_address", s, e, f"{e - s} chars")
        if "post" in low:
            for m in _POSTCODE_CUE_RE.finditer(text):
                s, e = m.span("pc")
                yield PiiHit("street_address", s, e, f"postcode {text[s:e].split()[0][:2].upper()}•••")

    def _names(self, text: str, low: str, digits: int) -> Iterable[PiiHit]:
        for gates, rx, strength in _NAME_CONTEXTS:
            for g in gates:
                if g in low:
                    break
            else:
                continue
            for m in rx.finditer(low):
                if m.start() and low[m.start() - 1].isalnum():
                    continue  # the context must start a word
                if strength == "family":
                    # "My Son Across The Border": in Title Case text a capitalised word proves nothing
                    strong = not any(c.isupper() for c in text[m.start() + 1:m.end()])
                else:
                    strong = strength != "weak"
                hit = self._name_at(text, m.end(), strong)
                if hit is not None and strength == "field" and " " not in text[hit.start:hit.end]:
                    hit = self._name_at(text, m.end(), False)  # "Name: Pizzeria" — one word must be a listed name
                elif hit is not None and strength == "signoff" and not (
                        "," in low[m.start():m.end()] and _ENDS_LINE.match(text, hit.end)):
                    hit = self._name_at(text, m.end(), False)
                if hit is not None and strength == "weak" and text[hit.end:hit.end + 2] in ("'s", "’s"):
                    continue  # "It's Ava's turn", "this is Gerald's third offense": not an introduction
                if hit is None and rx is _MY_NAME_RE:
                    hit = self._name_at(text, m.end(), False, lower_ok=True)
                if hit is not None:
                    yield hit

    def _name_at(self, text: str, pos: int, strong: bool, lower_ok: bool = False) -> PiiHit | None:
        """The name starting at ``pos`` (after a name context), or None."""
        m = (_LOWER_NAME_AT if lower_ok else _TITLE_NAME_RE).match(text, pos)
        if m is None:
            return None
        tokens = m.group("name").replace("\t", " ").split(" ")
        first = tokens[0]
        key = first.lower()
        if key in self.non_names:
            return None
        if lower_ok:
            if key not in self.first_names:
                return None  # "my name is misspelled": only listed names in lower case
            tokens = tokens[:1] + [t for t in tokens[1:2] if t.lower() not in self.non_names and t.isalpha()
                                   and t.lower() not in _NOT_SURNAMES]
        elif not (strong or m.group("title")) and key not in self.first_names:
            return None
        kept = [first]
        for token in tokens[1:]:
            t = token.lower()
            if t in self.non_names or t in _NOT_SURNAMES or (not lower_ok and not token[:1].isupper()):
                break
            kept.append(token)
        start = m.start("name")
        value = " ".join(kept)
        return PiiHit("person_name", start, start + len(value), f"{first[0].upper()}•••")


#: Lower-case words that do not continue a lower-case name ("my name is sarah and ...").
#: Words that do not continue a name ("my name is sarah and ...", "Hey David Do you ...").
_NOT_SURNAMES = frozenset(
    "and but or so i im my the a is are was were be been am do does did can could will would should shall may might "
    "must have has had get got let make go from here there on in at to for with please thanks thank not u ur pls "
    "plz again too also just avenue street road lane drive school elementary college university hospital church "
    "park team support service services inc ltd llc plc company group bank store shop".split()
)
_NON_DIGITS = re.compile(r"\D+")


_HAS_DIGIT = re.compile(r"\d")
_D4 = re.compile(r"\d{4}")


# ----------------------------------------------------------------------------------------------------- the gate


class PiiGate(Gate):
    """Reject or redact personal data per kind (see the module docstring and :class:`PiiGateConfig`)."""

    name: ClassVar[str] = "pii"

    def __init__(self, config: PiiGateConfig | None = None) -> None:
        self.config = config or PiiGateConfig()
        self.detector = PiiDetector(self.config)
        self._scan_kinds = tuple(k for k in KINDS if self.config.actions[k] in ("reject", "redact", "allow"))

    # -- one string

    def redact(self, text: str) -> tuple[str, list[PiiHit]]:
        """``text`` with every non-allowed hit replaced by its placeholder, and all hits (allowed ones included)."""
        hits = self.detector.find(text, self._scan_kinds)
        return self._apply(text, hits), hits

    def _apply(self, text: str, hits: list[PiiHit]) -> str:
        actions = self.config.actions
        out, pos = [], 0
        for h in hits:
            if actions[h.kind] == "allow":
                continue
            out.append(text[pos:h.start])
            out.append(PLACEHOLDERS[h.kind])
            pos = h.end
        if pos == 0:
            return text
        out.append(text[pos:])
        return "".join(out)

    # -- a table

    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        t0 = time.perf_counter()
        c = self.config
        actions = c.actions
        n = len(rows)
        result = GateResult.all_kept(self.name, n).enable_rewrites()
        result.score[:] = 0.0
        text_columns = [col for col in c.columns if col in rows.columns]
        conv_column = c.conversation_column if c.conversation_column in rows.columns else None
        values = {col: rows[col].tolist() for col in text_columns}
        conversations = rows[conv_column].tolist() if conv_column else None
        hits_by_kind: Counter[str] = Counter()
        rows_by_kind: Counter[str] = Counter()
        rows_redacted = rows_rejected = 0
        for i in range(n):
            new_values: dict[str, Any] = {}
            edits: list[dict[str, Any]] = []
            found: list[tuple[str, int | None, PiiHit]] = []  # (column, message index, hit)
            cache: dict[str, list[PiiHit]] = {}  # the same string in two columns (conversation turns) is scanned once
            for col in text_columns:
                value = values[col][i]
                if is_missing(value) or not isinstance(value, str) or not value:
                    continue
                hits = cache.get(value)
                if hits is None:
                    hits = cache[value] = self.detector.find(value, self._scan_kinds)
                if not hits:
                    continue
                found.extend((col, None, h) for h in hits)
                redacted = self._apply(value, hits)
                if redacted != value:
                    new_values[col] = redacted
            if conversations is not None:
                value = conversations[i]
                self._scan_conversation(value, conv_column, found, new_values, cache)  # type: ignore[arg-type]
            if not found:
                continue
            row_kinds = set()
            for col, msg, h in found:
                hits_by_kind[h.kind] += 1
                row_kinds.add(h.kind)
                if actions[h.kind] == "allow":
                    continue
                edit: dict[str, Any] = {
                    "kind": h.kind, "column": col, "start": h.start, "end": h.end, "placeholder": PLACEHOLDERS[h.kind]
                }
                if msg is not None:
                    edit["message"] = msg
                edits.append(edit)
            rows_by_kind.update(row_kinds)
            acted = [(col, msg, h) for col, msg, h in found if actions[h.kind] != "allow"]
            if not acted:
                continue
            result.score[i] = float(len(acted))
            result.rewrite(i, new_values, edits)
            rejects = [(col, msg, h) for col, msg, h in acted if actions[h.kind] == "reject"]
            if rejects:
                ordered = rejects + [x for x in acted if actions[x[2].kind] != "reject"]
                result.drop(i, f"pii_{rejects[0][2].kind}", self._reason(ordered), float(len(acted)))
                rows_rejected += 1
            else:
                rows_redacted += 1
        seconds = time.perf_counter() - t0
        result.metrics = {
            "rows_seen": n,
            "rows_redacted": rows_redacted,
            "rows_rejected": rows_rejected,
            "hits_by_kind": {k: int(hits_by_kind.get(k, 0)) for k in KINDS},
            "rows_with_hits_by_kind": {k: int(rows_by_kind.get(k, 0)) for k in KINDS},
            "actions": dict(actions),
            "columns_scanned": text_columns + ([conv_column] if conv_column else []),
            "name_list_size": len(self.detector.first_names),
            "seconds": round(seconds, 4),
            "rows_per_second": round(n / seconds, 1) if seconds > 0 else None,
        }
        return result

    def _scan_conversation(
        self,
        value: Any,
        column: str,
        found: list[tuple[str, int | None, PiiHit]],
        new_values: dict[str, Any],
        cache: dict[str, list[PiiHit]],
    ) -> None:
        if not isinstance(value, (list, tuple)) and is_missing(value):
            return
        messages: Any = value
        as_json = isinstance(value, str)
        if as_json:
            if not value:
                return
            try:
                messages = json.loads(value)
            except ValueError:
                messages = None
            if not isinstance(messages, list):  # not a conversation: scan it as plain text
                hits = self.detector.find(value, self._scan_kinds)
                if hits:
                    found.extend((column, None, h) for h in hits)
                    redacted = self._apply(value, hits)
                    if redacted != value:
                        new_values[column] = redacted
                return
        if not isinstance(messages, (list, tuple)):
            return
        changed = False
        out = []
        for k, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str) or not content:
                out.append(message)
                continue
            hits = cache.get(content)
            if hits is None:
                hits = cache[content] = self.detector.find(content, self._scan_kinds)
            if hits:
                found.extend((column, k, h) for h in hits)
                redacted = self._apply(content, hits)
                if redacted != content:
                    message = {**message, "content": redacted}
                    changed = True
            out.append(message)
        if changed:
            new_values[column] = json.dumps(out, ensure_ascii=False) if as_json else out

    def _reason(self, hits: list[tuple[str, int | None, PiiHit]]) -> str:
        shown = hits[: self.config.max_reason_hits]
        parts = []
        for col, msg, h in shown:
            where = f"{col}[{msg}][{h.start}:{h.end}]" if msg is not None else f"{col}[{h.start}:{h.end}]"
            parts.append(f"{h.kind} in {where} ({h.detail})")
        more = len(hits) - len(shown)
        return "PII: " + "; ".join(parts) + (f"; +{more} more" if more > 0 else "")
