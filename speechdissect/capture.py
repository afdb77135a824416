"""Hooks that capture FFN activations, hidden states and per-head attention.

Every analysis in speech-dissect reads the same three things out of an s3prl
upstream: the FFN activations after the nonlinearity (neurons), the hidden
state list the upstream itself returns (layers) and per-head attention
probabilities (heads). This module finds them per model family and records
them with forward hooks that never change what the upstream computes.

Where each quantity is taken (0-based encoder layer ``l``; module paths are
relative to the s3prl ``UpstreamExpert``, i.e. ``S3PRLUpstream.upstream``):

=============  ===============================================  ==========================================
family         FFN activations                                  attention probabilities
=============  ===============================================  ==========================================
hubert,        input of ``model.encoder.layers[l].fc2``          recomputed from the input of
wav2vec2       (forward pre-hook) = ``act(fc1(x))``; dropout2    ``layers[l].self_attn``: softmax(q kᵀ·scale
               is the identity in eval                           + masks) from its ``q_proj``/``k_proj``
wavlm          same as hubert                                    same, plus WavLM's (gated) relative
                                                                 position bias, as its fused path adds it
mockingjay,    output of ``transformer.model.encoder.layer[l]   input of ``layer[l].attention.self.dropout``
tera, albert   .intermediate`` (dense + act)                     (the probability tensor itself)
=============  ===============================================  ==========================================

HuBERT-family layers call self-attention with ``need_weights=False`` and the
fused kernel never materialises per-head maps, hence the recomputation (see
PITFALLS). Hidden states are always the upstream's own ``hidden_states``
(``n_layers + 1`` tensors: input of every encoder layer, then the output).
Everything is captured at the model's own frame rate; :func:`to_grid` maps
it onto the shared 20 ms grid (a 10 ms Mockingjay keeps every other frame).

Adding a family is one subclass of :class:`Family` decorated with
:func:`register_family`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Captured",
    "Family",
    "FAMILIES",
    "UtteranceActivations",
    "capture",
    "family_of",
    "get_family",
    "grid_step",
    "register_family",
    "run_upstream",
    "to_grid",
    "unwrap_upstream",
]


# --------------------------------------------------------------------------- #
# Upstream unwrapping
# --------------------------------------------------------------------------- #
def unwrap_upstream(upstream: nn.Module) -> nn.Module:
    """Return the s3prl ``UpstreamExpert`` inside ``upstream``.

    ``s3prl.nn.S3PRLUpstream`` pads every layer to ``ceil(N / stride)`` frames
    by repeating the last frame; the expert itself returns the model's own
    frame count, which is what the shared frame grid is defined on. So the
    capture always drives the expert.
    """
    inner = getattr(upstream, "upstream", None)
    if isinstance(inner, nn.Module) and hasattr(upstream, "downsample_rates"):
        return inner
    return upstream


# --------------------------------------------------------------------------- #
# Families
# --------------------------------------------------------------------------- #
FAMILIES: dict[str, type["Family"]] = {}


def register_family(*names: str) -> Callable[[type["Family"]], type["Family"]]:
    """Class decorator registering a :class:`Family` under one or more names."""

    def deco(cls: type[Family]) -> type[Family]:
        for name in names:
            FAMILIES[name] = cls
        cls.names = tuple(names)
        return cls

    return deco


def get_family(family: str | "Family") -> "Family":
    """Instantiate the family adapter registered as ``family``."""
    if isinstance(family, Family):
        return family
    try:
        return FAMILIES[family]()
    except KeyError:
        raise ValueError(
            f"unknown model family {family!r}; known: {sorted(FAMILIES)} "
            "(add one with speechdissect.capture.register_family)"
        ) from None


def family_of(upstream: nn.Module) -> str:
    """Guess the family name of an s3prl upstream from its module layout."""
    expert = unwrap_upstream(upstream)
    for name, cls in FAMILIES.items():
        if cls.matches(expert):
            return name
    raise ValueError(f"cannot tell the model family of {type(expert).__name__}; pass family= explicitly")


class Family:
    """Where one model family keeps its encoder layers, FFN and attention.

    Subclasses implement the module lookup; the hook plumbing is shared.
    """

    names: tuple[str, ...] = ()
    #: True when layer tensors are (T, B, C) (fairseq), False for (B, T, C).
    time_first: bool = True

    @staticmethod
    def matches(expert: nn.Module) -> bool:  # pragma: no cover - overridden
        return False

    def encoder(self, expert: nn.Module) -> nn.Module:
        raise NotImplementedError

    def layers(self, expert: nn.Module) -> Sequence[nn.Module]:
        raise NotImplementedError

    def dims(self, expert: nn.Module) -> dict:
        """``n_layers``, ``d_model``, ``d_ffn``, ``n_heads``."""
        raise NotImplementedError

    def ffn_point(self, layer: nn.Module) -> tuple[nn.Module, str]:
        """(module, "pre" | "out"): hook the module's input or its output."""
        raise NotImplementedError

    def attention_point(self, layer: nn.Module) -> tuple[nn.Module, str]:
        """(module, kind) where kind names the attention handler."""
        raise NotImplementedError

    def lengths_from_encoder_call(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """Valid frames per batch item, read from the encoder's call arguments."""
        raise NotImplementedError

    def frame_hop(self, expert: nn.Module) -> int:
        """Input samples per model frame (the model's own stride)."""
        return int(expert.get_downsample_rates("hidden_states"))


def _check_fairseq_layer(layer: nn.Module, idx: int) -> None:
    for attr in ("fc1", "fc2", "self_attn"):
        if not hasattr(layer, attr):
            raise NotImplementedError(
                f"encoder layer {idx} ({type(layer).__name__}) has no {attr}: "
                "only TransformerSentenceEncoderLayer (layer_type='transformer') is supported"
            )


@register_family("hubert", "wav2vec2")
class FairseqFamily(Family):
    """HuBERT / wav2vec 2.0: ``expert.model.encoder.layers[l]`` (fairseq layers)."""

    time_first = True

    @staticmethod
    def matches(expert: nn.Module) -> bool:
        enc = getattr(getattr(expert, "model", None), "encoder", None)
        layers = getattr(enc, "layers", None)
        return (
            layers is not None
            and len(layers) > 0
            and hasattr(layers[0], "fc2")
            and not hasattr(layers[0].self_attn, "has_relative_attention_bias")
        )

    def encoder(self, expert):
        return expert.model.encoder

    def layers(self, expert):
        layers = list(expert.model.encoder.layers)
        for i, layer in enumerate(layers):
            _check_fairseq_layer(layer, i)
        return layers

    def dims(self, expert):
        layers = self.layers(expert)
        l0 = layers[0]
        return {
            "n_layers": len(layers),
            "d_model": l0.fc1.in_features,
            "d_ffn": l0.fc2.in_features,
            "n_heads": l0.self_attn.num_heads,
        }

    def ffn_point(self, layer):
        return layer.fc2, "pre"

    def attention_point(self, layer):
        return layer.self_attn, "fairseq"

    def frame_hop(self, expert):
        hop = 1
        for block in expert.model.feature_extractor.conv_layers:
            conv = next(m for m in block.modules() if isinstance(m, nn.Conv1d))
            hop *= conv.stride[0]
        return hop

    def lengths_from_encoder_call(self, args, kwargs):
        x = args[0] if args else kwargs["x"]
        pm = kwargs.get("padding_mask", args[1] if len(args) > 1 else None)
        if pm is None:
            return torch.full((x.size(0),), x.size(1), dtype=torch.long)
        return (~pm.bool()).sum(-1).cpu()


@register_family("wavlm")
class WavLMFamily(FairseqFamily):
    """WavLM: fairseq-style layers plus a (gated) relative position bias."""

    @staticmethod
    def matches(expert: nn.Module) -> bool:
        enc = getattr(getattr(expert, "model", None), "encoder", None)
        layers = getattr(enc, "layers", None)
        return (
            layers is not None
            and len(layers) > 0
            and hasattr(layers[0], "fc2")
            and hasattr(layers[0].self_attn, "has_relative_attention_bias")
        )

    # ffn_point is inherited: fc2's input is act(fc1(x)), and with
    # activation_fn="glu" it is the output of WavLM's GLU_Linear fc1.

    def attention_point(self, layer):
        return layer.self_attn, "wavlm"


@register_family("mockingjay", "tera", "audio_albert")
class MockingjayFamily(Family):
    """Mockingjay / TERA: ``expert.transformer.model.encoder.layer[l]`` (BERT-style)."""

    time_first = False

    @staticmethod
    def matches(expert: nn.Module) -> bool:
        model = getattr(getattr(expert, "transformer", None), "model", None)
        return hasattr(getattr(model, "encoder", None), "layer")

    def encoder(self, expert):
        return expert.transformer.model

    def layers(self, expert):
        if getattr(expert.transformer, "permute_input", False):
            raise NotImplementedError("mockingjay with permute_input=True is not supported")
        return list(expert.transformer.model.encoder.layer)

    def dims(self, expert):
        layers = self.layers(expert)
        l0 = layers[0]
        return {
            "n_layers": len(layers),
            "d_model": l0.intermediate.dense.in_features,
            "d_ffn": l0.intermediate.dense.out_features,
            "n_heads": l0.attention.self.num_attention_heads,
        }

    def ffn_point(self, layer):
        return layer.intermediate, "out"

    def frame_hop(self, expert):
        ext = getattr(expert.transformer, "extracter", None)
        shift_ms = getattr(ext[0], "frame_shift", None) if isinstance(ext, nn.Sequential) else None
        if shift_ms is not None:  # kaldi fbank/mfcc extracter: frame_shift in ms at 16 kHz
            return int(round(float(shift_ms) * 16))
        return super().frame_hop(expert)

    def attention_point(self, layer):
        return layer.attention.self.dropout, "probs_input"

    def lengths_from_encoder_call(self, args, kwargs):
        # TransformerModel.forward(spec_input, pos_enc, attention_mask, ...)
        spec = args[0] if args else kwargs["spec_input"]
        am = kwargs.get("attention_mask", args[2] if len(args) > 2 else None)
        if am is None:
            return torch.full((spec.size(0),), spec.size(1), dtype=torch.long)
        return am.sum(-1).round().long().cpu()


# --------------------------------------------------------------------------- #
# Attention recomputation
# --------------------------------------------------------------------------- #
def _qk_heads(mha: nn.Module, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled per-head queries and keys, (B, H, T, d), as the module computes them."""
    tgt, bsz, _ = query.shape
    h, d = mha.num_heads, mha.head_dim
    q = F.linear(query, mha.q_proj.weight, mha.q_proj.bias) * mha.scaling
    k = F.linear(query, mha.k_proj.weight, mha.k_proj.bias)
    q = q.view(tgt, bsz, h, d).permute(1, 2, 0, 3)
    k = k.view(tgt, bsz, h, d).permute(1, 2, 0, 3)
    return q, k


def _mha_args(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    query = kwargs["query"] if "query" in kwargs else args[0]
    key = kwargs.get("key", args[1] if len(args) > 1 else query)
    if key is not None and key is not query and not torch.equal(key, query):
        raise NotImplementedError("attention capture supports self-attention only")
    kpm = kwargs.get("key_padding_mask", args[3] if len(args) > 3 else None)
    attn_mask = kwargs.get("attn_mask")
    return query, kpm, attn_mask


def _apply_masks(scores: torch.Tensor, kpm, attn_mask) -> torch.Tensor:
    """Add ``attn_mask`` and mask padded keys with -inf; scores (B, H, T, S)."""
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    if kpm is not None and kpm.dim() == 2:
        scores = scores.masked_fill(kpm.bool()[:, None, None, :], float("-inf"))
    return scores


def fairseq_attention_probs(mha: nn.Module, query, key_padding_mask=None, attn_mask=None) -> torch.Tensor:
    """Per-head attention probabilities of a fairseq ``MultiheadAttention``.

    Parameters
    ----------
    mha : the layer's ``self_attn``.
    query : (T, B, C) attention input (after ``self_attn_layer_norm`` when
        ``layer_norm_first``: it is exactly what the layer passes in).
    key_padding_mask : (B, S) bool, True at padded frames.
    attn_mask : optional additive/boolean mask.

    Returns
    -------
    torch.Tensor
        (B, H, T, S) float32; rows sum to 1.
    """
    if getattr(mha, "bias_k", None) is not None or getattr(mha, "add_zero_attn", False):
        raise NotImplementedError("bias_kv / add_zero_attn attention is not supported")
    q, k = _qk_heads(mha, query)
    scores = torch.matmul(q, k.transpose(-1, -2))
    scores = _apply_masks(scores, key_padding_mask, attn_mask)
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


def wavlm_attention_probs(mha: nn.Module, query, key_padding_mask=None, position_bias=None) -> torch.Tensor:
    """Per-head attention of a WavLM ``MultiheadAttention`` (its fused path).

    Adds the relative position bias (computed by layer 0, passed on to later
    layers) and, with ``gru_rel_pos``, the gate computed from the raw query,
    exactly as the fused branch of WavLM's ``forward`` does.
    """
    tgt, bsz, _ = query.shape
    h = mha.num_heads
    if mha.q_head_dim != mha.head_dim:
        raise NotImplementedError("WavLM attention with q_head_dim != head_dim is not supported")
    if mha.has_relative_attention_bias and position_bias is None:
        position_bias = mha.compute_bias(tgt, tgt).unsqueeze(0).repeat(bsz, 1, 1, 1).view(bsz * h, tgt, tgt)
    bias = position_bias
    if bias is not None and mha.gru_rel_pos:
        ql = query.transpose(0, 1).reshape(bsz, tgt, h, -1).permute(0, 2, 1, 3)
        gate_a, gate_b = torch.sigmoid(mha.grep_linear(ql).view(bsz, h, tgt, 2, 4).sum(-1)).chunk(2, dim=-1)
        gate = gate_a * (gate_b * mha.grep_a - 1.0) + 2.0
        bias = gate.reshape(bsz * h, -1, 1) * position_bias
    q, k = _qk_heads(mha, query)
    scores = torch.matmul(q, k.transpose(-1, -2))
    if bias is not None:
        scores = scores + bias.view(bsz, h, tgt, tgt)
    scores = _apply_masks(scores, key_padding_mask, None)
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


# --------------------------------------------------------------------------- #
# Capture
# --------------------------------------------------------------------------- #
@dataclass
class Captured:
    """What the hooks recorded during the forward calls inside :func:`capture`.

    Raw per-call tensors are kept; the properties assemble them into
    batch-first tensors trimmed to the encoder's valid frame count.
    Models that run long inputs in chunks (Mockingjay's ``sequence_length``)
    call each layer once per chunk; chunks are concatenated along time and
    attention becomes block diagonal, as the model actually attends.
    """

    family: Family
    n_layers: int
    time_first: bool
    _ffn: list[list[torch.Tensor]] = field(default_factory=list)
    _attn: list[list[torch.Tensor]] = field(default_factory=list)
    _lengths: list[torch.Tensor] = field(default_factory=list)

    def clear(self) -> None:
        """Forget everything recorded so far (hooks stay installed)."""
        for lst in self._ffn + self._attn:
            lst.clear()
        self._lengths.clear()

    @property
    def lengths(self) -> torch.Tensor:
        """Valid frames per batch item (LongTensor [B]), from the encoder's padding mask."""
        if not self._lengths:
            raise RuntimeError("nothing captured: call the upstream inside the capture() block")
        return torch.stack(self._lengths).sum(0)

    def _bf(self, t: torch.Tensor) -> torch.Tensor:
        return t.transpose(0, 1) if self.time_first else t

    @property
    def ffn(self) -> list[torch.Tensor]:
        """Per layer, FFN activations ``[B, T, d_ffn]`` (T = longest valid length)."""
        if not self._ffn or not self._ffn[0]:
            return []
        t_max = int(self.lengths.max())
        return [(self._bf(calls[0]) if len(calls) == 1 else torch.cat([self._bf(c) for c in calls], dim=1))[:, :t_max] for calls in self._ffn]

    @property
    def attention(self) -> list[torch.Tensor]:
        """Per layer, attention probabilities ``[B, H, T, T]`` (``attention_dtype``)."""
        if not self._attn or not self._attn[0]:
            return []
        t_max = int(self.lengths.max())
        out = []
        for calls in self._attn:
            if len(calls) == 1:
                a = calls[0]
            else:  # chunked forward: block-diagonal attention
                b, h = calls[0].shape[:2]
                total = sum(c.shape[-1] for c in calls)
                a = calls[0].new_zeros(b, h, total, total)
                o = 0
                for c in calls:
                    n = c.shape[-1]
                    a[..., o : o + n, o : o + n] = c
                    o += n
            out.append(a[..., :t_max, :t_max])
        return out

    def per_utterance(self, hidden_states: Sequence[torch.Tensor] | None = None) -> list["UtteranceActivations"]:
        """Split the batch into per-utterance activations trimmed to their valid length."""
        lengths = self.lengths.tolist()
        ffn, att = self.ffn, self.attention
        out = []
        for b, n in enumerate(lengths):
            out.append(
                UtteranceActivations(
                    n_frames=int(n),
                    ffn=[f[b, :n] for f in ffn],
                    hidden=[h[b, :n] for h in hidden_states] if hidden_states is not None else [],
                    attention=torch.stack([a[b, :, :n, :n] for a in att]) if att else None,
                )
            )
        return out


@dataclass
class UtteranceActivations:
    """Activations of one utterance: lists over layers of ``[T, dim]`` tensors.

    ``attention`` is ``[n_layers, n_heads, T, T]`` or None.
    """

    n_frames: int
    ffn: list[torch.Tensor]
    hidden: list[torch.Tensor]
    attention: torch.Tensor | None = None


def _dispatch(layers: Sequence[nn.Module], pick: Callable[[nn.Module], tuple[nn.Module, str]]):
    """Group layers by their hooked module (shared layers share a module).

    Yields (module, kind, positions): the k-th call of ``module`` during one
    forward belongs to layer ``positions[k % len(positions)]``.
    """
    groups: dict[int, tuple[nn.Module, str, list[int]]] = {}
    for i, layer in enumerate(layers):
        mod, kind = pick(layer)
        groups.setdefault(id(mod), (mod, kind, []))[2].append(i)
    return list(groups.values())


@contextlib.contextmanager
def capture(
    upstream: nn.Module,
    family: str | Family | None = None,
    ffn: bool = True,
    attention: bool = False,
    attention_dtype: torch.dtype = torch.float32,
) -> Iterator[Captured]:
    """Record FFN activations and/or per-head attention while the block runs.

    Parameters
    ----------
    upstream : s3prl upstream (``UpstreamExpert`` from a hub entry, or an
        ``S3PRLUpstream`` whose expert is used).
    family : family name (``hubert``, ``wav2vec2``, ``wavlm``, ``mockingjay``);
        guessed from the module layout when None.
    ffn, attention : what to record. Attention costs O(T² H) per layer, so
        ask for it only on the utterances that need it.
    attention_dtype : dtype the maps are kept in (float16 halves the memory
        of long utterances; the maps are computed in float32 either way).

    Yields
    ------
    Captured
        Holds what the most recent forward call inside the block recorded
        (each call of the upstream starts afresh); the hooks are removed on
        exit, even on error. Hooks only read tensors, so the upstream's
        outputs are unchanged.

    Examples
    --------
    >>> with capture(expert, "hubert", attention=True) as cap:  # doctest: +SKIP
    ...     out = expert([wav])
    >>> cap.ffn[0].shape, cap.attention[0].shape  # doctest: +SKIP
    """
    expert = unwrap_upstream(upstream)
    fam = get_family(family if family is not None else family_of(expert))
    layers = fam.layers(expert)
    cap = Captured(family=fam, n_layers=len(layers), time_first=fam.time_first)
    cap._ffn = [[] for _ in layers]
    cap._attn = [[] for _ in layers]
    handles = []

    def on_encoder(_mod, args, kwargs):
        cap._lengths.append(fam.lengths_from_encoder_call(args, kwargs))

    handles.append(fam.encoder(expert).register_forward_pre_hook(on_encoder, with_kwargs=True))
    counters: list[dict] = []

    def on_forward(_mod, _args):
        # every forward of the upstream starts afresh: Captured holds the latest call
        cap.clear()
        for state in counters:
            state["k"] = 0

    handles.append(expert.register_forward_pre_hook(on_forward))

    def counter_for(positions: list[int]):
        state = {"k": 0}
        counters.append(state)

        def nxt() -> int:
            pos = positions[state["k"] % len(positions)]
            state["k"] += 1
            return pos

        return nxt

    try:
        if ffn:
            for mod, kind, positions in _dispatch(layers, fam.ffn_point):
                nxt = counter_for(positions)
                if kind == "pre":

                    def hook(_m, args, nxt=nxt):
                        cap._ffn[nxt()].append(args[0].detach())

                    handles.append(mod.register_forward_pre_hook(hook))
                elif kind == "out":

                    def hook(_m, _args, output, nxt=nxt):
                        cap._ffn[nxt()].append(output.detach())

                    handles.append(mod.register_forward_hook(hook))
                else:  # pragma: no cover
                    raise ValueError(kind)
        if attention:
            for mod, kind, positions in _dispatch(layers, fam.attention_point):
                nxt = counter_for(positions)
                if kind == "fairseq":

                    def hook(m, args, kwargs, nxt=nxt):
                        q, kpm, am = _mha_args(args, kwargs)
                        cap._attn[nxt()].append(fairseq_attention_probs(m, q.detach(), kpm, am).to(attention_dtype))

                    handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))
                elif kind == "wavlm":

                    def hook(m, args, kwargs, nxt=nxt):
                        q, kpm, am = _mha_args(args, kwargs)
                        if am is not None:
                            raise NotImplementedError("WavLM streaming attention masks are not supported")
                        pb = kwargs.get("position_bias")
                        cap._attn[nxt()].append(wavlm_attention_probs(m, q.detach(), kpm, pb).to(attention_dtype))

                    handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))
                elif kind == "probs_input":

                    def hook(_m, args, nxt=nxt):
                        cap._attn[nxt()].append(args[0].detach().to(attention_dtype))

                    handles.append(mod.register_forward_pre_hook(hook))
                else:  # pragma: no cover
                    raise ValueError(kind)
        yield cap
    finally:
        for h in handles:
            h.remove()


