"""Phone inventory, folding maps and broad phone classes.

Every alignment source is folded onto one inventory, so that a label means the
same thing whether it came from Festival (radio phone set, lower case) or from
the Montreal Forced Aligner (ARPAbet with stress digits from ``english_us_arpa``,
or IPA from MFA 2.x/3.x's default ``english_mfa`` model, folded by :data:`IPA_FOLD`):

- the 39 CMU dictionary phones (ARPAbet, upper case, no stress),
- ``sil`` for silence / pauses / breaths,
- ``spn`` for spoken noise (MFA's label for out-of-vocabulary words).

Broad classes follow Lin et al. (2024): vowels, voiced consonants, unvoiced
consonants, silence.
"""

from __future__ import annotations

import re
import unicodedata
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


#: Values of the config key ``labels: {phone_set: ...}``: how TextGrid phone labels are read.
PHONE_SETS = ("auto", "arpabet", "ipa")

# MFA 2.x/3.x ``english_mfa`` (IPA). Phones are written as a base symbol plus
# modifiers: aspiration ʰ, labialization ʷ, palatalization ʲ, syllabicity ◌̩,
# dentality ◌̪, nasalization ◌̃, length ː/ˑ, stress ˈ/ˌ, release ʼ and the tie bar
# of affricate ligatures (t͡ʃ). The modifiers carry no CMU-39 distinction and are
# stripped (:data:`IPA_MODIFIERS`); the base (one symbol, a diphthong or an
# affricate) is folded by this table onto the CMU phone the CMU dictionary writes
# for it in American English (README, "Running on LibriSpeech").
IPA_FOLD: dict[str, str] = {
    # monophthongs
    "i": "IY", "ɪ": "IH", "e": "EY", "ɛ": "EH", "æ": "AE", "a": "AA", "ɑ": "AA",
    "ɒ": "AA",    # British lot vowel: CMU (American) writes AA
    "ɔ": "AO", "o": "OW", "u": "UW", "ʉ": "UW", "ʊ": "UH", "ʌ": "AH", "ə": "AH",
    "ɐ": "AH",    # near-open central vowel: an unstressed AH
    "ɚ": "ER", "ɝ": "ER", "ɜ": "ER",
    # diphthongs (MFA writes the offglide as j / w; eɪ-style spellings too)
    "aj": "AY", "aɪ": "AY", "aw": "AW", "aʊ": "AW", "ej": "EY", "eɪ": "EY",
    "ow": "OW", "oʊ": "OW", "əw": "OW", "əʊ": "OW", "ɔj": "OY", "ɔɪ": "OY",
    "ɪə": "IH", "eə": "EH", "ɛə": "EH", "ʊə": "UH",   # British centring diphthongs (near, square, cure)
    # stops, flaps, glottal stop
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "ɡ": "G",
    "c": "K", "ɟ": "G",   # palatal allophones of k / g (keep, geese)
    "ʔ": "T",             # glottal stop: in American English an allophone of /t/ (button)
    "ɾ": "T",             # flap: folded like Festival's dx (most flaps are /t/)
    "ɾ̃": "N",             # nasal flap (winner): like Festival's nx
    # affricates (plain, tied and ligature spellings)
    "tʃ": "CH", "ʧ": "CH", "dʒ": "JH", "ʤ": "JH",
    # fricatives
    "f": "F", "v": "V", "θ": "TH", "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH",
    "h": "HH", "ɦ": "HH", "ç": "HH",   # ç: the h of hue / human
    # nasals, liquids, glides
    "m": "M", "ɱ": "M", "n": "N", "ɲ": "N", "ŋ": "NG",
    "l": "L", "ɫ": "L", "ʎ": "L",      # dark l; palatal l (before j)
    "ɹ": "R", "r": "R", "ɻ": "R",
    "w": "W", "ʍ": "W", "j": "Y", "ʋ": "V",
}
#: Characters dropped before :data:`IPA_FOLD` is consulted (see the table's comment).
IPA_MODIFIERS = frozenset("ʰʷʲˀʼːˑˈˌ\u0361\u035c\u0329\u032a\u0303\u031a\u0325\u030a\u0306")


