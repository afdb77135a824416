"""Hook capture must equal what the modules themselves compute, and change nothing.

Tiny randomly initialised s3prl models (2 layers) are saved in the formats
the s3prl ``*_local`` hub entries load and loaded through them, so the hooks
see exactly the module tree a real checkpoint produces.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from speechdissect.capture import capture, family_of, grid_step, run_upstream, to_grid
from speechdissect.frames import n_frames

ATOL = 1e-5


# ----------------------------------------------------------------------------- tiny upstreams
def save_hubert(path, layers=2, d=32, ffn=64, heads=4, conv=16, layer_norm_first=False, seed=0):
    """A random HuBERT checkpoint in s3prl's converted format (what ``hubert_local`` loads)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    torch.manual_seed(seed)
    cfg = HubertConfig(
        label_rate=50.0,
        encoder_layers=layers,
        encoder_embed_dim=d,
        encoder_ffn_embed_dim=ffn,
        encoder_attention_heads=heads,
        conv_feature_layers=f"[({conv},10,5)] + [({conv},3,2)] * 4 + [({conv},2,2)] * 2",
        conv_pos=8,
        conv_pos_groups=4,
        layer_norm_first=layer_norm_first,
    )
    task = HubertPretrainingConfig()
    model = HubertModel(cfg, task, [list(range(8))])
    model_cfg = {k: (v if isinstance(v, (int, float, str, bool, tuple, type(None))) else str(v)) for k, v in dataclasses.asdict(cfg).items()}
    torch.save(
        {"task_cfg": dataclasses.asdict(task), "model_cfg": model_cfg, "model_weight": model.state_dict(), "dictionaries_symbols": [list(range(8))]},
        path,
    )
    return str(path)


