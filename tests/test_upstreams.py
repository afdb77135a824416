"""speechdissect.upstreams: tiny models, checkpoints through s3prl's *_local entries, the loader.

Everything runs on tiny models (a few thousand parameters) and a few seconds of
synthetic audio, so the module stays well under a minute (most of it is the
one-off ``import s3prl.hub``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechdissect import frames
from speechdissect.upstreams import describe, family_of, load_upstream
from speechdissect.upstreams.registry import UpstreamDownloadError, checkpoint_entry, save_checkpoint

SR = 16000

TINY_HUBERT = {
    "model": {
        "encoder_layers": 2,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 64,
        "encoder_attention_heads": 2,
        "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
        "final_dim": 16,
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "mask_length": 4,
        "mask_prob": 0.5,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "dropout_input": 0.0,
        "dropout_features": 0.0,
    },
    "n_clusters": 6,
    "batch_seconds": 2.0,
    "crop_seconds": 1.0,
    "lr": 3e-3,
    "heldout_fraction": 0.25,
}

TINY_MOCKINGJAY = {
    "transformer": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
    "audio": {
        "kaldi": {
            "feat_type": "fbank",
            "fbank": {"frame_length": 25.0, "frame_shift": 10.0, "num_mel_bins": 20, "use_log_fbank": True, "dither": 0.0},
        },
        "delta": {"order": 0},
        "cmvn": {"use_cmvn": True},
    },
    "batch_seconds": 4.0,
    "crop_seconds": 1.0,
    "lr": 2e-3,
    "heldout_fraction": 0.25,
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine 2 OpenMP threads are far slower under load."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _utterance(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Tone / noise / silence segments; returns (wave, per-frame segment class on the 20 ms grid)."""
    n = int(seconds * SR)
    wav = np.zeros(n, dtype=np.float32)
    cls = np.zeros(n, dtype=np.int64)
    pos = 0
    f0 = rng.uniform(100, 200)
    while pos < n:
        d = min(n - pos, int(rng.uniform(0.15, 0.4) * SR))
        t = np.arange(d) / SR
        k = int(rng.integers(0, 3))
        if k == 0:
            seg = 0.003 * rng.standard_normal(d)
        elif k == 1:
            seg = 0.3 * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5))
        else:
            seg = 0.1 * rng.standard_normal(d)
        wav[pos: pos + d] = seg
        cls[pos: pos + d] = k
        pos += d
    centres = np.arange(frames.n_frames(n)) * frames.HOP + frames.RECEPTIVE_FIELD // 2
    return wav, cls[centres]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(8):
        wav, lab = _utterance(rng, rng.uniform(1.2, 2.0))
        p = root / f"u{i}.flac"
        sf.write(p, wav, SR, subtype="PCM_16")
        paths.append(str(p))
        labels.append(lab)
    return paths, labels


@pytest.fixture(scope="module")
def hubert_run(corpus, tmp_path_factory):
    from speechdissect.upstreams.hubert import pretrain_hubert

    ckpt = tmp_path_factory.mktemp("hubert") / "mini_hubert.ckpt"
    log = pretrain_hubert(corpus[0], ckpt, {**TINY_HUBERT, "steps": 40}, seed=0, progress=False)
    return ckpt, log


@pytest.fixture(scope="module")
def mockingjay_run(corpus, tmp_path_factory):
    from speechdissect.upstreams.mockingjay import pretrain_mockingjay

    ckpt = tmp_path_factory.mktemp("mockingjay") / "mini_mockingjay.ckpt"
    log = pretrain_mockingjay(corpus[0], ckpt, {**TINY_MOCKINGJAY, "steps": 40}, seed=0, progress=False)
    return ckpt, log


def _wave(seconds=1.31, seed=3):  # 65 frames: odd, exercises the encoder's pad-to-even
    return torch.from_numpy(_utterance(np.random.default_rng(seed), seconds)[0])


# --------------------------------------------------------------------------- #
# features
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n", [400, 719, 720, 16000, 23456])
def test_mfcc_on_the_shared_grid(n):
    from speechdissect.upstreams.features import mfcc_grid

    f = mfcc_grid(np.random.default_rng(0).standard_normal(n).astype(np.float32))
    assert f.shape == (frames.n_frames(n), 39)
    assert frames.n_frames(n) == (n - 400) // 320 + 1


