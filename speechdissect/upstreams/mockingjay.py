"""``mini_mockingjay``: a small Mockingjay pretrained here, saved for s3prl's ``mockingjay_local``.

Model: s3prl's :class:`s3prl.upstream.mockingjay.model.TransformerModel` plus
its :class:`TransformerSpecPredictionHead` (the head is saved as ``SpecHead``
but not used by the upstream). Input features are computed by s3prl's own
on-the-fly extracter (``s3prl.upstream.baseline.extracter.get_extracter``)
from the ``audio`` settings stored in the checkpoint: Kaldi log-mel fbank,
80 bins, 25 ms window, 10 ms shift, no dither, per-utterance CMVN. Masking is
s3prl's own Masked Acoustic Model data processing
(``s3prl.pretrain.mockingjay.task.generate_masked_acoustic_model_data``:
15 % of frames in spans of 7, of which 80 % zeroed / 10 % random / 10 % kept)
and the loss is L1 on the masked frames, as s3prl's Mockingjay pretraining.

Frame rate: 10 ms (stride 160 samples). s3prl's mockingjay expert hard-codes
``get_downsample_rates() == 160`` and neither the upstream builder nor
``TransformerModel`` stacks frames at inference (``downsample_rate`` is not an
option of this s3prl version), so a 20 ms Mockingjay would break
``S3PRLUpstream`` (length check) and the downstream runner's Featurizer.
With ``snip_edges`` framing, 10 ms frame ``2 t`` covers samples
``[320 t, 320 t + 400)`` -- exactly 20 ms grid frame ``t``; so
``hidden[:, ::2]`` is the shared grid (``describe(model)["grid_step"] == 2``),
with ``ceil(n10 / 2) == n20`` frames.

Checkpoint format (``mockingjay_local``; see ``s3prl/upstream/mockingjay/builder.py``)::

    {"Transformer": TransformerModel.state_dict(),
     "SpecHead": TransformerSpecPredictionHead.state_dict(),
     "Config": {"runner": {...}},             # must exist: the builder reads it first
     "Upstream_Config": {"transformer": {...}, "task": {...}, "audio": {...}},
     "speechdissect": {...}}                  # provenance

``mockingjay_local(ckpt, options_config=None)`` needs nothing else: the
feature-extractor settings travel in ``Upstream_Config["audio"]``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import frames
from .features import load_wavs
from .hubert import _plain, _progress, deterministic, fixed_rng, lr_lambda, split_heldout
from .registry import save_checkpoint

__all__ = [
    "DEFAULT_MOCKINGJAY_TRANSFORMER",
    "DEFAULT_MOCKINGJAY_TASK",
    "DEFAULT_MOCKINGJAY_AUDIO",
    "DEFAULT_MOCKINGJAY_TRAIN",
    "build_mockingjay",
    "mockingjay_checkpoint",
    "mockingjay_features",
    "encoder_hidden_states",
    "pretrain_mockingjay",
    "resolve_mockingjay_config",
]

#: s3prl TransformerConfig fields
DEFAULT_MOCKINGJAY_TRANSFORMER: dict = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "share_layer": False,
    "pre_layer_norm": False,
}

#: s3prl Masked Acoustic Model task settings (pretrain/mockingjay/task.py)
DEFAULT_MOCKINGJAY_TASK: dict = {
    "loss": "L1",
    "sequence_length": 1500,  # inference chunk length in frames (s3prl default)
    "position_encoding_size": 256,  # must equal hidden_size
    "mask_proportion": 0.15,
    "mask_consecutive_min": 7,
    "mask_consecutive_max": 7,
    "mask_allow_overlap": True,
    "mask_bucket_ratio": 1.5,
    "mask_frequency": 0.0,
    "noise_proportion": 0.0,
}

#: s3prl on-the-fly extracter settings (upstream/baseline/extracter.py)
DEFAULT_MOCKINGJAY_AUDIO: dict = {
    "kaldi": {
        "feat_type": "fbank",
        "fbank": {
            "frame_length": 25.0,
            "frame_shift": 10.0,
            "num_mel_bins": 80,
            "use_log_fbank": True,
            "dither": 0.0,
            "snip_edges": True,
        },
    },
    "delta": {"order": 0},
    "cmvn": {"use_cmvn": True},
}

DEFAULT_MOCKINGJAY_TRAIN: dict = {
    "steps": 400,  # ~3 min on one idle core (~0.4 s per 8 s batch)
    "max_minutes": 15.0,  # wall-clock safety cap only
    "batch_seconds": 8.0,
    "crop_seconds": 2.0,
    "lr": 5e-4,
    "warmup_fraction": 0.07,
    "weight_decay": 0.01,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "clip_norm": 1.0,
    "heldout_fraction": 0.1,
    "max_heldout": 32,
    "eval_every": 0,
    "threads": 1,  # see DEFAULT_HUBERT_TRAIN["threads"]
}


def resolve_mockingjay_config(config: dict | None) -> dict:
    """Merge ``config`` over the defaults: ``{"transformer", "task", "audio", **train}``."""
    config = copy.deepcopy(config or {})
    tr = {**DEFAULT_MOCKINGJAY_TRANSFORMER, **config.pop("transformer", {})}
    task = {**DEFAULT_MOCKINGJAY_TASK, **config.pop("task", {})}
    audio = copy.deepcopy(config.pop("audio", DEFAULT_MOCKINGJAY_AUDIO))
    unknown = set(config) - set(DEFAULT_MOCKINGJAY_TRAIN)
    if unknown:
        raise ValueError(
            f"unknown mini_mockingjay training keys {sorted(unknown)}; known: {sorted(DEFAULT_MOCKINGJAY_TRAIN)} "
            "+ transformer, task, audio"
        )
    task["position_encoding_size"] = tr["hidden_size"]
    if "kaldi" not in audio:
        raise ValueError("mini_mockingjay needs Kaldi-style 'audio' settings (s3prl get_extracter)")
    shift = float(audio["kaldi"].get(audio["kaldi"].get("feat_type", "fbank"), {}).get("frame_shift", 10.0))
    if shift != 10.0:
        raise ValueError(
            "frame_shift must be 10 ms: s3prl's mockingjay expert reports a fixed stride of 160 samples, "
            "and S3PRLUpstream / the downstream runner rely on it"
        )
    return {"transformer": tr, "task": task, "audio": audio, **DEFAULT_MOCKINGJAY_TRAIN, **config}


def _extracter(audio_cfg: dict):
    from s3prl.upstream.baseline.extracter import get_extracter

    extracter, inp_dim, _ = get_extracter(copy.deepcopy(audio_cfg))
    return extracter, inp_dim


@torch.no_grad()
def mockingjay_features(wavs: Sequence[np.ndarray], audio_cfg: dict) -> list[torch.Tensor]:
    """Input features ``[T, D]`` per waveform, computed by s3prl's extracter exactly as the upstream does."""
    extracter, _ = _extracter(audio_cfg)
    return [extracter(torch.from_numpy(np.asarray(w, dtype=np.float32))) for w in wavs]


