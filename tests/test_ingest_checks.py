"""Ingestion refuses what would give wrong labels: unpaired audio/transcripts, bad audio, IPA TextGrids.

Issue 19 items 3, 5, 6 and issue 17 items 5, 6 at the library functions the
``ingest_alignments`` rule calls (the workflow side is in test_workflow_librispeech.py).
"""
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechdissect import frames
from speechdissect.alignments import load_alignments, read_textgrid
from speechdissect.labels import LabelError, audio_samples, build_label_table, check_audio, read_speaker_genders
from speechdissect.phones import (
    CMU39, IPA_FOLD, PHONES, UnknownPhoneError, detect_phone_set, fold_arpabet, fold_ipa,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_alignments import textgrid  # noqa: E402
from test_labels import SPEC, make_corpus, write_flac  # noqa: E402


# --------------------------------------------------------------------------- 19.3: audio <-> transcript

def test_audio_without_transcript_line_is_an_error_or_a_counted_skip(tmp_path, caplog):
    root = tmp_path / "c"
    ali = make_corpus(root, {"train": SPEC["train"][:3]})
    trans = root / "train/1/10/1-10.trans.txt"
    trans.write_text("1-10-0000 HELLO\n")  # 1-10-0001.flac keeps its audio but loses its line
    with pytest.raises(LabelError, match=r"1 audio files without a transcript line: 1-10-0001.*"
                                         r"`labels: \{on_missing: skip\}`"):
        build_label_table(root, "train", ali, progress=False)
    with caplog.at_level(logging.WARNING, logger="speechdissect.labels"):
        table, report = build_label_table(root, "train", ali, on_missing="skip", progress=False)
    assert report["skipped_missing_transcript"] == 1 and report["missing_transcript"] == ["1-10-0001"]
    assert report["utterances"] == 2 and set(table["utterance"]) == {"1-10-0000", "2-20-0000"}
    assert json.loads(json.dumps(report))["missing_transcript"] == ["1-10-0001"]
    assert any("1-10-0001" in r.getMessage() for r in caplog.records)


def test_transcript_line_without_audio_is_an_error_or_a_counted_skip(tmp_path):
    root = tmp_path / "c"
    ali = make_corpus(root, {"train": SPEC["train"][:3]})
    (root / "train/2/20/2-20-0000.flac").unlink()
    with pytest.raises(LabelError, match=r"1 transcript lines without an audio file: 2-20-0000"):
        build_label_table(root, "train", ali, progress=False)
    table, report = build_label_table(root, "train", ali, on_missing="skip", progress=False)
    assert report["skipped_missing_audio"] == 1 and report["missing_audio"] == ["2-20-0000"]
    assert report["utterances"] == 2


# --------------------------------------------------------------------------- 19.5 / 19.6: bad audio

def _flac_bytes(n: int = 32000) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(n) / 10)).astype("float32"), 16000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _unknown_length(flac: bytes, keep_frames: bool) -> bytes:
    """The FLAC with STREAMINFO's total-samples field set to 0 ("unknown"), audio frames kept or dropped."""
    b = bytearray(flac)
    pos = 4
    while True:  # walk the metadata blocks
        last, length = b[pos] & 0x80, int.from_bytes(b[pos + 1:pos + 4], "big")
        pos += 4 + length
        if last:
            break
    v = int.from_bytes(b[18:26], "big") & ~((1 << 36) - 1)
    b[18:26] = v.to_bytes(8, "big")
    return bytes(b if keep_frames else b[:pos])


@pytest.mark.parametrize("keep_frames", [False, True])
def test_flac_of_unknown_length_is_refused_by_name(tmp_path, keep_frames):
    root = tmp_path / "c"
    ali = make_corpus(root, {"train": SPEC["train"][:2]})
    bad = root / "train/1/10/1-10-0001.flac"
    bad.write_bytes(_unknown_length(_flac_bytes(), keep_frames))
    assert sf.info(str(bad)).frames == 2**63 - 1  # what libsndfile reports: it once sized a 205 PiB array
    with pytest.raises(LabelError, match=r"corrupt audio: .*1-10-0001\.flac: its header gives no length"):
        build_label_table(root, "train", ali, progress=False)


def test_truncated_flac_is_refused_by_name(tmp_path):
    root = tmp_path / "c"
    ali = make_corpus(root, {"train": SPEC["train"][:2]})
    bad = root / "train/1/10/1-10-0001.flac"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert audio_samples(bad) == 16000  # the header still says the full length
    with pytest.raises(LabelError, match=r"corrupt audio: .*1-10-0001\.flac: (decoding failed|the header says)"):
        build_label_table(root, "train", ali, progress=False)
    assert check_audio(root / "train/1/10/1-10-0000.flac") == 12000


def test_empty_flac_is_refused(tmp_path):
    root = tmp_path / "c"
    ali = make_corpus(root, {"train": SPEC["train"][:2]})
    bad = root / "train/1/10/1-10-0001.flac"
    write_flac(bad, 0)
    with pytest.raises(LabelError, match=r"corrupt audio: .*1-10-0001\.flac"):
        build_label_table(root, "train", ali, progress=False)