def save_wavlm(path, layers=2, d=32, ffn=64, heads=4, conv=16, seed=0):
    """A random WavLM checkpoint with gated relative position bias (what ``wavlm_local`` loads)."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    torch.manual_seed(seed)
    cfg = {
        "encoder_layers": layers,
        "encoder_embed_dim": d,
        "encoder_ffn_embed_dim": ffn,
        "encoder_attention_heads": heads,
        "conv_feature_layers": f"[({conv},10,5)] + [({conv},3,2)] * 4 + [({conv},2,2)] * 2",
        "conv_pos": 8,
        "conv_pos_groups": 4,
        "relative_position_embedding": True,
        "num_buckets": 32,
        "max_distance": 64,
        "gru_rel_pos": True,
    }
    model = WavLM(WavLMConfig(cfg))
    with torch.no_grad():  # make the relative bias matter
        model.encoder.layers[0].self_attn.relative_attention_bias.weight.normal_(0, 1.0)
    torch.save({"cfg": cfg, "model": model.state_dict()}, path)
    return str(path)


def save_mockingjay(path, layers=2, d=32, ffn=64, heads=4, pre_ln=False, share=False, n_mels=20, shift_ms=20.0, seed=0):
    """A random Mockingjay checkpoint with an on-the-fly fbank extracter (what ``mockingjay_local`` loads)."""
    from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel

    torch.manual_seed(seed)
    tcfg = {
        "hidden_size": d,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "hidden_act": "gelu",
        "intermediate_size": ffn,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.5,
        "layer_norm_eps": 1e-12,
        "share_layer": share,
        "pre_layer_norm": pre_ln,
    }
    audio = {
        "kaldi": {"feat_type": "fbank", "fbank": {"frame_length": 25.0, "frame_shift": shift_ms, "num_mel_bins": n_mels, "use_log_fbank": True}},
        "delta": {"order": 0},
        "cmvn": {"use_cmvn": True},
    }
    model = TransformerModel(TransformerConfig(tcfg), n_mels)
    torch.save({"Config": {}, "Upstream_Config": {"transformer": tcfg, "task": {"sequence_length": 0}, "audio": audio}, "Transformer": model.state_dict()}, path)
    return str(path)


def _fast_sinusoid_table(hidden_size):
    """Vectorised, bit-identical stand-in for mockingjay's pure-python table (seconds -> milliseconds)."""
    import numpy as np
    from s3prl.upstream.mockingjay import builder

    pos = np.arange(builder.MAX_SEQLEN, dtype=np.float64)[:, None]
    hid = np.arange(hidden_size)[None, :]
    table = pos / np.power(10000, 2 * (hid // 2) / hidden_size)
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table)


def load_expert(kind, path):
    if kind == "hubert":
        from s3prl.upstream.hubert.hubconf import hubert_local

        e = hubert_local(path)
    elif kind == "wavlm":
        from s3prl.upstream.wavlm.hubconf import wavlm_local

        e = wavlm_local(path)
    else:
        from s3prl.upstream.mockingjay import builder
        from s3prl.upstream.mockingjay.hubconf import mockingjay_local

        builder.get_sinusoid_table = _fast_sinusoid_table
        e = mockingjay_local(path)
    return e.eval()


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    d = tmp_path_factory.mktemp("upstreams")
    return {
        "hubert": load_expert("hubert", save_hubert(d / "hubert.pt")),
        "hubert_lnfirst": load_expert("hubert", save_hubert(d / "hubert_ln.pt", layer_norm_first=True, seed=1)),
        "wavlm": load_expert("wavlm", save_wavlm(d / "wavlm.pt")),
        "mockingjay": load_expert("mockingjay", save_mockingjay(d / "mj.pt")),
        "mockingjay_preln": load_expert("mockingjay", save_mockingjay(d / "mj_ln.pt", pre_ln=True, seed=1)),
        "mockingjay_10ms": load_expert("mockingjay", save_mockingjay(d / "mj10.pt", shift_ms=10.0, seed=2)),
    }


def wave(n=8321, seed=0):
    """An odd frame count on purpose: HuBERT pads the encoder input to an even length."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- fairseq families
def manual_fairseq_layer(layer, x, pad_mask):
    """Re-run one fairseq encoder layer by hand; per-head weights from the module's own python path."""
    mha = layer.self_attn
    h = layer.self_attn_layer_norm(x) if layer.layer_norm_first else x
    old = getattr(mha, "skip_embed_dim_check", False)
    mha.skip_embed_dim_check = True  # forces the non-fused path, which can return per-head weights
    try:
        if hasattr(mha, "has_relative_attention_bias"):
            raise AssertionError("use the output check for WavLM")
        attn_out, w = mha(query=h, key=h, value=h, key_padding_mask=pad_mask, need_weights=True, need_head_weights=True)
    finally:
        mha.skip_embed_dim_check = old
    # fused path, as the layer runs it, asked for unaveraged weights
    _, w_fused = F.multi_head_attention_forward(
        h, h, h, mha.embed_dim, mha.num_heads, torch.empty([0]),
        torch.cat((mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias)), None, None, False, 0.0,
        mha.out_proj.weight, mha.out_proj.bias, False, pad_mask, True, None,
        use_separate_proj_weight=True, q_proj_weight=mha.q_proj.weight, k_proj_weight=mha.k_proj.weight,
        v_proj_weight=mha.v_proj.weight, average_attn_weights=False,
    )
    if layer.layer_norm_first:
        x1 = x + attn_out
        f = layer.activation_fn(layer.fc1(layer.final_layer_norm(x1)))
        out = x1 + layer.fc2(f)
    else:
        x1 = layer.self_attn_layer_norm(x + attn_out)
        f = layer.activation_fn(layer.fc1(x1))
        out = layer.final_layer_norm(x1 + layer.fc2(f))
    return f, w.transpose(0, 1), w_fused, out  # w: [H,B,T,S] -> [B,H,T,S]


@pytest.mark.parametrize("name", ["hubert", "hubert_lnfirst"])
def test_hubert_capture_equals_module_computation(experts, name):
    e = experts[name]
    layers = e.model.encoder.layers
    inputs = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, a, k: inputs.append((a[0].clone(), k["self_attn_padding_mask"])), with_kwargs=True)
        for layer in layers
    ]
    wav = wave()
    try:
        with torch.inference_mode():
            ref = e([wav])
            with capture(e, "hubert", ffn=True, attention=True) as cap:
                out = e([wav])
    finally:
        for h in hooks:
            h.remove()
    T = n_frames(len(wav))
    assert cap.lengths.tolist() == [T]
    # capturing changes nothing
    assert len(out["hidden_states"]) == len(layers) + 1
    for a, b in zip(ref["hidden_states"], out["hidden_states"]):
        assert torch.equal(a, b)
    assert out["hidden_states"][0].shape[1] == T
    x_layers = inputs[len(layers):]  # second forward
    with torch.inference_mode():
        for l, (layer, (x, pm)) in enumerate(zip(layers, x_layers)):
            assert x.shape[0] == T + 1 and pm[0, -1]  # padded to an even length, pad masked
            f, w, w_fused, y = manual_fairseq_layer(layer, x, pm)
            torch.testing.assert_close(cap.ffn[l][0], f[:T, 0], atol=ATOL, rtol=0)
            a = cap.attention[l][0]
            assert a.shape == (layer.self_attn.num_heads, T, T)
            torch.testing.assert_close(a, w[0, :, :T, :T].float(), atol=ATOL, rtol=0)
            torch.testing.assert_close(a, w_fused[0, :, :T, :T], atol=ATOL, rtol=0)
            torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), atol=1e-5, rtol=0)
            # the layer's output is the next hidden state the upstream returns
            if layer.layer_norm_first and l + 1 == len(layers):
                y = e.model.encoder.layer_norm(y)  # pre-LN encoders normalise the final output
            torch.testing.assert_close(out["hidden_states"][l + 1][0], y[:T, 0], atol=1e-4, rtol=0)


