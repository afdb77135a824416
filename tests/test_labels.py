"""Frame label tables and s3prl phone_linear files."""

import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from speechdissect import frames
from speechdissect.alignments import Alignment, Interval, read_festival, read_textgrid
from speechdissect.labels import (
    COLUMNS, LabelError, build_label_table, frame_labels, read_label_table, write_label_table,
    s3prl_phone_coverage, write_s3prl_phone_files,
)
from speechdissect.phones import PHONE_TO_ID

sys.path.insert(0, str(Path(__file__).parent))
from test_alignments import SEGS, TG_PHONES, TG_WORDS, WORDS, textgrid  # noqa: E402

# 10 frames: centres at samples 200 + 320 t = 0.0125 + 0.02 t s. The alignments
# put boundaries exactly on the centres of frames 1 (0.0325 s) and 4 (0.0925 s)
# (the later interval wins) and others mid-frame; they end at 0.16 s, so frames
# 8 and 9 lie beyond the alignment.
N_SAMPLES = 400 + 9 * 320
TG_PHONE_LABELS = ["sil", "HH", "HH", "AH", "L", "OW", "sil", "spn", "sil", "sil"]
TG_WORD_LABELS = ["<sil>"] + ["HELLO"] * 5 + ["<sil>", "<UNK>", "<sil>", "<sil>"]
CLASSES = ["silence", "unvoiced", "unvoiced", "vowel", "voiced", "vowel", "silence"]


def test_grid_matches_docs():
    assert frames.n_frames(N_SAMPLES) == 10
    assert frames.n_frames(N_SAMPLES - 1) == 9


def test_textgrid_frame_labels(tmp_path):
    p = tmp_path / "1-2-0000.TextGrid"
    p.write_text(textgrid(TG_PHONES, TG_WORDS, 0.16))
    df = frame_labels(read_textgrid(p), N_SAMPLES, "1-2-0000", "1", "M")
    assert list(df.columns) == COLUMNS
    assert df["frame"].dtype == np.int32 and df["frame"].tolist() == list(range(10))
    assert df["phone"].tolist() == TG_PHONE_LABELS
    assert df["word"].tolist() == TG_WORD_LABELS
    assert df["phone_class"].tolist() == CLASSES + ["silence"] * 3
    assert set(df["utterance"]) == {"1-2-0000"} and set(df["speaker"]) == {"1"} and set(df["gender"]) == {"M"}


def test_festival_frame_labels(tmp_path):
    (tmp_path / "u.segs").write_text(SEGS)
    (tmp_path / "u.words").write_text(WORDS)
    df = frame_labels(read_festival(tmp_path / "u.segs"), N_SAMPLES, "u", "s", "F")
    assert df["phone"].tolist() == ["sil", "HH", "HH", "AH", "L", "OW", "sil", "W", "sil", "sil"]
    assert df["word"].tolist() == ["<sil>"] + ["HELLO"] * 5 + ["<sil>", "WE", "<sil>", "<sil>"]
    assert df["phone_class"].tolist() == CLASSES + ["voiced", "silence", "silence"]


def test_short_audio_has_no_frames():
    a = Alignment([Interval(0, 0.01, "AA")], [], "x")
    assert len(frame_labels(a, 399, "u", "s", "M")) == 0
    assert frame_labels(a, 400, "u", "s", "M")["phone"].tolist() == ["sil"]  # centre 0.0125 s is past 0.01


# --------------------------------------------------------------------------- corpus helpers

def write_flac(path: Path, n: int, sr: int = 16000, channels: int = 1, freq: float = 220.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, subtype="PCM_16")


def festival_alignment(n: int) -> Alignment:
    """pau hh ax l ow pau: one word HELLO filling the middle of an n-sample utterance."""
    d = n / 16000
    ends = [0.05, 0.1, 0.15, 0.2 + (d - 0.3) / 2, d - 0.05, d]
    labels = ["sil", "HH", "AH", "L", "OW", "sil"]
    starts = [0.0] + ends[:-1]
    return Alignment([Interval(s, e, p) for s, e, p in zip(starts, ends, labels)],
                     [Interval(0.05, d - 0.05, "HELLO")], f"mem:{n}")


