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
    masked = make_variant(ckpt, "edit-norm_0.25", mask=keep)  # editing: zeroed, same shapes
    assert masked["model_weight"]["encoder.layers.0.fc1.weight"].shape == (64, 32)
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


def test_ffn_pruning_slices_the_checkpoint_and_matches_the_masked_model(base):
    ckpt, tmp = base
    rng = np.random.default_rng(3)
    keep = {0: rng.permutation(np.r_[np.zeros(16, bool), np.ones(48, bool)]),
            1: rng.permutation(np.r_[np.zeros(16, bool), np.ones(48, bool)])}
    pruned = make_variant(ckpt, "ffn-norm_0.25", mask=keep)
    assert pruned["model_cfg"]["encoder_ffn_embed_dim"] == 48
    w = pruned["model_weight"]
    for layer in (0, 1):
        k = torch.from_numpy(keep[layer])
        assert w[f"encoder.layers.{layer}.fc1.weight"].shape == (48, 32) and w[f"encoder.layers.{layer}.fc2.weight"].shape == (32, 48)
        torch.testing.assert_close(w[f"encoder.layers.{layer}.fc2.weight"], ckpt["model_weight"][f"encoder.layers.{layer}.fc2.weight"][:, k])
    counts = parameter_counts(pruned)
    assert counts["stored"] == counts["effective"] == parameter_counts(ckpt)["stored"] - 2 * 16 * (2 * 32 + 1)
    assert pruned["speechdissect"]["ffn_pruning"]["zero_padded"] == {"0": 0, "1": 0}
    sliced = hidden(pruned, tmp / "sliced.ckpt")  # loads through s3prl's hubert_local
    masked = hidden(make_variant(ckpt, "edit-x", mask=keep), tmp / "masked.ckpt")
    assert len(sliced) == len(masked) == 3
    for a, b in zip(sliced, masked):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(sliced[-1], hidden(ckpt, tmp / "orig.ckpt")[-1], atol=1e-5)
    assert (tmp / "sliced.ckpt").stat().st_size < (tmp / "masked.ckpt").stat().st_size


def test_ffn_pruning_with_unequal_layer_counts_pads_with_zeroed_neurons(base):
    ckpt, tmp = base
    keep = {0: np.r_[np.zeros(16, bool), np.ones(48, bool)], 1: np.r_[np.ones(56, bool), np.zeros(8, bool)]}
    pruned = make_variant(ckpt, "ffn-protected_norm_0.25", mask=keep)
    info = pruned["speechdissect"]["ffn_pruning"]
    assert (pruned["model_cfg"]["encoder_ffn_embed_dim"], info["width"], info["kept"], info["zero_padded"]) == (56, 56, {"0": 48, "1": 56}, {"0": 8, "1": 0})
    w0 = pruned["model_weight"]["encoder.layers.0.fc2.weight"]
    assert int((w0 == 0).all(dim=0).sum()) == 8
    masked = make_variant(ckpt, "edit-x", mask=keep)
    assert parameter_counts(pruned)["effective"] == parameter_counts(masked)["effective"]
    assert parameter_counts(pruned)["stored"] == parameter_counts(ckpt)["stored"] - 2 * 8 * (2 * 32 + 1)
    for a, b in zip(hidden(pruned, tmp / "p.ckpt"), hidden(masked, tmp / "m.ckpt")):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(VariantError, match="entries"):
        make_variant(ckpt, "ffn-x", mask={0: np.ones(10, bool)})


def test_pruning_dead_neurons_keeps_outputs_identical(base):
    ckpt, tmp = base
    dead = {layer: np.r_[np.ones(40, bool), np.zeros(24, bool)] for layer in (0, 1)}  # neurons 40.. never reach the output
    weights = dict(ckpt["model_weight"])
    for layer, keep in dead.items():
        key = f"encoder.layers.{layer}.fc2.weight"
        weights[key] = weights[key].clone()
        weights[key][:, torch.from_numpy(~keep)] = 0
    with_dead = {**ckpt, "model_weight": weights}
    pruned = make_variant(with_dead, "ffn-dead", mask=dead)
    assert pruned["model_cfg"]["encoder_ffn_embed_dim"] == 40
    assert parameter_counts(pruned)["stored"] == parameter_counts(ckpt)["stored"] - 2 * 24 * (2 * 32 + 1)
    for a, b in zip(hidden(pruned, tmp / "dead_pruned.ckpt"), hidden(with_dead, tmp / "dead.ckpt")):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
