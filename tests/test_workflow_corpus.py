"""Workflow test: the corpus stage of the tiny config, every output checked."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from speechdissect.frames import n_frames

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

SPLITS = ["train", "dev", "test"]
CORPUS = yaml.safe_load((Path(__file__).parent / "workflow" / "tiny_config.yaml").read_text())["corpora"]["synthetic"]


def test_corpus_tree_and_labels(tiny_run):
    corpus = tiny_run / "resources" / "corpora" / "synthetic"
    speakers = pd.read_csv(corpus / "speakers.tsv", sep="\t", dtype={"speaker": str})
    assert len(speakers) == CORPUS["n_speakers"] and set(speakers["gender"]) == {"M", "F"}
    for split in SPLITS:
        labels = pd.read_parquet(tiny_run / f"results/synthetic/labels/{split}.parquet")
        assert list(labels.columns[:7]) == ["utterance", "frame", "phone", "phone_class", "word", "speaker", "gender"]
        for utt, group in labels.groupby("utterance"):
            spk, chap, _ = utt.split("-")
            flac = corpus / split / spk / chap / f"{utt}.flac"
            info = sf.info(str(flac))
            assert info.samplerate == 16000 and info.channels == 1
            assert len(group) == n_frames(info.frames), utt
            assert np.array_equal(group["frame"].to_numpy(), np.arange(len(group)))
            trans = (flac.parent / f"{spk}-{chap}.trans.txt").read_text().splitlines()
            words = dict(line.split(" ", 1) for line in trans)[utt].split()
            spoken = [w for w, _ in __import__("itertools").groupby(group["word"]) if w != "<sil>"]
            assert spoken == words, utt
        assert set(labels.loc[labels.phone_class == "silence", "phone"]) <= {"sil", "spn"}
        pitch = pd.read_parquet(tiny_run / f"results/synthetic/pitch/{split}.parquet")
        assert len(pitch) == len(labels)
        assert (pitch["utterance"].to_numpy() == labels["utterance"].to_numpy()).all()
        voiced = pitch["f0"] > 0
        assert voiced.mean() > 0.3
        assert set(pitch.loc[voiced, "pitch_group"]) == {"low", "mid", "high"}
        assert (pitch.loc[~voiced, "pitch_group"] == "").all()
    thresholds = json.loads((tiny_run / "results/synthetic/pitch/thresholds.json").read_text())
    lo, hi = thresholds["overall"]
    assert 50 < lo < hi < 400
    summary = json.loads((tiny_run / "results/synthetic/labels/summary.json").read_text())
    assert sum(s["utterances"] for s in summary["splits"]) == CORPUS["n_speakers"] * CORPUS["utterances_per_speaker"]


def test_s3prl_phone_files(tiny_run):
    root = tiny_run / "results/synthetic/s3prl"
    lines = (root / "converted_aligned_phones.txt").read_text().splitlines()
    train = (root / "train_split.txt").read_text().split()
    test = (root / "test_split.txt").read_text().split()
    ids = {line.split()[0] for line in lines}
    assert set(train) <= ids and set(test) <= ids and not set(train) & set(test)
