"""``snakemake --report`` on a finished run gives one self-contained HTML with every study.

The report of the tiny run must be a single file that loads nothing from elsewhere
(scripts, styles and results embedded), hold the categories of the three studies, the
downstream evaluation and the provenance, and embed every output the rules declare
with ``report()`` (each under its file name).
"""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import run_snakemake

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

CATEGORIES = ["★ Findings", "Corpus", "Upstreams", "Neurons", "Attention", "Convexity", "Downstream", "Provenance"]


def _embedded(html: str, name: str):
    """The JSON value the report's ``<script id="name">`` assigns to ``var name``.

    Anchored on the script's id: the embedded JavaScript libraries (vega, react) have
    variables of the same names, so a bare ``var results =`` matches inside them first.
    """
    m = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', html, re.S)
    assert m, f"no `var {name}` in the report"
    return json.loads(m.group(1))


def test_report_is_self_contained_with_every_study(tiny_run, tmp_path):
    out = tmp_path / "report.html"
    run_snakemake(tiny_run, "--report", str(out))
    html = out.read_text()
    assert "<html" in html[:2000].lower()
    # nothing is fetched when the page is opened: no external scripts, styles or images
    external = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^\"'\s>]+",
                          html, re.I)
    assert not external, f"the report loads external resources: {external[:5]}"

    categories, results = _embedded(html, "categories"), _embedded(html, "results")
    missing = [c for c in CATEGORIES if not any(categories.get(c, {}).values())]
    assert not missing, f"report categories without results: {missing} (have {sorted(categories)})"
    listed = {path for subcats in categories.values() for paths in subcats.values() for path in paths}
    assert listed == set(results), "categories and results list different files"
    for path, res in results.items():
        assert (tiny_run / path).exists(), f"{path} is in the report but not in the run"
        assert res["data_uri"].startswith("data:"), f"{path} is not embedded: {res['data_uri'][:80]}"
        assert res["caption"].strip(), f"{path} has no caption"
    # the report opens on the workflow description, which shows the findings verdicts (report/workflow.rst)
    m = re.search(r'<script id="workflow-desc">\s*var workflow_desc = (.*?);\s*</script>', html, re.S)
    assert m, "the report has no workflow description"
    desc = json.loads(m.group(1))
    assert 'class="findings"' in desc and "neurons.lower_layers" in desc, desc[:500]
    print(f"report.html: {out.stat().st_size / 1e6:.1f} MB, {len(results)} results in "
          + ", ".join(f"{c} {sum(map(len, categories[c].values()))}" for c in sorted(categories)))