# --------------------------------------------------------------------------- #
# HuBERT
# --------------------------------------------------------------------------- #
def test_hubert_checkpoint_roundtrip_is_identical(tmp_path):
    """An in-memory model, saved, loaded by s3prl's hubert_local: identical hidden states."""
    from speechdissect.upstreams.hubert import (
        build_hubert,
        encoder_hidden_states,
        hubert_checkpoint,
        resolve_hubert_config,
    )

    cfg = resolve_hubert_config(TINY_HUBERT)
    torch.manual_seed(1)
    model = build_hubert(cfg["model"], cfg["task"], 6).eval()
    path = save_checkpoint(hubert_checkpoint(model, cfg["model"], cfg["task"], 6), tmp_path / "h.ckpt")

    state = torch.load(path, weights_only=True)  # plain tensors / dicts / str only
    assert set(state) >= {"task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"}
    assert type(state["model_cfg"]) is dict and type(state["task_cfg"]) is dict
    assert checkpoint_entry(path) == "hubert_local"

    wav = _wave()
    ref = encoder_hidden_states(model, wav)
    up = load_upstream("hubert_local", path)
    assert not up.training
    with torch.no_grad():
        expert_hs = up.upstream([wav])["hidden_states"]
        hs, lens = up(wav.view(1, -1), torch.tensor([wav.numel()]))
    n = frames.n_frames(wav.numel())
    assert len(ref) == len(expert_hs) == len(hs) == 2 + 1
    for a, b, c in zip(ref, expert_hs, hs):
        assert a.shape[1] == b.shape[1] == n
        assert torch.equal(a, b)
        assert torch.equal(a[:, :n], c[:, :n])  # S3PRLUpstream pads to ceil(N / 320) after that

    info = describe(up)
    assert info | {"paths": None, "hooks": None, "n_params": None, "n_params_encoder": None} == {
        "family": "hubert",
        "n_layers": 2,
        "d_model": 32,
        "d_ffn": 64,
        "n_heads": 2,
        "stride": 320,
        "grid_step": 1,
        "paths": None,
        "hooks": None,
        "n_params": None,
        "n_params_encoder": None,
    }
    fc1 = eval("up." + info["paths"]["ffn_fc1"].format(i=1))  # noqa: S307
    assert isinstance(fc1, torch.nn.Linear) and fc1.out_features == 64
    attn = eval("up." + info["paths"]["attention"].format(i=0))  # noqa: S307
    assert attn.num_heads == 2
    fc2 = eval("up." + info["hooks"]["ffn_activation"]["module"].format(i=0))  # noqa: S307
    assert fc2.in_features == 64 and info["hooks"]["ffn_activation"]["take"] == "input"


def test_pretrain_hubert_learns_and_loads(hubert_run):
    ckpt, log = hubert_run
    assert log["steps_done"] == 40 and log["stopped_by"] == "steps"
    assert len(log["loss"]) == 40
    first, last = np.mean(log["loss"][:8]), np.mean(log["loss"][-8:])
    assert last < first
    assert log["end"]["acc"] > log["start"]["acc"] + 0.1
    assert log["end"]["acc"] > log["chance"]
    torch.load(ckpt, weights_only=True)
    up = load_upstream("hubert_local", ckpt)
    wav = _wave(1.0)
    with torch.no_grad():
        hs = up.upstream([wav])["hidden_states"]
    assert len(hs) == describe(up)["n_layers"] + 1
    assert hs[-1].shape == (1, frames.n_frames(wav.numel()), 32)


def test_pretrain_hubert_is_deterministic(corpus, hubert_run, tmp_path):
    from speechdissect.upstreams.hubert import pretrain_hubert

    _, log = hubert_run
    again = pretrain_hubert(corpus[0], tmp_path / "again.ckpt", {**TINY_HUBERT, "steps": 40}, seed=0, progress=False)
    assert again["loss"] == log["loss"]
    assert again["start"] == log["start"] and again["end"] == log["end"]
    other = pretrain_hubert(corpus[0], tmp_path / "other.ckpt", {**TINY_HUBERT, "steps": 2}, seed=1, progress=False)
    assert other["start"] != log["start"] or other["loss"][0] != log["loss"][0]


