"""Checkpoints are loaded with ``weights_only=True`` only.

Every ``torch.load`` in the library and the workflow scripts says ``weights_only=True``
explicitly; there is no ``weights_only=False`` fallback (a checkpoint that needs pickle is
refused with a message saying how to convert it: tests/test_checkpoint_safety.py). Every
checkpoint the tiny workflow run writes (upstreams, model variants) loads with
``weights_only=True``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCES = sorted([*(REPO / "speechdissect").rglob("*.py"), *(REPO / "workflow_scripts").rglob("*.py")])
# s3prl's downstream runner writes its own states-*.ckpt (with its argparse Namespace): not ours.
NOT_OURS = ("states-", "best-states-")


def _is_torch_load(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch")


def _weights_only(call: ast.Call):
    for kw in call.keywords:
        if kw.arg == "weights_only":
            return kw.value.value if isinstance(kw.value, ast.Constant) else "dynamic"
    return None


def test_every_torch_load_is_weights_only():
    calls = 0
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not _is_torch_load(node):
                continue
            calls += 1
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            flag = _weights_only(node)
            assert flag is True, f"{where}: torch.load(weights_only={flag}); only weights_only=True is allowed"
    assert calls > 0, "no torch.load found: the test looks in the wrong place"


@pytest.mark.slow
@pytest.mark.workflow
def test_checkpoints_the_workflow_writes_load_weights_only(tiny_run):
    import torch

    ckpts = [p for top in ("resources", "results") for ext in ("*.ckpt", "*.pt", "*.pth")
             for p in sorted((tiny_run / top).rglob(ext)) if not p.name.startswith(NOT_OURS)]
    assert ckpts, "the tiny run wrote no checkpoint"
    for path in ckpts:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and state, path
