"""Figures are byte-identical across runs, and every figure is saved by speechdissect.plots.save_figure (issue 19.11)."""
from __future__ import annotations

import ast

import numpy as np
import pandas as pd

from speechdissect.downstream.aggregate import plot_scores
from speechdissect.plots import plt, save_figure
from tests.conftest import REPO


def _figure():
    """A figure with what used to differ between saves: an image (random id), clip paths, text."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(4, 2))
    a.imshow(np.arange(12.0).reshape(3, 4), cmap="viridis")
    b.plot([0, 1, 2], [2, 0, 1], label="line")
    b.legend()
    b.set_title("same figure")
    return fig


def test_same_figure_saved_twice_gives_identical_bytes(tmp_path):
    for run in ("a", "b"):
        save_figure(_figure(), tmp_path / run / "f.png", tmp_path / run / "f.svg")
    svg = (tmp_path / "a/f.svg").read_bytes()
    assert b"<image" in svg and b"clip-path" in svg, "the figure lacks the parts that used to differ"
    assert b"<dc:date>" not in svg
    for name in ("f.png", "f.svg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["f.png", "f.svg"]  # no temporary left


def test_downstream_figure_identical_across_runs(tmp_path):
    summary = pd.DataFrame({"task": ["gender"] * 2, "upstream": ["u"] * 2, "variant": ["original", "layers-1"],
                            "metric": ["acc"] * 2, "mean": [0.7, 0.6], "ci_half": [0.1, 0.05],
                            "n": [2, 2]})
    out = [plot_scores(summary, tmp_path / run / "gender.png") for run in ("a", "b")]
    for p, q in zip(*out):
        assert p.read_bytes() == q.read_bytes(), p.name


def test_every_figure_is_saved_by_save_figure():
    """No savefig outside speechdissect/plots.py: a figure saved elsewhere would escape the fixed metadata."""
    calls = []
    for path in sorted([*(REPO / "speechdissect").rglob("*.py"), *(REPO / "workflow_scripts").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("savefig", "imsave"):
                calls.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert calls and all(c.startswith("speechdissect/plots.py:") for c in calls), calls