def test_finetune_hubert(corpus, hubert_run, tmp_path):
    from speechdissect.upstreams.finetune import finetune_hubert

    ckpt, _ = hubert_run
    paths, labels = corpus
    out = tmp_path / "ft.ckpt"
    log = finetune_hubert(
        ckpt, out, paths, labels, 3, {"steps": 25, "batch_seconds": 2.0, "crop_seconds": 1.0, "lr": 2e-3, "head_lr": 1e-2},
        seed=0, progress=False,
    )
    assert log["steps_done"] == 25
    assert np.mean(log["loss"][-5:]) < np.mean(log["loss"][:5])
    assert log["end"]["acc"] > log["start"]["acc"]
    a = torch.load(ckpt, weights_only=True)["model_weight"]
    b = torch.load(out, weights_only=True)["model_weight"]
    assert a.keys() == b.keys()
    assert not torch.equal(a["encoder.layers.1.fc1.weight"], b["encoder.layers.1.fc1.weight"])
    assert torch.equal(a["feature_extractor.conv_layers.0.0.weight"], b["feature_extractor.conv_layers.0.0.weight"])
    up = load_upstream("hubert_local", out)
    assert describe(up)["n_layers"] == 2

    with pytest.raises(ValueError, match="frame labels"):
        finetune_hubert(ckpt, tmp_path / "x.ckpt", paths, [y[:-3] for y in labels], 3, {"steps": 1}, progress=False)


# --------------------------------------------------------------------------- #
# Mockingjay
# --------------------------------------------------------------------------- #
def test_mockingjay_checkpoint_roundtrip_is_identical(tmp_path):
    from speechdissect.upstreams.mockingjay import (
        build_mockingjay,
        encoder_hidden_states,
        mockingjay_checkpoint,
        mockingjay_features,
        resolve_mockingjay_config,
    )

    cfg = resolve_mockingjay_config(TINY_MOCKINGJAY)
    torch.manual_seed(2)
    model, head = build_mockingjay(cfg["transformer"], 20)
    model.eval()
    path = save_checkpoint(mockingjay_checkpoint(model, head, cfg), tmp_path / "m.ckpt")
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"Transformer", "SpecHead", "Config", "Upstream_Config"}
    assert checkpoint_entry(path) == "mockingjay_local"

    wav = _wave()
    feat = mockingjay_features([wav.numpy()], cfg["audio"])[0]
    n10 = (wav.numel() - 400) // 160 + 1
    assert feat.shape == (n10, 20)
    ref = encoder_hidden_states(model, feat)
    up = load_upstream("mockingjay_local", path)
    with torch.no_grad():
        expert_hs = up.upstream([wav])["hidden_states"]
        hs, _ = up(wav.view(1, -1), torch.tensor([wav.numel()]))
    assert len(ref) == len(expert_hs) == len(hs) == 2 + 1
    for a, b, c in zip(ref, expert_hs, hs):
        assert a.shape[1] == b.shape[1] == n10
        assert torch.equal(a, b)
        assert torch.equal(a, c[:, :n10])
    info = describe(up)
    assert (info["family"], info["n_layers"], info["d_model"], info["d_ffn"], info["n_heads"]) == ("mockingjay", 2, 32, 64, 2)
    assert (info["stride"], info["grid_step"]) == (160, 2)
    # every other 10 ms frame is the 20 ms grid
    assert expert_hs[0][:, ::2].shape[1] == frames.n_frames(wav.numel())
    inter = eval("up." + info["hooks"]["ffn_activation"]["module"].format(i=1))  # noqa: S307
    assert inter.dense.out_features == 64 and info["hooks"]["ffn_activation"]["take"] == "output"
    probs = eval("up." + info["hooks"]["attention_probs"]["module"].format(i=0))  # noqa: S307
    assert isinstance(probs, torch.nn.Dropout)


