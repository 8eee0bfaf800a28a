#!/usr/bin/env python
"""Measure the PII gate (``synqa_dagster/gates/pii.py``): precision / recall on planted PII, flag rates on real data.

    .venv/bin/python scripts/measure_pii.py                 # print the markdown report
    .venv/bin/python scripts/measure_pii.py --out FILE.md   # ... and write it to FILE.md
    .venv/bin/python scripts/measure_pii.py --examples 12   # more flagged / missed examples per kind

1. **Planted set.** Fake but valid-format personal data of every kind, generated with a seeded RNG (``--seed``),
   is planted into real sentences of the shared data (BANKING77, SST-2, TweetEval, GSM8K, Self-Instruct), each in
   a customer-style carrier phrase ("you can reach me on {v}"), at the start or end of the sentence. Every planted
   span is labelled with its kind. A planted span counts as found when hits of its kind cover all of it (recall),
   and as *redacted* when hits of any kind cover it (what matters for privacy). A hit counts as correct when it
   overlaps a planted span of its kind (precision); hits on the carrier sentence, or of the wrong kind, are false.
   Hard negatives (prices, versions, dates, times, quantities, intent ids, error codes, 16-digit numbers failing
   Luhn, IBANs with a bad checksum, "the name of the plan is Plus", existing placeholders) are planted the same
   way; any hit on them is a false positive.
2. **Real data, untouched.** The share of rows flagged per kind on each real dataset (an upper bound of the false
   positive rate: some real rows do hold names or numbers), with examples.
3. **Throughput.** ``PiiGate.evaluate`` on ~50k real rows with ``instruction``, ``response``, ``text`` and
   ``conversation`` columns (four scans per row, as in the funnel).

Names are planted from two pools: first names of Faker's ``en_GB``/``en_US`` person providers (which are also in
the gate's name list, so the weak contexts "I'm X" / "Hi X" can find them) and a hand-written pool of names that
are *not* in the gate's list (checked at run time), so recall is not measured only on names the detector knows.
Phone numbers are drawn with ``phonenumbers`` (random numbers kept only where it calls them valid) plus the
fictional ranges (Ofcom 07700 900xxx, NANP 555-01xx), in several international and national formats.

Data: ``$SYNQA_SHARED_DATA`` (default ``/work/shared/data``); see each folder's SOURCE.txt for origin and licence.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synqa_dagster.gates.pii import KINDS, PiiGate, PiiGateConfig  # noqa: E402

SHARED = Path(os.environ.get("SYNQA_SHARED_DATA", "/work/shared/data"))

# ------------------------------------------------------------------------------------------------ real data


def _lines(path: Path) -> list[str]:
    return [line.rstrip("\n") for line in path.open(encoding="utf-8")]


def load_real() -> dict[str, list[str]]:
    """Real texts per dataset (whole files; blank lines dropped)."""
    out: dict[str, list[str]] = {}
    rows: list[str] = []
    for split in ("train", "test"):
        with open(SHARED / "banking77" / f"{split}.csv", encoding="utf-8") as f:
            rows += [r["text"] for r in csv.DictReader(f)]
    out["banking77"] = rows
    rows = []
    for split in ("train", "dev", "test"):
        with open(SHARED / "sst2" / f"{split}.tsv", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader)
            col = header.index("sentence")
            rows += [r[col] for r in reader if len(r) > col]
    out["sst2"] = rows
    rows = []
    for task in ("hate", "offensive", "sentiment", "emotion"):
        for split in ("train", "val", "test"):
            path = SHARED / "tweeteval" / task / f"{split}_text.txt"
            if path.exists():
                rows += _lines(path)
    out["tweeteval"] = rows
    rows = []
    for split in ("train", "test"):
        for line in (SHARED / "gsm8k" / f"{split}.jsonl").open(encoding="utf-8"):
            r = json.loads(line)
            rows.append(r["question"] + "\n" + r["answer"])
    out["gsm8k"] = rows
    rows = []
    si = SHARED / "self_instruct"
    for line in (si / "seed_tasks.jsonl").open(encoding="utf-8"):
        task = json.loads(line)
        for inst in task["instances"]:
            rows.append("\n".join(x for x in (task["instruction"], inst.get("input", ""), inst.get("output", "")) if x))
    for line in (si / "user_oriented_instructions.jsonl").open(encoding="utf-8"):
        task = json.loads(line)
        for inst in task["instances"]:
            rows.append("\n".join(x for x in (task["instruction"], inst.get("input", ""), inst.get("output", "")) if x))
    for name in ("text-davinci-003_predictions.jsonl", "davinci-self-instruct_predictions.jsonl"):
        for line in (si / name).open(encoding="utf-8"):
            r = json.loads(line)  # real model output: the response to each user-oriented instruction
            parts = (r.get("instruction"), r.get("input"), (r.get("response") or "").strip())
            rows.append("\n".join(x for x in parts if x))
    out["self_instruct"] = rows
    demo = ROOT / "data" / "demo"
    rows = []
    for line in (demo / "seeds.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        rows.append(r["text"] + ("\n" + r["reference_answer"] if r.get("reference_answer") else ""))
    for line in (demo / "reference_customers.jsonl").open(encoding="utf-8"):
        rows.append(json.loads(line)["text"])
    out["larkspur_demo"] = rows
    return {k: [t for t in v if t.strip()] for k, v in out.items()}


def carrier_sentences(real: dict[str, list[str]], rng: random.Random) -> list[str]:
    """Short single-line real sentences (10-200 chars) to plant into, from the five third-party datasets."""
    pool: list[str] = []
    for name in ("banking77", "sst2", "tweeteval", "gsm8k", "self_instruct"):
        texts = real[name]
        if name == "gsm8k":
            texts = [t.split("\n")[0] for t in texts]
        cands = [t.strip() for t in texts if 10 <= len(t.strip()) <= 200 and "\n" not in t.strip()]
        pool += rng.sample(cands, min(3000, len(cands)))
    rng.shuffle(pool)
    return pool


# ------------------------------------------------------------------------------------------- fake PII values

FIRST_IN_LIST: list[str] = []
SURNAMES = ["Shah", "Nowak", "Byrne", "Okafor", "Almeida", "Mensah", "Rossi", "Volkov", "Smith", "Jones", "Patel",
            "Williams", "Brown", "Taylor", "Khan", "Murphy", "O'Brien", "García", "Müller", "Nguyen", "Kowalski",
            "Davies", "Evans", "Thomas", "Roberts", "Walker", "Wright", "Hughes", "Clarke", "Ahmed", "Singh"]
#: Names to plant that the gate's list may not hold (filtered against it at run time).
NAMES_OUT_POOL = ["Xiaoming", "Haruto", "Jiwoo", "Yousef", "Thandiwe", "Oluwaseun", "Saoirse", "Niamh", "Eilidh",
                  "Tadhg", "Ffion", "Cerys", "Gethin", "Bronwen", "Rhys", "Dafydd", "Anwen", "Iolo", "Aarav",
                  "Vihaan", "Ishaan", "Anaya", "Kiara", "Zainab", "Amara", "Chiamaka", "Kofi", "Esi", "Yaw",
                  "Kwabena", "Lwazi", "Sipho", "Thabo", "Wanjiru", "Njeri", "Baraka", "Makena", "Hiroshi", "Yuki",
                  "Sakura", "Minjun", "Seoyeon", "Jinhee", "Huong", "Thanh", "Phuong", "Arjun", "Priyanka",
                  "Siddharth", "Rohan", "Ananya", "Tomasz", "Wojciech", "Agnieszka", "Zsofia", "Bence", "Levente",
                  "Eero", "Aino", "Sigrun", "Bjorn", "Ingrid", "Mateus", "Thiago", "Joaquim", "Itzel", "Ximena",
                  "Yaretzi", "Dmitri", "Anastasia", "Svetlana", "Bogdan", "Oksana", "Aigerim", "Nurlan", "Talgat",
                  "Ayesha", "Farhan", "Imran", "Nasreen", "Leilani", "Kai", "Keanu", "Tane", "Aroha", "Wiremu"]

EMAIL_DOMAINS = ["gmail.com", "outlook.com", "hotmail.co.uk", "yahoo.com", "btinternet.com", "icloud.com",
                 "example.com", "example.org", "mail.example.net", "protonmail.ch", "web.de", "orange.fr",
                 "uni-leeds.ac.uk", "company.co.uk", "larkspur-mail.com"]
STREET_NAMES = ["Acacia", "Maple", "Church", "Station", "Victoria", "King's", "Mill", "Park", "High", "Oak",
                "Elm", "Cedar", "Queen's", "London", "Manor", "Albert", "Grange", "Willow", "Green", "Chestnut",
                "St. John's", "North", "Bridge", "Castle", "Springfield", "Meadow", "Windsor", "Highland",
                "Pine", "Lake", "Sunset", "Washington", "Lincoln", "Jefferson", "Forest", "River", "Hillside",
                "Pennsylvania", "Orchard", "Clarendon"]
#: Street suffixes to plant, with ones the detector does not list (Causeway, Approach, Circus, Turnpike).
STREET_SUFFIXES = ["Street", "Road", "Avenue", "Lane", "Drive", "Close", "Way", "Court", "Crescent", "Place",
                   "Terrace", "Gardens", "Grove", "Square", "Boulevard", "St", "Rd", "Ave", "Ln", "Dr", "Mews",
                   "Row", "Hill", "Walk", "Rise", "Parkway", "Causeway", "Approach", "Circus", "Turnpike"]
UK_TOWNS = ["Leeds", "Manchester", "Bristol", "Cardiff", "Glasgow", "York", "Norwich", "Brighton", "Bath",
            "Milton Keynes", "Stoke-on-Trent", "Newcastle upon Tyne", "London", "Edinburgh", "Belfast"]
US_CITIES = [("Springfield", "IL"), ("Austin", "TX"), ("Portland", "OR"), ("Boston", "MA"), ("Denver", "CO"),
             ("Miami", "FL"), ("Seattle", "WA"), ("San Jose", "CA"), ("New York", "NY"), ("Madison", "WI")]
UK_AREAS = ["LS", "M", "BS", "CF", "G", "YO", "NR", "BN", "BA", "MK", "ST", "NE", "SW", "EC", "N", "E", "EH", "BT"]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return body + str((10 - total % 10) % 10)


def iban_with_check(country: str, bban: str) -> str:
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def uk_postcode(rng: random.Random) -> str:
    area = rng.choice(UK_AREAS)
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return f"{area}{rng.randint(1, 19)} {rng.randint(0, 9)}{rng.choice(letters)}{rng.choice(letters)}"


def gen_email(rng: random.Random) -> str:
    f = rng.choice(FIRST_IN_LIST + NAMES_OUT_POOL).lower()
    last = rng.choice(SURNAMES).lower().replace("'", "").replace("í", "i").replace("ü", "u")
    local = rng.choice([f"{f}.{last}", f"{f}{last}{rng.randint(1, 99)}", f"{f[0]}.{last}", f"{f}_{last}",
                        f"{f}+orders", f"{last}{rng.randint(1970, 2005)}", f"{f}.{last}.{rng.randint(1, 9)}"])
    email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
    return email.upper() if rng.random() < 0.05 else email


def gen_phone(rng: random.Random) -> str:
    import phonenumbers as pn

    fmt = pn.PhoneNumberFormat
    r = rng.random()
    if r < 0.1:  # Ofcom drama numbers
        tail = _digits(rng, 3)
        return rng.choice([f"07700 900{tail}", f"+44 7700 900{tail}", f"07700900{tail}"])
    if r < 0.2:  # NANP fiction range
        tail = _digits(rng, 2)
        return rng.choice([f"(415) 555-01{tail}", f"212-555-01{tail}", f"+1 303 555 01{tail}"])
    region = rng.choice(["GB", "GB", "US", "US", "IE", "DE", "FR", "ES", "IN", "AU", "NL", "CA"])
    kind = rng.choice([pn.PhoneNumberType.MOBILE, pn.PhoneNumberType.FIXED_LINE])
    example = pn.example_number_for_type(region, kind) or pn.example_number(region)
    national = str(example.national_number)
    for _ in range(50):
        cand = national[: max(3, len(national) - 6)] + _digits(rng, len(national) - max(3, len(national) - 6))
        number = pn.parse("+" + str(example.country_code) + cand, None)
        if pn.is_valid_number(number):
            break
    else:
        number = example
    style = rng.random()
    domestic = region in ("GB", "US") and style < 0.55
    if domestic:
        s = pn.format_number(number, fmt.NATIONAL)
        if region == "US" and rng.random() < 0.4:
            d = str(number.national_number)
            s = rng.choice([f"{d[:3]}-{d[3:6]}-{d[6:]}", f"{d[:3]}.{d[3:6]}.{d[6:]}", f"1-{d[:3]}-{d[3:6]}-{d[6:]}"])
        if region == "GB" and rng.random() < 0.3:
            s = s.replace(" ", "")
        return s
    s = pn.format_number(number, rng.choice([fmt.INTERNATIONAL, fmt.INTERNATIONAL, fmt.E164]))
    if rng.random() < 0.15:
        s = "00" + s.lstrip("+")
    return s


def gen_card(rng: random.Random) -> str:
    network = rng.choice(["visa", "visa", "mc", "mc2", "amex", "discover"])
    if network == "amex":
        d = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        return rng.choice([d, f"{d[:4]} {d[4:10]} {d[10:]}", f"{d[:4]}-{d[4:10]}-{d[10:]}"])
    prefix = {"visa": "4", "mc": str(rng.randint(51, 55)), "mc2": str(rng.randint(2221, 2720)),
              "discover": "6011"}[network]
    d = luhn_complete(prefix, 16, rng)
    return rng.choice([d, " ".join(d[i:i + 4] for i in range(0, 16, 4)), "-".join(d[i:i + 4] for i in range(0, 16, 4))])


def gen_iban(rng: random.Random) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    country = rng.choice(["GB", "GB", "DE", "FR", "ES", "IT", "NL", "IE", "BE", "PL"])
    bban = {
        "GB": lambda: "".join(rng.choice(letters) for _ in range(4)) + _digits(rng, 14),
        "IE": lambda: "".join(rng.choice(letters) for _ in range(4)) + _digits(rng, 14),
        "DE": lambda: _digits(rng, 18),
        "FR": lambda: _digits(rng, 23),
        "ES": lambda: _digits(rng, 20),
        "IT": lambda: rng.choice(letters) + _digits(rng, 22),
        "NL": lambda: "".join(rng.choice(letters) for _ in range(4)) + _digits(rng, 10),
        "BE": lambda: _digits(rng, 12),
        "PL": lambda: _digits(rng, 24),
    }[country]()
    iban = iban_with_check(country, bban)
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.6 else iban


def gen_address(rng: random.Random) -> str:
    n = rng.randint(1, 250)
    street = f"{rng.choice(STREET_NAMES)} {rng.choice(STREET_SUFFIXES)}"
    r = rng.random()
    if r < 0.45:
        unit = rng.choice(["", "", f"Flat {rng.randint(1, 20)}, "])
        town = rng.choice(UK_TOWNS)
        return rng.choice([f"{unit}{n} {street}, {town} {uk_postcode(rng)}", f"{unit}{n} {street}, {town}",
                           f"{unit}{n} {street}", f"{n} {street}\n{town}\n{uk_postcode(rng)}"])
    if r < 0.9:
        city, state = rng.choice(US_CITIES)
        apt = rng.choice(["", "", f" Apt {rng.randint(1, 30)}{rng.choice('ABC')}"])
        return rng.choice([f"{n * 10 + rng.randint(0, 9)} {street}{apt}, {city}, {state} {_digits(rng, 5)}",
                           f"{n} {street}{apt}, {city}, {state}", f"{n * 10} {street}"])
    return f"{n} {street}".lower()  # lower-case chat style (only found after an address cue)


def _global_ipv4(rng: random.Random) -> str:
    import ipaddress

    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        if ip.is_global and not ip.is_multicast and not ip.is_reserved:
            return str(ip)


def gen_ip(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return _global_ipv4(rng)
    if r < 0.65:
        return rng.choice(["192.0.2.", "198.51.100.", "203.0.113."]) + str(rng.randint(1, 254))
    import ipaddress

    ip = ipaddress.IPv6Address((0x2001 << 112 | 0x4860 << 96) + rng.getrandbits(64) if rng.random() < 0.5
                               else (0x2A02 << 112) + rng.getrandbits(100))
    return ip.compressed if rng.random() < 0.7 else ip.exploded


def gen_account(rng: random.Random) -> tuple[str, str]:
    """(carrier phrase with {v}, the id)."""
    r = rng.random()
    if r < 0.45:
        return rng.choice(["order {v}", "my order ({v})", "order number {v}", "return ref {v}", "{v}"]), \
            rng.choice(["LK-", "LK-", "LK-", "RT-"]) + _digits(rng, rng.choice([5, 5, 6]))
    word = rng.choice(["order number", "account number", "reference", "ticket #", "order #", "case number",
                       "tracking number", "customer ID", "membership number", "invoice no."])
    value = rng.choice([_digits(rng, rng.randint(6, 12)), f"{rng.choice(['AB', 'XK', 'INV'])}{_digits(rng, 7)}"])
    return word + " {v}", value


NAME_TEMPLATES_STRONG = ["Hi, my name is {v}.", "My name is {v} and", "Kind regards,\n{v}", "Regards, {v}",
                         "Thanks,\n{v}", "Dear {v},", "It's for my son {v}.", "my daughter {v} uses it",
                         "Best wishes,\n{v}", "\nName: {v}"]
NAME_TEMPLATES_WEAK = ["Hi, this is {v} again.", "I'm {v}, the account holder.", "Thanks, {v}", "Hello {v},",
                       "I am {v} and"]


def gen_name(rng: random.Random, pool: list[str], template: str) -> str:
    first = rng.choice(pool)
    if "{v}" in template and any(k in template for k in ("name is", "regards", "Regards", "Dear", "wishes", "Name:")) \
            and rng.random() < 0.5:
        return f"{first} {rng.choice(SURNAMES)}"
    return first


# -------------------------------------------------------------------------------------------- the planted set

CARRIERS: dict[str, list[str]] = {
    "email": ["Please email me at {v}.", "my email is {v}", "send the receipt to {v} thanks", "({v})", "contact: {v}"],
    "phone": ["You can call me on {v}.", "my number is {v}", "text me at {v}", "ring {v} after six", "tel: {v}",
              "or {v} if that is easier", "My mobile {v}."],
    "payment_card": ["My card number is {v}.", "charged twice on {v}", "card: {v} exp 04/27", "{v}"],
    "iban": ["Please refund to {v}.", "my IBAN is {v}", "IBAN: {v}", "send it to account {v} please"],
    "street_address": ["I live at {v}.", "deliver to {v} please", "My address is {v}.", "It went to {v} instead",
                       "ship it to {v}"],
    "ip_address": ["The app blocked a login from {v}.", "my IP is {v}", "connecting from {v} fails",
                   "server {v} times out"],
    "account_id": [],
    "person_name": [],
}

#: Hard negatives: no hit is correct on any of them.
def hard_negatives(rng: random.Random) -> list[tuple[str, str]]:
    bad_luhn = []
    while len(bad_luhn) < 40:
        d = "4" + _digits(rng, 15)
        total = sum((int(c) * 2 - 9 if int(c) * 2 > 9 else int(c) * 2) if i % 2 else int(c)
                    for i, c in enumerate(reversed(d)))
        if total % 10:
            bad_luhn.append(rng.choice([d, " ".join(d[i:i + 4] for i in range(0, 16, 4))]))
    bad_iban = []
    for _ in range(40):
        good = gen_iban(rng).replace(" ", "")
        check = int(good[2:4])
        bad = good[:2] + f"{(check + rng.randint(1, 50)) % 97 + 2:02d}" + good[4:]
        bad_iban.append(bad)
    items = [
        ("price", f"It costs £{rng.randint(1, 99)}.{rng.randint(0, 99):02d} a month."),
        ("price", f"I paid ${rng.randint(100, 2000):,}.{rng.randint(0, 99):02d} for it."),
        ("version", f"My Hub is on firmware {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}."),
        ("version", f"version {rng.randint(1, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 999)}"),
        ("version", f"Ubuntu {rng.randint(16, 24)}.04 and Python 3.{rng.randint(6, 13)}.{rng.randint(0, 9)}"),
        ("date", f"It arrived on {rng.randint(1, 28)}/{rng.randint(1, 12):02d}/20{rng.randint(20, 27)}."),
        ("date", f"due 20{rng.randint(20, 27)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"),
        ("date", f"on {rng.randint(1, 28)} March 20{rng.randint(20, 27)} at "
                 f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"),
        ("time", f"delivered at {rng.randint(0, 23)}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"),
        ("quantity", f"I ordered {rng.randint(2, 12)} sensors and {rng.randint(1000, 99999)} points."),
        ("quantity", f"{rng.randint(1, 9)} {rng.randint(100, 999)} {rng.randint(100, 999)} steps"),
        ("quantity", f"The population is {rng.randint(1, 9)} {rng.randint(100, 999):03d} {rng.randint(100, 999):03d}."),
        ("maths", f"{rng.randint(1, 99)} * {rng.randint(1, 99)} = {rng.randint(1, 9999)} and 0.5 0.25 0.125"),
        ("intent_id", rng.choice(["billing.refund_request", "orders.order_status", "account.password_reset",
                                  "delivery.marked_delivered_not_received"])),
        ("error_code", f"error code {rng.choice(['PAY', 'AUTH', 'HUB'])}-{rng.randint(100, 999)}"),
        ("luhn_fail", rng.choice(bad_luhn)),
        ("bad_iban", rng.choice(bad_iban)),
        ("plan_name", rng.choice(["the name of the plan is Plus", "I'm Sorry, I'm not sure", "Dear Customer,",
                                  "This is Larkspur support", "Thanks, Larkspur team", "I'm British",
                                  "my name is on the account", "Regards, The Larkspur Team"])),
        ("placeholder", rng.choice(["[EMAIL]", "{customer_name}", "<NAME>", "[PHONE]", "{{order_id}}",
                                    "[ADDRESS]"])),
        ("isbn", f"ISBN 978-{rng.randint(0, 9)}-{rng.randint(100, 999)}-{rng.randint(10000, 99999)}-"
                 f"{rng.randint(0, 9)}"),
        ("short_number", f"call {rng.choice(['999', '911', '111', '112', '101'])} now"),
        ("zip_alone", f"do you deliver to {_digits(rng, 5)}?"),
        ("private_ip", rng.choice(["192.168.1.1", "10.0.0.138", "127.0.0.1", "255.255.255.0",
                                   "fe80::1ff:fe23:4567:890a"])),
        ("card_tail", f"the card ending {_digits(rng, 4)}"),
    ]
    return items


def _end_sentence(s: str) -> str:
    """``s`` ending in sentence punctuation (so that a planted phrase does not run into the next sentence)."""
    s = s.rstrip()
    return s if s[-1:] in ".!?)\"',:" else s + "."


def build_planted(carriers: list[str], rng: random.Random, per_kind: int, detector_names: frozenset[str]) -> tuple[
        list[str], list[list[tuple[str, int, int, str]]], list[tuple[str, str]]]:
    """Texts, their labelled spans ``(kind, start, end, pool)`` and the hard-negative texts ``(type, text)``."""
    global FIRST_IN_LIST
    texts: list[str] = []
    labels: list[list[tuple[str, int, int, str]]] = []
    out_pool = [n for n in NAMES_OUT_POOL if n.lower() not in detector_names]

    def plant(kind: str, template: str, value: str, pool: str = "") -> None:
        sentence = carriers[len(texts) % len(carriers)]
        if template.startswith("\n") or rng.random() < 0.5:  # the phrase after the sentence
            head = _end_sentence(sentence) + ("" if template.startswith("\n") else " ")
            template = head + template
        else:  # the phrase first, then the sentence
            template = _end_sentence(template) + " " + sentence
        start = template.index("{v}")
        texts.append(template.replace("{v}", value))
        labels.append([(kind, start, start + len(value), pool)])

    gens: dict[str, Callable[[random.Random], str]] = {
        "email": gen_email, "phone": gen_phone, "payment_card": gen_card, "iban": gen_iban,
        "street_address": gen_address, "ip_address": gen_ip,
    }
    for kind, gen in gens.items():
        for _ in range(per_kind):
            value = gen(rng)
            template = rng.choice(CARRIERS[kind])
            if kind == "street_address" and value.islower():
                template = rng.choice(["I live at {v}.", "deliver to {v} please", "my address is {v}"])
            plant(kind, template, value)
    for _ in range(per_kind):
        template, value = gen_account(rng)
        plant("account_id", rng.choice(["Where is {x}?", "Any update on {x}", "{x} never arrived.",
                                        "I need help with {x}."]).replace("{x}", template), value)
    for i in range(per_kind):
        strong = i % 3 != 2
        template = rng.choice(NAME_TEMPLATES_STRONG if strong else NAME_TEMPLATES_WEAK)
        in_list = i % 2 == 0
        pool = FIRST_IN_LIST if in_list else out_pool
        name = gen_name(rng, pool, template)
        label = ("in_list" if in_list else "not_in_list") + ("/strong" if strong else "/weak")
        plant("person_name", template, name, label)
    negatives: list[tuple[str, str]] = []
    for _ in range(max(1, per_kind // 10)):
        for typ, value in hard_negatives(rng):
            sentence = carriers[(len(texts) + len(negatives)) % len(carriers)]
            negatives.append((typ, f"{sentence} {value}" if rng.random() < 0.5 else f"{value} {sentence}"))
    return texts, labels, negatives


def score_planted(gate: PiiGate, texts: list[str], labels: list[list[tuple[str, int, int, str]]]) -> dict[str, Any]:
    tp_hits: Counter[str] = Counter()
    all_hits: Counter[str] = Counter()
    found: Counter[str] = Counter()
    redacted: Counter[str] = Counter()
    planted: Counter[str] = Counter()
    by_pool: dict[str, Counter[str]] = defaultdict(Counter)
    misses: dict[str, list[str]] = defaultdict(list)
    wrong: dict[str, list[str]] = defaultdict(list)
    for text, spans in zip(texts, labels):
        hits = gate.detector.find(text)
        for h in hits:
            all_hits[h.kind] += 1
            if any(k == h.kind and h.start < e and h.end > s for k, s, e, _ in spans):
                tp_hits[h.kind] += 1
            else:
                wrong[h.kind].append(f"{text[h.start:h.end]!r} in {text!r}")
        for kind, s, e, pool in spans:
            planted[kind] += 1
            same = _covered(s, e, [h for h in hits if h.kind == kind])
            anyk = _covered(s, e, hits)
            found[kind] += same
            redacted[kind] += anyk
            if pool:
                by_pool[pool]["planted"] += 1
                by_pool[pool]["found"] += same
            if not same:
                got = ", ".join(f"{h.kind}:{text[h.start:h.end]!r}" for h in hits) or "no hit"
                misses[kind].append(f"{text[s:e]!r} in {text!r} → {got}")
    return {"tp_hits": tp_hits, "all_hits": all_hits, "found": found, "redacted": redacted, "planted": planted,
            "by_pool": by_pool, "misses": misses, "wrong": wrong}


def _covered(s: int, e: int, hits: list[Any]) -> bool:
    covered = set()
    for h in hits:
        covered.update(range(max(s, h.start), min(e, h.end)))
    return len(covered) == e - s


# --------------------------------------------------------------------------------------------- throughput


def throughput_rows(real: dict[str, list[str]], n: int, rng: random.Random) -> pd.DataFrame:
    """``n`` rows shaped like generated candidates: instruction and response are real texts."""
    pool = [t for name in ("banking77", "sst2", "tweeteval", "gsm8k", "self_instruct") for t in real[name]]
    rows = []
    for i in range(n):
        if rng.random() < 0.3:
            q, _, a = real["gsm8k"][rng.randrange(len(real["gsm8k"]))].partition("\n")
        else:
            q, a = rng.choice(pool), rng.choice(pool)
        conv = json.dumps([{"content": q, "role": "user"}, {"content": a, "role": "assistant"}], ensure_ascii=False,
                          sort_keys=True)
        rows.append({"row_id": f"r{i}", "instruction": q, "response": a, "text": q + "\n" + a, "conversation": conv})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------- report


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b else "—"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=20261208)
    ap.add_argument("--per-kind", type=int, default=500)
    ap.add_argument("--throughput-rows", type=int, default=50_000)
    ap.add_argument("--examples", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    gate = PiiGate(PiiGateConfig())
    init_s = time.perf_counter() - t0
    import faker.providers.person.en_GB as fgb
    import faker.providers.person.en_US as fus

    global FIRST_IN_LIST
    FIRST_IN_LIST = sorted({n for P in (fgb.Provider, fus.Provider)
                            for attr in ("first_names_male", "first_names_female")
                            for n in (getattr(P, attr, ()) or ()) if n.lower() in gate.detector.first_names})

    real = load_real()
    carriers = carrier_sentences(real, rng)
    texts, labels, negatives = build_planted(carriers, rng, args.per_kind, gate.detector.first_names)
    planted = score_planted(gate, texts, labels)

    lines: list[str] = []
    w = lines.append
    w("### Planted PII in real sentences")
    w("")
    w(f"{args.per_kind} planted values per kind (seed {args.seed}), each in a carrier phrase at the start or end of a "
      "real sentence. *Recall*: planted spans fully covered by hits of their kind; *redacted*: covered by hits of "
      "any kind; *precision*: hits of the kind that overlap a planted span of that kind.")
    w("")
    w("| kind | planted | recall | redacted (any kind) | hits | precision |")
    w("|---|---:|---:|---:|---:|---:|")
    tot = Counter()
    for kind in KINDS:
        p, f, r = planted["planted"][kind], planted["found"][kind], planted["redacted"][kind]
        h, tp = planted["all_hits"][kind], planted["tp_hits"][kind]
        tot.update({"p": p, "f": f, "r": r, "h": h, "tp": tp})
        w(f"| {kind} | {p} | {_pct(f, p)} | {_pct(r, p)} | {h} | {_pct(tp, h)} |")
    w(f"| **all** | {tot['p']} | {_pct(tot['f'], tot['p'])} | {_pct(tot['r'], tot['p'])} | {tot['h']} | "
      f"{_pct(tot['tp'], tot['h'])} |")
    w("")
    w("Names by pool (in the gate's first-name list or not) and context (strong: \"my name is\", sign-offs, "
      "\"Dear\", family words; weak: \"I'm\", \"this is\", \"Hi\", \"Thanks, X\"):")
    w("")
    w("| pool / context | planted | recall |")
    w("|---|---:|---:|")
    for pool in sorted(planted["by_pool"]):
        c = planted["by_pool"][pool]
        w(f"| {pool} | {c['planted']} | {_pct(c['found'], c['planted'])} |")
    w("")

    neg_hits: Counter[str] = Counter()
    neg_total: Counter[str] = Counter()
    neg_examples: list[str] = []
    for typ, text in negatives:
        neg_total[typ] += 1
        hits = gate.detector.find(text)
        if hits:
            neg_hits[typ] += 1
            neg_examples.append(f"{typ}: " + ", ".join(f"{h.kind} {text[h.start:h.end]!r}" for h in hits)
                                + f" in {text!r}")
    w("### Hard negatives planted in real sentences")
    w("")
    w("| type | rows | rows with any hit |")
    w("|---|---:|---:|")
    for typ in sorted(neg_total):
        w(f"| {typ} | {neg_total[typ]} | {neg_hits[typ]} |")
    w(f"| **all** | {sum(neg_total.values())} | {sum(neg_hits.values())} "
      f"({_pct(sum(neg_hits.values()), sum(neg_total.values()))}) |")
    w("")

    w("### Real data, untouched: rows flagged per kind")
    w("")
    w("Every row of each dataset through the detectors (one text per row). A flag is not necessarily a false "
      "positive: real rows do contain names and numbers (see the examples below).")
    w("")
    w("| dataset | rows | any | " + " | ".join(KINDS) + " |")
    w("|---|---:|---:|" + "---:|" * len(KINDS))
    flagged_examples: dict[str, list[str]] = defaultdict(list)
    for name, rows in real.items():
        kinds_rows: Counter[str] = Counter()
        anyc = 0
        for text in rows:
            hits = gate.detector.find(text)
            if hits:
                anyc += 1
                for kind in {h.kind for h in hits}:
                    kinds_rows[kind] += 1
                for h in hits:
                    ctx = text[max(0, h.start - 40): h.end + 25].replace("\n", "⏎")
                    flagged_examples[f"{name}/{h.kind}"].append(f"{text[h.start:h.end]!r} — …{ctx}…")
        w(f"| {name} | {len(rows)} | {anyc} ({_pct(anyc, len(rows))}) | "
          + " | ".join(f"{kinds_rows[k]}" + (f" ({_pct(kinds_rows[k], len(rows))})" if kinds_rows[k] else "")
                       for k in KINDS) + " |")
    w("")

    # throughput
    trng = random.Random(args.seed + 1)
    frame = throughput_rows(real, args.throughput_rows, trng)
    gate.evaluate(frame.head(2000))  # warm-up
    t = time.perf_counter()
    result = gate.evaluate(frame)
    secs = time.perf_counter() - t
    m = result.metrics
    single = PiiGate(PiiGateConfig(columns=("text",), conversation_column=None))
    t = time.perf_counter()
    single.evaluate(frame[["row_id", "text"]])
    secs1 = time.perf_counter() - t
    w("### Throughput")
    w("")
    w(f"- `PiiGate.evaluate` on {len(frame):,} real rows (instruction, response, text and conversation scanned: four "
      f"scans per row): **{len(frame) / secs:,.0f} rows/s** ({secs:.1f} s; {m['rows_redacted']} rows redacted, "
      f"{m['rows_rejected']} rejected).")
    w(f"- Only the `text` column: **{len(frame) / secs1:,.0f} rows/s** ({secs1:.1f} s).")
    w(f"- Building the gate (regexes, phonenumbers metadata, {len(gate.detector.first_names):,} first names from "
      f"Faker): {init_s:.2f} s, once.")
    w("")

    w("### Examples")
    w("")
    w("Missed planted values (first of each kind):")
    w("")
    for kind in KINDS:
        for ex in planted["misses"][kind][: args.examples]:
            w(f"- {kind}: {_clip(ex)}")
    w("")
    w("Wrong hits on the planted set (a hit with no planted span of its kind under it):")
    w("")
    for kind in KINDS:
        for ex in planted["wrong"][kind][: args.examples]:
            w(f"- {kind}: {_clip(ex)}")
    w("")
    w("Hard negatives that got a hit:")
    w("")
    for ex in neg_examples[: args.examples * 3]:
        w(f"- {_clip(ex)}")
    w("")
    w("Flags on the real data (first of each dataset and kind):")
    w("")
    for key in sorted(flagged_examples):
        for ex in flagged_examples[key][: args.examples]:
            w(f"- {key}: {_clip(ex)}")
    w("")
    report = "\n".join(lines)
    header = (f"Run {dt.date.today().isoformat()} on {platform.node() or 'this machine'} "
              f"({os.cpu_count()} cores, Python {platform.python_version()}).")
    print(header + "\n\n" + report)
    if args.out:
        args.out.write_text(header + "\n\n" + report + "\n", encoding="utf-8")
    return 0


def _clip(s: str, n: int = 220) -> str:
    s = s.replace("|", "\\|").replace("\n", "⏎")
    return s if len(s) <= n else s[: n - 1] + "…"


if __name__ == "__main__":
    raise SystemExit(main())
