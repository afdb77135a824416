"""Activation cache: round trip, alignment with the label table, frame checks, atomicity."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import speechdissect.cache as cache_mod
from speechdissect.cache import ActivationCache, CacheError, FrameCountMismatch, write_cache
from speechdissect.capture import run_upstream, to_grid
from speechdissect.frames import n_frames

UTTS = {"100-7-0000": 8000, "100-7-0001": 11521, "101-3-0002": 6400}


def save_hubert(path, layers=2, d=32, ffn=64, heads=4, conv=16, seed=0):
    """A random HuBERT checkpoint in s3prl's converted format (what ``hubert_local`` loads)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    torch.manual_seed(seed)
    cfg = HubertConfig(
        label_rate=50.0, encoder_layers=layers, encoder_embed_dim=d, encoder_ffn_embed_dim=ffn, encoder_attention_heads=heads,
        conv_feature_layers=f"[({conv},10,5)] + [({conv},3,2)] * 4 + [({conv},2,2)] * 2", conv_pos=8, conv_pos_groups=4,
    )
    task = HubertPretrainingConfig()
    model = HubertModel(cfg, task, [list(range(8))])
    model_cfg = {k: (v if isinstance(v, (int, float, str, bool, tuple, type(None))) else str(v)) for k, v in dataclasses.asdict(cfg).items()}
    torch.save({"task_cfg": dataclasses.asdict(task), "model_cfg": model_cfg, "model_weight": model.state_dict(), "dictionaries_symbols": [list(range(8))]}, path)
    return str(path)


def save_mockingjay_10ms(path, layers=2, d=32, ffn=64, heads=4, n_mels=20, seed=0):
    """A random Mockingjay on 10 ms fbank frames (twice the grid rate), in ``mockingjay_local`` format."""
    from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel

    torch.manual_seed(seed)
    tcfg = {
        "hidden_size": d, "num_hidden_layers": layers, "num_attention_heads": heads, "hidden_act": "gelu",
        "intermediate_size": ffn, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.5, "layer_norm_eps": 1e-12, "share_layer": False, "pre_layer_norm": False,
    }
    audio = {
        "kaldi": {"feat_type": "fbank", "fbank": {"frame_length": 25.0, "frame_shift": 10.0, "num_mel_bins": n_mels, "use_log_fbank": True}},
        "delta": {"order": 0},
        "cmvn": {"use_cmvn": True},
    }
    model = TransformerModel(TransformerConfig(tcfg), n_mels)
    torch.save({"Config": {}, "Upstream_Config": {"transformer": tcfg, "task": {"sequence_length": 0}, "audio": audio}, "Transformer": model.state_dict()}, path)
    return str(path)


