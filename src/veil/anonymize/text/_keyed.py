"""The keyed operators of redaction: a keyed hash, reversible encryption, consistent surrogates.

* ``hash``: HMAC-SHA256 of the entity type and the normalised value
  (spacing, case and separators do not matter), 16 hex digits shown.
* ``encrypt``: AES-256-GCM with a fresh random 96-bit nonce per value and
  the entity type bound as associated data; :func:`decrypter` opens the
  tokens with the same key.
* ``surrogate``: Faker seeded from an HMAC of the value, so a value always
  becomes the same fake value under the same key and Faker release; fake
  identifiers keep their layout and pass their checksums.

Each uses its own subkey, derived from the caller's key with HMAC-SHA256 and
a label (``veil/redact/<purpose>/v1``). The derivation, the token format and
the associated data are part of stored outputs: a file encrypted by an
earlier release must still decrypt, so none of them may change. They call
``cryptography``'s AES-GCM and :mod:`hmac` directly because :mod:`veil.vault`
exposes no bare AEAD or HMAC primitive, only its own envelopes, whose format
(wrapped data keys, a manifest) would change every token and subkey.

Key material: library functions take the key as bytes (at least 16; the
vault's named keys are 32, see :class:`veil.vault.KeyStore`); the CLI
reads it from the key store by name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta

from veil.anonymize.text._entities import bsn_valid, luhn_valid, nhs_valid, only_digits
from veil.errors import InvalidInputError, require

__all__ = [
    "KEYED_OPERATORS",
    "MIN_KEY_BYTES",
    "Surrogates",
    "check_key",
    "decrypter",
    "encrypter",
    "keyed_hasher",
    "normalise",
    "subkey",
]

KEYED_OPERATORS = frozenset({"hash", "encrypt", "surrogate"})
MIN_KEY_BYTES = 16
_ENCRYPTED = re.compile(r"<ENC:([A-Z_]+):([A-Za-z0-9_-]{38,})>")
_DIGIT_TYPES = frozenset(
    {"PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "UK_NHS", "CA_SIN", "NL_BSN"}
)
_HONORIFIC = re.compile(r"(?i)(?:dr|mr|mrs|ms|miss|mx|prof|sir|dame)\.?")
_DATE_SHAPES = (
    "%d %B %Y", "%B %d, %Y", "%d/%m/%Y", "%m/%d/%Y", "%Y-%m-%d", "%d %b %Y", "%d-%b-%Y",
    "%H:%M",
)  # fmt: skip
_NONCE_BYTES = 12
_MEMO_LIMIT = 200_000


def subkey(key: bytes, purpose: str) -> bytes:
    """A key for one purpose only, derived from the caller's key (HMAC-SHA256 as a PRF)."""
    return hmac.new(key, f"veil/redact/{purpose}/v1".encode(), hashlib.sha256).digest()


def normalise(kind: str, value: str) -> str:
    """The form a value is hashed in: spacing, case and separators do not matter."""
    if kind in _DIGIT_TYPES:
        return "".join(ch for ch in value if ch.isalnum()).upper()
    folded = unicodedata.normalize("NFKC", value).casefold()
    return " ".join(folded.split())


def check_key(operator: str, key: bytes | None) -> bytes | None:
    if operator not in KEYED_OPERATORS:
        return None
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        raise InvalidInputError(
            f"the {operator!r} operator needs a secret key",
            expected=f"key= bytes of at least {MIN_KEY_BYTES} (the key store gives 32)",
            got="no key" if key is None else f"{type(key).__name__} of length {len(key)}",
            fix='pass key=veil.vault.KeyStore.for_workspace().get("redact"), or --key NAME at '
            "the CLI",
        )
    return bytes(key)


