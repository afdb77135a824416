"""Phone inventory, folding maps and broad phone classes.

Every alignment source is folded onto one inventory, so that a label means the
same thing whether it came from Festival (radio phone set, lower case) or from
the Montreal Forced Aligner (ARPAbet with stress digits):

- the 39 CMU dictionary phones (ARPAbet, upper case, no stress),
- ``sil`` for silence / pauses / breaths,
- ``spn`` for spoken noise (MFA's label for out-of-vocabulary words).

Broad classes follow Lin et al. (2024): vowels, voiced consonants, unvoiced
consonants, silence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

CMU39: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY",
    "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P",
    "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)
SIL = "sil"
SPN = "spn"
#: Every label a frame can carry, in the order used for integer phone ids
#: (``sil`` = 0, the 39 phones alphabetically = 1..39, ``spn`` = 40). 41 ids is
#: exactly s3prl phone_linear's hard-coded ``class_num``.
PHONES: tuple[str, ...] = (SIL, *CMU39, SPN)
PHONE_TO_ID: dict[str, int] = {p: i for i, p in enumerate(PHONES)}

VOWELS = frozenset("IY IH EH AE AA AH AO UH EY AY OY AW OW ER UW".split())
VOICED = frozenset("B D G JH DH Z ZH V M N NG L R W Y".split())
UNVOICED = frozenset("P T K CH TH S SH F HH".split())
SILENCES = frozenset({SIL, SPN})

PHONE_CLASSES: tuple[str, ...] = ("vowel", "voiced", "unvoiced", "silence")


def _class_of(phone: str) -> str:
    if phone in VOWELS:
        return "vowel"
    if phone in VOICED:
        return "voiced"
    if phone in UNVOICED:
        return "unvoiced"
    return "silence"


PHONE_CLASS: dict[str, str] = {p: _class_of(p) for p in PHONES}

# Festival's radio phone set (/usr/share/festival/radio_phones.scm): the 39 CMU
# phones in lower case, plus the TIMIT-style allophones below. Extra TIMIT
# symbols (ix, ux, axh, eng) are accepted too, since the same folding is the
# usual one for TIMIT-derived lexicons.
FESTIVAL_EXTRA: dict[str, str] = {
    "ax": "AH",    # schwa (about): CMU writes AH0
    "axh": "AH",   # devoiced schwa (TIMIT)
    "axr": "ER",   # r-coloured schwa (butter): CMU writes ER0
    "ix": "IH",    # reduced high vowel (roses): CMU writes IH0 / AH0
    "ux": "UW",    # fronted u (TIMIT)
    "el": "L",     # syllabic l (bottle): one segment, its consonant is L
    "em": "M",     # syllabic m
    "en": "N",     # syllabic n (button)
    "eng": "NG",   # syllabic ng (TIMIT)
    "nx": "N",     # nasal flap (winner): an allophone of /n/
    # Flap (butter, city, ladder). CMU/MFA have no flap symbol and transcribe it
    # by the underlying phoneme; in American English most flaps are /t/, so T is
    # the fold that agrees with most CMU dictionary entries (BUTTER = B AH1 T ER0).
    "dx": "T",
    "hv": "HH",    # voiced h (ahead): an allophone of /h/
    "pau": SIL,    # pause
    "h#": SIL,     # utterance-edge silence
    "brth": SIL,   # breath
    "sil": SIL,
}
FESTIVAL_FOLD: dict[str, str] = {p.lower(): p for p in CMU39} | FESTIVAL_EXTRA

# MFA (english_us_arpa and the published LibriSpeech TextGrids): ARPAbet with
# stress digits, silence written as sil / sp / empty, OOV words as spn.
MFA_SILENCE = frozenset({"", "sil", "sp", "<eps>", "<sil>"})
_STRESS = re.compile(r"^([A-Z]+)[012]$")


class UnknownPhoneError(ValueError):
    """A phone symbol that no folding map covers."""


def _unknown(symbol: str, source: str | None, scheme: str, table: str) -> UnknownPhoneError:
    where = f" in {source}" if source else ""
    return UnknownPhoneError(
        f"unknown {scheme} phone symbol {symbol!r}{where}: it is not in the folding map. "
        f"Fix: add it to speechdissect.phones.{table} (mapping it to one of "
        f"{' '.join(CMU39)}, 'sil' or 'spn'), or correct the alignment file."
    )


def fold_festival(symbol: str, source: str | None = None) -> str:
    """Fold a Festival radio-set phone (``ax``, ``pau``, ``t`` …) onto the 41 labels.

    ``source`` (the file the symbol came from) is only used in the error message.
    """
    try:
        return FESTIVAL_FOLD[symbol.strip().lower()]
    except KeyError:
        raise _unknown(symbol, source, "Festival", "FESTIVAL_EXTRA") from None


def fold_arpabet(symbol: str, source: str | None = None) -> str:
    """Fold an MFA / ARPAbet phone (``AH0``, ``sil``, ``sp``, ``spn``, ``''``) onto the 41 labels."""
    s = symbol.strip()
    low = s.lower()
    if low in MFA_SILENCE:
        return SIL
    if low == "spn":
        return SPN
    up = s.upper()
    m = _STRESS.match(up)
    base = m.group(1) if m else up
    if base in PHONE_CLASS and base not in SILENCES:
        return base
    # MFA lexicons occasionally carry lower-case radio/TIMIT symbols (e.g. ax).
    if low in FESTIVAL_EXTRA:
        return FESTIVAL_EXTRA[low]
    raise _unknown(symbol, source, "ARPAbet/MFA", "FESTIVAL_EXTRA")


def fold(symbol: str, scheme: str, source: str | None = None) -> str:
    """Fold ``symbol`` with the named scheme: ``"festival"`` or ``"arpabet"`` (alias ``"mfa"``)."""
    if scheme == "festival":
        return fold_festival(symbol, source)
    if scheme in ("arpabet", "mfa"):
        return fold_arpabet(symbol, source)
    raise ValueError(f"unknown phone folding scheme {scheme!r}: use 'festival' or 'arpabet'")


def phone_class(phone: str) -> str:
    """Broad class of a folded phone: ``vowel``, ``voiced``, ``unvoiced`` or ``silence``."""
    try:
        return PHONE_CLASS[phone]
    except KeyError:
        raise UnknownPhoneError(
            f"{phone!r} is not a folded phone label (expected one of {' '.join(PHONES)}); "
            "fold raw symbols with fold_festival / fold_arpabet first"
        ) from None


def phone_id_table() -> list[tuple[int, str, str]]:
    """``(id, phone, phone_class)`` rows: the integer ids written for s3prl."""
    return [(i, p, PHONE_CLASS[p]) for i, p in enumerate(PHONES)]


def check_phones(phones: Iterable[str], source: str | None = None) -> None:
    """Raise if any label is outside the folded inventory (guards tables read from disk)."""
    bad = sorted(set(phones) - set(PHONES))
    if bad:
        where = f" in {source}" if source else ""
        raise UnknownPhoneError(f"labels outside the 41-label inventory{where}: {bad}")