def _fast_sinusoid_table(hidden_size):
    """Vectorised, bit-identical stand-in for mockingjay's pure-python position table."""
    from s3prl.upstream.mockingjay import builder

    pos = np.arange(builder.MAX_SEQLEN, dtype=np.float64)[:, None]
    hid = np.arange(hidden_size)[None, :]
    table = pos / np.power(10000, 2 * (hid // 2) / hidden_size)
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table)


@pytest.fixture(scope="module")
def expert(tmp_path_factory):
    from s3prl.upstream.hubert.hubconf import hubert_local

    return hubert_local(save_hubert(tmp_path_factory.mktemp("up") / "hubert.pt")).eval()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three short flac files and their label table (a filtered table would keep its index)."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    paths, rows = {}, []
    for utt, n in UTTS.items():
        wav = (0.1 * rng.standard_normal(n)).astype(np.float32)
        p = d / f"{utt}.flac"
        sf.write(p, wav, 16000, subtype="PCM_16")
        paths[utt] = str(p)
        rows += [(utt, t, "AA" if t % 3 else "sil") for t in range(n_frames(n))]
    labels = pd.DataFrame(rows, columns=["utterance", "frame", "phone"])
    labels["frame"] = labels["frame"].astype("int32")
    return paths, labels


def test_round_trip_equals_capture(expert, corpus, tmp_path):
    paths, labels = corpus
    out = tmp_path / "cache" / "train"
    c = write_cache(expert, "hubert", paths, labels, out, attention_utterances=["100-7-0001"], progress=False, upstream_name="tiny")
    assert isinstance(c, ActivationCache) and out.is_dir()
    assert sorted(p.name for p in out.parent.iterdir()) == ["train"]  # no temp dir left
    m = c.meta
    assert (m["upstream"], m["family"], m["n_layers"], m["d_model"], m["d_ffn"], m["n_heads"]) == ("tiny", "hubert", 2, 32, 64, 4)
    assert m["n_frames"] == len(labels) and m["dtype"] == "float16" and m["frame_adjustments"] == {}
    assert m["attention_utterances"] == ["100-7-0001"]
    # index aligned with the label table
    c.verify(labels)
    assert list(c.index.columns) == ["utterance", "frame", "row"]
    assert (c.index["utterance"].to_numpy() == labels["utterance"].to_numpy()).all()
    assert (c.index["frame"].to_numpy() == labels["frame"].to_numpy()).all()
    assert (c.index["row"].to_numpy() == np.arange(len(labels))).all()
    # values equal the in-memory capture to float16 precision
    for utt, path in paths.items():
        wav = torch.from_numpy(sf.read(path, dtype="float32")[0])
        ua = run_upstream(expert, [wav], "hubert", attention=utt == "100-7-0001")[0]
        sl = c.utterance_slice(utt)
        assert sl.stop - sl.start == ua.n_frames == n_frames(len(wav))
        for l in range(2):
            np.testing.assert_array_equal(c.layer("ffn", l)[sl], ua.ffn[l].half().numpy())
        for l in range(3):
            np.testing.assert_array_equal(c.layer("hidden", l)[sl], ua.hidden[l].half().numpy())
        if ua.attention is not None:
            a = c.attention(utt)
            assert a.dtype == np.float16 and a.shape == (2, 4, ua.n_frames, ua.n_frames)
            np.testing.assert_array_equal(a, ua.attention.half().numpy())
    with pytest.raises(KeyError, match="no attention stored"):
        c.attention("100-7-0000")


def test_iter_chunks_streams_every_selection(expert, corpus, tmp_path):
    paths, labels = corpus
    c = write_cache(expert, "hubert", paths, labels, tmp_path / "c", progress=False)
    full = np.asarray(c.layer("ffn", 1), dtype=np.float32)
    got = [(r, x) for r, x in c.iter_chunks("ffn", 1, chunk_rows=7)]
    assert all(isinstance(r, slice) and x.dtype == np.float32 for r, x in got)
    np.testing.assert_array_equal(np.concatenate([x for _, x in got]), full)
    assert [r.start for r, _ in got] == list(range(0, len(full), 7))
    idx = np.array([40, 3, 3, 17, len(full) - 1])
    parts = list(c.iter_chunks("ffn", 1, rows=idx, chunk_rows=2))
    np.testing.assert_array_equal(np.concatenate([r for r, _ in parts]), idx)
    np.testing.assert_array_equal(np.concatenate([x for _, x in parts]), full[idx])
    mask = (labels["phone"] == "sil").to_numpy()
    np.testing.assert_array_equal(np.concatenate([x for _, x in c.iter_chunks("ffn", 1, rows=mask, chunk_rows=5)]), full[mask])
    np.testing.assert_array_equal(np.concatenate([x for _, x in c.iter_chunks("hidden", -1, rows=slice(5, 30))]), c.layer("hidden", 2)[5:30].astype(np.float32))
    with pytest.raises(IndexError):
        next(c.iter_chunks("hidden", 3))


def test_filtered_label_table_keeps_rows_and_verify_catches_misalignment(expert, corpus, tmp_path):
    paths, labels = corpus
    sub = labels[labels["utterance"] != "100-7-0000"]
    c = write_cache(expert, "hubert", paths, sub, tmp_path / "c", progress=False)
    assert c.n_frames == len(sub)
    np.testing.assert_array_equal(c.index["row"].to_numpy(), sub.index.to_numpy())
    c.verify(sub)
    with pytest.raises(CacheError):
        c.verify(labels)
    swapped = pd.concat([sub[sub.utterance == "101-3-0002"], sub[sub.utterance == "100-7-0001"]])
    with pytest.raises(CacheError, match="row 0"):
        c.verify(swapped)


def _relabel(labels, utt, n):
    """Label table in which ``utt`` has ``n`` frames."""
    parts = []
    for u, g in labels.groupby("utterance", sort=False):
        if u == utt:
            g = pd.DataFrame({"utterance": u, "frame": np.arange(n, dtype=np.int32), "phone": "AA"})
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


def test_frame_count_mismatch_names_the_utterance(expert, corpus, tmp_path):
    paths, labels = corpus
    n = n_frames(UTTS["100-7-0001"])
    bad = _relabel(labels, "100-7-0001", n + 3)
    out = tmp_path / "c"
    with pytest.raises(FrameCountMismatch, match=rf"100-7-0001.*{n} frames.*{n + 3}"):
        write_cache(expert, "hubert", paths, bad, out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("delta", [-1, 1])
def test_one_frame_difference_is_fixed_and_recorded(expert, corpus, tmp_path, delta):
    paths, labels = corpus
    utt = "101-3-0002"
    n = n_frames(UTTS[utt])
    lt = _relabel(labels, utt, n + delta)
    with pytest.warns(UserWarning, match="differed by one frame"):
        c = write_cache(expert, "hubert", paths, lt, tmp_path / "c", attention_utterances=[utt], progress=False)
    assert c.meta["frame_adjustments"] == {utt: -delta}
    c.verify(lt)
    h = c.layer("hidden", 1)[c.utterance_slice(utt)]
    assert h.shape[0] == n + delta
    if delta == 1:  # padded by repeating the model's last frame
        np.testing.assert_array_equal(h[-1], h[-2])
    assert c.attention(utt).shape[-1] == n + delta
    with pytest.raises(FrameCountMismatch):
        write_cache(expert, "hubert", paths, lt, tmp_path / "d", progress=False, frame_tolerance=0)


def test_interrupted_write_leaves_nothing(expert, corpus, tmp_path, monkeypatch):
    paths, labels = corpus
    out = tmp_path / "c"
    calls = {"n": 0}
    real = cache_mod.run_upstream

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed mid-way")
        return real(*a, **k)

    monkeypatch.setattr(cache_mod, "run_upstream", flaky)
    with pytest.raises(RuntimeError, match="killed mid-way"):
        write_cache(expert, "hubert", paths, labels, out, progress=False)
    assert calls["n"] == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(CacheError, match="meta.json missing"):
        ActivationCache(out)


def test_rewrite_replaces_and_failed_rewrite_keeps_old(expert, corpus, tmp_path, monkeypatch):
    paths, labels = corpus
    out = tmp_path / "c"
    stale = tmp_path / "c.tmp-999999999"  # left by a killed writer whose pid is gone
    stale.mkdir()
    (stale / "ffn_00.npy").write_bytes(b"partial")
    first = write_cache(expert, "hubert", paths, labels, out, progress=False)
    assert not stale.exists()
    stamp = first.meta["created"]
    monkeypatch.setattr(cache_mod, "run_upstream", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        write_cache(expert, "hubert", paths, labels, out, progress=False)
    again = ActivationCache(out)  # the previous complete cache is untouched
    assert again.meta["created"] == stamp
    again.verify(labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_bad_inputs_fail_before_any_work(expert, corpus, tmp_path):
    paths, labels = corpus
    with pytest.raises(KeyError, match="no audio"):
        write_cache(expert, "hubert", {k: v for k, v in paths.items() if k != "100-7-0001"}, labels, tmp_path / "c", progress=False)
    with pytest.raises(KeyError, match="attention_utterances"):
        write_cache(expert, "hubert", paths, labels, tmp_path / "c", attention_utterances=["nope"], progress=False)
    shuffled = labels.iloc[np.r_[0:5, 60:65, 5:60]]
    with pytest.raises(ValueError, match="contiguous|frames must be"):
        write_cache(expert, "hubert", paths, shuffled, tmp_path / "c", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_reader_checks_file_shape(expert, corpus, tmp_path):
    paths, labels = corpus
    c = write_cache(expert, "hubert", paths, labels, tmp_path / "c", progress=False)
    meta = json.loads((c.path / "meta.json").read_text())
    meta["n_frames"] += 1
    (c.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="rows"):
        ActivationCache(c.path).layer("ffn", 0)
    assert os.path.isfile(c.path / "index.parquet")


def test_10ms_mockingjay_is_cached_on_the_20ms_grid(corpus, tmp_path, monkeypatch):
    from s3prl.upstream.mockingjay import builder
    from s3prl.upstream.mockingjay.hubconf import mockingjay_local

    monkeypatch.setattr(builder, "get_sinusoid_table", _fast_sinusoid_table)
    e = mockingjay_local(save_mockingjay_10ms(tmp_path / "mj.pt")).eval()
    paths, labels = corpus
    c = write_cache(e, None, paths, labels, tmp_path / "c", attention_utterances=["100-7-0000"], progress=False)
    assert c.meta["family"] == "mockingjay" and c.meta["grid_step"] == 2 and c.meta["frame_adjustments"] == {}
    c.verify(labels)
    utt = "100-7-0000"
    wav = torch.from_numpy(sf.read(paths[utt], dtype="float32")[0])
    ua = to_grid(run_upstream(e, [wav], "mockingjay", attention=True)[0], 2)
    sl = c.utterance_slice(utt)
    np.testing.assert_array_equal(c.layer("hidden", 2)[sl], ua.hidden[2].half().numpy())
    np.testing.assert_array_equal(c.layer("ffn", 0)[sl], ua.ffn[0].half().numpy())
    a = c.attention(utt).astype(np.float32)
    assert a.shape == (2, 4, ua.n_frames, ua.n_frames)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=3e-3)