class Surrogates:
    """Fake values derived from an HMAC of the real ones: same value, same key, same fake."""

    def __init__(self, key: bytes) -> None:
        faker = require("faker", extra="text", purpose="consistent surrogates")
        self._key = subkey(key, "surrogate")
        self._faker = faker.Faker("en_US")
        self._memo: dict[tuple[str, str], str] = {}

    def _seed(self, kind: str, value: str) -> None:
        digest = hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()
        self._faker.seed_instance(int.from_bytes(digest[:16], "big"))

    def __call__(self, kind: str, value: str) -> str:
        memo = (kind, value)
        if len(self._memo) > _MEMO_LIMIT:
            self._memo.clear()  # bounded memory; the values are recomputed identically
        if memo not in self._memo:
            self._memo[memo] = self._make(kind, value)
        return self._memo[memo]

    def _make(self, kind: str, value: str) -> str:  # noqa: PLR0911 - one branch per type
        if kind == "PERSON":
            return self._person(value)
        self._seed(kind, normalise(kind, value))
        fake = self._faker
        if kind == "LOCATION":
            return str(fake.city())
        if kind == "ORGANIZATION":
            return str(fake.company())
        if kind == "DATE_TIME":
            return self._date(value)
        if kind == "EMAIL_ADDRESS":
            return f"{fake.user_name()}@{fake.free_email_domain()}"
        if kind == "URL":
            return str(fake.url()).rstrip("/")
        if kind == "IP_ADDRESS":
            return str(fake.ipv6() if ":" in value else fake.ipv4_public())
        if kind == "IBAN_CODE":
            return self._iban(value)
        return self._digits(kind, value)

    def _person(self, value: str) -> str:
        # Word by word, so that "Smith" alone and "John Smith" agree on the surname.
        words = value.split()
        out = []
        for i, word in enumerate(words):
            if _HONORIFIC.fullmatch(word):
                out.append(word)
                continue
            self._seed("PERSON-WORD", normalise("PERSON", word.rstrip(".")))
            last = i == len(words) - 1
            name = str(self._faker.last_name() if last else self._faker.first_name())
            out.append(name[0] + "." if len(word.rstrip(".")) == 1 else name)
        return " ".join(out)

    def _date(self, value: str) -> str:
        stripped = value.strip()
        fake_day = date(1940, 1, 1) + timedelta(days=self._faker.random.randrange(31_000))
        for shape in _DATE_SHAPES:
            try:
                time.strptime(stripped, shape)
            except ValueError:
                continue
            if shape == "%H:%M":
                hour, minute = self._faker.random.randrange(24), self._faker.random.randrange(60)
                return f"{hour:02d}:{minute:02d}"
            return fake_day.strftime(shape)
        return fake_day.strftime("%d %B %Y")

    def _digits(self, kind: str, value: str) -> str:
        """The same layout with new digits; a valid checksum where the type has one."""
        rng = self._faker.random
        keep = 0
        if kind == "PHONE_NUMBER" and value.startswith("+"):
            keep = len(re.match(r"\+\d{1,3}", value).group())  # type: ignore[union-attr]
        while True:
            chars = list(value)
            for i, ch in enumerate(chars):
                if i >= keep and ch.isdigit():
                    chars[i] = str(rng.randrange(10))
            positions = [i for i, ch in enumerate(chars) if ch.isdigit()]
            digits = "".join(chars[i] for i in positions)
            if kind in ("CREDIT_CARD", "CA_SIN"):
                chars[positions[-1]] = self._luhn_digit(digits[:-1])
            if kind == "CREDIT_CARD":
                chars[positions[0]] = value[positions[0]]  # keep the card network
                chars[positions[-1]] = self._luhn_digit("".join(chars[i] for i in positions[:-1]))
            candidate = "".join(chars)
            check = {"UK_NHS": nhs_valid, "NL_BSN": bsn_valid}.get(kind)
            if check is None or check(only_digits(candidate)):
                return candidate

    @staticmethod
    def _luhn_digit(payload: str) -> str:
        for digit in "0123456789":
            if luhn_valid(payload + digit):
                return digit
        return "0"  # unreachable: one digit in ten completes any payload

    def _iban(self, value: str) -> str:
        compact = "".join(ch for ch in value if ch.isalnum()).upper()
        rng = self._faker.random
        bban = "".join(str(rng.randrange(10)) if ch.isdigit() else ch for ch in compact[4:])
        numeric = "".join(str(int(ch, 36)) for ch in bban + compact[:2] + "00")
        iban = f"{compact[:2]}{98 - int(numeric) % 97:02d}{bban}"
        if " " in value:
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban


def keyed_hasher(key: bytes, kind: str) -> Callable[[str], str]:
    """The ``hash`` operator for one type: ``<TYPE:16 hex digits>`` of HMAC-SHA256 on the value."""
    hash_key = subkey(key, "hash")

    def keyed_hash(value: str) -> str:
        data = f"{kind}\0{normalise(kind, value)}".encode()
        return f"<{kind}:{hmac.new(hash_key, data, hashlib.sha256).hexdigest()[:16]}>"

    return keyed_hash


def encrypter(key: bytes, kind: str) -> Callable[[str], str]:
    """The ``encrypt`` operator for one type: ``<ENC:TYPE:token>``, AES-256-GCM, type bound."""
    aead = require(
        "cryptography.hazmat.primitives.ciphers.aead", extra="text", purpose="encryption"
    )
    cipher = aead.AESGCM(subkey(key, "encrypt"))
    associated = f"veil-redact:{kind}".encode()

    def encrypt(value: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + cipher.encrypt(nonce, value.encode(), associated)
        token = base64.urlsafe_b64encode(sealed).decode().rstrip("=")
        return f"<ENC:{kind}:{token}>"

    return encrypt


def decrypter(key: bytes) -> Callable[[str], tuple[str, Counter[str]]]:
    checked = check_key("encrypt", key)
    assert checked is not None  # noqa: S101 - check_key raises otherwise
    aead = require(
        "cryptography.hazmat.primitives.ciphers.aead", extra="text", purpose="decryption"
    )
    exceptions = require("cryptography.exceptions", extra="text", purpose="decryption")
    cipher = aead.AESGCM(subkey(checked, "encrypt"))

    def run(text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()

        def restore(match: re.Match[str]) -> str:
            kind, token = match.group(1), match.group(2)
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            try:
                plain = cipher.decrypt(
                    sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], f"veil-redact:{kind}".encode()
                )
            except exceptions.InvalidTag:
                raise InvalidInputError(
                    "an encrypted value does not open with this key",
                    expected="text encrypted by veil redact --operator encrypt with the same key",
                    got=f"a {kind} token that fails authentication",
                    fix="use the key the text was encrypted with (--key NAME)",
                ) from None
            counts[kind] += 1
            return str(plain.decode())

        return _ENCRYPTED.sub(restore, text), counts

    return run