def test_pretrain_mockingjay_learns_and_loads(mockingjay_run):
    ckpt, log = mockingjay_run
    assert log["steps_done"] == 40
    assert np.mean(log["loss"][-8:]) < np.mean(log["loss"][:8])
    assert log["end"]["l1"] < log["start"]["l1"]
    torch.load(ckpt, weights_only=True)
    up = load_upstream("mockingjay_local", ckpt)
    with torch.no_grad():
        hs = up.upstream([_wave(1.0)])["hidden_states"]
    assert len(hs) == 3


def test_mockingjay_rejects_20ms_frames():
    from speechdissect.upstreams.mockingjay import resolve_mockingjay_config

    audio = {"kaldi": {"feat_type": "fbank", "fbank": {"frame_shift": 20.0}}}
    with pytest.raises(ValueError, match="10 ms"):
        resolve_mockingjay_config({"audio": audio})


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #
def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError) as e:
        load_upstream("hubert_bsae")
    assert "hubert_base" in str(e.value)
    with pytest.raises(ValueError, match="available_names"):
        load_upstream("no_such_model_at_all")


def test_hub_entry_without_network_is_a_clear_error(monkeypatch):
    import requests

    import s3prl.upstream.hubert.hubconf as hc

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(hc, "_urls_to_filepaths", offline)
    with pytest.raises(UpstreamDownloadError, match="hubert_base.*download"):
        load_upstream("hubert_base")


def test_named_entry_refuses_local_path(tmp_path):
    with pytest.raises(ValueError, match="hubert_local"):
        load_upstream("hubert_base", tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="ckpt"):
        load_upstream("hubert_local")
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_upstream("hubert_local", tmp_path / "missing.ckpt")


@pytest.mark.parametrize(
    "name,family",
    [
        ("hubert_base", "hubert"),
        ("hubert_local", "hubert"),
        ("wavlm_base_plus", "wavlm"),
        ("wav2vec2", "wav2vec2"),
        ("mockingjay", "mockingjay"),
        ("tera", "tera"),
        ("distilhubert", "distiller"),
        ("mini_hubert", "hubert"),
        ("mini_mockingjay", "mockingjay"),
    ],
)
def test_family_of(name, family):
    assert family_of(name) == family


def test_save_checkpoint_is_atomic_and_plain(tmp_path):
    class Custom:
        pass

    target = tmp_path / "c.ckpt"
    with pytest.raises(Exception):
        save_checkpoint({"x": Custom()}, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    save_checkpoint({"x": torch.ones(2), "cfg": {"a": [1, "b"]}}, target)
    assert torch.load(target, weights_only=True)["cfg"] == {"a": [1, "b"]}


def test_pretrain_hubert_second_iteration(corpus, hubert_run, tmp_path):
    """iteration2: k-means of an iteration-1 hidden state become the targets; training goes on from its weights."""
    from speechdissect.upstreams.hubert import pretrain_hubert

    _, first = hubert_run
    ckpt = tmp_path / "it2.ckpt"
    log = pretrain_hubert(corpus[0], ckpt, {**TINY_HUBERT, "steps": 40, "iteration2": {"steps": 20, "layer": 1, "n_clusters": 7}},
                          seed=0, progress=False)
    assert log["loss"][:40] == first["loss"]  # iteration 1 is exactly the one-iteration run
    assert [i["steps_done"] for i in log["iterations"]] == [40, 20] and log["steps_done"] == 60
    assert log["n_clusters"] == 7 and log["chance"] == pytest.approx(1 / 7)
    assert log["iterations"][1]["end"]["acc"] > log["iterations"][1]["chance"]
    state = torch.load(ckpt, weights_only=True)
    assert state["dictionaries_symbols"] == [[str(i) for i in range(7)]]
    assert state["speechdissect"]["targets"] == "hidden state 1 of iteration 1"
    up = load_upstream("hubert_local", ckpt)
    with torch.no_grad():
        assert len(up.upstream([_wave(1.0)])["hidden_states"]) == describe(up)["n_layers"] + 1
    with pytest.raises(ValueError, match="iteration2.layer"):
        pretrain_hubert(corpus[0], tmp_path / "bad.ckpt", {**TINY_HUBERT, "steps": 1, "iteration2": {"steps": 1, "layer": 99}},
                        seed=0, progress=False)
