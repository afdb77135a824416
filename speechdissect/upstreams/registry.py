"""Load any upstream through s3prl, and tell what it is.

Every model the project analyses goes through s3prl:

* checkpoints the project trains (``mini_hubert``, ``mini_mockingjay``,
  fine-tuned or pruned variants) through s3prl's ``hubert_local`` /
  ``mockingjay_local`` hub entries, wrapped in :class:`s3prl.nn.S3PRLUpstream`;
* named hub entries (``hubert_base``, ``wavlm_base``, ``wav2vec2``,
  ``mockingjay``, ...) through ``S3PRLUpstream(name)``, which downloads the
  checkpoint on first use (no network here: that fails with a clear error).

Checkpoints are written with plain tensors, dicts, lists and strings only, so
``torch.load(path, weights_only=True)`` reads them (s3prl itself loads them
without ``weights_only``, safe only because torch >= 2.6 defaults it to True:
tests/test_checkpoint_safety.py pins that), and atomically: :func:`save_checkpoint`
writes a temporary sibling and renames it. Every checkpoint is read with
:func:`load_checkpoint`, which never unpickles objects.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "LOCAL_ENTRIES",
    "available_names",
    "paired_latency",
    "checkpoint_entry",
    "cuda_synchronize",
    "CheckpointError",
    "check_local_checkpoint",
    "load_checkpoint",
    "describe",
    "family_of",
    "load_upstream",
    "save_checkpoint",
    "UpstreamDownloadError",
]

#: hub entries that read a local checkpoint file, per family
LOCAL_ENTRIES = {"hubert": "hubert_local", "mockingjay": "mockingjay_local", "wav2vec2": "wav2vec2_local", "wavlm": "wavlm_local"}

# s3prl upstream package (s3prl/upstream/<dir>/hubconf.py) -> family name
_FAMILY_BY_PACKAGE = {
    "hubert": "hubert",
    "hf_hubert": "hubert",
    "espnet_hubert": "hubert",
    "multires_hubert": "hubert",
    "wav2vec2": "wav2vec2",
    "hf_wav2vec2": "wav2vec2",
    "wavlm": "wavlm",
    "unispeech_sat": "unispeech_sat",
    "mockingjay": "mockingjay",
    "tera": "tera",
    "audio_albert": "audio_albert",
    "distiller": "distiller",
    "data2vec": "data2vec",
}
# name prefixes, longest first, for names that are not hub entries (e.g. "mini_hubert")
_FAMILY_BY_PREFIX = [
    ("distilhubert", "distiller"),
    ("mockingjay", "mockingjay"),
    ("contentvec", "hubert"),
    ("mhubert", "hubert"),
    ("hubert", "hubert"),
    ("wav2vec2", "wav2vec2"),
    ("xlsr", "wav2vec2"),
    ("wavlm", "wavlm"),
    ("tera", "tera"),
    ("data2vec", "data2vec"),
]


class UpstreamDownloadError(RuntimeError):
    """A named s3prl hub entry could not fetch its checkpoint (no network)."""


class CheckpointError(ValueError):
    """A checkpoint that holds pickled Python objects: refused, since unpickling runs code."""


# --------------------------------------------------------------------------- #
# Names
# --------------------------------------------------------------------------- #
def _hub():
    import s3prl.hub  # slow import (~10 s): keep it lazy

    return s3prl.hub


def available_names(only_registered_ckpt: bool = False) -> list[str]:
    """s3prl hub entries (``s3prl.hub.options``), sorted."""
    return sorted(_hub().options(only_registered_ckpt))


def _is_local_entry(name: str) -> bool:
    return name.endswith(("_local", "_url", "_custom", "_gdriveid"))


def _family_entry(name: str):
    """The hub entry ``name`` from its own family's hubconf (``s3prl.upstream.<family>.hubconf``), or None.

    ``import s3prl.hub`` imports every upstream family (transformers, sklearn, ...: several CPU
    seconds per process); one family's hubconf holds the same function ``s3prl.hub`` re-exports.
    """
    parts = name.split("_")
    for k in range(len(parts), 0, -1):
        try:
            conf = importlib.import_module(f"s3prl.upstream.{'_'.join(parts[:k])}.hubconf")
        except ImportError:
            continue
        if hasattr(conf, name):
            return getattr(conf, name)
    return None


def install_lazy_hub(name: str) -> None:
    """Make ``s3prl.hub`` resolve ``name`` from its family's hubconf only (see :func:`_family_entry`).

    Any other attribute of ``s3prl.hub`` falls back to the real module, imported then. A no-op
    when ``s3prl.hub`` is already imported or ``name`` is no hub entry.
    """
    import types

    import s3prl

    if "s3prl.hub" in sys.modules or not name:
        return
    entry = _family_entry(name)
    if entry is None:
        return
    hub = types.ModuleType("s3prl.hub", "lazy view of s3prl.hub (speechdissect)")
    setattr(hub, name, entry)

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        del sys.modules["s3prl.hub"]
        real = importlib.import_module("s3prl.hub")
        return getattr(real, attr)

    hub.__getattr__ = __getattr__
    sys.modules["s3prl.hub"] = hub
    s3prl.hub = hub


def _check_name(name: str) -> None:
    if _family_entry(name) is not None:  # found without importing every family
        return
    names = available_names()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=8, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ValueError(
        f"unknown s3prl upstream {name!r}.{hint} "
        f"Valid names are s3prl.hub entries ({len(names)}, e.g. hubert_base, wavlm_base, wav2vec2, "
        "mockingjay; hubert_local / mockingjay_local with a checkpoint); list them with "
        "speechdissect.upstreams.available_names()."
    )


def family_of(name: str) -> str:
    """Model family of an s3prl entry or project upstream name.

    ``'hubert'`` | ``'wav2vec2'`` | ``'wavlm'`` | ``'mockingjay'`` | ``'tera'`` |
    ``'distiller'`` | ... : the s3prl upstream package the hub entry is defined
    in, or, for names that are not hub entries (``mini_hubert``), the family
    whose name the string starts with or contains.
    """
    key = name.lower()
    try:
        fn = getattr(_hub(), name, None)
    except Exception:  # pragma: no cover - s3prl import problems
        fn = None
    if callable(fn):
        module = getattr(fn, "__module__", "") or ""
        parts = module.split(".")
        if len(parts) >= 3 and parts[:2] == ["s3prl", "upstream"]:
            pkg = parts[2]
            return _FAMILY_BY_PACKAGE.get(pkg, pkg)
    stripped = key
    for pre in ("mini_", "tiny_", "small_"):
        if stripped.startswith(pre):
            stripped = stripped[len(pre):]
    for prefix, fam in _FAMILY_BY_PREFIX:
        if stripped.startswith(prefix):
            return fam
    for prefix, fam in _FAMILY_BY_PREFIX:
        if prefix in key:
            return fam
    raise ValueError(f"cannot tell the model family of {name!r}")


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
def save_checkpoint(state: dict, path: str | Path) -> Path:
    """``torch.save`` to a temporary sibling, then ``os.replace`` onto ``path``.

    The state must hold only tensors, dicts, lists, tuples, str, numbers, bool
    and None; this is checked by re-reading the temporary file with
    ``torch.load(weights_only=True)`` before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        torch.load(tmp, map_location="cpu", weights_only=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path) -> Any:
    """The contents of a checkpoint file, read with ``torch.load(weights_only=True)`` only.

    Unpickling a file can run any code it carries (a ``local`` upstream's ``path:`` or a
    checkpoint dropped under ``resources/``), so a checkpoint that holds pickled Python
    objects (e.g. an ``argparse.Namespace`` or a dataclass config) is refused with
    :class:`CheckpointError`, which says how to convert it, instead of being retried with
    ``weights_only=False``.
    """
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # torch names the object it refused ("Trying to load unsupported GLOBAL posix.system ...")
        why = next((line for line in lines if "unsupported" in line.lower() and "weights_only" not in line),
                   lines[-1] if lines else type(e).__name__)
        raise CheckpointError(
            f"{path}: refused: this checkpoint holds pickled Python objects ({why}), and unpickling a file can "
            "run any code in it, so speech-dissect reads checkpoints with torch.load(weights_only=True) only. "
            "If you trust the file, convert it once in a trusted Python: state = torch.load(path, "
            "weights_only=False); turn every object in it into plain dicts, lists, str, numbers and tensors "
            "(e.g. vars(args), dataclasses.asdict(cfg), omegaconf.OmegaConf.to_container(cfg)); "
            "torch.save(state, new_path); then point the config (upstreams.<name>.path) at new_path"
        ) from None