def test_hubert_ffn_is_act_of_fc1_input(experts):
    """FFN capture (fc2's input) equals act(fc1(x)) for x captured separately at fc1's input."""
    e = experts["hubert"]
    fc1_in = []
    hooks = [layer.fc1.register_forward_pre_hook(lambda m, a: fc1_in.append(a[0].clone())) for layer in e.model.encoder.layers]
    try:
        with torch.inference_mode(), capture(e, "hubert") as cap:
            e([wave(16000, seed=3)])
    finally:
        for h in hooks:
            h.remove()
    T = int(cap.lengths[0])
    with torch.inference_mode():
        for l, layer in enumerate(e.model.encoder.layers):
            torch.testing.assert_close(cap.ffn[l][0], layer.activation_fn(layer.fc1(fc1_in[l]))[:T, 0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["hubert", "wavlm"])
def test_attention_reproduces_module_output(experts, name):
    """softmax maps @ V through out_proj must give exactly what self_attn returned (covers WavLM's gated bias)."""
    e = experts[name]
    seen = []

    def grab(m, args, kwargs, output):
        seen.append((kwargs["query"].clone(), kwargs.get("key_padding_mask"), output[0].clone()))

    hooks = [layer.self_attn.register_forward_hook(grab, with_kwargs=True) for layer in e.model.encoder.layers]
    try:
        with torch.inference_mode(), capture(e, name, ffn=False, attention=True) as cap:
            e([wave(12000, seed=2)])
    finally:
        for h in hooks:
            h.remove()
    T = int(cap.lengths[0])
    assert cap.ffn == []
    with torch.inference_mode():
        for l, (q, kpm, out) in enumerate(seen):
            mha = e.model.encoder.layers[l].self_attn
            S = q.shape[0]
            # captured maps are trimmed to T; rebuild the full S x S map's valid block and check the output rows
            v = F.linear(q, mha.v_proj.weight, mha.v_proj.bias)  # (S, 1, C)
            vh = v.view(S, mha.num_heads, -1).transpose(0, 1)[:, :T]  # (H, T, d)
            ctx = torch.matmul(cap.attention[l][0], vh)  # (H, T, d)
            recon = mha.out_proj(ctx.transpose(0, 1).reshape(T, -1))
            torch.testing.assert_close(recon, out[:T, 0], atol=1e-5, rtol=0)
            torch.testing.assert_close(cap.attention[l][0].sum(-1), torch.ones(mha.num_heads, T), atol=1e-5, rtol=0)


def test_wavlm_capture_leaves_output_unchanged(experts):
    e = experts["wavlm"]
    wav = wave(9000, seed=4)
    with torch.inference_mode():
        ref = e([wav])
        with capture(e, "wavlm", attention=True):
            out = e([wav])
    for a, b in zip(ref["hidden_states"], out["hidden_states"]):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- mockingjay
@pytest.mark.parametrize("name", ["mockingjay", "mockingjay_preln"])
def test_mockingjay_capture_equals_module_computation(experts, name):
    from s3prl.upstream.mockingjay.model import TransformerModel

    e = experts[name]
    tm = e.transformer.model
    model_in, inter_in = [], []
    h1 = tm.register_forward_pre_hook(lambda m, a: model_in.append(tuple(t.clone() for t in a[:3])))
    h2 = [layer.intermediate.register_forward_pre_hook(lambda m, a: inter_in.append(a[0].clone())) for layer in tm.encoder.layer]
    wav = wave(10000, seed=5)
    try:
        with torch.inference_mode():
            ref = e([wav])
            model_in.clear(), inter_in.clear()
            with capture(e, "mockingjay", ffn=True, attention=True) as cap:
                out = e([wav])
    finally:
        h1.remove()
        for h in h2:
            h.remove()
    T = n_frames(len(wav))  # 25 ms window, 20 ms shift: the shared grid
    assert cap.lengths.tolist() == [T]
    assert len(out["hidden_states"]) == len(tm.encoder.layer) + 1
    for a, b in zip(ref["hidden_states"], out["hidden_states"]):
        assert torch.equal(a, b)
    # the module's own per-head attention: same weights, output_attentions=True
    own = TransformerModel(tm.config, e.transformer.inp_dim, output_attentions=True)
    own.load_state_dict(tm.state_dict())
    own.eval()
    with torch.inference_mode():
        atts, layers_out = own(*model_in[0])
        for l, layer in enumerate(tm.encoder.layer):
            torch.testing.assert_close(cap.attention[l], atts[l], atol=ATOL, rtol=0)
            torch.testing.assert_close(cap.attention[l].sum(-1), torch.ones(cap.attention[l].shape[:-1]), atol=1e-5, rtol=0)
            f = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(inter_in[l]))
            torch.testing.assert_close(cap.ffn[l], f, atol=ATOL, rtol=0)
        for a, b in zip(layers_out, out["hidden_states"]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_mockingjay_shared_layers_dispatch_by_call_order(tmp_path):
    """With share_layer the same module runs every layer: calls map to layers in order."""
    e = load_expert("mockingjay", save_mockingjay(tmp_path / "shared.pt", layers=3, share=True))
    tm = e.transformer.model
    inter_in = []
    h = tm.encoder.layer[0].intermediate.register_forward_pre_hook(lambda m, a: inter_in.append(a[0].clone()))
    try:
        acts = run_upstream(e, [wave(7000)], "mockingjay", attention=True)[0]
    finally:
        h.remove()
    assert len(inter_in) == 3 and len(acts.ffn) == 3 and acts.attention.shape[0] == 3
    layer = tm.encoder.layer[0]
    with torch.inference_mode():
        for l in range(3):
            torch.testing.assert_close(acts.ffn[l], layer.intermediate.intermediate_act_fn(layer.intermediate.dense(inter_in[l]))[0])


# ----------------------------------------------------------------------------- run_upstream / batching / wrappers
def test_run_upstream_batch_trims_each_utterance(experts):
    e = experts["mockingjay"]  # no group norm over time: batching is exact
    wavs = [wave(9000, 1), wave(5000, 2)]
    single = [run_upstream(e, [w], attention=True)[0] for w in wavs]
    batched = run_upstream(e, wavs, attention=True)
    assert family_of(e) == "mockingjay"
    for s, b, w in zip(single, batched, wavs):
        assert b.n_frames == s.n_frames == n_frames(len(w))
        assert len(b.hidden) == len(b.ffn) + 1
        for x, y in zip(s.ffn + s.hidden, b.ffn + b.hidden):
            assert x.shape == y.shape
            torch.testing.assert_close(x, y, atol=1e-4, rtol=0)
        torch.testing.assert_close(s.attention, b.attention, atol=1e-5, rtol=0)


def test_each_forward_starts_afresh(experts):
    e = experts["mockingjay"]
    with torch.inference_mode(), capture(e, attention=True) as cap:
        e([wave(9000)])
        e([wave(5000)])
    assert cap.lengths.tolist() == [n_frames(5000)]
    assert cap.ffn[0].shape[1] == n_frames(5000) and cap.attention[1].shape[-1] == n_frames(5000)


def test_family_guess_and_hooks_removed(experts):
    assert family_of(experts["hubert"]) == "hubert"
    assert family_of(experts["wavlm"]) == "wavlm"
    e = experts["hubert"]
    before = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in e.modules())
    with pytest.raises(RuntimeError, match="boom"):
        with capture(e, attention=True):
            raise RuntimeError("boom")
    after = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in e.modules())
    assert before == after


