"""Issue 19.4 on the default (synthetic) corpus: an in-place edit of the corpus reruns what depends on it.

The rules used to take only the corpus directory as input, so a padded flac or a changed transcript
gave "Nothing to be done". Each case edits one file of a copy of the tiny run and asks for a dry run.
(The same on an existing LibriSpeech copy, with the rerun carried out: test_workflow_librispeech.py.)
"""
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import TINY_CONFIG, run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def planned_jobs(workdir) -> dict[str, int]:
    proc = run_snakemake(workdir, "--dry-run", "--quiet", "rules", timeout=600)
    text = proc.stdout + proc.stderr
    block = re.search(r"Job stats:\n(.*?)\n\s*\n", text + "\n\n", re.S)
    if not block:
        assert "nothing to be done" in text.lower(), text[-3000:]
        return {}
    return {m.group(1): int(m.group(2)) for line in block.group(1).splitlines()
            if (m := re.match(r"^(\w+)\s+(\d+)$", line.strip())) and m.group(1) != "total"}


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    return workdir


@pytest.mark.timeout(900)
@pytest.mark.parametrize("edit", ["pad_flac", "transcript"])
def test_in_place_edit_of_a_test_utterance_reruns_its_split(run_copy, edit):
    split_dir = run_copy / "resources/corpora/synthetic/test"
    flac = sorted(split_dir.glob("*/*/*.flac"))[0]
    if edit == "pad_flac":
        x, sr = sf.read(flac, dtype="int16")
        sf.write(flac, np.concatenate([x, np.zeros(sr // 2, dtype=np.int16)]), sr, subtype="PCM_16")
    else:
        trans = next(flac.parent.glob("*.trans.txt"))
        trans.write_text(trans.read_text().replace("\n", " \n", 1))  # same words, new bytes
    jobs = planned_jobs(run_copy)
    assert jobs.get("corpus_manifest") == 1 and jobs.get("ingest_alignments") == 1, jobs
    assert "synthesize_corpus" not in jobs and "pretrain_upstream" not in jobs, jobs  # train split untouched
    assert jobs.get("extract_f0") == 1 and jobs.get("cache_activations") == 1, jobs  # test split only
    assert jobs.get("property_neurons") == 1, jobs  # the neurons study runs on the test split
