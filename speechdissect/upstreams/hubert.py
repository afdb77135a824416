"""``mini_hubert``: a small HuBERT pretrained here, saved for s3prl's ``hubert_local``.

The model is s3prl's own port of fairseq's HuBERT
(:class:`s3prl.upstream.hubert.hubert_model.HubertModel`), small but with the
standard conv front-end kernels/strides (receptive field 400 samples, hop 320),
so its output frames are exactly the 20 ms grid of :mod:`speechdissect.frames`.

Training is HuBERT's first iteration: k-means (scikit-learn MiniBatchKMeans)
clusters of MFCC + deltas computed on that same grid are the targets; spans of
input frames are replaced by the mask embedding and the model's own forward
(``HubertModel.forward(source, target_list)``, fairseq's logits path: cosine
similarity of ``final_proj(x)`` with ``label_embs_concat``, temperature
``logit_temp``) gives the logits; the loss is fairseq's ``hubert`` criterion:
cross-entropy on masked frames + ``pred_nomask_weight`` x cross-entropy on
unmasked frames + 10 x the feature penalty. HuBERT Base uses
``pred_nomask_weight=0``; here it defaults to 1, because with a budget of a few
hundred updates the masked-only loss collapses the encoder output to a
constant (it fits the cluster prior and never leaves it), while the unmasked
term keeps the representation informative and masked accuracy then rises.
Accuracy is always reported on masked frames.

Checkpoint format (what ``hubert_local`` loads, see
``s3prl/upstream/hubert/convert.py``): a dict with

* ``task_cfg``: dict of :class:`HubertPretrainingConfig` fields
* ``model_cfg``: dict of :class:`HubertConfig` fields
* ``model_weight``: ``HubertModel.state_dict()`` (incl. ``final_proj`` and ``label_embs_concat``)
* ``dictionaries_symbols``: ``[[ "0", "1", ..., "K-1" ]]`` (one label set: the clusters)
* ``speechdissect``: provenance (kind, seed, config, k-means centres, evaluation)

s3prl rebuilds the configs with ``merge_with_parent(dataclass, dict)``, which
requires plain dicts (``type(cfg) == dict``), so dicts are what is stored;
every value is a tensor/str/number/list, so ``torch.load(weights_only=True)`` works.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import frames
from .features import assign_clusters, fit_kmeans, load_wavs, mfcc_grid, stack_context
from .registry import check_local_checkpoint, save_checkpoint

__all__ = [
    "DEFAULT_HUBERT_MODEL",
    "DEFAULT_HUBERT_TASK",
    "DEFAULT_HUBERT_TRAIN",
    "build_hubert",
    "hubert_checkpoint",
    "load_hubert_checkpoint",
    "encoder_hidden_states",
    "pretrain_hubert",
    "resolve_hubert_config",
]

#: HubertConfig fields of mini_hubert (anything else keeps s3prl's default)
DEFAULT_HUBERT_MODEL: dict = {
    "label_rate": 50.0,  # targets on the 20 ms grid: feat2tar_ratio = 1
    "extractor_mode": "default",
    "encoder_layers": 4,
    "encoder_embed_dim": 256,
    "encoder_ffn_embed_dim": 1024,
    "encoder_attention_heads": 4,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.1,
    "dropout_features": 0.1,
    "final_dim": 128,
    "untie_final_proj": False,
    "layer_norm_first": False,
    # standard kernels/strides (400-sample receptive field, 320 hop); 128 channels
    # instead of 512 (the conv front-end is half the compute even at 128)
    "conv_feature_layers": "[(128,10,5)] + [(128,3,2)] * 4 + [(128,2,2)] * 2",
    "conv_bias": False,
    "logit_temp": 0.1,
    "target_glu": False,
    "feature_grad_mult": 0.1,
    # HuBERT Base masks spans of 10 frames with p=0.8; with a few hundred updates,
    # spans of 5 with p=0.5 learn ~2x the masked accuracy (measured: 21 % vs 12 %
    # after 300 steps on the synthetic corpus), so the mini model uses them.
    "mask_length": 5,
    "mask_prob": 0.5,
    "mask_selection": "static",
    "mask_other": 0.0,
    "no_mask_overlap": False,
    "mask_min_space": 1,
    "mask_channel_length": 10,
    "mask_channel_prob": 0.0,
    "conv_pos": 64,
    "conv_pos_groups": 16,
    "skip_masked": False,
    "skip_nomask": False,  # unmasked logits are needed for pred_nomask_weight > 0
}

#: HubertPretrainingConfig fields
DEFAULT_HUBERT_TASK: dict = {
    "label_rate": 50.0,
    "sample_rate": 16000,
    "normalize": False,  # as HuBERT Base: the expert feeds raw waves
    "enable_padding": False,
    "max_sample_size": None,
    "min_sample_size": None,
    "random_crop": True,
    "pad_audio": False,
}

#: training budget and targets
DEFAULT_HUBERT_TRAIN: dict = {
    "steps": 500,  # ~3 min on one idle core (~0.35 s per 6 s batch)
    "max_minutes": 15.0,  # wall-clock safety cap only; a run stopped by it is not step-reproducible
    "batch_seconds": 6.0,  # audio per step
    "crop_seconds": 2.0,  # utterances are cropped (on the 20 ms grid) to at most this
    "lr": 1e-3,
    "warmup_fraction": 0.1,
    "weight_decay": 0.01,
    "betas": [0.9, 0.98],
    "eps": 1e-6,
    "clip_norm": 10.0,
    "features_pen_weight": 10.0,
    # fairseq's hubert criterion: pred_masked_weight * CE(masked) + pred_nomask_weight * CE(unmasked).
    # HuBERT Base uses 0 for unmasked frames; at this tiny budget the masked-only loss
    # collapses the encoder to a constant (it learns the cluster prior and stops), while
    # predicting the unmasked frames too keeps it informative and masked accuracy rises.
    "pred_masked_weight": 1.0,
    "pred_nomask_weight": 1.0,
    "n_clusters": 50,
    "n_mfcc": 13,
    # k-means targets of MFCC frames stacked with this many neighbours on each side (0: single frames)
    "target_context": 0,
    "kmeans_max_frames": 200_000,
    "heldout_fraction": 0.1,
    "max_heldout": 32,
    "eval_every": 0,  # 0: evaluate only before and after training
    # torch / BLAS threads for the run (None: leave as is). 1 is the default: on a
    # shared 2-core machine, OpenMP spin-waiting makes 2 threads several times
    # slower than 1 whenever other jobs run; a Snakemake rule passes its `threads`.
    "threads": 1,
    # fairseq/s3prl initialise the cluster embeddings U(0, 1): all K rows point the same
    # way (pairwise cosine ~0.75), and with cosine logits at temperature 0.1 a tiny run
    # spends its whole budget separating them. "normal" (N(0, 1), near-orthogonal rows)
    # learns in a few hundred steps; "uniform" keeps fairseq's init.
    "label_embs_init": "normal",
    # HuBERT's second iteration: {steps, layer, n_clusters} (None: one iteration on MFCC clusters)
    "iteration2": None,
}


#: bounds of a conv_feature_layers string (the standard one is 7 layers, ~60 characters)
_CONV_MAX_CHARS = 2000
_CONV_MAX_LAYERS = 64


def parse_conv_feature_layers(text: str) -> list[tuple[int, int, int]]:
    """The ``(channels, kernel, stride)`` conv layers of a ``conv_feature_layers`` string, without ``eval``.

    s3prl (as fairseq) ``eval``s this string when it builds a HuBERT / wav2vec 2.0 model, so a
    config value or a checkpoint's ``model_cfg`` could run code there; it is parsed here first,
    by a grammar of what those configs write: terms joined by ``+``, each a list of 3-tuples of
    positive integers, optionally repeated ``* n``, e.g.
    ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``.

    Raises
    ------
    ValueError
        Anything else (a name, a call, an attribute, a non-integer, a wrong shape), without
        evaluating any of it.
    """
    import ast

    def bad(why: str) -> ValueError:
        return ValueError(f"conv_feature_layers {str(text)[:200]!r}: {why}; expected terms like "
                          "[(channels, kernel, stride)] * n joined by +, e.g. "
                          "'[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2'")

    def positive_int(node) -> int:
        if not (isinstance(node, ast.Constant) and type(node.value) is int and node.value > 0):
            raise bad(f"{ast.dump(node)[:80]} is not a positive integer literal")
        return node.value

    def layers(node) -> list[tuple[int, int, int]]:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            out = layers(node.left) + layers(node.right)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            lst, n = (node.left, node.right) if isinstance(node.left, ast.List) else (node.right, node.left)
            if not isinstance(lst, ast.List):
                raise bad("only a [...] list may be repeated with *")
            count = positive_int(n)
            if count > _CONV_MAX_LAYERS:
                raise bad(f"repeat count {count} > {_CONV_MAX_LAYERS}")
            out = layers(lst) * count
        elif isinstance(node, ast.List):
            out = []
            for item in node.elts:
                if not (isinstance(item, ast.Tuple) and len(item.elts) == 3):
                    raise bad("each layer is a (channels, kernel, stride) tuple")
                out.append(tuple(positive_int(e) for e in item.elts))
        else:
            raise bad(f"{type(node).__name__} is not allowed")
        if len(out) > _CONV_MAX_LAYERS:
            raise bad(f"more than {_CONV_MAX_LAYERS} layers")
        return out

    if not isinstance(text, str) or len(text) > _CONV_MAX_CHARS:
        raise bad(f"not a string of at most {_CONV_MAX_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise bad(f"syntax error ({e.msg})") from None
    result = layers(tree.body)
    if not result:
        raise bad("no layers")
    return result


def resolve_hubert_config(config: dict | None) -> dict:
    """Merge ``config`` over the defaults: ``{"model": {...}, "task": {...}, **train}``.

    Unknown keys raise ``ValueError`` (a typo in the workflow config should not
    silently train the default model).
    """
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertPretrainingConfig

    config = copy.deepcopy(config or {})
    model = {**DEFAULT_HUBERT_MODEL, **config.pop("model", {})}
    task = {**DEFAULT_HUBERT_TASK, **config.pop("task", {})}
    unknown = set(config) - set(DEFAULT_HUBERT_TRAIN)
    if unknown:
        raise ValueError(f"unknown mini_hubert training keys {sorted(unknown)}; known: {sorted(DEFAULT_HUBERT_TRAIN)} + model, task")
    bad = set(model) - {f.name for f in dataclasses.fields(HubertConfig)}
    if bad:
        raise ValueError(f"unknown HubertConfig fields {sorted(bad)}")
    bad = set(task) - {f.name for f in dataclasses.fields(HubertPretrainingConfig)}
    if bad:
        raise ValueError(f"unknown HubertPretrainingConfig fields {sorted(bad)}")
    layers = parse_conv_feature_layers(model["conv_feature_layers"])  # before s3prl's own eval() sees it
    if [(k, s) for _, k, s in layers] != [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
        raise ValueError(
            "conv_feature_layers must keep the standard kernels/strides (10,5),(3,2)x4,(2,2)x2 "
            "so that frames sit on the 20 ms grid; only the channel counts may change"
        )
    if float(model["label_rate"]) != 50.0 or float(task["label_rate"]) != 50.0:
        raise ValueError("label_rate must be 50 (MFCC targets on the 20 ms grid)")
    return {"model": model, "task": task, **DEFAULT_HUBERT_TRAIN, **config}


def build_hubert(model_cfg: dict, task_cfg: dict, n_clusters: int):
    """A fresh s3prl ``HubertModel`` from plain-dict configs (one label set of ``n_clusters``)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    cfg = merge_with_parent(HubertConfig, dict(model_cfg))
    tcfg = merge_with_parent(HubertPretrainingConfig, dict(task_cfg))
    return HubertModel(cfg, tcfg, [_symbols(n_clusters)])


