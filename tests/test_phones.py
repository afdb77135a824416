"""Phone folding and broad classes."""

import re
from pathlib import Path

import pytest

from speechdissect import phones
from speechdissect.phones import (
    CMU39, PHONES, UnknownPhoneError, fold, fold_arpabet, fold_festival, phone_class,
)

RADIO_SCM = Path("/usr/share/festival/radio_phones.scm")


def test_inventory():
    assert len(CMU39) == 39 and len(set(CMU39)) == 39
    assert PHONES[0] == "sil" and PHONES[-1] == "spn" and len(PHONES) == 41
    assert phones.PHONE_TO_ID["sil"] == 0 and phones.PHONE_TO_ID["AA"] == 1
    # Lin et al. (2024) classes partition the 39 phones
    assert len(phones.VOWELS) == 15 and len(phones.VOICED) == 15 and len(phones.UNVOICED) == 9
    assert phones.VOWELS | phones.VOICED | phones.UNVOICED == set(CMU39)


@pytest.mark.parametrize("sym,want", [
    ("aa", "AA"), ("ax", "AH"), ("axr", "ER"), ("ix", "IH"), ("el", "L"), ("em", "M"), ("en", "N"),
    ("nx", "N"), ("dx", "T"), ("hv", "HH"), ("pau", "sil"), ("h#", "sil"), ("brth", "sil"), ("zh", "ZH"),
])
def test_fold_festival(sym, want):
    assert fold_festival(sym) == want


def test_every_radio_phone_folds():
    assert RADIO_SCM.exists(), f"{RADIO_SCM} not found: festival (required for the synthetic corpus) is not installed"
    text = RADIO_SCM.read_text()
    members = text[text.index(";; Phone set members"):]
    syms = re.findall(r"^\s*\(([a-z#]+)\s+[-+]", members, flags=re.M)
    assert len(syms) >= 50
    for s in syms:
        assert fold_festival(s) in PHONES, s


@pytest.mark.parametrize("sym,want", [
    ("AH0", "AH"), ("AH1", "AH"), ("ER2", "ER"), ("NG", "NG"), ("sil", "sil"), ("sp", "sil"), ("", "sil"),
    ("spn", "spn"), ("ih1", "IH"),
])
def test_fold_arpabet(sym, want):
    assert fold_arpabet(sym) == want
    assert fold(sym, "mfa") == want


def test_classes():
    assert phone_class("IY") == "vowel"
    assert phone_class("ZH") == "voiced"
    assert phone_class("HH") == "unvoiced"
    assert phone_class("sil") == phone_class("spn") == "silence"
    assert [r[1] for r in phones.phone_id_table()] == list(PHONES)


def test_unknown_phone_names_symbol_file_and_fix():
    with pytest.raises(UnknownPhoneError) as e:
        fold_festival("qq", source="alignments/1-2-0003.segs")
    msg = str(e.value)
    assert "'qq'" in msg and "alignments/1-2-0003.segs" in msg and "FESTIVAL_EXTRA" in msg
    with pytest.raises(UnknownPhoneError, match=r"'XX1'.*x\.TextGrid"):
        fold_arpabet("XX1", source="x.TextGrid")
    with pytest.raises(UnknownPhoneError):
        phone_class("ax")
    with pytest.raises(ValueError):
        fold("aa", "timit")
