"""Variants of a hubert_local checkpoint: truncation, head and FFN masks, loaded through s3prl."""
import numpy as np
import pytest
import torch

from speechdissect.upstreams.hubert import build_hubert, hubert_checkpoint, resolve_hubert_config
from speechdissect.upstreams.registry import load_upstream, save_checkpoint
from speechdissect.variants import VariantError, make_variant, parameter_counts, parse_variant

MODEL = {"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4,
         "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", "conv_pos": 8, "conv_pos_groups": 4,
         "final_dim": 16}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    cfg = resolve_hubert_config({"model": MODEL})
    model = build_hubert(cfg["model"], cfg["task"], n_clusters=5)
    ckpt = hubert_checkpoint(model, cfg["model"], cfg["task"], 5)
    return ckpt, tmp_path_factory.mktemp("variants")


def hidden(ckpt, path):
    save_checkpoint(ckpt, path)
    upstream = load_upstream("hubert_local", str(path))
    wav = torch.from_numpy(np.random.default_rng(1).normal(size=8000).astype(np.float32))
    with torch.no_grad():
        return upstream.upstream([wav])["hidden_states"]


def test_parse_variant():
    assert parse_variant("original") == ("original", None)
    assert parse_variant("layers-3") == ("layers", 3)
    assert parse_variant("heads-globalness_0.5") == ("heads", "globalness_0.5")
    with pytest.raises(VariantError, match="expected original"):
        parse_variant("prune everything")


def test_truncation_is_a_prefix_of_the_full_model(base):
    ckpt, tmp = base
    full = hidden(ckpt, tmp / "full.ckpt")
    short = hidden(make_variant(ckpt, "layers-1"), tmp / "short.ckpt")
    assert len(full) == 3 and len(short) == 2
    for a, b in zip(full[:2], short):
        torch.testing.assert_close(a, b)
    assert parameter_counts(make_variant(ckpt, "layers-1"))["stored"] < parameter_counts(ckpt)["stored"]
    with pytest.raises(VariantError, match="has 2 layers"):
        make_variant(ckpt, "layers-5")


def test_head_mask_removes_exactly_the_masked_heads(base):
    ckpt, tmp = base
    keep_all = make_variant(ckpt, "heads-all", mask=[[1] * 4, [1] * 4])
    torch.testing.assert_close(hidden(keep_all, tmp / "a.ckpt")[-1], hidden(ckpt, tmp / "b.ckpt")[-1])
    masked = make_variant(ckpt, "heads-x", mask=[[0, 1, 1, 1], [1, 1, 1, 1]])
    w = masked["model_weight"]["encoder.layers.0.self_attn.out_proj.weight"]
    assert (w[:, :8] == 0).all() and (w[:, 8:] != 0).any()
    out = hidden(masked, tmp / "c.ckpt")
    assert not torch.allclose(out[1], hidden(ckpt, tmp / "d.ckpt")[1])
    counts = parameter_counts(masked)
    assert counts["stored"] - counts["effective"] == 4 * 32 * 8 + 3 * 8
    with pytest.raises(VariantError, match="does not fit"):
        make_variant(ckpt, "heads-x", mask=[[1, 1]])


def test_ffn_mask_equals_physical_removal(base):
    ckpt, tmp = base
    keep = {0: np.r_[np.zeros(16, bool), np.ones(48, bool)]}
    masked = make_variant(ckpt, "ffn-norm_0.25", mask=keep)
    # physically remove the same neurons and recompute layer 0's FFN on a random input
    w = ckpt["model_weight"]
    x = torch.randn(5, 32)
    fc1_w, fc1_b, fc2_w = (w[f"encoder.layers.0.{k}"] for k in ("fc1.weight", "fc1.bias", "fc2.weight"))
    kept = torch.from_numpy(keep[0])
    physical = torch.nn.functional.gelu(x @ fc1_w[kept].T + fc1_b[kept]) @ fc2_w[:, kept].T
    m = masked["model_weight"]
    zeroed = torch.nn.functional.gelu(x @ m["encoder.layers.0.fc1.weight"].T + m["encoder.layers.0.fc1.bias"]) @ m["encoder.layers.0.fc2.weight"].T
    torch.testing.assert_close(physical, zeroed)
    counts = parameter_counts(masked)
    assert counts["stored"] - counts["effective"] == 16 * (2 * 32 + 1)
    assert len(hidden(masked, tmp / "e.ckpt")) == 3