def make_corpus(root: Path, spec: dict[str, list[tuple[str, int]]], gender=None) -> dict[str, Alignment]:
    """LibriSpeech-layout corpus of sine flacs, transcripts HELLO, speakers.tsv; returns alignments."""
    alignments, speakers = {}, {}
    for split, utts in spec.items():
        trans = defaultdict(list)
        for utt, n in utts:
            spk, ch, _ = utt.split("-")
            write_flac(root / split / spk / ch / f"{utt}.flac", n, freq=100 + 10 * int(spk))
            trans[(spk, ch)].append(f"{utt} HELLO")
            alignments[utt] = festival_alignment(n)
            speakers[spk] = (gender or {}).get(spk, "M" if int(spk) % 2 else "F")
        for (spk, ch), lines in trans.items():
            (root / split / spk / ch / f"{spk}-{ch}.trans.txt").write_text("\n".join(lines) + "\n")
    pd.DataFrame({"speaker": list(speakers), "gender": list(speakers.values())}).to_csv(
        root / "speakers.tsv", sep="\t", index=False)
    return alignments


SPEC = {
    "train": [("1-10-0000", 12000), ("1-10-0001", 16000), ("2-20-0000", 9000), ("2-20-0001", 20000),
              ("3-30-0000", 11000), ("3-30-0001", 14000), ("1-11-0000", 8000), ("2-21-0000", 10000)],
    "test": [("5-50-0000", 13000), ("6-60-0000", 9500), ("6-60-0001", 15000)],
}


# --------------------------------------------------------------------------- build_label_table

def test_build_label_table_and_parquet(tmp_path):
    root = tmp_path / "corpus"
    ali = make_corpus(root, SPEC)
    table, report = build_label_table(root, "train", ali, progress=False)
    utts = sorted(u for u, _ in SPEC["train"])
    assert table["utterance"].unique().tolist() == utts
    assert report["utterances"] == 8 and report["frames"] == len(table)
    for utt, n in SPEC["train"]:
        g = table[table.utterance == utt]
        assert len(g) == frames.n_frames(n) and g["frame"].tolist() == list(range(len(g)))
    assert set(table[table.utterance == "2-20-0000"]["gender"]) == {"F"}
    assert set(table["word"]) == {"HELLO", "<sil>"}

    out = write_label_table(table, tmp_path / "labels" / "train.parquet")
    assert os.listdir(out.parent) == ["train.parquet"]  # no temporary left behind
    back = read_label_table(out)
    assert list(back.columns) == COLUMNS and back["frame"].dtype == np.int32
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_alignments_from_path_and_librispeech_speakers(tmp_path):
    root = tmp_path / "c"
    make_corpus(root, {"dev-clean": [("84-121-0000", N_SAMPLES)]})
    (root / "speakers.tsv").unlink()
    (root / "SPEAKERS.TXT").write_text("; ID |SEX| SUBSET |MINUTES| NAME\n84   | F | dev-clean | 8.02 | Christie\n")
    tg = tmp_path / "ali" / "84" / "84-121-0000.TextGrid"
    tg.parent.mkdir(parents=True)
    tg.write_text(textgrid(TG_PHONES, [(0.0325, 0.13, "hello")], 0.16))
    table, report = build_label_table(root, "dev-clean", tmp_path / "ali", progress=False)
    assert table["phone"].tolist() == TG_PHONE_LABELS and set(table["gender"]) == {"F"}
    assert report["utterances"] == 1


def test_unk_word_takes_transcript_word(tmp_path):
    root = tmp_path / "c"
    ali = make_corpus(root, {"dev": [("1-2-0000", N_SAMPLES)]})
    (root / "dev/1/2/1-2-0000.TextGrid").write_text(textgrid(TG_PHONES, TG_WORDS, 0.16))
    (root / "dev/1/2/1-2.trans.txt").write_text("1-2-0000 HELLO SMITHERS\n")
    ali["1-2-0000"] = read_textgrid(root / "dev/1/2/1-2-0000.TextGrid")
    table, _ = build_label_table(root, "dev", ali, progress=False)
    assert table["word"].tolist() == [w.replace("<UNK>", "SMITHERS") for w in TG_WORD_LABELS]
    assert table["phone"].tolist() == TG_PHONE_LABELS


