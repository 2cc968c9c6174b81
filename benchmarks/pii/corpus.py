"""Veil's labelled corpus of clinical and financial notes: the sentence templates and the generator.

Benchmark and test data, kept in the repository and not in the wheel. The
corpus is generated, not collected: sentence templates written for Veil are
filled with synthetic values whose character spans are known. It is built
once by :func:`generate_corpus` (a fixed seed, so the same Faker release gives
the same file) and kept beside this file as ``pii_corpus.jsonl``; the
evaluation always reads the kept file, so a new Faker release cannot move the
numbers. Regenerate it with ``python benchmarks/pii/corpus.py``. Veil finds
this folder with :func:`veil.anonymize.text.pii_benchmark_folder`; ``veil
bench`` loads this module from there (it is not an importable package).

**The split is by template.** A template belongs to the ``test`` part when the
first byte of the SHA-256 of its identifier is divisible by 3, otherwise to
the ``tune`` part; every sentence of a template lands in the same part. Any
tuning (deny-lists, context words, thresholds) is done on ``tune`` only, so a
template of the held-out part has never been looked at while tuning.

**What is labelled.** Names (without titles such as "Dr"), places (cities,
regions, countries), organisations (hospitals, banks, employers), calendar
dates and clock times, and the pattern entities. Durations ("for 3 days"),
frequencies, ages, bare years, amounts, doses, laboratory values, invoice and
order numbers also appear and are *not* PII here: a detector that reports them
loses precision. The record format and the scoring are Veil's
(:func:`veil.anonymize.load_corpus`, :func:`veil.anonymize.evaluate_pii`).

The module is longer than Veil's 500-line guide because it is mostly data:
the 98 templates and the lists of values they are filled with.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from veil.anonymize import PiiRecord, PiiSpan
from veil.errors import require

__all__ = ["CORPUS_PATH", "PER_TEMPLATE", "SEED", "TEMPLATES", "generate_corpus", "write_corpus"]

CORPUS_PATH = Path(__file__).with_name("pii_corpus.jsonl")
SEED = 20_240_505
PER_TEMPLATE = 12

# ---------------------------------------------------------------- templates
# Each template is (identifier, text). Slots in braces are filled by _SLOTS; a
# slot whose name is in _LABELS is a gold span of that entity type, the others
# are distractors that must not be reported.

_CLINICAL: tuple[tuple[str, str], ...] = (
    (
        "clin-admit",
        "{person} was admitted to {hospital} on {date} with chest pain; troponin {lab}.",
    ),
    (
        "clin-discharge",
        "Discharge summary: {person}, NHS number {nhs}, discharged home on {date} on {dose}.",
    ),
    (
        "clin-referral",
        "Dear Dr {last}, thank you for seeing {person}, aged {age}, who lives in {city}.",
    ),
    (
        "clin-gp-letter",
        "GP: Dr {person}, {hospital}. Patient seen on {date} at {time}; BP {bp}.",
    ),
    (
        "clin-contact",
        "Next of kin {person} can be reached on {phone} or at {email}.",
    ),
    (
        "clin-nhs-bare",
        "NHS no. {nhs} - {person}, {city}. Allergies: penicillin.",
    ),
    (
        "clin-followup",
        "Follow-up booked for {date} with {person} at the {city} clinic; review in {duration}.",
    ),
    (
        "clin-transfer",
        "Transferred from {hospital} to {hospital2} on {date} after {duration} in ICU.",
    ),
    (
        "clin-medication",
        "{first} has been taking {dose} twice daily since {date}; HbA1c {lab}.",
    ),
    (
        "clin-portal",
        "Results were uploaded to {url} for {person} (portal login {email}).",
    ),
    (
        "clin-insurance",
        "Insurance claim for {person}, SSN {ssn}, treated at {hospital} in {state}.",
    ),
    (
        "clin-phone-call",
        "Telephone consultation with {person} on {phone} at {time} on {date}.",
    ),
    (
        "clin-travel",
        "{person} returned from {country} on {date} with fever of {duration}.",
    ),
    (
        "clin-canada",
        "{person} from {canadian_city} presented her SIN {sin} for the provincial claim.",
    ),
    (
        "clin-netherlands",
        "Patient {person}, BSN {bsn}, was referred by a hospital in {dutch_city}.",
    ),
    (
        "clin-lab-request",
        "Lab request for {person}, DOB {date}: full blood count, ICD-10 {icd}.",
    ),
    (
        "clin-nurse-note",
        "Nurse {first} noted at {time} that {person} was comfortable; SpO2 {pct}.",
    ),
    (
        "clin-consent",
        "Consent signed by {person} and witnessed by {person2} on {date}.",
    ),
    (
        "clin-device",
        "The infusion pump at {ip} reported an alarm for bed {ward} at {time}.",
    ),
    (
        "clin-telehealth",
        "Video visit link {url} was sent to {email} for the appointment on {date}.",
    ),
    (
        "clin-history",
        "{person} has lived in {city}, {country} since {year} and works for {company}.",
    ),
    (
        "clin-mental-health",
        "Ms {last} was seen by the crisis team; her sister {first} phoned {phone}.",
    ),
    (
        "clin-surgery",
        "Surgery for {person} scheduled at {hospital} on {date}, theatre {ward}.",
    ),
    (
        "clin-vaccination",
        "{person} received the second dose on {date} at a pharmacy in {city}.",
    ),
    (
        "clin-paediatric",
        "Child seen with mother {person}; school nurse email {email}, phone {phone}.",
    ),
    (
        "clin-nhs-dashed",
        "Please quote the health service number {nhs} when writing about {person}.",
    ),
    (
        "clin-radiology",
        "MRI of {person} reported on {date} by Dr {last}: no acute change, follow-up in {duration}.",
    ),
    (
        "clin-billing",
        "Invoice {invoice} for {person} was charged to card {card} on {date}.",
    ),
    (
        "clin-ssn-verify",
        "Identity checked: social security number {ssn}, address in {city}, {state}.",
    ),
    (
        "clin-research",
        "Research participant {first} {last} withdrew consent on {date}; samples destroyed.",
    ),
    (
        "clin-ambulance",
        "Ambulance called by {person} from {city} at {time}; crew from {hospital}.",
    ),
    (
        "clin-pharmacy",
        "Prescription for {person} faxed to {company} pharmacy on {phone}.",
    ),
    (
        "clin-audit-log",
        "Record of {person} opened from {ip} by {email} on {date} at {time}.",
    ),
    (
        "clin-bsn-dotted",
        "Burgerservicenummer {bsn} belongs to {person}, born in {dutch_city}.",
    ),
    (
        "clin-sin-bare",
        "Social insurance number {sin}; employer {company} in {canadian_city}.",
    ),
    (
        "clin-maternity",
        "{person} delivered at {hospital} on {date}; partner {first} present.",
    ),
    (
        "clin-callback",
        "Please ask {person} to call the ward back on {phone} before {time}.",
    ),
    (
        "clin-family-contact",
        "Daughter {first} ({phone}) and son {person} ({phone2}) were informed on {date}.",
    ),
    (
        "clin-home-visit",
        "Home visit to {person} in {city} on {date}; district nurse contactable on {phone}.",
    ),
    (
        "clin-ward-phone",
        "Ward {ward} at {hospital}: direct line {phone}, bleep via switchboard.",
    ),
    (
        "clin-dentist",
        "Dental recall for {person}, last seen {date}; reminder texted to {phone}.",
    ),
    (
        "clin-optician",
        "Optometrist {person} of {company} referred the patient on {date}; tel {phone}.",
    ),
    (
        "clin-hospice",
        "{person} moved to a hospice in {city} on {date}; family liaison {person2}, {phone}.",
    ),
    (
        "clin-occupational",
        "Fit note for {person} sent to {company}, HR contact {email}.",
    ),
    (
        "clin-physio",
        "Physiotherapy for {person} every week for {duration}; cancel on {phone} or {email}.",
    ),
    (
        "clin-pharmacy-call",
        "Pharmacist {first} at {company} rang {phone} about the {dose} prescription.",
    ),
    (
        "clin-bsn-insurer",
        "Insurer in {dutch_city} confirmed cover for {person}, citizen service number {bsn}.",
    ),
    (
        "clin-url-leaflet",
        "Leaflet for {person}: see {url} and call {phone} with questions.",
    ),
    (
        "clin-no-pii",
        "Patient tolerated {dose} well for {duration}; creatinine {lab}, BP {bp}.",
    ),
    (
        "clin-no-pii-2",
        "Reviewed on the ward: SpO2 {pct}, ICD-10 {icd}, plan to repeat bloods in {duration}.",
    ),
)

_FINANCIAL: tuple[tuple[str, str], ...] = (
    (
        "fin-transfer",
        "Transfer of {amount} from {person} to IBAN {iban} on {date}.",
    ),
    (
        "fin-card-dispute",
        "{person} disputes a charge of {amount} on card {card} made on {date}.",
    ),
    (
        "fin-kyc",
        "KYC check for {person}: SSN {ssn}, phone {phone}, email {email}.",
    ),
    (
        "fin-loan",
        "Loan application by {person} of {city} to {bank} for {amount} over {duration}.",
    ),
    (
        "fin-fraud",
        "Suspicious login to the account of {person} from IP {ip} at {time} on {date}.",
    ),
    (
        "fin-statement",
        "Statement for {person}, {bank}, account IBAN {iban}, period ending {date}.",
    ),
    (
        "fin-payroll",
        "Payroll: {person} employed by {company} since {date}, SIN {sin}.",
    ),
    (
        "fin-invoice",
        "Invoice {invoice} from {company} to {person} for {amount}, due {date}.",
    ),
    (
        "fin-chargeback",
        "Chargeback on {card} for order {order}; customer {first} called {phone}.",
    ),
    (
        "fin-wire",
        "Wire to {bank} in {country}, beneficiary {person}, IBAN {iban}, ref {invoice}.",
    ),
    (
        "fin-credit-check",
        "Credit report requested for {person} ({ssn}) by {bank} on {date}.",
    ),
    (
        "fin-phishing",
        "The customer clicked {url} and entered card number {card} at {time}.",
    ),
    (
        "fin-account-open",
        "New account opened by {person} at the {city} branch of {bank} on {date}.",
    ),
    (
        "fin-contact-update",
        "{person} changed her e-mail to {email} and her mobile to {phone}.",
    ),
    (
        "fin-tax",
        "Tax return of {person}, BSN {bsn}, filed with the office in {dutch_city} on {date}.",
    ),
    (
        "fin-mortgage",
        "Mortgage offer to {person} and {person2} for a house in {city}, {state}.",
    ),
    (
        "fin-api-log",
        "API call from {ip} with key owner {email} returned {amount} at {time}.",
    ),
    (
        "fin-payee",
        "Payee added: {person}, {bank}, IBAN {iban}.",
    ),
    (
        "fin-card-replace",
        "Replacement card for {person} sent to {city}; old card {card} blocked on {date}.",
    ),
    (
        "fin-pension",
        "Pension statement for {person} (social insurance no. {sin}) from {company}.",
    ),
    (
        "fin-insurance",
        "Policy {invoice} held by {person}; claim of {amount} paid on {date} by {company}.",
    ),
    (
        "fin-complaint",
        "Complaint from {person} about {bank}: call back on {phone} after {time}.",
    ),
    (
        "fin-merchant",
        "Merchant {company} in {city} refunded {amount} to card ending {last4} on {date}.",
    ),
    (
        "fin-audit",
        "Auditor {person} of {company} reviewed {order} orders worth {amount} on {date}.",
    ),
    (
        "fin-crypto",
        "Exchange withdrawal by {person} to an address at {url} flagged on {date}.",
    ),
    (
        "fin-login-email",
        "Password reset sent to {email} for {person} from {ip}.",
    ),
    (
        "fin-joint",
        "Joint account of {person} and {person2}, {bank}, opened {date}.",
    ),
    (
        "fin-salary",
        "Salary of {amount} paid by {company} to {first} {last} on {date}.",
    ),
    (
        "fin-ssn-bare",
        "Social Security number on file: {ssn} ({person}, {state}).",
    ),
    (
        "fin-dutch-client",
        "Client {person} from {dutch_city} gave sofinummer {bsn} and IBAN {iban}.",
    ),
    (
        "fin-canada-client",
        "Client {person} from {canadian_city}, SIN {sin}, phone {phone}.",
    ),
    (
        "fin-nhs-employer",
        "Occupational health form for {person}, NHS number {nhs}, employer {company}.",
    ),
    (
        "fin-branch-visit",
        "{person} visited the {city} branch at {time} on {date} to withdraw {amount}.",
    ),
    (
        "fin-website",
        "Statements are available at {url}; questions to {email}.",
    ),
    (
        "fin-callback",
        "Customer {person} asked for a callback on {phone} about a payment to {bank}.",
    ),
    (
        "fin-sms",
        "One-time code sent by SMS to {phone} for {person} at {time}.",
    ),
    (
        "fin-branch-phone",
        "The {city} branch of {bank} can be reached on {phone}; manager {person}.",
    ),
    (
        "fin-card-activation",
        "Card {card} activated by {person} from {phone} on {date}.",
    ),
    (
        "fin-overdraft",
        "{person} went {amount} overdrawn on {date}; we phoned {phone} and wrote to {email}.",
    ),
    (
        "fin-beneficiary",
        "Beneficiary {person} in {country}, IBAN {iban}, mobile {phone}.",
    ),
    (
        "fin-standing-order",
        "Standing order of {amount} from {person} to {company}, IBAN {iban}, starting {date}.",
    ),
    (
        "fin-id-check",
        "Passport copy of {person} checked on {date}; SSN {ssn} matched the bureau record.",
    ),
    (
        "fin-bsn-payroll",
        "Dutch payroll for {person}: BSN {bsn}, salary {amount}, employer {company}.",
    ),
    (
        "fin-url-notice",
        "Your statement is ready at {url}; contact {person} on {phone} if anything is wrong.",
    ),
    (
        "fin-ssn-w2",
        "W-2 for {person} issued by {company}, SSN {ssn}, wages {amount}.",
    ),
    (
        "fin-ip-block",
        "Logins from {ip} to the account of {person} were blocked on {date} at {time}.",
    ),
    (
        "fin-no-pii",
        "Portfolio rebalanced: equities {pct}, bonds {pct2}, fees {amount} over {duration}.",
    ),
    (
        "fin-no-pii-2",
        "Order {order} settled for {amount}; invoice {invoice} closed after {duration}.",
    ),
)

TEMPLATES: tuple[tuple[str, str], ...] = _CLINICAL + _FINANCIAL

_LABELS = {
    "person": "PERSON",
    "person2": "PERSON",
    "first": "PERSON",
    "last": "PERSON",
    "city": "LOCATION",
    "canadian_city": "LOCATION",
    "dutch_city": "LOCATION",
    "country": "LOCATION",
    "state": "LOCATION",
    "hospital": "ORGANIZATION",
    "hospital2": "ORGANIZATION",
    "company": "ORGANIZATION",
    "bank": "ORGANIZATION",
    "date": "DATE_TIME",
    "time": "DATE_TIME",
    "email": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER",
    "phone2": "PHONE_NUMBER",
    "card": "CREDIT_CARD",
    "iban": "IBAN_CODE",
    "ssn": "US_SSN",
    "ip": "IP_ADDRESS",
    "url": "URL",
    "nhs": "UK_NHS",
    "sin": "CA_SIN",
    "bsn": "NL_BSN",
}

# ---------------------------------------------------------------- value lists
# Real place and institution names are not personal data; the people are Faker's.

_CITIES = (
    "London", "Manchester", "Leeds", "Bristol", "Glasgow", "Edinburgh", "Cardiff", "Belfast",
    "Liverpool", "Sheffield", "Nottingham", "Birmingham", "Oxford", "Cambridge", "York",
    "Boston", "Chicago", "Houston", "Phoenix", "Seattle", "Denver", "Atlanta", "Miami",
    "Dallas", "San Diego", "New York", "Los Angeles", "Philadelphia", "Baltimore", "Portland",
    "Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Dublin", "Vienna", "Prague", "Warsaw",
    "Munich", "Hamburg", "Lyon", "Milan", "Barcelona", "Brussels", "Zurich", "Geneva",
    "Stockholm", "Oslo", "Copenhagen", "Helsinki", "Athens", "Budapest", "Sydney", "Melbourne",
    "Auckland", "Mumbai", "Delhi", "Singapore", "Tokyo", "Cape Town", "Nairobi", "Lagos",
)  # fmt: skip
_CANADIAN_CITIES = (
    "Toronto", "Montreal", "Vancouver", "Calgary", "Ottawa", "Edmonton", "Winnipeg", "Halifax",
    "Quebec City", "Victoria", "Regina", "Saskatoon",
)  # fmt: skip
_DUTCH_CITIES = (
    "Amsterdam", "Rotterdam", "Utrecht", "The Hague", "Eindhoven", "Groningen", "Leiden",
    "Maastricht", "Haarlem", "Delft", "Nijmegen", "Arnhem",
)  # fmt: skip
_COUNTRIES = (
    "France", "Germany", "Spain", "Italy", "Portugal", "Ireland", "Poland", "Greece", "India",
    "Pakistan", "Nigeria", "Kenya", "Brazil", "Mexico", "Canada", "Australia", "Japan", "China",
    "Thailand", "Vietnam", "Egypt", "Morocco", "Turkey", "Sweden", "Norway", "Switzerland",
    "Austria", "Belgium", "the Netherlands", "Argentina",
)  # fmt: skip
_STATES = (
    "California", "Texas", "Florida", "Ohio", "Georgia", "Michigan", "Virginia", "Washington",
    "Arizona", "Massachusetts", "Colorado", "Oregon", "Nevada", "Illinois", "New Jersey",
    "Minnesota", "Ontario", "Quebec", "Alberta", "Yorkshire", "Kent",
)  # fmt: skip
_SAINTS = (
    "Mary", "Thomas", "George", "James", "Luke", "Peter", "Helen", "Bartholomew",
)  # fmt: skip
_HOSPITAL_FORMS = (
    "{city} General Hospital",
    "St {saint}'s Hospital",
    "{city} Royal Infirmary",
    "{city} University Hospital",
    "{surname} Memorial Hospital",
    "{city} Children's Hospital",
    "the {city} Heart Institute",
)
_BANKS = (
    "Barclays", "HSBC", "Lloyds Bank", "NatWest", "Santander", "Deutsche Bank", "ING",
    "ABN AMRO", "Rabobank", "BNP Paribas", "Wells Fargo", "Bank of America", "Citibank", "Chase",
    "Royal Bank of Canada", "TD Bank", "Scotiabank", "Monzo", "Nationwide",
)  # fmt: skip
_BANK_FORMS = ("{city} Savings Bank", "First {state} Bank", "{surname} & Co. Bank")
_COMPANY_SUFFIXES = (
    "Ltd", "PLC", "LLC", "Inc.", "Group", "Holdings", "Partners", "GmbH",
)  # fmt: skip
_COMPANY_FORMS = (
    "{surname} {suffix}",
    "{surname} and {surname2} {suffix}",
    "{city} {trade} {suffix}",
    "{trade} {suffix}",
)
_TRADES = (
    "Logistics", "Engineering", "Software", "Foods", "Textiles", "Insurance", "Energy",
    "Pharma", "Construction", "Media", "Consulting", "Analytics", "Retail", "Shipping",
)  # fmt: skip
_NAME_LOCALES = (
    ("en_US", 5), ("en_GB", 5), ("de_DE", 1), ("fr_FR", 1), ("es_ES", 1), ("it_IT", 1),
    ("nl_NL", 1), ("pl_PL", 1), ("en_IN", 1), ("en_CA", 1),
)  # fmt: skip
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
_DATE_FORMATS = (
    "{d} {month} {y}",
    "{month} {d}, {y}",
    "{dd}/{mm}/{y}",
    "{mm}/{dd}/{y}",
    "{y}-{mm}-{dd}",
    "{d} {mon} {y}",
    "{d}-{mon}-{y}",
    "{d}{suffix} {month} {y}",
)
_EMAIL_DOMAINS = (
    "gmail.com", "outlook.com", "yahoo.co.uk", "nhs.net", "hotmail.com", "icloud.com",
    "proton.me", "example.org", "mail.ca", "ziggo.nl", "btinternet.com", "web.de",
)  # fmt: skip
_URL_HOSTS = (
    "www.mychart-portal.org", "patients.stmarys.nhs.uk", "portal.clinicresults.com",
    "secure.bankonline.co.uk", "www.payments-gateway.com", "login.accounts-verify.net",
    "telehealth.carelink.io", "www.taxoffice.nl", "statements.rbc-client.ca",
    "files.labshare.org", "www.wallet-exchange.io", "myaccount.example-bank.com",
)  # fmt: skip
_US_AREAS = (
    "212", "213", "305", "312", "404", "415", "503", "602", "617", "646", "702", "713", "718",
    "206", "303", "214", "619", "773", "818", "917",
)  # fmt: skip
_UK_FORMS = ("020 7{a} {b}", "020 8{a} {b}", "0161 {c} {b}", "0113 {c} {b}", "07{m} {n}")
_PHONE_FORMS_US = (
    "({area}) {ex}-{line}",
    "{area}-{ex}-{line}",
    "{area}.{ex}.{line}",
    "+1 {area} {ex} {line}",
    "+1-{area}-{ex}-{line}",
)


def _luhn_check_digit(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        n = int(ch)
        if i % 2 == 0:  # doubled: the check digit will sit to the right
            n *= 2
            if n > 9:  # noqa: PLR2004
                n -= 9
        total += n
    return str((10 - total % 10) % 10)


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(count))


def _group(text: str, sizes: Sequence[int], sep: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(text[at : at + size])
        at += size
    return sep.join(parts)


@dataclass
class _Values:
    """Draws the synthetic values of one corpus from a seeded generator (test data only)."""

    rng: random.Random
    fakers: dict[str, Any] = field(default_factory=dict)

    def _faker(self) -> Any:
        locales = [name for name, _ in _NAME_LOCALES]
        weights = [weight for _, weight in _NAME_LOCALES]
        return self.fakers[self.rng.choices(locales, weights)[0]]

    def first(self) -> str:
        return str(self._faker().first_name())

    def last(self) -> str:
        return str(self._faker().last_name())

    def person(self) -> str:
        faker = self._faker()
        if self.rng.random() < 0.1:  # noqa: PLR2004
            return f"{faker.first_name()} {self.rng.choice(string.ascii_uppercase)}. {faker.last_name()}"
        return f"{faker.first_name()} {faker.last_name()}"

    def city(self) -> str:
        return self.rng.choice(_CITIES)

    def canadian_city(self) -> str:
        return self.rng.choice(_CANADIAN_CITIES)

    def dutch_city(self) -> str:
        return self.rng.choice(_DUTCH_CITIES)

    def country(self) -> str:
        return self.rng.choice(_COUNTRIES)

    def state(self) -> str:
        return self.rng.choice(_STATES)

    def hospital(self) -> str:
        form = self.rng.choice(_HOSPITAL_FORMS)
        return form.format(
            city=self.rng.choice(_CITIES), saint=self.rng.choice(_SAINTS), surname=self.last()
        )

    def bank(self) -> str:
        if self.rng.random() < 0.7:  # noqa: PLR2004
            return self.rng.choice(_BANKS)
        form = self.rng.choice(_BANK_FORMS)
        return form.format(
            city=self.rng.choice(_CITIES), state=self.rng.choice(_STATES), surname=self.last()
        )

    def company(self) -> str:
        form = self.rng.choice(_COMPANY_FORMS)
        return form.format(
            surname=self.last(),
            surname2=self.last(),
            suffix=self.rng.choice(_COMPANY_SUFFIXES),
            city=self.rng.choice(_CITIES),
            trade=self.rng.choice(_TRADES),
        )

    def date(self) -> str:
        day = date(1935, 1, 1) + timedelta(days=self.rng.randrange(33_000))
        teen = 11 <= day.day <= 13  # noqa: PLR2004 - 11th, 12th, 13th
        suffix = "th" if teen else {1: "st", 2: "nd", 3: "rd"}.get(day.day % 10, "th")
        return self.rng.choice(_DATE_FORMATS).format(
            d=day.day,
            dd=f"{day.day:02d}",
            mm=f"{day.month:02d}",
            y=day.year,
            month=_MONTHS[day.month - 1],
            mon=_MONTHS[day.month - 1][:3],
            suffix=suffix,
        )

    def time(self) -> str:
        hour, minute = self.rng.randrange(24), self.rng.randrange(0, 60, 5)
        if self.rng.random() < 0.5:  # noqa: PLR2004
            return f"{hour:02d}:{minute:02d}"
        return f"{(hour % 12) or 12}:{minute:02d} {'am' if hour < 12 else 'pm'}"  # noqa: PLR2004

    def email(self) -> str:
        ascii_name = re.sub(r"[^a-z]", "", self.first().lower()) or "info"
        ascii_last = re.sub(r"[^a-z]", "", self.last().lower()) or "user"
        local = self.rng.choice(
            (
                f"{ascii_name}.{ascii_last}",
                f"{ascii_name[0]}{ascii_last}",
                f"{ascii_name}{self.rng.randrange(10, 99)}",
                f"{ascii_last}.{ascii_name}",
            )
        )
        return f"{local}@{self.rng.choice(_EMAIL_DOMAINS)}"

    def phone(self) -> str:
        if self.rng.random() < 0.5:  # noqa: PLR2004
            return self.rng.choice(_PHONE_FORMS_US).format(
                area=self.rng.choice(_US_AREAS),
                ex=f"{self.rng.randrange(2, 10)}{_digits(self.rng, 2)}",
                line=_digits(self.rng, 4),
            )
        form = self.rng.choice(_UK_FORMS)
        uk = form.format(
            a=_digits(self.rng, 3),
            b=_digits(self.rng, 4),
            c=_digits(self.rng, 3),
            m=f"{self.rng.choice('3456789')}{_digits(self.rng, 2)}",
            n=_digits(self.rng, 6),
        )
        if self.rng.random() < 0.3:  # noqa: PLR2004
            return "+44 " + uk[1:]
        return uk

    def card(self) -> str:
        kind = self.rng.random()
        if kind < 0.45:  # noqa: PLR2004 - Visa
            payload = "4" + _digits(self.rng, 14)
        elif kind < 0.85:  # noqa: PLR2004 - Mastercard
            payload = f"5{self.rng.randrange(1, 6)}" + _digits(self.rng, 13)
        else:  # American Express, 15 digits
            payload = self.rng.choice(("34", "37")) + _digits(self.rng, 12)
        number = payload + _luhn_check_digit(payload)
        sizes = (4, 6, 5) if len(number) == 15 else (4, 4, 4, 4)  # noqa: PLR2004
        return self.rng.choice((_group(number, sizes, " "), _group(number, sizes, "-"), number))

    def iban(self) -> str:
        country = self.rng.choice(("GB", "DE", "NL", "FR", "ES"))
        if country == "GB":
            bban = self.rng.choice(("NWBK", "BARC", "LOYD", "HBUK")) + _digits(self.rng, 14)
        elif country == "DE":
            bban = _digits(self.rng, 18)
        elif country == "NL":
            bban = self.rng.choice(("ABNA", "INGB", "RABO")) + _digits(self.rng, 10)
        elif country == "FR":
            bban = _digits(self.rng, 23)
        else:
            bban = _digits(self.rng, 20)
        rearranged = bban + country + "00"
        numeric = "".join(str(int(ch, 36)) for ch in rearranged)
        iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
        if self.rng.random() < 0.6:  # noqa: PLR2004
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban

    def ssn(self) -> str:
        area = self.rng.choice([a for a in range(1, 900) if a != 666])  # noqa: PLR2004
        group, serial = self.rng.randrange(1, 100), self.rng.randrange(1, 10_000)
        sep = "-" if self.rng.random() < 0.8 else " "  # noqa: PLR2004
        return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"

    def ip(self) -> str:
        if self.rng.random() < 0.8:  # noqa: PLR2004
            first = self.rng.choice((10, 172, 192, 81, 62, 203, 145, 88))
            rest = ".".join(str(self.rng.randrange(256)) for _ in range(3))
            return f"{first}.{rest}"
        groups = [f"{self.rng.randrange(65536):x}" for _ in range(8)]
        groups[0] = "2001"
        return ":".join(groups)

    def url(self) -> str:
        host = self.rng.choice(_URL_HOSTS)
        path = self.rng.choice(("", "/login", "/results/view", "/account/statements", "/s/"))
        token = "".join(self.rng.choice(string.ascii_lowercase + string.digits) for _ in range(6))
        tail = path + (token if path.endswith("/") else "")
        return self.rng.choice(("https://", "http://", "https://", "")) + host + tail

    def nhs(self) -> str:
        while True:
            body = str(self.rng.randrange(1, 10)) + _digits(self.rng, 8)
            check = 11 - sum(int(c) * w for c, w in zip(body, range(10, 1, -1), strict=True)) % 11
            if check == 11:  # noqa: PLR2004
                check = 0
            if check != 10:  # noqa: PLR2004
                break
        number = body + str(check)
        return self.rng.choice(
            (_group(number, (3, 3, 4), " "), _group(number, (3, 3, 4), "-"), number)
        )

    def sin(self) -> str:
        payload = self.rng.choice("1234567") + _digits(self.rng, 7)
        number = payload + _luhn_check_digit(payload)
        return self.rng.choice((_group(number, (3, 3, 3), " "), _group(number, (3, 3, 3), "-")))

    def bsn(self) -> str:
        while True:
            body = self.rng.choice("123456789") + _digits(self.rng, 7)
            total = sum(int(c) * w for c, w in zip(body, range(9, 1, -1), strict=True))
            check = total % 11
            if check < 10:  # noqa: PLR2004
                break
        number = body + str(check)
        return self.rng.choice((number, _group(number, (4, 2, 3), "."), number))

    # Distractors: text that looks like data but is not personal data.
    def dose(self) -> str:
        drug = self.rng.choice(("metformin", "ramipril", "amoxicillin", "atorvastatin"))
        return f"{drug} {self.rng.choice((5, 10, 20, 250, 500))} mg"

    def lab(self) -> str:
        return f"{self.rng.randrange(1, 200)}.{self.rng.randrange(10)} {self.rng.choice(('mmol/L', 'ng/L', '%'))}"

    def bp(self) -> str:
        return f"{self.rng.randrange(95, 180)}/{self.rng.randrange(55, 110)}"

    def pct(self) -> str:
        return f"{self.rng.randrange(40, 100)}%"

    def pct2(self) -> str:
        return self.pct()

    def icd(self) -> str:
        return f"{self.rng.choice('EIJKM')}{self.rng.randrange(10, 99)}.{self.rng.randrange(10)}"

    def age(self) -> str:
        return str(self.rng.randrange(18, 89))

    def year(self) -> str:
        return str(self.rng.randrange(1970, 2024))

    def duration(self) -> str:
        count = self.rng.choice(("2", "3", "5", "two", "three", "six", "10"))
        return f"{count} {self.rng.choice(('days', 'weeks', 'months', 'hours'))}"

    def amount(self) -> str:
        value = self.rng.randrange(10, 250_000)
        return f"{self.rng.choice(('£', '$', '€'))}{value:,}.{self.rng.randrange(100):02d}"

    def invoice(self) -> str:
        return f"{self.rng.choice(('INV', 'REF', 'POL', 'CLM'))}-{self.rng.randrange(2015, 2025)}-{self.rng.randrange(10_000):04d}"

    def order(self) -> str:
        return f"#{self.rng.randrange(10_000, 9_999_999)}"

    def ward(self) -> str:
        return f"{self.rng.randrange(1, 40)}{self.rng.choice('ABC')}"

    def last4(self) -> str:
        return _digits(self.rng, 4)


def _template_part(template_id: str) -> str:
    return "test" if hashlib.sha256(template_id.encode()).digest()[0] % 3 == 0 else "tune"


_SLOT = re.compile(r"\{([a-z_0-9]+)\}")
_DRAW: dict[str, Callable[[_Values], str]] = {
    "person2": _Values.person,
    "hospital2": _Values.hospital,
    "phone2": _Values.phone,
}


def _fill(template: str, values: _Values) -> tuple[str, tuple[PiiSpan, ...]]:
    pieces: list[str] = []
    spans: list[PiiSpan] = []
    at = 0
    length = 0
    for match in _SLOT.finditer(template):
        literal = template[at : match.start()]
        pieces.append(literal)
        length += len(literal)
        slot = match.group(1)
        draw = _DRAW.get(slot) or getattr(_Values, slot)
        value = draw(values)
        if slot in _LABELS:
            spans.append(PiiSpan(length, length + len(value), _LABELS[slot]))
        pieces.append(value)
        length += len(value)
        at = match.end()
    pieces.append(template[at:])
    return "".join(pieces), tuple(spans)


def generate_corpus(seed: int = SEED, per_template: int = PER_TEMPLATE) -> list[PiiRecord]:
    """Fill every template ``per_template`` times with values drawn from ``seed``.

    The values are test data from a seeded, non-cryptographic generator: they
    protect nothing and are reproducible on the same Faker release.
    """
    faker_module = require("faker", extra="text", purpose="generating the PII corpus")
    rng = random.Random(seed)  # noqa: S311 - synthetic test data, not protection
    fakers = {}
    for locale, _ in _NAME_LOCALES:
        faker = faker_module.Faker(locale)
        faker.seed_instance(seed)
        fakers[locale] = faker
    values = _Values(rng, fakers)
    records = []
    for template_id, template in TEMPLATES:
        domain = "clinical" if template_id.startswith("clin-") else "financial"
        part = _template_part(template_id)
        for index in range(per_template):
            text, spans = _fill(template, values)
            records.append(
                PiiRecord(f"{template_id}-{index:02d}", template_id, domain, part, text, spans)
            )
    return records


def write_corpus(path: Path = CORPUS_PATH, records: Iterable[PiiRecord] | None = None) -> Path:
    """Write the corpus as JSON lines (one record per line, UTF-8)."""
    chosen = generate_corpus() if records is None else list(records)
    text = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in chosen)
    path.write_text(text, encoding="utf-8")
    return path


if __name__ == "__main__":
    write_corpus()
