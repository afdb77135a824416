"""Two clean runs of the tiny config compute the same thing.

The second run starts from an empty directory (it synthesizes its own corpus, trains its
own upstream, caches, probes, evaluates downstream): every output it writes (tables, JSON,
arrays, checkpoints, text, figures; the run records and timing fields aside, see
tests/outputs.py) must equal the shared ``tiny_run``'s by content, in particular every audio
file and alignment of the synthetic corpus, byte for byte (Festival is deterministic, Praat's PSOLA is seeded per utterance, sox runs
without dither; torch training and probes run with fixed seeds and deterministic algorithms).
"""
from __future__ import annotations

import time

import pytest

from tests.conftest import TINY_RUN_TIMEOUT, WORKFLOW_TEST_TIMEOUT, run_snakemake
from tests.outputs import assert_same_outputs, table_files

pytestmark = [pytest.mark.slow, pytest.mark.workflow]


# its own run, and the shared tiny_run if no test built it before
@pytest.mark.timeout(TINY_RUN_TIMEOUT + WORKFLOW_TEST_TIMEOUT)
def test_two_clean_runs_give_identical_tables(request, tmp_path):
    second = tmp_path / "second_run"
    second.mkdir()
    t0 = time.monotonic()
    run_snakemake(second)
    elapsed = time.monotonic() - t0
    tiny_run = request.getfixturevalue("tiny_run")   # the first run (only needed now)

    a, b = table_files(tiny_run), table_files(second)
    corpus = [rel for rel in a if rel.startswith("resources/corpora/") and rel.endswith((".flac", ".segs", ".words"))]
    assert corpus, "no synthetic corpus files to compare"
    differ = [rel for rel in corpus if a[rel].read_bytes() != b[rel].read_bytes()]
    assert not differ, f"{len(differ)} of {len(corpus)} corpus files differ between two clean runs: {differ[:5]}"

    compared = assert_same_outputs(tiny_run, second, names=("first", "second"))
    assert compared >= len(corpus)
    print(f"second clean run in {elapsed:.0f} s: {len(corpus)} corpus files bit-identical, "
          f"{compared} output files equal by content")