def build_mockingjay(transformer_cfg: dict, input_dim: int):
    """(TransformerModel, TransformerSpecPredictionHead), initialised as s3prl's pretraining does."""
    from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel, TransformerSpecPredictionHead

    cfg = TransformerConfig(transformer_cfg)
    model = TransformerModel(cfg, input_dim)
    head = TransformerSpecPredictionHead(cfg, input_dim)
    head.apply(model.init_Transformer_weights)
    return model, head


def mockingjay_checkpoint(model, head, cfg: dict, extra: dict | None = None) -> dict:
    """The ``mockingjay_local`` checkpoint dict (plain values only)."""
    return {
        "Transformer": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "SpecHead": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
        "Config": {"runner": _plain({k: v for k, v in cfg.items() if k not in ("transformer", "task", "audio")})},
        "Upstream_Config": _plain({"transformer": cfg["transformer"], "task": cfg["task"], "audio": cfg["audio"]}),
        "speechdissect": _plain(extra or {}),
    }


@torch.no_grad()
def encoder_hidden_states(model, feat: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states of a bare ``TransformerModel`` as s3prl's mockingjay expert returns them.

    ``feat``: ``[T, D]`` features (see :func:`mockingjay_features`). Returns
    ``n_layers + 1`` tensors ``[1, T, H]`` (input representation, then every
    layer's output). Assumes ``T <= sequence_length`` (no chunking).
    """
    from s3prl.upstream.mockingjay.builder import position_encoding

    x = feat.unsqueeze(0).float()
    pos = position_encoding(x.size(1), model.config.hidden_size).to(x.device).expand(1, -1, -1)
    mask = torch.ones(1, x.size(1), device=x.device)
    hs = model(x, pos, mask, output_all_encoded_layers=True)
    return list(hs)


def _crop_frames(rng: np.random.Generator, feats: Sequence[torch.Tensor], batch_size: int, crop_frames: int) -> torch.Tensor:
    idx = rng.choice(len(feats), size=batch_size, replace=len(feats) < batch_size)
    n = min(crop_frames, min(feats[i].shape[0] for i in idx))
    out = []
    for i in idx:
        s = int(rng.integers(0, feats[i].shape[0] - n + 1))
        out.append(feats[i][s: s + n])
    return torch.stack(out)


def _mam_loss(model, head, spec: torch.Tensor, task_cfg: dict, device):
    """(L1 loss on masked frames, zero-prediction L1 on the same frames, n masked values) for a batch."""
    from s3prl.pretrain.mockingjay.task import generate_masked_acoustic_model_data

    spec_masked, pos_enc, mask_label, attn_mask, spec_target = generate_masked_acoustic_model_data(
        [spec.clone()], task_cfg
    )
    spec_masked, mask_label, attn_mask, spec_target = (
        t.to(device) for t in (spec_masked, mask_label, attn_mask, spec_target)
    )
    pos_enc = pos_enc.to(device).expand(spec_masked.size(0), *pos_enc.size())
    hidden = model(spec_masked, pos_enc, attn_mask, output_all_encoded_layers=False)
    pred, _ = head(hidden)
    target = spec_target.masked_select(mask_label)
    loss = torch.nn.functional.l1_loss(pred.masked_select(mask_label), target)
    return loss, float(target.abs().mean()), int(mask_label.sum())


@torch.no_grad()
def _evaluate(model, head, feats, task_cfg, seed, device) -> dict:
    was = model.training
    model.eval()
    head.eval()
    tot = zero = n = 0.0
    with fixed_rng(seed):
        for f in feats:
            loss, zl, k = _mam_loss(model, head, f[:3000].unsqueeze(0), task_cfg, device)
            tot += float(loss) * k
            zero += zl * k
            n += k
    model.train(was)
    head.train(was)
    return {"l1": tot / max(1, n), "zero_l1": zero / max(1, n), "n_masked_values": int(n)}


def pretrain_mockingjay(
    wav_paths: Sequence[str | Path],
    out_ckpt: str | Path,
    config: dict | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Pretrain ``mini_mockingjay`` (masked reconstruction of log-mel frames) and save a ``mockingjay_local`` checkpoint.

    Parameters are as :func:`speechdissect.upstreams.hubert.pretrain_hubert`;
    ``config`` overrides :data:`DEFAULT_MOCKINGJAY_TRAIN` (flat) plus optional
    ``transformer``, ``task`` and ``audio`` sub-dicts.

    Returns
    -------
    dict
        ``step``/``loss`` per step (training L1 on masked frames), ``start`` /
        ``end`` held-out ``l1`` of the untrained / trained model on identical
        masks, with ``zero_l1`` (L1 of predicting 0 = the CMVN mean), sizes,
        timings, ``stopped_by``, config.
    """
    cfg = resolve_mockingjay_config(config)
    paths = [str(p) for p in wav_paths]
    if len(paths) < 2:
        raise ValueError("pretrain_mockingjay needs at least 2 audio files (one is held out)")
    t0 = time.time()
    wavs = load_wavs(paths)
    with deterministic(seed, cfg["threads"]):
        feats = mockingjay_features(wavs, cfg["audio"])
    input_dim = feats[0].shape[1]
    train_idx, held_idx = split_heldout(len(wavs), cfg["heldout_fraction"], cfg["max_heldout"], seed)
    train_f = [feats[i] for i in train_idx]
    held_f = [feats[i] for i in held_idx]
    log: dict = {
        "kind": "mini_mockingjay",
        "seed": seed,
        "config": _plain(cfg),
        "frame_shift_ms": 10.0,
        "n_train_utterances": len(train_f),
        "n_heldout_utterances": len(held_f),
        "train_audio_seconds": float(sum(len(wavs[i]) for i in train_idx) / frames.SAMPLE_RATE),
        "heldout": [paths[i] for i in held_idx],
        "feature_seconds": time.time() - t0,
        "step": [],
        "loss": [],
        "lr": [],
        "eval": [],
    }
    eval_seed = seed + 104729
    steps = int(cfg["steps"])
    crop_frames = int(round(cfg["crop_seconds"] * 100))
    bsz = max(1, int(round(cfg["batch_seconds"] / cfg["crop_seconds"])))
    with deterministic(seed, cfg["threads"]):
        model, head = build_mockingjay(cfg["transformer"], input_dim)
        model.to(device)
        head.to(device)
        params = list(model.parameters()) + list(head.parameters())
        log["n_params"] = sum(p.numel() for p in model.parameters())
        start = _evaluate(model, head, held_f, cfg["task"], eval_seed, device)
        log["start"] = start
        log["eval"].append({"step": 0, **start})
        opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"], weight_decay=cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, cfg["warmup_fraction"]))
        rng = np.random.default_rng(seed)
        model.train()
        head.train()
        t_train = time.time()
        log["stopped_by"] = "steps"
        bar = _progress(range(steps), progress, "pretrain mini_mockingjay", steps)
        for step in bar:
            if (time.time() - t_train) / 60.0 > cfg["max_minutes"]:
                log["stopped_by"] = "max_minutes"
                break
            spec = _crop_frames(rng, train_f, bsz, crop_frames)
            loss, _, _ = _mam_loss(model, head, spec, cfg["task"], device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg["clip_norm"])
            opt.step()
            sched.step()
            log["step"].append(step + 1)
            log["loss"].append(loss.item())
            log["lr"].append(float(opt.param_groups[0]["lr"]))
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(l1=f"{loss.item():.3f}")
            if cfg["eval_every"] and (step + 1) % cfg["eval_every"] == 0 and step + 1 < steps:
                log["eval"].append({"step": step + 1, **_evaluate(model, head, held_f, cfg["task"], eval_seed, device)})
        log["train_seconds"] = time.time() - t_train
        log["steps_done"] = len(log["step"])
        end = _evaluate(model, head, held_f, cfg["task"], eval_seed, device)
        log["end"] = end
        log["eval"].append({"step": log["steps_done"], **end})

    model.eval()
    head.eval()
    extra = {"kind": "mini_mockingjay", "seed": seed, "start": start, "end": end, "steps_done": log["steps_done"]}
    save_checkpoint(mockingjay_checkpoint(model.cpu(), head.cpu(), cfg, extra), out_ckpt)
    log["wall_seconds"] = time.time() - t0
    log["checkpoint"] = str(out_ckpt)
    return log
