"""Head pruning of the attention study: a masked head removes exactly its own contribution; pruning
curves and the largest fraction within a loss budget; the segmentation summary across upstreams."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from speechdissect.attention import (
    head_variant,
    max_fraction_within,
    parse_head_variant,
    pruning_curves,
    segmentation_summary,
)
from speechdissect.attention.figures import pruning_curves_figure
from speechdissect.downstream.aggregate import mean_ci

MODEL = {"encoder_layers": 3, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4,
         "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", "conv_pos": 8, "conv_pos_groups": 4,
         "final_dim": 16}
LAYER, HEAD, N_HEADS, D = 1, 2, 4, 32
HEAD_DIM = D // N_HEADS


# --------------------------------------------------------------------------- a masked head


@pytest.fixture(scope="module")
def models():
    """(original, masked) HuBERT models in eval mode; the masked one has head HEAD of layer LAYER removed."""
    from speechdissect.upstreams.hubert import build_hubert, hubert_checkpoint, resolve_hubert_config
    from speechdissect.variants import make_variant

    torch.manual_seed(0)
    cfg = resolve_hubert_config({"model": MODEL})
    model = build_hubert(cfg["model"], cfg["task"], n_clusters=5)
    ckpt = hubert_checkpoint(model, cfg["model"], cfg["task"], 5)
    mask = np.ones((MODEL["encoder_layers"], N_HEADS), dtype=int)
    mask[LAYER, HEAD] = 0
    masked_ckpt = make_variant(ckpt, "heads-test", mask=mask.tolist())
    masked = build_hubert(cfg["model"], cfg["task"], n_clusters=5)
    masked.load_state_dict(masked_ckpt["model_weight"])
    model.load_state_dict(ckpt["model_weight"])
    return model.eval(), masked.eval(), ckpt, masked_ckpt


def _attention_with_context(attn, x):
    """Output of a fairseq MultiheadAttention (its fused path) and the per-head context before out_proj."""
    seen = {}
    hook = attn.out_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("ctx", args[0].detach().clone()))
    try:
        attn.skip_embed_dim_check = True  # the unfused path, which calls out_proj as a module
        unfused, _ = attn(x, x, x, need_weights=False)
    finally:
        attn.skip_embed_dim_check = False
        hook.remove()
    fused, _ = attn(x, x, x, need_weights=False)
    torch.testing.assert_close(unfused, fused, rtol=1e-5, atol=1e-6)
    return fused, seen["ctx"]


def test_masked_head_removes_exactly_its_contribution(models):
    model, masked, _, _ = models
    x = torch.randn(11, 2, D)  # (time, batch, channels)
    with torch.no_grad():
        y, ctx = _attention_with_context(model.encoder.layers[LAYER].self_attn, x)
        y_m, ctx_m = _attention_with_context(masked.encoder.layers[LAYER].self_attn, x)
    # queries, keys, values and every head's context are untouched ...
    torch.testing.assert_close(ctx_m, ctx, rtol=0, atol=0)
    # ... and the output differs by exactly the removed head's share of out_proj
    cols = slice(HEAD * HEAD_DIM, (HEAD + 1) * HEAD_DIM)
    w = model.encoder.layers[LAYER].self_attn.out_proj.weight
    contribution = ctx[..., cols] @ w[:, cols].T
    assert contribution.abs().max() > 1e-3  # the head did contribute something
    torch.testing.assert_close(y - y_m, contribution, rtol=1e-5, atol=1e-6)
    # every other head's share (and the bias) is the same in both models
    w_m = masked.encoder.layers[LAYER].self_attn.out_proj.weight
    keep = [h for h in range(N_HEADS) if h != HEAD]
    for h in keep:
        c = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        torch.testing.assert_close(ctx_m[..., c] @ w_m[:, c].T, ctx[..., c] @ w[:, c].T, rtol=0, atol=0)


def test_masked_head_changes_no_other_weight(models):
    _, _, ckpt, masked_ckpt = models
    key = f"encoder.layers.{LAYER}.self_attn.out_proj.weight"
    for k, v in ckpt["model_weight"].items():
        if k != key:
            assert torch.equal(masked_ckpt["model_weight"][k], v), k
    w, w_m = ckpt["model_weight"][key], masked_ckpt["model_weight"][key]
    cols = slice(HEAD * HEAD_DIM, (HEAD + 1) * HEAD_DIM)
    assert (w_m[:, cols] == 0).all()
    others = torch.ones(D, dtype=torch.bool)
    others[cols] = False
    assert torch.equal(w_m[:, others], w[:, others])


def test_masked_head_leaves_earlier_layers_unchanged(models):
    model, masked, _, _ = models
    wav = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 8000)).astype(np.float32))
    with torch.no_grad():
        h, _ = model.extract_features(wav, padding_mask=None, mask=False, output_layer=None)
        h_m, _ = masked.extract_features(wav, padding_mask=None, mask=False, output_layer=None)
        hs = [model.extract_features(wav, padding_mask=None, mask=False, output_layer=l + 1)[0] for l in range(MODEL["encoder_layers"])]
        hs_m = [masked.extract_features(wav, padding_mask=None, mask=False, output_layer=l + 1)[0] for l in range(MODEL["encoder_layers"])]
    for l in range(LAYER):  # outputs of the layers before the masked one are identical
        torch.testing.assert_close(hs_m[l], hs[l], rtol=0, atol=0)
    assert not torch.allclose(hs_m[LAYER], hs[LAYER])  # the masked layer's output changes
    assert not torch.allclose(h_m, h)


# --------------------------------------------------------------------------- pruning curves


def test_head_variant_names_round_trip():
    assert head_variant("globalness", 0.5) == "heads-globalness_0.5"
    assert head_variant("max_weight", 0.25) == "heads-max_weight_0.25"
    assert head_variant("random", 0) == "original"
    assert parse_head_variant("heads-max_weight_0.25") == ("max_weight", 0.25)
    assert parse_head_variant("heads-globalness_1") == ("globalness", 1.0)
    assert parse_head_variant("original") == (None, 0.0)
    assert parse_head_variant("ffn-norm_0.5") is None and parse_head_variant("layers-2") is None


def _runs(scores: dict[str, list[float]], task="phone_linear", upstream="u", higher=True, metric="acc"):
    return pd.DataFrame([{"upstream": upstream, "task": task, "variant": v, "seed": s, "score": x,
                          "metric": metric, "higher_is_better": higher}
                         for v, xs in scores.items() for s, x in enumerate(xs)])


def test_pruning_curves_mean_ci_and_loss():
    runs = pd.concat([
        _runs({"original": [0.80, 0.82, 0.81], "heads-globalness_0.5": [0.805, 0.80, 0.81],
               "heads-globalness_0.25": [0.81, 0.81, 0.82], "heads-random_0.5": [0.70, 0.72, 0.71],
               "ffn-norm_0.5": [0.1, 0.1, 0.1]}),
        _runs({"original": [0.5, 0.6], "heads-globalness_0.5": [0.5, 0.5]}, task="speaker_linear_utter"),
    ])
    curves = pruning_curves(runs, ["globalness", "random"], n_removed={("globalness", 0.5): 8, ("globalness", 0.25): 4,
                                                                       ("random", 0.5): 8})
    phone = curves[curves["task"] == "phone_linear"]
    assert list(zip(phone["ranking"], phone["fraction"])) == [("globalness", 0.0), ("globalness", 0.25), ("globalness", 0.5),
                                                              ("random", 0.0), ("random", 0.5)]
    orig = mean_ci([0.80, 0.82, 0.81])
    g50 = phone[(phone["ranking"] == "globalness") & (phone["fraction"] == 0.5)].iloc[0]
    assert g50["variant"] == "heads-globalness_0.5" and g50["n_removed"] == 8 and g50["n"] == 3
    assert g50["mean"] == pytest.approx(np.mean([0.805, 0.80, 0.81]))
    assert g50["ci_low"] == pytest.approx(mean_ci([0.805, 0.80, 0.81])["ci_low"])
    assert g50["loss"] == pytest.approx((orig["mean"] - g50["mean"]) * 100)
    zero = phone[phone["fraction"] == 0]
    assert (zero["variant"] == "original").all() and (zero["loss"] == 0).all() and (zero["n_removed"] == 0).all()
    assert zero["mean"].tolist() == pytest.approx([orig["mean"]] * 2)
    speaker = curves[curves["task"] == "speaker_linear_utter"]
    # a ranking without evaluated fractions on a task keeps only its fraction-0 point
    assert speaker[speaker["ranking"] == "random"]["fraction"].tolist() == [0.0]
    assert np.isfinite(speaker[speaker["ranking"] == "globalness"]["ci_half"]).all()


def test_loss_sign_follows_metric_direction():
    runs = _runs({"original": [0.30, 0.32], "heads-globalness_0.5": [0.35, 0.37]}, higher=False, metric="per")
    curves = pruning_curves(runs)
    row = curves[curves["fraction"] == 0.5].iloc[0]
    assert row["loss"] == pytest.approx(5.0)  # PER went up by 5 points: a loss


def test_pruning_curves_need_the_original():
    with pytest.raises(ValueError, match="no 'original' runs"):
        pruning_curves(_runs({"heads-globalness_0.5": [0.5, 0.6]}))


def test_max_fraction_within_budget():
    runs = _runs({"original": [0.80, 0.80], "heads-globalness_0.25": [0.798, 0.798], "heads-globalness_0.5": [0.795, 0.795],
                  "heads-globalness_0.75": [0.70, 0.70], "heads-random_0.25": [0.78, 0.78],
                  "heads-random_0.5": [0.795, 0.795], "heads-random_0.75": [0.60, 0.60]})
    curves = pruning_curves(runs, ["globalness", "random"], n_removed={("globalness", 0.5): 8})
    out = max_fraction_within(curves, max_loss=1.0).set_index("ranking")
    assert out.loc["globalness", "max_fraction"] == 0.5 and out.loc["globalness", "n_removed"] == 8
    assert out.loc["globalness", "loss"] == pytest.approx(0.5)
    assert out.loc["globalness", "score"] == pytest.approx(0.795)
    # random drops 2 points at 0.25: the curve leaves the band there, though 0.5 is back inside
    assert out.loc["random", "max_fraction"] == 0.0 and out.loc["random", "max_fraction_any"] == 0.5
    assert out.loc["random", "original"] == pytest.approx(0.80)
    assert (out["largest_evaluated"] == 0.75).all() and (out["fractions"] == "0,0.25,0.5,0.75").all()
    loose = max_fraction_within(curves, max_loss=25.0).set_index("ranking")
    assert loose.loc["globalness", "max_fraction"] == 0.75 and loose.loc["random", "max_fraction"] == 0.75
    with pytest.raises(ValueError, match="max_loss"):
        max_fraction_within(curves, max_loss=-1)


def test_pruning_figure_draws(tmp_path):
    from speechdissect.plots import save_figure

    runs = pd.concat([_runs({"original": [0.8, 0.82], "heads-globalness_0.5": [0.79, 0.8], "heads-random_0.5": [0.7, 0.72]}),
                      _runs({"original": [0.9, 0.95], "heads-globalness_0.5": [0.9, 0.91]}, task="speaker_linear_utter")])
    fig = pruning_curves_figure(pruning_curves(runs, ["globalness", "random"]), "t", max_loss=1.0)
    assert len(fig.axes) == 2
    save_figure(fig, tmp_path / "p.png", tmp_path / "p.svg")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "<svg" in (tmp_path / "p.svg").read_text()[:2000]


# --------------------------------------------------------------------------- segmentation summary


def test_segmentation_summary_chooses_on_the_tuning_split():
    table = pd.DataFrame({
        "feature": ["mfcc", "hidden", "hidden", "attention", "attention"],
        "layer": [None, 0, 1, 0, 0], "head": [None, None, None, 0, 1],
        "alpha": [1.0, 2.0, 3.0, 0.1, 0.2], "beta": [1.0] * 5,
        "hit_rate": [0.5, 0.6, 0.7, 0.8, 0.9], "over_segmentation": [0.0] * 5, "precision": [0.5] * 5,
        "recall": [0.5, 0.6, 0.7, 0.8, 0.9], "f1": [0.5] * 5,
        "r_value": [0.6, 0.9, 0.5, 0.3, 0.95],   # report split
        "tune_r_value": [0.6, 0.4, 0.7, 0.8, 0.2],  # tuning split: hidden 1 and head 0-0 win there
        "hits": [1] * 5, "n_pred": [2] * 5, "n_ref": [2] * 5,
    })
    out = segmentation_summary({"m": table, "n": table[table["feature"] != "attention"]})
    assert list(zip(out["upstream"], out["feature"])) == [
        ("m", "attention (best head)"), ("m", "hidden state (best layer)"), ("m", "MFCC"),
        ("n", "hidden state (best layer)"), ("n", "MFCC")]
    m = out[out["upstream"] == "m"].set_index("feature")
    assert (m.loc["attention (best head)", "layer"], m.loc["attention (best head)", "head"]) == (0, 0)
    assert m.loc["attention (best head)", "r_value"] == pytest.approx(0.3)  # not the report split's best (0.95)
    assert m.loc["hidden state (best layer)", "layer"] == 1 and pd.isna(m.loc["hidden state (best layer)", "head"])
    assert pd.isna(m.loc["MFCC", "layer"]) and m.loc["MFCC", "r_value"] == pytest.approx(0.6)
