"""Rule findings on the tiny run: results/findings.tsv (and .md, .html) with a verdict and its evidence per claim."""
from __future__ import annotations

import pandas as pd
import pytest

from speechdissect.findings import FINDINGS, VERDICTS

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

REQUIRED = ["study", "claim", "seed_value", "upstream", "measured", "ci_half", "verdict", "evidence"]


def test_findings_table_of_the_tiny_run(tiny_run):  # the run itself has a timeout (conftest.run_snakemake)
    path = tiny_run / "results" / "findings.tsv"
    assert path.is_file(), "rule findings did not write results/findings.tsv (is it in all_targets()?)"
    table = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert list(table.columns[: len(REQUIRED)]) == REQUIRED
    assert len(table) >= 12, f"only {len(table)} findings rows"
    assert set(table["verdict"]) <= set(VERDICTS), set(table["verdict"])
    assert set(table["id"]) == {f.id for f in FINDINGS}, "a registered claim has no row"
    for r in table.itertuples():
        if r.verdict != "not testable":
            assert r.evidence, f"{r.id} ({r.upstream}): a verdict without the table it was read from"
        for ev in filter(None, str(r.evidence).split(";")):
            assert (tiny_run / ev).is_file(), f"{r.id}: evidence {ev} does not exist"
        assert r.detail, f"{r.id}: no detail"
    # the tiny run has the tables of these claims, so they are tested, not skipped
    tested = set(table.loc[table["verdict"] != "not testable", "id"])
    assert {"neurons.lower_layers", "attention.segmentation_vs_mfcc", "convexity.phone_peak", "convexity.pruning",
            "neurons.remove_vs_random"} <= tested, sorted(tested)
    md = (tiny_run / "results" / "findings.md").read_text()
    assert md.startswith("# Findings") and all(f"**{v}**" in md for v in VERDICTS)
    html = (tiny_run / "results" / "findings.html").read_text()
    assert html.count("<tr title=") == len(table)
    print(table[["id", "upstream", "task", "readout", "measured", "ci_half", "verdict"]].to_string())
