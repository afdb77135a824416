"""No checkpoint or config text is executed (issue 19.8, 19.9, 19.10).

A crafted checkpoint whose unpickling would create a marker file is refused by every loader
of the library and by s3prl's own ``hubert_local`` / ``mockingjay_local`` entries (under
torch 2.8, whose ``torch.load`` defaults to ``weights_only=True``; pinned here so that an
upgrade cannot silently reopen it); a ``conv_feature_layers`` string that would run a
command is refused without being evaluated, both from a config and from a checkpoint.
Controls show each payload is live: unpickled unsafely, or evaluated by s3prl, it does create
its marker.
"""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from speechdissect.upstreams import registry
from speechdissect.upstreams.hubert import (build_hubert, hubert_checkpoint, load_hubert_checkpoint,
                                            parse_conv_feature_layers, resolve_hubert_config)
from speechdissect.upstreams.registry import CheckpointError, check_local_checkpoint, checkpoint_entry, load_checkpoint
from speechdissect.variants import load_checkpoint as load_variant_checkpoint


class _Payload:
    """Unpickling it runs ``os.system('touch MARKER')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _pickle_checkpoint(tmp_path, layout: str):
    """A checkpoint of ``layout`` (hubert_local | mockingjay_local) carrying the payload; its marker path."""
    marker = tmp_path / f"pwned_{layout}"
    if layout == "hubert_local":
        state = {"task_cfg": {}, "model_cfg": _Payload(marker), "model_weight": {}, "dictionaries_symbols": [["0"]]}
    else:
        state = {"Transformer": {}, "Upstream_Config": _Payload(marker), "Config": {}}
    path = tmp_path / f"evil_{layout}.ckpt"
    torch.save(state, path)
    assert not marker.exists()
    return path, marker


def test_payload_is_live(tmp_path):
    """Control: the crafted file does run its command when unpickled with weights_only=False."""
    path, marker = _pickle_checkpoint(tmp_path, "hubert_local")
    torch.load(path, weights_only=False)  # runs `touch marker`, in this test's own tmp_path
    assert marker.exists()


LOADERS = {
    "load_checkpoint": load_checkpoint,
    "checkpoint_entry": checkpoint_entry,
    "check_local_checkpoint": check_local_checkpoint,
    "load_hubert_checkpoint": load_hubert_checkpoint,
    "variants.load_checkpoint": load_variant_checkpoint,
    "load_upstream(hubert_local)": lambda p: registry.load_upstream("hubert_local", p),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_pickle_checkpoint_refused_saying_how_to_convert(loader, tmp_path):
    path, marker = _pickle_checkpoint(tmp_path, "hubert_local")
    with pytest.raises(CheckpointError) as err:
        LOADERS[loader](path)
    text = str(err.value)
    assert str(path) in text and "pickled Python objects" in text and "posix.system" in text, text
    assert "weights_only=False" in text and "torch.save(state, new_path)" in text, text  # how to convert it
    assert not marker.exists(), f"{loader} ran the payload"


def test_s3prl_hubert_local_refuses_pickle(tmp_path):
    """s3prl's real entry (S3PRLUpstream, as load_upstream calls it) relies on torch's default torch.load."""
    path, marker = _pickle_checkpoint(tmp_path, "hubert_local")
    registry.install_lazy_hub("hubert_local")
    from s3prl.nn import S3PRLUpstream

    with pytest.raises(pickle.UnpicklingError, match=r"Weights only load failed"):
        S3PRLUpstream("hubert_local", path_or_url=str(path))
    assert not marker.exists(), "s3prl hubert_local ran the payload: torch.load no longer defaults to weights_only=True"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_s3prl_mockingjay_local_unpickles_so_the_library_checks_first(tmp_path):
    """s3prl 0.4.18's mockingjay builder calls torch.load(weights_only=False) itself: only our check stops it.

    The control runs s3prl's entry and sees the payload (a `touch` in tmp_path) run; then every way the
    library loads a mockingjay_local checkpoint (load_upstream, the downstream runner's probe, which
    s3prl's Runner follows) refuses the file first.
    """
    path, marker = _pickle_checkpoint(tmp_path, "mockingjay_local")
    registry.install_lazy_hub("mockingjay_local")
    from s3prl.nn import S3PRLUpstream

    with pytest.raises(Exception):  # noqa: B017 - it fails after unpickling (the payload returns 0, not a config)
        S3PRLUpstream("mockingjay_local", path_or_url=str(path))
    assert marker.exists(), "s3prl's mockingjay_local no longer unpickles: update this test and PITFALLS.md"
    marker.unlink()
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        registry.load_upstream("mockingjay_local", path)
    from speechdissect.downstream import runner

    class _Hub:
        @staticmethod
        def mockingjay_local(**kwargs):
            raise AssertionError("the probe called s3prl's loader on a refused checkpoint")

    ns = type("NS", (), {"upstream": "mockingjay_local", "upstream_ckpt": str(path), "upstream_model_config": None})
    with pytest.raises(runner._ProbeError, match="pickled Python objects"):
        runner._probe_upstream(_Hub, {"latency_seconds": 0.1, "latency_runs": 1}, ns)
    assert not marker.exists()


def test_torch_load_defaults_to_weights_only(tmp_path):
    path, marker = _pickle_checkpoint(tmp_path, "hubert_local")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- conv_feature_layers

STANDARD = "[(64,10,5)] + [(64,3,2)] * 4 + [(64,2,2)] * 2"


def test_parse_conv_feature_layers():
    assert parse_conv_feature_layers(STANDARD) == [(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2
    assert parse_conv_feature_layers("[(512, 10, 5)] + [(512, 3, 2)]*4 + [(512,2,2)]+[(512,2,2)]") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    assert parse_conv_feature_layers("3 * [(8, 2, 2)]") == [(8, 2, 2)] * 3


@pytest.mark.parametrize("text", ["[(64,10)]", "[(64,10,5,1)]", "[(64.0,10,5)]", "[(0,10,5)]", "[(-1,10,5)]", "[]",
                                  "[(True,10,5)]", "[(64,10,5)] * 1000", "[(64,10,5)] - [(1,1,1)]", "[[64,10,5]]",
                                  "(64,10,5)", "[(x,10,5)]", "[(64,10,5)] * n", "[(64,10,5)] +", 5, "[(9,9,9)]" * 600])
def test_parse_conv_feature_layers_refuses_other_shapes(text):
    with pytest.raises(ValueError, match="conv_feature_layers"):
        parse_conv_feature_layers(text)


def _command(marker) -> str:
    return f"__import__('os').system('touch {marker}') or {STANDARD}"


def test_config_payload_refused_without_running(tmp_path):
    marker = tmp_path / "pwned_config"
    with pytest.raises(ValueError, match=r"conv_feature_layers .*BoolOp is not allowed"):
        resolve_hubert_config({"model": {"conv_feature_layers": _command(marker)}})
    with pytest.raises(ValueError, match="Call is not allowed"):
        parse_conv_feature_layers(f"[(64,10,5)] + __import__('os').system('touch {marker}')")
    assert not marker.exists()
    assert resolve_hubert_config({"model": {"conv_feature_layers": STANDARD}})["model"]["conv_feature_layers"] == STANDARD


@pytest.fixture(scope="module")
def payload_checkpoint(tmp_path_factory):
    """A weights_only-loadable hubert_local checkpoint whose model_cfg.conv_feature_layers runs a command."""
    tmp = tmp_path_factory.mktemp("conv_payload")
    cfg = resolve_hubert_config({"model": {"encoder_layers": 1, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
                                           "encoder_attention_heads": 2, "conv_feature_layers": STANDARD,
                                           "conv_pos": 16, "conv_pos_groups": 4}})
    model = build_hubert(cfg["model"], cfg["task"], 4)
    state = hubert_checkpoint(model, cfg["model"], cfg["task"], 4)
    marker = tmp / "pwned_ckpt"
    state["model_cfg"]["conv_feature_layers"] = _command(marker)
    path = tmp / "payload.ckpt"
    torch.save(state, path)
    torch.load(path, weights_only=True)  # a plain checkpoint: only the string is hostile
    return path, marker


def test_checkpoint_conv_payload_refused(payload_checkpoint):
    path, marker = payload_checkpoint
    for load in (check_local_checkpoint, load_hubert_checkpoint, lambda p: registry.load_upstream("hubert_local", p)):
        with pytest.raises(CheckpointError, match=r"model_cfg\.conv_feature_layers .*is not allowed"):
            load(path)
    assert not marker.exists()


def test_checkpoint_conv_payload_is_live(payload_checkpoint):
    """Control: s3prl's own hubert_local eval()s the string (a `touch` in tmp), which is why it is checked first."""
    path, marker = payload_checkpoint
    from s3prl.upstream.hubert.hubconf import hubert_local

    hubert_local(str(path))
    assert marker.exists()