def _symbols(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def _plain(x):
    """Deep-convert to weights_only-safe plain values."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().clone()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x))
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def _full_dataclass_dict(dc_cls, cfg: dict) -> dict:
    """All dataclass fields, defaults filled in, as plain values (str for enum-like choices)."""
    from s3prl.upstream.utils import merge_with_parent

    obj = merge_with_parent(dc_cls, dict(cfg))
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if hasattr(v, "value") and not isinstance(v, (int, float, str, bool)):
            v = v.value
        out[f.name] = _plain(v)
    return out


def hubert_checkpoint(model, model_cfg: dict, task_cfg: dict, n_clusters: int, extra: dict | None = None) -> dict:
    """The ``hubert_local`` checkpoint dict for ``model`` (plain values only)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertPretrainingConfig

    return {
        "task_cfg": _full_dataclass_dict(HubertPretrainingConfig, task_cfg),
        "model_cfg": _full_dataclass_dict(HubertConfig, model_cfg),
        "model_weight": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "dictionaries_symbols": [_symbols(n_clusters)],
        "speechdissect": _plain(extra or {}),
    }


def load_hubert_checkpoint(path: str | Path):
    """``(HubertModel, model_cfg dict, task_cfg dict, n_clusters, extra)`` from a ``hubert_local`` checkpoint.

    Builds the model with s3prl's own loader (``load_converted_model``) so that
    what is trained further is exactly what s3prl would load.
    """
    from s3prl.upstream.hubert.convert import load_converted_model

    state = check_local_checkpoint(path)  # before s3prl's own torch.load / eval() see the file
    model, _ = load_converted_model(str(path))
    n_clusters = len(state["dictionaries_symbols"][0])
    return model, state["model_cfg"], state["task_cfg"], n_clusters, state.get("speechdissect", {})


@torch.no_grad()
def encoder_hidden_states(model, wav: torch.Tensor, normalize: bool = False) -> list[torch.Tensor]:
    """Hidden states of a bare ``HubertModel`` exactly as s3prl's hubert expert returns them.

    ``wav``: 1-D waveform. Returns ``n_layers + 1`` tensors ``[1, T, D]``: the
    input of every encoder layer, then the encoder output (the expert's hooks
    on ``encoder.layers[i]`` and ``encoder``), trimmed to the shortest.
    """
    if normalize:
        wav = F.layer_norm(wav, wav.shape)
    got = []
    handles = [
        layer.register_forward_hook(lambda m, i, o: got.append(i[0].transpose(0, 1)))
        for layer in model.encoder.layers
    ]
    handles.append(model.encoder.register_forward_hook(lambda m, i, o: got.append(o[0])))
    try:
        pad = torch.zeros(1, wav.numel(), dtype=torch.bool, device=wav.device)
        model.extract_features(wav.view(1, -1), padding_mask=pad, mask=None)
    finally:
        for h in handles:
            h.remove()
    n = min(h.size(1) for h in got)
    return [h[:, :n] for h in got]


# --------------------------------------------------------------------------- #
# Training helpers shared with finetune.py / mockingjay.py
# --------------------------------------------------------------------------- #
@contextmanager
def deterministic(seed: int, threads: int | None = None):
    """Seed python/numpy/torch, turn on deterministic algorithms and (optionally) cap threads for the block.

    Results are reproducible for a seed on the same machine and thread count
    (CPU reductions may round differently with another thread count).
    """
    from threadpoolctl import threadpool_limits

    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with threadpool_limits(limits=int(threads) if threads else None):
            yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


@contextmanager
def fixed_rng(seed: int):
    """Run a block with fixed python/numpy/torch RNG states, restoring the outer ones after.

    ``torch.manual_seed`` reseeds every CUDA generator too, so their states are saved and
    restored as well when CUDA is available (``fork_rng`` over every device).
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices):
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def split_heldout(n: int, fraction: float, max_heldout: int, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): a seeded random ``fraction`` (>= 1 when n >= 2) held out."""
    rng = np.random.default_rng(seed + 7919)
    order = rng.permutation(n)
    k = 0 if n < 2 else max(1, min(max_heldout, int(round(fraction * n))))
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


def lr_lambda(total: int, warmup_fraction: float):
    warm = max(1, int(round(total * warmup_fraction)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return f


def crop_batch(rng: np.random.Generator, wavs: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None, batch_size: int, crop_samples: int):
    """Pick ``batch_size`` utterances and crop them, on the 20 ms grid, to one common length.

    The common length ``L = 320 (n - 1) + 400`` (``n`` frames) is the crop length
    or the shortest chosen utterance; each crop starts at a multiple of 320
    samples, so crop frame ``t`` is utterance frame ``s + t`` and its label is
    ``labels[s + t]``. Returns ``(wave [B, L] float32, labels [B, n] int64 | None)``.
    """
    idx = rng.choice(len(wavs), size=batch_size, replace=len(wavs) < batch_size)
    shortest = min(len(wavs[i]) for i in idx)
    n = frames.n_frames(min(shortest, crop_samples))
    L = frames.HOP * (n - 1) + frames.RECEPTIVE_FIELD
    xs, ys = [], []
    for i in idx:
        nf = frames.n_frames(len(wavs[i]))
        s = int(rng.integers(0, nf - n + 1))
        xs.append(wavs[i][frames.HOP * s: frames.HOP * s + L])
        if labels is not None:
            ys.append(labels[i][s: s + n])
    x = torch.from_numpy(np.stack(xs).astype(np.float32))
    y = torch.from_numpy(np.stack(ys).astype(np.int64)) if labels is not None else None
    return x, y


def _progress(iterable, enabled: bool, desc: str, total: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, mininterval=2.0)


# --------------------------------------------------------------------------- #
# Masked prediction
# --------------------------------------------------------------------------- #
def _masked_prediction(model, wave: torch.Tensor, targets: torch.Tensor, pen_weight: float, w_m: float = 1.0, w_u: float = 0.0):
    """(loss, masked CE, n_correct masked, n_masked) of HuBERT's masked prediction for a cropped batch.

    ``HubertModel.forward`` returns logits ``(S, 1 + K)`` whose column 0 is the
    positive (fairseq's NCE layout), so the target of every row is 0.
    """
    pad = torch.zeros(wave.shape, dtype=torch.bool, device=wave.device)
    out = model(wave, target_list=[targets], padding_mask=pad, mask=True, features_only=False)
    logits = out["logit_m_list"][0].float()
    zeros = torch.zeros(logits.size(0), dtype=torch.long, device=logits.device)
    ce = F.cross_entropy(logits, zeros)
    loss = w_m * ce + pen_weight * out["features_pen"]
    lu = out["logit_u_list"][0]
    if w_u > 0 and lu is not None and lu.size(0) > 0:
        lu = lu.float()
        loss = loss + w_u * F.cross_entropy(lu, torch.zeros(lu.size(0), dtype=torch.long, device=lu.device))
    correct = int((logits.argmax(-1) == 0).sum())
    return loss, ce.detach(), correct, logits.size(0)


@torch.no_grad()
def _evaluate(model, wavs, labels, pen_weight: float, seed: int, device) -> dict:
    """Masked-prediction accuracy and CE on whole held-out utterances, fixed masks (eval mode)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    ce_sum = 0.0
    with fixed_rng(seed):
        for w, y in zip(wavs, labels):
            n = frames.n_frames(len(w))
            x = torch.from_numpy(w[: frames.HOP * (n - 1) + frames.RECEPTIVE_FIELD]).view(1, -1).to(device)
            t = torch.from_numpy(y[:n]).view(1, -1).to(device)
            _, ce, c, s = _masked_prediction(model, x, t, pen_weight)
            correct += c
            total += s
            ce_sum += float(ce) * s
    model.train(was_training)
    return {"acc": correct / max(1, total), "loss": ce_sum / max(1, total), "n_masked": total}


def pretrain_hubert(
    wav_paths: Sequence[str | Path],
    out_ckpt: str | Path,
    config: dict | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Pretrain ``mini_hubert`` on ``wav_paths`` and save a ``hubert_local`` checkpoint.

    Parameters
    ----------
    wav_paths : 16 kHz mono audio files (a seeded ``heldout_fraction`` of them,
        at most ``max_heldout``, is kept out of k-means and training for evaluation).
    out_ckpt : checkpoint path, written atomically.
    config : overrides of :data:`DEFAULT_HUBERT_TRAIN` (flat) plus optional
        ``model`` (HubertConfig fields) and ``task`` (HubertPretrainingConfig
        fields) sub-dicts; see :func:`resolve_hubert_config`. With
        ``iteration2: {steps, layer, n_clusters}`` a second HuBERT iteration
        follows the first: k-means of the first iteration's hidden state
        ``layer`` become the targets, and training goes on from the first
        iteration's weights (new cluster embeddings) for ``steps`` more updates.
    seed : every random choice (init, k-means, masks, batches, held-out split).
    device : torch device.
    progress : tqdm progress bar.

    Returns
    -------
    dict
        Training log: ``step``/``loss``/``acc`` per step (training batches),
        ``start``/``end`` held-out masked-prediction ``acc`` and ``loss`` (CE) of
        the untrained and the trained model on the same masks, ``chance``
        (1 / K), ``majority`` (most frequent cluster on held-out frames),
        ``stopped_by`` (``steps`` or ``max_minutes``), sizes, timings, config;
        ``iterations``: the same figures per iteration.
    """
    cfg = resolve_hubert_config(config)
    paths = [str(p) for p in wav_paths]
    if len(paths) < 2:
        raise ValueError("pretrain_hubert needs at least 2 audio files (one is held out)")
    it2 = cfg.get("iteration2") or None
    if it2 is not None:
        unknown = set(it2) - {"steps", "layer", "n_clusters"}
        if unknown or "steps" not in it2 or "layer" not in it2:
            raise ValueError(f"config key train.iteration2: needs steps and layer (and optionally n_clusters), got {sorted(it2)}")
        if not 0 <= int(it2["layer"]) <= int(cfg["model"]["encoder_layers"]):
            raise ValueError(f"config key train.iteration2.layer: {it2['layer']} is not a hidden state 0..{cfg['model']['encoder_layers']}")
    t0 = time.time()
    wavs = load_wavs(paths)
    train_idx, held_idx = split_heldout(len(wavs), cfg["heldout_fraction"], cfg["max_heldout"], seed)

    with deterministic(seed, cfg["threads"]):
        feats = [stack_context(mfcc_grid(w, n_mfcc=cfg["n_mfcc"]), int(cfg["target_context"])) for w in wavs]
        km = fit_kmeans([feats[i] for i in train_idx], cfg["n_clusters"], seed, max_frames=cfg["kmeans_max_frames"])
        labels = [assign_clusters(km, f) for f in feats]
    t_kmeans = time.time() - t0

    train_w = [wavs[i] for i in train_idx]
    held_w = [wavs[i] for i in held_idx]
    log: dict = {
        "kind": "mini_hubert",
        "seed": seed,
        "config": _plain(cfg),
        "n_train_utterances": len(train_w),
        "n_heldout_utterances": len(held_w),
        "train_audio_seconds": float(sum(map(len, train_w)) / frames.SAMPLE_RATE),
        "heldout": [paths[i] for i in held_idx],
        "kmeans_inertia": float(km["kmeans"].inertia_),
        "kmeans_seconds": t_kmeans,
        "step": [],
        "loss": [],
        "acc": [],
        "lr": [],
        "eval": [],
        "iterations": [],
    }
    with deterministic(seed, cfg["threads"]):
        model = _fresh_model(cfg, cfg["n_clusters"], device)
        log["n_params"] = sum(p.numel() for p in model.parameters())
        _train_iteration(model, train_w, [labels[i] for i in train_idx], held_w, [labels[i] for i in held_idx],
                         cfg["n_clusters"], int(cfg["steps"]), cfg, seed, device, progress, log, "mini_hubert")
    n_clusters, targets = cfg["n_clusters"], {"kind": "mfcc", "kmeans": km}
    if it2 is not None:
        t1 = time.time()
        layer, n_clusters = int(it2["layer"]), int(it2.get("n_clusters", cfg["n_clusters"]))
        with deterministic(seed + 1, cfg["threads"]):
            model.eval()
            hidden = [encoder_hidden_states(model, torch.from_numpy(w).to(device), cfg["task"]["normalize"])[layer][0].cpu().numpy()
                      for w in wavs]
            km2 = fit_kmeans([hidden[i] for i in train_idx], n_clusters, seed + 1, max_frames=cfg["kmeans_max_frames"])
            labels2 = [assign_clusters(km2, h) for h in hidden]
            model = _fresh_model(cfg, n_clusters, device, init_from=model)
        log["iteration2_kmeans_seconds"] = time.time() - t1
        with deterministic(seed + 1, cfg["threads"]):
            _train_iteration(model, train_w, [labels2[i] for i in train_idx], held_w, [labels2[i] for i in held_idx],
                             n_clusters, int(it2["steps"]), cfg, seed + 1, device, progress, log, "mini_hubert iteration 2")
        targets = {"kind": f"hidden state {layer} of iteration 1", "kmeans": km2}
    last = log["iterations"][-1]
    log.update(n_clusters=n_clusters, chance=1.0 / n_clusters, majority=last["majority"], start=log["iterations"][0]["start"],
               end=last["end"], steps_done=len(log["step"]), train_seconds=sum(i["train_seconds"] for i in log["iterations"]),
               stopped_by="max_minutes" if any(i["stopped_by"] == "max_minutes" for i in log["iterations"]) else "steps")

    model.eval()
    extra = {
        "kind": "mini_hubert",
        "seed": seed,
        "config": _plain(cfg),
        "mfcc": {"n_mfcc": cfg["n_mfcc"], "deltas": True, "frame_length_ms": 25.0, "frame_shift_ms": 20.0,
                 "context": int(cfg["target_context"])},
        "targets": targets["kind"],
        "kmeans": {
            "centers": torch.from_numpy(np.asarray(targets["kmeans"]["kmeans"].cluster_centers_, dtype=np.float32)),
            "mean": torch.from_numpy(np.asarray(targets["kmeans"]["mean"], dtype=np.float32)),
            "std": torch.from_numpy(np.asarray(targets["kmeans"]["std"], dtype=np.float32)),
        },
        "start": log["start"],
        "end": log["end"],
        "steps_done": log["steps_done"],
    }
    save_checkpoint(hubert_checkpoint(model.cpu(), cfg["model"], cfg["task"], n_clusters, extra), out_ckpt)
    log["wall_seconds"] = time.time() - t0
    log["checkpoint"] = str(out_ckpt)
    return log


def _fresh_model(cfg: dict, n_clusters: int, device, init_from=None):
    """A new HubertModel with ``n_clusters`` targets; ``init_from``: copy every weight but the cluster embeddings."""
    model = build_hubert(cfg["model"], cfg["task"], n_clusters)
    if init_from is not None:
        state = {k: v for k, v in init_from.state_dict().items() if k != "label_embs_concat"}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {"label_embs_concat"}:
            raise RuntimeError(f"iteration 2 could not take over iteration 1's weights: missing {missing}, unexpected {unexpected}")
    if cfg["label_embs_init"] == "normal":
        with torch.no_grad():
            model.label_embs_concat.normal_()
    elif cfg["label_embs_init"] != "uniform":
        raise ValueError(f"label_embs_init must be 'normal' or 'uniform', not {cfg['label_embs_init']!r}")
    return model.to(device)


def _train_iteration(model, train_w, train_y, held_w, held_y, n_clusters: int, steps: int, cfg: dict, seed: int,
                     device, progress: bool, log: dict, desc: str) -> None:
    """One HuBERT iteration: AdamW with warm-up + linear decay for ``steps`` updates on cropped batches.

    Appends per-step figures to ``log`` and a summary (held-out accuracy before/after) to ``log["iterations"]``.
    """
    held_all = np.concatenate(held_y)
    majority = float(np.bincount(held_all, minlength=n_clusters).max() / len(held_all))
    eval_seed = seed + 104729
    crop = int(cfg["crop_seconds"] * frames.SAMPLE_RATE)
    bsz = max(1, int(round(cfg["batch_seconds"] / cfg["crop_seconds"])))
    pen_w = float(cfg["features_pen_weight"])
    offset = len(log["step"])
    start = _evaluate(model, held_w, held_y, pen_w, eval_seed, device)
    log["eval"].append({"step": offset, **start})
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"], weight_decay=cfg["weight_decay"]
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, cfg["warmup_fraction"]))
    rng = np.random.default_rng(seed)
    model.train()
    t_train = time.time()
    stopped_by = "steps"
    bar = _progress(range(steps), progress, f"pretrain {desc}", steps)
    for step in bar:
        if (time.time() - t_train) / 60.0 > cfg["max_minutes"]:
            stopped_by = "max_minutes"
            break
        x, y = crop_batch(rng, train_w, train_y, bsz, crop)
        loss, ce, c, s = _masked_prediction(
            model, x.to(device), y.to(device), pen_w, cfg["pred_masked_weight"], cfg["pred_nomask_weight"]
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_norm"])
        opt.step()
        sched.step()
        log["step"].append(offset + step + 1)
        log["loss"].append(float(ce))
        log["acc"].append(c / max(1, s))
        log["lr"].append(float(opt.param_groups[0]["lr"]))
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{float(ce):.3f}", acc=f"{c / max(1, s):.3f}")
        if cfg["eval_every"] and (step + 1) % cfg["eval_every"] == 0 and step + 1 < steps:
            log["eval"].append({"step": offset + step + 1, **_evaluate(model, held_w, held_y, pen_w, eval_seed, device)})
    train_seconds = time.time() - t_train
    end = _evaluate(model, held_w, held_y, pen_w, eval_seed, device)
    log["eval"].append({"step": len(log["step"]), **end})
    log["iterations"].append({"desc": desc, "n_clusters": n_clusters, "steps_done": len(log["step"]) - offset,
                              "chance": 1.0 / n_clusters, "majority": majority, "start": start, "end": end,
                              "train_seconds": train_seconds, "stopped_by": stopped_by})
