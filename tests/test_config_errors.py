"""A bad config fails at once with a message naming the key, before any job runs.

Each case changes one thing in the tiny config (a mistyped key, a value of the wrong
type, an upstream, task or corpus name that does not exist) and asks Snakemake for a
dry run in an empty directory: it must fail, the message must name the offending key
and value, and nothing may be written under results/ or resources/.
(Bad input files are tested at the library functions that read them: corrupt, missing
and wrongly sampled audio and missing alignments in test_labels.py, unknown phones in
test_phones.py and test_alignments.py, unknown upstream names in test_upstreams.py,
unknown task names in test_downstream.py.)
"""
from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import TINY_CONFIG, run_snakemake

pytestmark = [pytest.mark.workflow]


def _rename(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


CASES = {
    # mistyped top-level key: the schema allows no unknown keys
    "typo_top_level_key": (lambda c: _rename(c, "neurons", "neuron"), [r"neuron", r"unexpected|Additional properties"]),
    # mistyped nested key
    "typo_nested_key": (lambda c: _rename(c["convexity"], "n_neighbors", "n_neighbours"),
                        [r"n_neighbours", r"unexpected|Additional properties"]),
    # a value of the wrong type
    "wrong_type": (lambda c: c["convexity"].update(n_neighbors="five"), [r"'five' is not of type 'integer'",
                                                                         r"\['convexity'\]\['n_neighbors'\]"]),
    "unknown_analysis_upstream": (lambda c: c.update(analysis_upstreams=["mini_hubrt"]),
                                  [r"config key analysis_upstreams: 'mini_hubrt' is not defined under upstreams"]),
    "unknown_downstream_upstream": (lambda c: c["downstream"].update(upstreams=["mini_hubrt"]),
                                    [r"config key downstream\.upstreams: 'mini_hubrt' is not defined under upstreams"]),
    "unknown_task": (lambda c: c["downstream"].update(tasks=["phone_linaer"]),
                     [r"phone_linaer", r"downstream\.tasks", r"phone_linear"]),
    "unknown_corpus": (lambda c: c.update(analysis_corpus="synthetik"), [r"config key analysis_corpus: 'synthetik' is not one of corpora"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_fails_naming_the_key(case, tmp_path):
    change, patterns = CASES[case]
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    change(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    workdir = tmp_path / "run"
    workdir.mkdir()
    proc = run_snakemake(workdir, "--dry-run", config=path, check=False, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{case}: the dry run succeeded:\n{text[-3000:]}"
    for pattern in patterns:
        assert re.search(pattern, text), f"{case}: message lacks {pattern!r}:\n{text[-3000:]}"
    assert not (workdir / "results").exists() and not (workdir / "resources").exists(), f"{case}: wrote outputs"