def test_transcript_mismatch(tmp_path):
    root = tmp_path / "c"
    ali = make_corpus(root, {"train": SPEC["train"][:2]})
    (root / "train/1/10/1-10.trans.txt").write_text("1-10-0000 HELLO\n1-10-0001 GOODBYE\n")
    with pytest.raises(LabelError, match=r"utterance 1-10-0001.*GOODBYE.*HELLO"):
        build_label_table(root, "train", ali, progress=False)
    table, report = build_label_table(root, "train", ali, on_mismatch="skip", progress=False)
    assert report["word_mismatch"] == ["1-10-0001"] and set(table["utterance"]) == {"1-10-0000"}


def test_missing_alignment(tmp_path):
    root = tmp_path / "c"
    ali = make_corpus(root, {"train": SPEC["train"][:3]})
    del ali["1-10-0001"]
    with pytest.raises(LabelError, match=r"no alignment for utterance 1-10-0001.*`labels: \{on_missing: skip\}`"):
        build_label_table(root, "train", ali, progress=False)
    table, report = build_label_table(root, "train", ali, on_missing="skip", progress=False)
    assert report["skipped_missing_alignment"] == 1 and report["missing_alignment"] == ["1-10-0001"]
    assert report["utterances"] == 2 and "1-10-0001" not in set(table["utterance"])


@pytest.mark.parametrize("sr,channels,what", [(8000, 1, "8000 Hz"), (16000, 2, "2 channel")])
def test_wrong_audio_format(tmp_path, sr, channels, what):
    root = tmp_path / "c"
    ali = make_corpus(root, {"train": SPEC["train"][:2]})
    bad = root / "train/1/10/1-10-0001.flac"
    write_flac(bad, 8000, sr=sr, channels=channels)
    with pytest.raises(LabelError, match=rf"1-10-0001\.flac.*{what}.*16000 Hz mono"):
        build_label_table(root, "train", ali, progress=False)


def test_corrupt_and_missing_audio(tmp_path):
    root = tmp_path / "c"
    ali = make_corpus(root, {"train": SPEC["train"][:2]})
    (root / "train/1/10/1-10-0001.flac").write_bytes(b"not a flac")
    with pytest.raises(LabelError, match=r"corrupt audio: .*1-10-0001\.flac"):
        build_label_table(root, "train", ali, progress=False)
    (root / "train/1/10/1-10-0001.flac").unlink()
    with pytest.raises(LabelError, match=r"transcript lines without an audio file: 1-10-0001"):
        build_label_table(root, "train", ali, progress=False)


# --------------------------------------------------------------------------- s3prl

