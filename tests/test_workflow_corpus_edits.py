"""Issue 19.4 on the default (synthetic) corpus: an in-place edit of the corpus reruns what depends on it.

The rules used to take only the corpus directory as input, so a padded flac or a changed transcript
gave "Nothing to be done". The corpus stage of the tiny config is run once (its own small run, not
the shared tiny run); each case edits one file of a copy and asks for a dry run.
(The same on an existing LibriSpeech copy, with the rerun carried out: test_workflow_librispeech.py.)
"""
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

TARGETS = [*(f"results/synthetic/labels/{s}.parquet" for s in ("train", "dev", "test")),
           "results/synthetic/pitch/train.parquet", "results/synthetic/labels/summary.json",
           "results/synthetic/s3prl/converted_aligned_phones.txt"]


def planned_jobs(workdir) -> dict[str, int]:
    proc = run_snakemake(workdir, *TARGETS, "--dry-run", "--quiet", "rules", timeout=900)
    text = proc.stdout + proc.stderr
    block = re.search(r"Job stats:\n(.*?)\n\s*\n", text + "\n\n", re.S)
    if not block:
        assert "nothing to be done" in text.lower(), text[-3000:]
        return {}
    return {m.group(1): int(m.group(2)) for line in block.group(1).splitlines()
            if (m := re.match(r"^(\w+)\s+(\d+)$", line.strip())) and m.group(1) != "total"}


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("corpus_run")
    run_snakemake(workdir, *TARGETS, timeout=1800)
    assert planned_jobs(workdir) == {}
    return workdir


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("edit", ["pad_flac", "transcript"])
def test_in_place_edit_of_a_test_utterance_reruns_its_split(corpus_run, tmp_path, edit):
    workdir = tmp_path / "run"
    shutil.copytree(corpus_run, workdir, symlinks=True)
    flac = sorted((workdir / "resources/corpora/synthetic/test").glob("*/*/*.flac"))[0]
    if edit == "pad_flac":
        x, sr = sf.read(flac, dtype="int16")
        sf.write(flac, np.concatenate([x, np.zeros(sr // 2, dtype=np.int16)]), sr, subtype="PCM_16")
    else:
        trans = next(flac.parent.glob("*.trans.txt"))
        trans.write_text(trans.read_text().replace("\n", " \n", 1))  # same words, new bytes
    assert planned_jobs(workdir) == {  # the test split's labels and what reads them, nothing of train/dev
        "corpus_manifest": 1, "ingest_alignments": 1, "extract_f0": 1, "extract_pitch": 1,
        "label_summary": 1, "s3prl_phone_files": 1,
    }