def check_local_checkpoint(ckpt: str | Path) -> Any:
    """Read a ``*_local`` checkpoint safely and check what s3prl would ``eval`` from it; return its state.

    s3prl's loaders call ``torch.load`` (safe only by torch's ``weights_only=True`` default) and
    ``eval`` the ``model_cfg.conv_feature_layers`` string of HuBERT / wav2vec 2.0 checkpoints;
    both are done here first, safely (:func:`load_checkpoint`,
    :func:`speechdissect.upstreams.hubert.parse_conv_feature_layers`).
    """
    from .hubert import parse_conv_feature_layers

    state = load_checkpoint(ckpt)
    model_cfg = state.get("model_cfg") if isinstance(state, dict) else None
    if isinstance(model_cfg, dict) and "conv_feature_layers" in model_cfg:
        try:
            parse_conv_feature_layers(model_cfg["conv_feature_layers"])
        except ValueError as e:
            raise CheckpointError(f"{ckpt}: refused: model_cfg.{e} (s3prl would eval() this string)") from None
    return state


def checkpoint_entry(ckpt: str | Path) -> str:
    """The s3prl ``*_local`` entry that loads ``ckpt`` (``hubert_local`` or ``mockingjay_local``)."""
    state = load_checkpoint(ckpt)
    if isinstance(state, dict) and {"task_cfg", "model_cfg", "model_weight"} <= set(state):
        return "hubert_local" if "dictionaries_symbols" in state else "wav2vec2_local"
    if isinstance(state, dict) and "Transformer" in state and ("Upstream_Config" in state or "Config" in state):
        return "mockingjay_local"
    raise ValueError(f"{ckpt}: not a checkpoint format speech-dissect knows (hubert_local or mockingjay_local)")


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def _is_download_error(e: BaseException) -> bool:
    import urllib.error

    try:
        import requests

        req = (requests.exceptions.RequestException,)
    except Exception:  # pragma: no cover
        req = ()
    if isinstance(e, req + (urllib.error.URLError, ConnectionError, TimeoutError)):
        return True
    text = f"{type(e).__name__} {e}".lower()
    return any(s in text for s in ("resolve", "connection", "download", "http", "network", "urlopen"))