@pytest.mark.slow  # importing s3prl.hub loads every hubconf (~15 s)
def test_s3prl_upstream_wrapper_is_unwrapped(tmp_path):
    """S3PRLUpstream pads to ceil(N/320) frames; capture drives its expert and keeps the model's own count."""
    from s3prl.nn import S3PRLUpstream

    up = S3PRLUpstream("hubert_local", path_or_url=save_hubert(tmp_path / "h.pt"))
    up.eval()
    wav = wave(8321)
    acts = run_upstream(up, [wav])[0]
    assert acts.n_frames == n_frames(len(wav))
    direct = run_upstream(up.upstream, [wav])[0]
    for x, y in zip(acts.hidden, direct.hidden):
        assert torch.equal(x, y)


def test_grid_step_and_to_grid(experts):
    assert grid_step(experts["hubert"]) == 1 and grid_step(experts["wavlm"]) == 1
    assert grid_step(experts["mockingjay"]) == 1
    e = experts["mockingjay_10ms"]
    assert grid_step(e) == 2
    wav = wave(9999, seed=7)
    ua = run_upstream(e, [wav], attention=True)[0]
    assert ua.n_frames == (len(wav) - 400) // 160 + 1  # kaldi snip-edges framing at 10 ms
    g = to_grid(ua, 2)
    assert g.n_frames == n_frames(len(wav))  # every other 10 ms frame is the 20 ms grid
    torch.testing.assert_close(g.hidden[1], ua.hidden[1][::2])
    torch.testing.assert_close(g.ffn[0], ua.ffn[0][::2])
    assert g.attention.shape == (2, 4, g.n_frames, g.n_frames)
    torch.testing.assert_close(g.attention.sum(-1), torch.ones(g.attention.shape[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(g.attention[..., 0], ua.attention[..., ::2, 0] + ua.attention[..., ::2, 1])
    assert to_grid(ua, 1) is ua