class UnknownPhoneError(ValueError):
    """A phone symbol that no folding map covers."""


def _unknown(symbol: str, source: str | None, scheme: str, table: str) -> UnknownPhoneError:
    where = f" in {source}" if source else ""
    if scheme == "Festival":
        fix = (f"Fix: add it to speechdissect.phones.{table} (mapping it to one of "
               f"{' '.join(CMU39)}, 'sil' or 'spn'), or correct the alignment file.")
    else:
        other = "ipa" if scheme.startswith("ARPAbet") else "arpabet"
        fix = (f"If the file uses the other phone set, set `labels: {{phone_set: {other}}}` in the config "
               "(or `auto`, the default, which tells ARPAbet from IPA per file); otherwise correct the "
               f"alignment file or add the symbol to speechdissect.phones.{table}.")
    return UnknownPhoneError(f"unknown {scheme} phone symbol {symbol!r}{where}: it is not in the folding map. {fix}")


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


def fold_ipa(symbol: str, source: str | None = None) -> str:
    """Fold an MFA ``english_mfa`` IPA phone (``ɹ``, ``tʰ``, ``aj``, ``t͡ʃ``, ``ɫ̩`` …) onto the 41 labels."""
    s = unicodedata.normalize("NFC", symbol.strip())
    low = s.lower()
    if low in MFA_SILENCE:
        return SIL
    if low == "spn":
        return SPN
    if s in IPA_FOLD:  # a few bases carry a combining mark themselves (ɾ̃)
        return IPA_FOLD[s]
    base = "".join(ch for ch in unicodedata.normalize("NFD", s) if ch not in IPA_MODIFIERS)
    base = unicodedata.normalize("NFC", base)
    try:
        return IPA_FOLD[base]
    except KeyError:
        raise _unknown(symbol, source, "IPA (MFA english_mfa)", "IPA_FOLD") from None


_ARPABET_LABEL = re.compile(r"^[A-Z]+[012]?$")


def detect_phone_set(symbols: Iterable[str]) -> str:
    """``"arpabet"`` or ``"ipa"`` for the phone labels of one file.

    ARPAbet (``english_us_arpa``, the published LibriSpeech TextGrids) writes
    upper-case ASCII with optional stress digits; any other speech label
    (lower case, non-ASCII) means IPA (``english_mfa``). Silences and ``spn``
    say nothing; a file of silences only counts as ARPAbet.
    """
    speech = [s.strip() for s in symbols if s.strip().lower() not in MFA_SILENCE | {"spn"}]
    if any(not s.isascii() for s in speech):
        return "ipa"
    if any(any(c.isupper() for c in s) for s in speech):
        return "arpabet"

    def arpabet(s: str) -> bool:
        m = _STRESS.match(s.upper())
        return (m.group(1) if m else s.upper()) in CMU39 or s in FESTIVAL_EXTRA

    # lower-case ASCII only: where both sets know a symbol (b, ow, ...) they fold it alike
    return "arpabet" if all(arpabet(s) for s in speech) else "ipa"


def fold(symbol: str, scheme: str, source: str | None = None) -> str:
    """Fold ``symbol`` with the named scheme: ``"festival"``, ``"arpabet"`` (alias ``"mfa"``) or ``"ipa"``."""
    if scheme == "festival":
        return fold_festival(symbol, source)
    if scheme in ("arpabet", "mfa"):
        return fold_arpabet(symbol, source)
    if scheme == "ipa":
        return fold_ipa(symbol, source)
    raise ValueError(f"unknown phone folding scheme {scheme!r}: use 'festival', 'arpabet' or 'ipa'")


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