def load_upstream(name: str, ckpt: str | Path | None = None, device: str = "cpu") -> nn.Module:
    """Load an upstream through s3prl, in eval mode on ``device``.

    Parameters
    ----------
    name : str
        An s3prl hub entry: ``hubert_local`` / ``mockingjay_local`` (and other
        ``*_local`` entries) with ``ckpt``, or a named entry such as
        ``hubert_base``, ``wavlm_base``, ``wav2vec2``, ``mockingjay``.
    ckpt : path, optional
        Local checkpoint for ``*_local`` entries (required there, refused for
        named entries, which hard-code their own URL).
    device : str
        Torch device.

    Returns
    -------
    s3prl.nn.S3PRLUpstream
        ``model(wavs [B, N], wavs_len [B])`` returns ``(hidden_states, lengths)``:
        ``n_layers + 1`` tensors ``[B, T, D]`` (input of every encoder layer,
        then the last output), padded by S3PRLUpstream to ``ceil(N / stride)``
        frames. ``model.upstream`` is the s3prl UpstreamExpert, whose own
        forward (a list of 1-D waves) returns the model's true frame count.

    Raises
    ------
    ValueError
        Unknown name (with close matches), missing/unneeded ``ckpt``.
    FileNotFoundError
        ``ckpt`` does not exist.
    CheckpointError
        ``ckpt`` holds pickled objects or a ``conv_feature_layers`` that is not plain layer tuples.
    UpstreamDownloadError
        A named entry needs to download its checkpoint and cannot.
    """
    _check_name(name)
    install_lazy_hub(name)
    from s3prl.nn import S3PRLUpstream

    if _is_local_entry(name):
        if ckpt is None:
            raise ValueError(f"s3prl entry {name!r} loads a local checkpoint: pass ckpt=PATH")
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise FileNotFoundError(f"upstream checkpoint not found: {ckpt} (train it first, e.g. the pretrain_upstream rule)")
        check_local_checkpoint(ckpt)
        try:
            model = S3PRLUpstream(name, path_or_url=str(ckpt))
        except Exception as e:
            raise RuntimeError(f"s3prl {name} could not load {ckpt}: {type(e).__name__}: {e}") from e
    else:
        if ckpt is not None:
            fam = family_of(name)
            local = LOCAL_ENTRIES.get(fam, f"{fam}_local")
            raise ValueError(
                f"s3prl entry {name!r} hard-codes its checkpoint URL and ignores a local path; "
                f"load {ckpt} with {local!r} instead"
            )
        try:
            model = S3PRLUpstream(name)
        except Exception as e:
            if _is_download_error(e):
                raise UpstreamDownloadError(
                    f"s3prl hub entry {name!r} must download its checkpoint and this machine cannot "
                    f"({type(e).__name__}: {str(e)[:300]}). Download it on a machine with network access "
                    "into s3prl's cache (~/.cache/s3prl/download, see s3prl.util.download.set_dir), or "
                    f"use a *_local entry with a local checkpoint."
                ) from e
            raise
    model.to(device)
    model.eval()  # S3PRLUpstream.__init__ leaves the expert in train mode
    return model


