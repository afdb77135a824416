"""Config keys that name another config entry are checked before any job runs (issue 19.1, 19.2, 19.7, 19.17).

Unit tests run each check of ``speechdissect.config_checks`` on the tiny config with one value
changed; the dry runs show the Snakefile refuses the same configs at parse time, in an empty
directory and over the results of a finished run (where Snakemake used to keep the old results
and rerun only ``provenance``).
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import yaml

from speechdissect import config_checks
from speechdissect.config_checks import ConfigError, check_config, check_device
from tests.conftest import REPO, TINY_CONFIG, run_snakemake

TINY = yaml.safe_load(TINY_CONFIG.read_text())


def _set(path: str, value):
    """A change setting the dotted config key ``path`` to ``value``."""
    def change(c):
        *head, last = path.split(".")
        for k in head:
            c = c.setdefault(k, {})
        c[last] = value
    return change


def _add_upstream(name, spec):
    return lambda c: c["upstreams"].update({name: spec})


def _both(*changes):
    def change(c):
        for ch in changes:
            ch(c)
    return change


# case -> (change of the tiny config, patterns the message must contain)
CASES = {
    "finetune_unknown_base": (_add_upstream("ft", {"source": "finetune", "base": "mini_hubrt"}),
                              [r"config key upstreams\.ft\.base: 'mini_hubrt' is not one of the upstreams trained here",
                               r"\['mini_hubert'\]"]),
    "finetune_base_path": (_add_upstream("ft", {"source": "finetune", "base": "../../../x/evil"}),
                           [r"config key upstreams\.ft\.base: '\.\./\.\./\.\./x/evil' is not one of", r"\['mini_hubert'\]"]),
    "finetune_base_hub": (_both(_add_upstream("hub", {"source": "hub", "name": "hubert_base"}),
                                _add_upstream("ft", {"source": "finetune", "base": "hub"})),
                          [r"upstreams\.ft\.base: 'hub' is not one of the upstreams trained here", r"\['mini_hubert'\]"]),
    "finetune_cycle": (_both(_add_upstream("a", {"source": "finetune", "base": "b"}),
                             _add_upstream("b", {"source": "finetune", "base": "a"})),
                       [r"upstreams\.a\.base: the fine-tune chain a -> b -> a is a cycle"]),
    "upstream_corpus": (_set("upstreams.mini_hubert.corpus", "synthetik"),
                        [r"config key upstreams\.mini_hubert\.corpus: 'synthetik' is not one of corpora: \['synthetic'\]"]),
    "upstream_split": (_set("upstreams.mini_hubert.split", "trian"),
                       [r"config key upstreams\.mini_hubert\.split: 'trian' is not one of splits: \['dev', 'test', 'train'\]"]),
    "analysis_upstreams_empty": (_set("analysis_upstreams", []),
                                 [r"config key analysis_upstreams: empty", r"\['mini_hubert'\]"]),
    "analysis_upstream_unknown": (_set("analysis_upstreams", ["mini_hubrt"]),
                                  [r"config key analysis_upstreams: 'mini_hubrt' is not defined under upstreams: \['mini_hubert'\]"]),
    "convexity_split": (_set("convexity.split", "val"), [r"config key convexity\.split: 'val' is not one of splits: \['dev', 'test', 'train'\]"]),
    "neurons_split": (_set("neurons.split", "val"), [r"config key neurons\.split: 'val' is not one of splits"]),
    "attention_split": (_set("attention.split", "val"), [r"config key attention\.split: 'val' is not one of splits"]),
    "attention_tune_split": (_set("attention.tune_split", "val"), [r"config key attention\.tune_split: 'val'"]),
    "cache_split": (_set("cache.splits", ["dev", "val"]), [r"config key cache\.splits: 'val' is not one of splits"]),
    "pitch_reference_split": (_set("pitch.reference_split", "val"), [r"config key pitch\.reference_split: 'val'"]),
    "downstream_steps_task": (_set("downstream.steps", {"phone_linaer": 30}),
                              [r"config key downstream\.steps: 'phone_linaer' is not one of the downstream tasks", r"'phone_linear'"]),
    "downstream_data_task": (_set("downstream.data", {"wrod": {"max_words": 3}}),
                             [r"config key downstream\.data: 'wrod' is not one of the downstream tasks", r"'word'"]),
    "downstream_data_option": (_set("downstream.data", {"word": {"max_word": 3}}),
                               [r"config key downstream\.data\.word: 'max_word' is not one of the data options of word", r"'max_words'"]),
    "downstream_task": (_set("downstream.tasks", ["phone_linaer"]), [r"config key downstream\.tasks: 'phone_linaer'", r"'phone_linear'"]),
    "downstream_upstream": (_set("downstream.upstreams", ["mini_hubrt"]), [r"config key downstream\.upstreams: 'mini_hubrt'"]),
    "pruning_upstream_unknown": (_set("pruning.upstreams", ["mini_hubrt"]),
                                 [r"config key pruning\.upstreams: 'mini_hubrt' is not defined under upstreams", r"\['mini_hubert'\]"]),
    "pruning_upstream_hub": (_both(_add_upstream("hub", {"source": "hub", "name": "hubert_base"}), _set("pruning.upstreams", ["hub"])),
                             [r"config key pruning\.upstreams: 'hub' is not one of the upstreams trained here"]),
    "head_pruning_mockingjay": (_both(_add_upstream("mj", {"source": "pretrain", "family": "mockingjay"}),
                                      _set("pruning.heads.upstreams", ["mj"])),
                                [r"config key pruning\.heads\.upstreams: head pruning of 'mj' is not supported: it is a mockingjay checkpoint"]),
    "head_pruning_task": (_set("pruning.heads.tasks", ["phone_linaer"]), [r"config key pruning\.heads\.tasks: 'phone_linaer'"]),
    "ffn_task": (_set("pruning.ffn.tasks", ["phone_linaer"]), [r"config key pruning\.ffn\.tasks: 'phone_linaer'"]),
    "edit_task": (_set("pruning.edit.tasks", ["gendr"]), [r"config key pruning\.edit\.tasks: 'gendr'"]),
    "layer_task": (_set("pruning.layers", {"tasks": {"phone_linaer": "phone"}}), [r"config key pruning\.layers\.tasks: 'phone_linaer'"]),
    "ffn_sparsity": (_set("pruning.ffn.sparsities", [0.3]),
                     [r"config key pruning\.ffn\.sparsities: 0\.3 is not one of neurons\.masks\.sparsities: \[0\.2, 0\.5\]"]),
    "ffn_method": (_both(_set("neurons.masks.methods", ["norm"]), _set("pruning.ffn.methods", ["protected_norm"])),
                   [r"config key pruning\.ffn\.methods: 'protected_norm' is not one of neurons\.masks\.methods: \['norm'\]"]),
    "edit_remove": (_both(_set("neurons.masks.remove", ["pitch"]), _set("pruning.edit.remove", ["gender"])),
                    [r"config key pruning\.edit\.remove: 'gender' is not one of neurons\.masks\.remove: \['pitch'\]"]),
    "layer_depth_task": (_set("pruning.layers.depth_tasks", ["gender"]),
                         [r"config key pruning\.layers\.depth_tasks: 'gender' is not one of the tasks of pruning\.layers\.tasks: \['phone_linear'\]"]),
    "layer_finetune_task": (_set("pruning.layers.finetune_tasks", ["gender"]), [r"config key pruning\.layers\.finetune_tasks: 'gender'"]),
    "layer_finetune_steps": (_set("pruning.layers.finetune_steps", {"gender": 3}), [r"config key pruning\.layers\.finetune_steps: 'gender'"]),
    "mask_property": (_both(_set("neurons.properties", ["gender", "phone_type"]), _set("neurons.masks.remove", ["pitch"]),
                            _set("pruning.edit.remove", ["pitch"])),
                      [r"config key neurons\.masks\.remove: 'pitch' names no property of neurons\.properties \['gender', 'phone_type'\]"]),
    "mds_neuron_set": (_set("neurons.figures.mds_neuron_set", "any_property"),
                       [r"config key neurons\.figures\.mds_neuron_set: 'any_property' is not one of neurons\.geometry\.neuron_sets"]),
}


def _bad(case: str) -> dict:
    change, _ = CASES[case]
    cfg = copy.deepcopy(TINY)
    change(cfg)
    return cfg


@pytest.mark.parametrize("path", [REPO / "config.yaml", TINY_CONFIG, REPO / "config/librispeech_property_neurons.yaml"],
                         ids=lambda p: p.name)
def test_shipped_configs_pass(path):
    check_config(yaml.safe_load(path.read_text()))


def test_overlay_passes():
    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config/attention_head_pruning.yaml").read_text()))
    check_config(cfg)


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_names_key_value_and_valid_names(case):
    with pytest.raises(ConfigError) as err:
        check_config(_bad(case))
    text = str(err.value)
    for pattern in CASES[case][1]:
        assert re.search(pattern, text), f"{case}: message lacks {pattern!r}:\n{text}"
    # one bad value, one problem (a cycle: one per entry of it): no check misfires on the rest of the tiny config
    assert text.count("\n  - ") == (2 if case == "finetune_cycle" else 1), text


def test_all_problems_reported_at_once():
    cfg = _bad("ffn_sparsity")
    CASES["convexity_split"][0](cfg)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert "pruning.ffn.sparsities" in str(err.value) and "convexity.split" in str(err.value)


def test_device_cuda_without_cuda_names_the_key():
    check_device({"device": "cuda"}, cuda_available=True)
    check_device({"device": "cpu"}, cuda_available=False)
    check_device({}, cuda_available=False)
    with pytest.raises(ConfigError, match=r"config key device: 'cuda' but CUDA is not available"):
        check_device({"device": "cuda"}, cuda_available=False)


def test_device_check_asks_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"config key device"):
        check_device({"device": "cuda"})


# --------------------------------------------------------------------------- dry runs

DRY_CASES = ["finetune_unknown_base", "finetune_base_path", "upstream_corpus", "upstream_split", "convexity_split",
             "neurons_split", "ffn_sparsity", "downstream_steps_task", "downstream_data_task", "analysis_upstreams_empty"]


def _write(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _dry_run_fails(cfg: dict, workdir: Path, tmp_path: Path, patterns) -> str:
    proc = run_snakemake(workdir, "--dry-run", config=_write(cfg, tmp_path / "config.yaml"), check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"the dry run succeeded:\n{text[-3000:]}"
    for pattern in patterns:
        assert re.search(pattern, text), f"message lacks {pattern!r}:\n{text[-3000:]}"
    assert "Building DAG of jobs" not in text, f"failed only after planning jobs:\n{text[-3000:]}"
    return text


@pytest.mark.workflow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", DRY_CASES)
def test_dry_run_refuses_before_any_job(case, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    _dry_run_fails(_bad(case), workdir, tmp_path, CASES[case][1])
    assert not (workdir / "results").exists() and not (workdir / "resources").exists(), os.listdir(workdir)


@pytest.mark.workflow
@pytest.mark.timeout(300)
def test_dry_run_refuses_cuda_without_cuda(tmp_path):
    import torch

    assert not torch.cuda.is_available(), "this test needs a host without CUDA"
    cfg = copy.deepcopy(TINY)
    cfg["device"] = "cuda"
    workdir = tmp_path / "run"
    workdir.mkdir()
    _dry_run_fails(cfg, workdir, tmp_path, [r"config key device: 'cuda' but CUDA is not available"])


@pytest.mark.workflow
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bad_config_refused_over_existing_results(tiny_run, tmp_path):
    """Issue 19.1: over a finished run, a bad value used to plan only ``provenance`` and keep the old results."""
    before = {p: p.stat().st_mtime_ns for p in (tiny_run / "results").rglob("*") if p.is_file()}
    assert len(before) > 100 and (tiny_run / "results/provenance/config.yaml").exists()
    for case in ("ffn_sparsity", "convexity_split", "finetune_unknown_base"):
        _dry_run_fails(_bad(case), tiny_run, tmp_path, CASES[case][1])
    after = {p: p.stat().st_mtime_ns for p in (tiny_run / "results").rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize("name", ["../../x/evil", "a/b", ".hidden", ""])
def test_schema_refuses_upstream_names_that_are_paths(name):
    """Upstream names become path components (resources/upstreams/{name}.ckpt): no separators, no leading dot."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    cfg = copy.deepcopy(TINY)
    validate(copy.deepcopy(cfg), str(REPO / "config.schema.yaml"))
    cfg["upstreams"][name] = {"source": "pretrain", "family": "hubert"}
    with pytest.raises(WorkflowError, match="does not match"):
        validate(cfg, str(REPO / "config.schema.yaml"))