def grid_step(upstream: nn.Module, family: str | Family | None = None, hop: int = 320) -> int:
    """Model frames per frame of the shared grid (``hop`` samples, 20 ms).

    1 for the HuBERT family (stride 320); 2 for a Mockingjay on 10 ms fbank
    frames, whose frame ``2 t`` starts at sample ``320 t`` like grid frame
    ``t`` (snip-edges framing, 25 ms window).
    """
    expert = unwrap_upstream(upstream)
    fam = get_family(family if family is not None else family_of(expert))
    model_hop = fam.frame_hop(expert)
    if model_hop <= 0 or hop % model_hop:
        raise ValueError(f"model stride {model_hop} samples does not divide the {hop}-sample grid hop")
    return hop // model_hop


def to_grid(ua: UtteranceActivations, step: int) -> UtteranceActivations:
    """Subsample one utterance's activations onto the shared grid.

    FFN and hidden states keep every ``step``-th frame (frame ``step*t`` is
    grid frame ``t``). Attention keeps every ``step``-th query row and sums
    the keys ``step*t .. step*t+step-1`` into grid key ``t``, so each row
    still sums to 1 and no attention mass is dropped.
    """
    if step == 1:
        return ua
    n = -(-ua.n_frames // step)
    att = None
    if ua.attention is not None:
        a = ua.attention[..., ::step, :]
        pad = n * step - a.shape[-1]
        if pad:
            a = torch.cat([a, a.new_zeros(*a.shape[:-1], pad)], dim=-1)
        att = a.reshape(*a.shape[:-1], n, step).sum(-1, dtype=torch.float32).to(a.dtype)
    return UtteranceActivations(
        n_frames=n,
        ffn=[f[::step] for f in ua.ffn],
        hidden=[h[::step] for h in ua.hidden],
        attention=att,
    )


def run_upstream(
    upstream: nn.Module,
    wavs: Sequence[torch.Tensor],
    family: str | Family | None = None,
    ffn: bool = True,
    attention: bool = False,
    attention_dtype: torch.dtype = torch.float32,
) -> list[UtteranceActivations]:
    """One forward pass over ``wavs`` returning per-utterance activations.

    Runs the expert under ``torch.inference_mode`` (callers put it in eval
    mode). Hidden states come from the upstream's own ``hidden_states`` list,
    ``n_layers + 1`` entries: the input of every encoder layer, then the
    encoder output.

    Parameters
    ----------
    upstream : s3prl upstream (see :func:`capture`).
    wavs : 1-D float waveforms at 16 kHz, on the upstream's device.
    family, ffn, attention, attention_dtype : see :func:`capture`.
    """
    expert = unwrap_upstream(upstream)
    fam = get_family(family if family is not None else family_of(expert))
    with torch.inference_mode(), capture(expert, fam, ffn=ffn, attention=attention, attention_dtype=attention_dtype) as cap:
        out = expert(list(wavs))
    hs = out["hidden_states"]
    n_layers = len(fam.layers(expert))
    if len(hs) != n_layers + 1:
        raise RuntimeError(f"upstream returned {len(hs)} hidden states, expected n_layers + 1 = {n_layers + 1}")
    return cap.per_utterance(hs)