# --------------------------------------------------------------------------- 17.6: speakers_file

def test_speakers_file_in_librispeech_format(tmp_path):
    f = tmp_path / "my_speakers.txt"
    f.write_text(";ID |SEX| SUBSET |MINUTES| NAME\n19 | F | train-clean-100 | 25.19 | Kara\n26 | M | x | 1 | Y\n")
    assert read_speaker_genders(f) == {"19": "F", "26": "M"}
    t = tmp_path / "g.tsv"
    t.write_text("speaker\tgender\n19\tm\n")
    assert read_speaker_genders(t) == {"19": "M"}


# --------------------------------------------------------------------------- 17.5: IPA

@pytest.mark.parametrize("sym,want", [
    ("ɹ", "R"), ("tʰ", "T"), ("kʷ", "K"), ("cʰ", "K"), ("ɟ", "G"), ("aj", "AY"), ("aw", "AW"), ("ej", "EY"),
    ("ow", "OW"), ("ɔj", "OY"), ("tʃ", "CH"), ("t͡ʃ", "CH"), ("ʧ", "CH"), ("dʒ", "JH"), ("d͡ʒ", "JH"),
    ("ɑː", "AA"), ("iː", "IY"), ("uː", "UW"), ("ɚ", "ER"), ("ɝ", "ER"), ("ə", "AH"), ("ɐ", "AH"), ("ɪ", "IH"),
    ("ʊ", "UH"), ("ɛ", "EH"), ("æ", "AE"), ("ɔ", "AO"), ("ʌ", "AH"), ("ɫ", "L"), ("ɫ̩", "L"), ("n̩", "N"),
    ("m̩", "M"), ("ŋ", "NG"), ("ɾ", "T"), ("ʔ", "T"), ("θ", "TH"), ("ð", "DH"), ("ʃ", "SH"), ("ʒ", "ZH"),
    ("j", "Y"), ("ç", "HH"), ("d̪", "D"), ("", "sil"), ("spn", "spn"), ("sil", "sil"),
])
def test_fold_ipa(sym, want):
    assert fold_ipa(sym) == want


def test_ipa_table_covers_cmu39_and_lands_in_the_inventory():
    assert set(IPA_FOLD.values()) <= set(PHONES)
    assert set(IPA_FOLD.values()) == set(CMU39)  # every CMU phone has an IPA spelling


def test_detect_phone_set():
    assert detect_phone_set(["", "HH", "AH0", "L", "OW1", "spn"]) == "arpabet"
    assert detect_phone_set(["", "h", "ə", "ɫ", "ow"]) == "ipa"
    assert detect_phone_set(["b", "aj"]) == "ipa"
    assert detect_phone_set(["sil", "spn"]) == "arpabet"


IPA_PHONES = [(0, 0.0325, ""), (0.0325, 0.06, "h"), (0.06, 0.0925, "ə"), (0.0925, 0.1, "ɫ"),
              (0.1, 0.13, "ow"), (0.13, 0.14, ""), (0.14, 0.16, "spn")]
WORDS = [(0, 0.0325, ""), (0.0325, 0.13, "hello"), (0.13, 0.14, ""), (0.14, 0.16, "<unk>")]


def test_ipa_textgrid_auto_and_explicit(tmp_path):
    p = tmp_path / "1-2-0000.TextGrid"
    p.write_text(textgrid(IPA_PHONES, WORDS, 0.16), encoding="utf-8")
    for phone_set in ("auto", "ipa"):
        a = read_textgrid(p, phone_set=phone_set)
        assert [iv.label for iv in a.phones] == ["HH", "AH", "L", "OW", "spn"]
    with pytest.raises(UnknownPhoneError) as e:
        read_textgrid(p, phone_set="arpabet")
    msg = str(e.value)
    assert "'h'" in msg and str(p) in msg and "`labels: {phone_set: ipa}`" in msg
    got = load_alignments(tmp_path, phone_set="auto", progress=False)
    assert [iv.label for iv in got["1-2-0000"].phones] == ["HH", "AH", "L", "OW", "spn"]


def test_unknown_ipa_symbol_names_file_symbol_and_key(tmp_path):
    p = tmp_path / "1-2-0000.TextGrid"
    p.write_text(textgrid([(0, 0.1, "h"), (0.1, 0.16, "ʘ")], [(0, 0.16, "hello")], 0.16), encoding="utf-8")
    with pytest.raises(UnknownPhoneError) as e:
        read_textgrid(p)
    msg = str(e.value)
    assert "'ʘ'" in msg and str(p) in msg and "labels: {phone_set: arpabet}" in msg
    with pytest.raises(UnknownPhoneError, match=r"'XX1'.*x\.TextGrid.*labels: \{phone_set: ipa\}"):
        fold_arpabet("XX1", source="x.TextGrid")