# --------------------------------------------------------------------------- #
# Describe
# --------------------------------------------------------------------------- #
def count_hidden_states(name: str, ckpt: str | Path | None = None) -> int:
    """How many hidden states the upstream returns (``n_layers + 1`` for a transformer; 1 for mfcc)."""
    import torch

    model = load_upstream(name, ckpt)
    with torch.no_grad():
        hidden, _ = model(torch.zeros(1, 16000), torch.tensor([16000]))
    return len(hidden)


def _expert(model: nn.Module) -> nn.Module:
    inner = getattr(model, "upstream", None)
    if isinstance(inner, nn.Module) and hasattr(model, "downsample_rates"):
        return inner
    return model


def describe(model: nn.Module) -> dict[str, Any]:
    """Architecture summary of an upstream from :func:`load_upstream` (or its expert, or a bare model).

    Returns ``family``, ``n_layers``, ``d_model``, ``d_ffn``, ``n_heads``,
    ``n_params`` (whole upstream), ``n_params_encoder`` (transformer layers),
    ``stride`` (input samples per output frame), ``grid_step`` (take every
    ``grid_step``-th frame to land on the 20 ms grid: 1 for HuBERT, 2 for the
    10 ms Mockingjay), ``paths``: module paths relative to what was passed
    (an S3PRLUpstream: ``upstream.model.encoder.layers[{i}].fc1``; ``{i}`` is
    the 0-based layer) of the layers, FFN linears and attention projections,
    and ``hooks``: where to hook for the FFN activation after the
    nonlinearity and for attention probabilities (``module`` path and whether
    to ``take`` its input, its output, or to ``recompute`` from q/k).
    """
    from s3prl.upstream.hubert.hubert_model import HubertModel
    from s3prl.upstream.mockingjay.model import TransformerModel

    exp = _expert(model)
    prefix = "upstream." if exp is not model else ""
    inner_model = getattr(exp, "model", None)
    transformer = getattr(exp, "transformer", None)
    if isinstance(exp, HubertModel) or hasattr(getattr(inner_model, "encoder", None), "layers"):
        core = exp if isinstance(exp, HubertModel) else inner_model
        p = prefix + ("" if core is exp else "model.")
        layers = core.encoder.layers
        l0 = layers[0]
        info = {
            "family": "hubert"
            if isinstance(core, HubertModel)
            else ("wavlm" if "wavlm" in type(core).__name__.lower() else "wav2vec2"),
            "n_layers": len(layers),
            "d_model": l0.fc1.in_features,
            "d_ffn": l0.fc1.out_features,
            "n_heads": l0.self_attn.num_heads,
            "n_params_encoder": sum(q.numel() for q in layers.parameters()),
            "paths": {
                "layer": f"{p}encoder.layers[{{i}}]",
                "ffn_fc1": f"{p}encoder.layers[{{i}}].fc1",
                "ffn_fc2": f"{p}encoder.layers[{{i}}].fc2",
                "attention": f"{p}encoder.layers[{{i}}].self_attn",
                "attention_q": f"{p}encoder.layers[{{i}}].self_attn.q_proj",
                "attention_k": f"{p}encoder.layers[{{i}}].self_attn.k_proj",
                "attention_v": f"{p}encoder.layers[{{i}}].self_attn.v_proj",
                "attention_out": f"{p}encoder.layers[{{i}}].self_attn.out_proj",
            },
            "hooks": {
                # activation_fn is a plain function, not a module: take fc2's input
                "ffn_activation": {"module": f"{p}encoder.layers[{{i}}].fc2", "take": "input"},
                # need_weights=False + fused kernel: per-head maps must be recomputed from q/k
                "attention_probs": {"module": f"{p}encoder.layers[{{i}}].self_attn", "take": "recompute"},
                "layer_input": {"module": f"{p}encoder.layers[{{i}}]", "take": "input (T, B, C)"},
            },
        }
    elif isinstance(exp, TransformerModel) or isinstance(getattr(transformer, "model", None), TransformerModel):
        core = exp if isinstance(exp, TransformerModel) else transformer.model
        p = prefix + ("" if core is exp else "transformer.model.")
        layers = core.encoder.layer
        l0 = layers[0]
        info = {
            "family": "mockingjay",
            "n_layers": len(layers),
            "d_model": l0.intermediate.dense.in_features,
            "d_ffn": l0.intermediate.dense.out_features,
            "n_heads": l0.attention.self.num_attention_heads,
            "n_params_encoder": sum(q.numel() for q in layers.parameters()),
            "paths": {
                "layer": f"{p}encoder.layer[{{i}}]",
                "ffn_fc1": f"{p}encoder.layer[{{i}}].intermediate.dense",
                "ffn_fc2": f"{p}encoder.layer[{{i}}].output.dense",
                "attention": f"{p}encoder.layer[{{i}}].attention.self",
                "attention_q": f"{p}encoder.layer[{{i}}].attention.self.query",
                "attention_k": f"{p}encoder.layer[{{i}}].attention.self.key",
                "attention_v": f"{p}encoder.layer[{{i}}].attention.self.value",
                "attention_out": f"{p}encoder.layer[{{i}}].attention.output.dense",
            },
            "hooks": {
                # TransformerIntermediate returns act(dense(x))
                "ffn_activation": {"module": f"{p}encoder.layer[{{i}}].intermediate", "take": "output"},
                # the input of the attention dropout is the [B, H, T, T] probability tensor
                "attention_probs": {"module": f"{p}encoder.layer[{{i}}].attention.self.dropout", "take": "input"},
                "layer_input": {"module": f"{p}encoder.layer[{{i}}]", "take": "input (B, T, C)"},
            },
        }
    else:
        raise ValueError(f"describe: unsupported upstream {type(exp).__name__}")
    info["n_params"] = sum(q.numel() for q in exp.parameters())
    stride = None
    if hasattr(exp, "get_downsample_rates"):
        stride = int(exp.get_downsample_rates("hidden_states"))
    elif info["family"] == "mockingjay":
        stride = 160
    else:
        stride = 320
    info["stride"] = stride
    info["grid_step"] = max(1, 320 // stride)
    return info


def cuda_synchronize(device) -> None:
    """Wait for the kernels queued on a CUDA ``device`` (no-op elsewhere), so a timer brackets the work.

    CUDA calls return before their kernels finish: a forward pass timed without it measures
    only the kernel launches.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def paired_latency(models: dict[str, nn.Module], seconds: float = 3.0, rounds: int = 21,
                   seed: int = 0) -> dict[str, float]:
    """Fastest forward time (ms) of each model on the same random input, the models taking turns.

    Latencies measured in separate jobs compare machines under different loads (on a shared
    2-core machine a 1-layer model can time slower than the 4-layer one it was cut from).
    Here every round times each model once, one after the other (each leading in turn), so a
    load change affects all of them alike; and the fastest of the rounds (as ``timeit`` advises)
    is the one least disturbed by other processes, so the ratio of two models holds on a busy machine.

    Parameters
    ----------
    models : name -> upstream from :func:`load_upstream` (``model(wavs [B, N], wavs_len [B])``).
    seconds : input length.
    rounds : timed forward passes per model (after one warm-up each).
    seed : seed of the input noise.
    """
    import time

    if not models:
        return {}
    gen = torch.Generator().manual_seed(int(seed))
    n = int(seconds * 16000)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for name, model in models.items():
            device = next(model.parameters()).device
            model(torch.randn(1, n, generator=gen).to(device), torch.tensor([n], device=device))  # warm-up
        names = list(models)
        for r in range(max(1, int(rounds))):
            wav = torch.randn(1, n, generator=gen)
            for name in names[r % len(names):] + names[: r % len(names)]:  # each model leads in turn
                model = models[name]
                device = next(model.parameters()).device
                x, lens = wav.to(device), torch.tensor([n], device=device)
                cuda_synchronize(device)
                t0 = time.perf_counter()
                model(x, lens)
                cuda_synchronize(device)
                times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: min(ts) for name, ts in times.items()}
