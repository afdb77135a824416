"""GPU paths, checked on a CPU machine (issue 19.16, 19.17).

CPU probe jobs hide the GPUs from s3prl (whose Runner.evaluate breaks on ``device: cpu`` when
CUDA is visible); the SLURM profile gives every rule with a ``gpu=`` resource its threads,
memory, wall time and GPUs; latency timed on CUDA is bracketed by ``torch.cuda.synchronize``;
``fixed_rng`` restores the CUDA generators. (``device: cuda`` without CUDA:
tests/test_config_references.py.)
"""
from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
import torch
import yaml
from torch import nn

from speechdissect.downstream import runner
from speechdissect.upstreams import hubert, registry
from tests.conftest import REPO


# --------------------------------------------------------------------------- 19.16

def test_cpu_probe_subprocess_hides_cuda():
    base = {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1"}
    env = runner.subprocess_env(2, "cpu", base=base)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "2"
    assert env["PYTHONPATH"].split(":")[0] == str(REPO)
    assert base["CUDA_VISIBLE_DEVICES"] == "0,1"  # the caller's environment is not changed
    assert runner.subprocess_env(1, "cuda", base=base)["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "CUDA_VISIBLE_DEVICES" not in runner.subprocess_env(1, "cuda:1", base={"PATH": "/usr/bin"})


def test_run_seeds_passes_the_env_it_builds(monkeypatch, tmp_path):
    """run_seeds launches its subprocess with subprocess_env(threads, device)."""
    seen = {}

    def fake_run(cmd, cwd, env, stdout, stderr, timeout):
        seen["env"] = env
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    monkeypatch.setattr(runner, "load_datarc", lambda data: {})
    monkeypatch.setattr(runner, "check_datarc", lambda t, d: None)
    monkeypatch.setattr(runner, "build_config", lambda *a, **k: {})
    monkeypatch.setattr(runner, "count_train_items", lambda *a, **k: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(RuntimeError, match="stop here"):
        runner.run_seeds("phone_linear", "fbank", None, tmp_path / "data", [tmp_path / "e0"], [0], device="cpu")
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == ""


# --------------------------------------------------------------------------- 19.17: SLURM profile

def _gpu_rules() -> set[str]:
    rules = set()
    for path in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"^\s+gpu=", block, flags=re.M):
                rules.add(m.group(1))
    return rules


def _profile(monkeypatch, **env) -> dict:
    import yte

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SPEECHDISSECT_SUBMIT_HOST", raising=False)
    with open(REPO / "profiles/slurm/config.yaml") as fh:
        return yte.process_yaml(fh)


def test_slurm_profile_gives_every_gpu_rule_its_resources(monkeypatch):
    gpu_rules = _gpu_rules()
    assert {"pretrain_upstream", "finetune_upstream", "cache_activations", "s3prl_downstream", "s3prl_finetune"} <= gpu_rules
    prof = _profile(monkeypatch, SPEECHDISSECT_SLURM_GPUS="2", SPEECHDISSECT_SLURM_GPU_MODEL="a100")
    for rule in sorted(gpu_rules):
        res = prof["set-resources"].get(rule)
        assert res, f"profiles/slurm/config.yaml: GPU rule {rule} has no set-resources"
        assert res.get("gpu") == 2 and res.get("gpu_model") == repr("a100"), (rule, res)  # a Python literal, as for slurm_partition
        assert res["mem_mb"] > prof["default-resources"]["mem_mb"] and res["runtime"] > prof["default-resources"]["runtime"]
        assert prof["set-threads"].get(rule, 0) > 1, f"{rule}: no set-threads"
    ds, ft = prof["set-resources"]["s3prl_downstream"], prof["set-resources"]["s3prl_finetune"]
    assert ft["mem_mb"] >= ds["mem_mb"] and ft["runtime"] >= ds["runtime"]  # fine-tuning trains the upstream too
    cpu = _profile(monkeypatch, SPEECHDISSECT_SLURM_GPUS="0")
    assert all("gpu" not in cpu["set-resources"][r] for r in gpu_rules)


def test_slurm_profile_marks_the_submit_host(monkeypatch):
    import os

    _profile(monkeypatch)
    assert os.environ.get("SPEECHDISSECT_SUBMIT_HOST") == "slurm"  # so the Snakefile leaves `device` to the jobs


# --------------------------------------------------------------------------- 19.17: latency, RNG

def test_cuda_synchronize_only_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(str(device)))
    registry.cuda_synchronize("cpu")
    registry.cuda_synchronize(torch.device("cpu"))
    assert calls == []
    registry.cuda_synchronize("cuda")
    registry.cuda_synchronize(torch.device("cuda", 1))
    assert calls == ["cuda", "cuda:1"]


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(4, 4)

    def forward(self, wavs, lens=None):
        return self.w(wavs.view(-1, 4))


def test_paired_latency_synchronizes_around_each_timing(monkeypatch):
    events = []
    monkeypatch.setattr(registry, "cuda_synchronize", lambda device: events.append(str(device)))
    out = registry.paired_latency({"a": _Tiny(), "b": _Tiny()}, seconds=0.001, rounds=3)
    assert set(out) == {"a", "b"}
    assert events == ["cpu"] * (2 * 2 * 3)  # before and after each of 3 rounds x 2 models


def test_probe_latency_synchronizes(monkeypatch):
    events = []
    monkeypatch.setattr(registry, "cuda_synchronize", lambda device: events.append(str(device)))

    class Expert(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(1, 1)

        def forward(self, wavs):
            return {"hidden_states": [w.view(1, -1, 1) for w in wavs]}

    class Hub:
        @staticmethod
        def fbank(ckpt=None, model_config=None, refresh=False):
            return Expert()

    ns = type("NS", (), {"upstream": "fbank", "upstream_ckpt": None, "upstream_model_config": None,
                         "device": "cpu", "upstream_layer_selection": None})
    info = runner._probe_upstream(Hub, {"latency_seconds": 0.01, "latency_runs": 4}, ns)
    assert len(info["latency_runs_ms"]) == 4 and events == ["cpu"] * 8


def test_fixed_rng_forks_every_cuda_generator(monkeypatch):
    seen = []
    real = torch.random.fork_rng

    @contextmanager
    def recording(devices=None, **kw):
        seen.append(list(devices))
        with real(devices=[], **kw):
            yield

    monkeypatch.setattr(torch.random, "fork_rng", recording)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch, "manual_seed", lambda seed: None)  # the real one would seed the (absent) GPUs
    with hubert.fixed_rng(0):
        pass
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with hubert.fixed_rng(0):
        pass
    assert seen == [[0, 1], []]


def test_fixed_rng_restores_the_cpu_generators():
    import random

    import numpy as np

    torch.manual_seed(123)
    random.seed(1)
    np.random.seed(2)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(1)
    np.random.seed(2)
    with hubert.fixed_rng(7):
        inside = torch.rand(3)
    assert not torch.equal(inside, expected[0])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1] and np.random.rand() == expected[2]