def test_s3prl_phone_dataset_loads_our_files(tmp_path):
    import torch
    from s3prl.downstream.phone_linear.dataset import PhoneDataset
    from s3prl.downstream.phone_linear.expert import DownstreamExpert

    root = tmp_path / "corpus"
    ali = make_corpus(root, SPEC)
    tables = {s: build_label_table(root, s, ali, progress=False)[0] for s in SPEC}
    paths = {s: write_label_table(t, tmp_path / "labels" / f"{s}.parquet") for s, t in tables.items()}
    datarc = write_s3prl_phone_files(paths, tmp_path / "phone", root)
    assert datarc["n_train"] == 8 and datarc["n_test"] == 3 and datarc["label_rate_hz"] == 100

    bucket = pd.read_csv(Path(datarc["bucket_file"]) / "train-clean-100.csv")
    assert list(bucket.columns[1:]) == ["file_path", "length", "label"] and len(bucket) == 11
    assert bucket["file_path"].iloc[0] == "train/2/20/2-20-0001.flac" and bucket["length"].iloc[0] == 20000
    ids = pd.read_csv(tmp_path / "phone" / "phone_ids.tsv", sep="\t")
    assert ids["id"].tolist() == list(range(41)) and ids["phone"].iloc[0] == "sil"

    kw = {k: datarc[k] for k in ("libri_root", "phone_path", "bucket_file", "sample_rate")}
    seen = {}
    for split in ("train", "dev", "test"):
        ds = PhoneDataset(split, 1, train_dev_seed=1337, **kw)  # bucket 1: s3prl drops no tail batch
        for i in range(len(ds)):
            wavs, labels = ds.collate_fn([ds[i]])
            for path, wav, lab in zip(ds.X[i], wavs, labels):
                utt = path.split("/")[-1].split(".")[0]
                seen[utt] = split
                n20 = frames.n_frames(len(wav))
                assert len(lab) == 2 * n20  # 100 Hz labels, each 20 ms frame twice
                want = tables["test" if split == "test" else "train"].query("utterance == @utt")["phone"]
                assert lab[::2].tolist() == [PHONE_TO_ID[p] for p in want]
    assert sorted(u for u, s in seen.items() if s == "test") == sorted(u for u, _ in SPEC["test"])
    assert sorted(u for u, s in seen.items() if s != "test") == sorted(u for u, _ in SPEC["train"])

    # the expert tiles 20 ms features x2 and meets the labels exactly (HuBERT: round(N/320) frames)
    expert = DownstreamExpert(
        upstream_dim=4, expdir=str(tmp_path),
        downstream_expert={"datarc": {**kw, "train_batch_size": 2, "eval_batch_size": 2, "num_workers": 0},
                           "modelrc": {}})
    assert expert.train_dataset.class_num == 41
    wavs, labels = expert.test_dataset.collate_fn([expert.test_dataset[0]])
    feats = [torch.randn(round(len(w) / 320), 4) for w in wavs]
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    lab = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)
    tiled, _ = expert._match_length(padded, lab)
    assert tiled.shape[1] == lab.shape[1]
    assert torch.equal(tiled[0, 2], padded[0, 1]) and torch.equal(tiled[0, 3], padded[0, 1])
    records = defaultdict(list)
    loss = expert("test", feats, labels, records)
    assert torch.isfinite(loss) and len(records["acc"]) == sum(len(x) for x in labels)

    # s3prl's tail-bucket rule: with a 32-utterance bucket the 3-utterance test split vanishes
    cov = s3prl_phone_coverage(datarc, train_batch_size=1, eval_batch_size=32)
    assert cov["test"] == {"listed": 3, "loaded": 0} and cov["train"] == {"listed": 7, "loaded": 7}
    assert s3prl_phone_coverage(datarc, 1, 3)["test"]["loaded"] == 3


def test_s3prl_files_with_split_dirs(tmp_path):
    root = tmp_path / "libri"
    spec = {"train-clean-100": SPEC["train"][:2], "test-clean": SPEC["test"][:1]}
    ali = make_corpus(root, spec)
    tables = {"train": build_label_table(root, "train-clean-100", ali, progress=False)[0],
              "test": build_label_table(root, "test-clean", ali, progress=False)[0]}
    info = write_s3prl_phone_files(tables, tmp_path / "phone", root,
                                   split_dirs={"train": "train-clean-100", "test": "test-clean"})
    bucket = pd.read_csv(Path(info["bucket_file"]) / "train-clean-100.csv")
    assert sorted(bucket["file_path"]) == ["test-clean/5/50/5-50-0000.flac", "train-clean-100/1/10/1-10-0000.flac",
                                           "train-clean-100/1/10/1-10-0001.flac"]
    assert (tmp_path / "phone/train_split.txt").read_text() == "1-10-0000\n1-10-0001\n"
    assert (tmp_path / "phone/test_split.txt").read_text() == "5-50-0000\n"
    line = (tmp_path / "phone/converted_aligned_phones.txt").read_text().splitlines()[0].split(" ")
    assert line[0] == "1-10-0000" and len(line) - 1 == 2 * frames.n_frames(12000)
    assert sorted(p.name for p in (tmp_path / "phone/len_for_bucket").iterdir()) == ["test.csv", "train.csv"]
