"""Fine-tune a ``hubert_local`` checkpoint on frame phone labels, save it in the same format.

A linear frame classifier is put on the encoder output (the last hidden
state) and the model is trained end to end with cross-entropy on the 20 ms
grid; the classifier is dropped afterwards and the fine-tuned encoder is saved
as a ``hubert_local`` checkpoint (same ``model_cfg``, so a pruned checkpoint
with fewer layers stays pruned). The conv front-end is frozen by default
(``freeze_feature_extractor``), as in fairseq's HuBERT / wav2vec 2.0
fine-tuning recipes; set it to False to train literally everything.
HuBERT's pretraining-only parameters (``final_proj``, ``label_embs_concat``)
receive no gradient and are saved unchanged.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import frames
from .features import load_wavs
from .hubert import (
    _plain,
    _progress,
    crop_batch,
    deterministic,
    hubert_checkpoint,
    load_hubert_checkpoint,
    lr_lambda,
    split_heldout,
)
from .registry import save_checkpoint

__all__ = ["DEFAULT_FINETUNE", "finetune_hubert"]

DEFAULT_FINETUNE: dict = {
    "steps": 300,
    "max_minutes": 8.0,
    "batch_seconds": 8.0,
    "crop_seconds": 2.0,
    "lr": 2e-4,  # encoder
    "head_lr": 2e-3,  # linear classifier
    "warmup_fraction": 0.1,
    "weight_decay": 0.01,
    "clip_norm": 5.0,
    "freeze_feature_extractor": True,
    "mask_prob": 0.0,  # >0: HuBERT's time masking as augmentation during fine-tuning
    "heldout_fraction": 0.1,
    "max_heldout": 32,
    "threads": 1,  # see DEFAULT_HUBERT_TRAIN["threads"]
}


def _check_labels(paths, wavs, frame_labels) -> list[np.ndarray]:
    if len(frame_labels) != len(wavs):
        raise ValueError(f"{len(frame_labels)} label arrays for {len(wavs)} audio files")
    out = []
    for p, w, y in zip(paths, wavs, frame_labels):
        y = np.asarray(y, dtype=np.int64)
        n = frames.n_frames(len(w))
        if len(y) < n or len(y) > n + 2:
            raise ValueError(
                f"{p}: {len(y)} frame labels, the 20 ms grid has {n} frames for {len(w)} samples "
                "(labels must come from speechdissect.frames)"
            )
        out.append(y[:n])
    return out


@torch.no_grad()
def _frame_accuracy(model, head, wavs, labels, device) -> dict:
    was = model.training
    model.eval()
    head.eval()
    correct = total = 0
    for w, y in zip(wavs, labels):
        n = frames.n_frames(len(w))
        x = torch.from_numpy(w[: frames.HOP * (n - 1) + frames.RECEPTIVE_FIELD]).view(1, -1).to(device)
        pad = torch.zeros_like(x, dtype=torch.bool)
        h, _ = model.extract_features(x, padding_mask=pad, mask=False)
        pred = head(h[0, :n]).argmax(-1).cpu().numpy()
        keep = y[:n] >= 0
        correct += int((pred[keep] == y[:n][keep]).sum())
        total += int(keep.sum())
    model.train(was)
    head.train(was)
    return {"acc": correct / max(1, total), "n_frames": total}


def finetune_hubert(
    ckpt_in: str | Path,
    ckpt_out: str | Path,
    wav_paths: Sequence[str | Path],
    frame_labels: Sequence[np.ndarray],
    n_classes: int,
    config: dict | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Whole-model fine-tuning of a ``hubert_local`` checkpoint as a frame classifier.

    Parameters
    ----------
    ckpt_in, ckpt_out : ``hubert_local`` checkpoints (``ckpt_out`` written atomically).
    wav_paths : 16 kHz mono audio.
    frame_labels : one int array per file on the 20 ms grid
        (``speechdissect.frames.n_frames(len(wav))`` entries; negative = ignore).
    n_classes : number of label classes.
    config : overrides of :data:`DEFAULT_FINETUNE`.
    seed, device, progress : as in :func:`pretrain_hubert`.

    Returns
    -------
    dict
        ``step``/``loss``/``acc`` per step (training batches), ``start`` / ``end``
        held-out frame accuracy (``start`` = untrained classifier on the input
        encoder), ``majority`` (most frequent held-out label), sizes, timings,
        ``stopped_by``, config.
    """
    cfg = {**DEFAULT_FINETUNE, **copy.deepcopy(config or {})}
    unknown = set(cfg) - set(DEFAULT_FINETUNE)
    if unknown:
        raise ValueError(f"unknown fine-tuning keys {sorted(unknown)}; known: {sorted(DEFAULT_FINETUNE)}")
    paths = [str(p) for p in wav_paths]
    if len(paths) < 2:
        raise ValueError("finetune_hubert needs at least 2 audio files (one is held out)")
    t0 = time.time()
    wavs = load_wavs(paths)
    labels = _check_labels(paths, wavs, frame_labels)
    if max(int(y.max()) for y in labels) >= n_classes:
        raise ValueError(f"a frame label is >= n_classes = {n_classes}")
    train_idx, held_idx = split_heldout(len(wavs), cfg["heldout_fraction"], cfg["max_heldout"], seed)
    train_w, train_y = [wavs[i] for i in train_idx], [labels[i] for i in train_idx]
    held_w, held_y = [wavs[i] for i in held_idx], [labels[i] for i in held_idx]
    held_all = np.concatenate(held_y)
    held_all = held_all[held_all >= 0]
    majority = float(np.bincount(held_all, minlength=n_classes).max() / max(1, len(held_all)))

    model, model_cfg, task_cfg, n_clusters, parent = load_hubert_checkpoint(ckpt_in)
    if task_cfg.get("normalize"):
        raise NotImplementedError("finetune_hubert: checkpoints with task_cfg.normalize=True are not supported")
    log: dict = {
        "kind": "finetune_hubert",
        "seed": seed,
        "config": _plain(cfg),
        "ckpt_in": str(ckpt_in),
        "n_classes": n_classes,
        "n_train_utterances": len(train_w),
        "n_heldout_utterances": len(held_w),
        "majority": majority,
        "step": [],
        "loss": [],
        "acc": [],
        "lr": [],
    }
    steps = int(cfg["steps"])
    crop = int(cfg["crop_seconds"] * frames.SAMPLE_RATE)
    bsz = max(1, int(round(cfg["batch_seconds"] / cfg["crop_seconds"])))
    with deterministic(seed, cfg["threads"]):
        model.to(device)
        d_model = model.encoder.layers[0].fc1.in_features if len(model.encoder.layers) else model.encoder.embedding_dim
        head = torch.nn.Linear(d_model, n_classes).to(device)
        model.encoder.layerdrop = 0.0
        saved_grad_mult = model.feature_grad_mult
        if cfg["freeze_feature_extractor"]:
            model.feature_grad_mult = 0.0  # forward_features runs under no_grad
            for p in model.feature_extractor.parameters():
                p.requires_grad_(False)
        model.mask_prob = float(cfg["mask_prob"])
        start = _frame_accuracy(model, head, held_w, held_y, device)
        log["start"] = start
        enc_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(("final_proj", "label_embs"))]
        opt = torch.optim.AdamW(
            [{"params": enc_params, "lr": cfg["lr"]}, {"params": head.parameters(), "lr": cfg["head_lr"]}],
            weight_decay=cfg["weight_decay"],
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, cfg["warmup_fraction"]))
        rng = np.random.default_rng(seed)
        model.train()
        head.train()
        t_train = time.time()
        log["stopped_by"] = "steps"
        bar = _progress(range(steps), progress, "finetune hubert", steps)
        for step in bar:
            if (time.time() - t_train) / 60.0 > cfg["max_minutes"]:
                log["stopped_by"] = "max_minutes"
                break
            x, y = crop_batch(rng, train_w, train_y, bsz, crop)
            x, y = x.to(device), y.to(device)
            pad = torch.zeros_like(x, dtype=torch.bool)
            h, _ = model.extract_features(x, padding_mask=pad, mask=cfg["mask_prob"] > 0)
            n = min(h.size(1), y.size(1))
            logits = head(h[:, :n])
            target = y[:, :n].masked_fill(y[:, :n] < 0, -100)
            loss = F.cross_entropy(logits.reshape(-1, n_classes), target.reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(enc_params + list(head.parameters()), cfg["clip_norm"])
            opt.step()
            sched.step()
            keep = target >= 0
            acc = float((logits.argmax(-1)[keep] == target[keep]).float().mean()) if keep.any() else 0.0
            log["step"].append(step + 1)
            log["loss"].append(loss.item())
            log["acc"].append(acc)
            log["lr"].append(float(opt.param_groups[0]["lr"]))
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.3f}")
        log["train_seconds"] = time.time() - t_train
        log["steps_done"] = len(log["step"])
        end = _frame_accuracy(model, head, held_w, held_y, device)
        log["end"] = end
        model.feature_grad_mult = saved_grad_mult
        for p in model.parameters():
            p.requires_grad_(True)

    model.eval()
    extra = {
        "kind": "finetuned_hubert",
        "seed": seed,
        "finetuned_from": str(ckpt_in),
        "finetune": {"config": _plain(cfg), "n_classes": n_classes, "start": start, "end": end, "steps_done": log["steps_done"]},
        "parent": parent,
    }
    save_checkpoint(hubert_checkpoint(model.cpu(), model_cfg, task_cfg, n_clusters, extra), ckpt_out)
    log["wall_seconds"] = time.time() - t0
    log["checkpoint"] = str(ckpt_out)
    return log
