"""Upstream models: small ones trained here, and one loader through s3prl.

* :func:`pretrain_hubert` -- ``mini_hubert`` (s3prl's HubertModel, masked
  prediction of MFCC k-means clusters), saved for s3prl's ``hubert_local``.
* :func:`pretrain_mockingjay` -- ``mini_mockingjay`` (s3prl's Mockingjay
  TransformerModel, masked reconstruction of log-mel frames), saved for
  ``mockingjay_local``.
* :func:`finetune_hubert` -- frame-classifier fine-tuning, saved back as ``hubert_local``.
* :func:`load_upstream` -- every model, local or hub, through ``s3prl.nn.S3PRLUpstream``;
  :func:`family_of`, :func:`describe`, :func:`available_names`.

Submodules import s3prl lazily where they can (``s3prl.hub`` takes ~10 s to import).
"""

from .registry import (
    LOCAL_ENTRIES,
    UpstreamDownloadError,
    available_names,
    checkpoint_entry,
    describe,
    family_of,
    load_upstream,
    save_checkpoint,
)


def __getattr__(name):  # lazy: trainers pull in scikit-learn / s3prl model code
    if name in ("pretrain_hubert", "DEFAULT_HUBERT_MODEL", "DEFAULT_HUBERT_TRAIN", "DEFAULT_HUBERT_TASK"):
        from . import hubert

        return getattr(hubert, name)
    if name in ("pretrain_mockingjay", "DEFAULT_MOCKINGJAY_TRAIN", "DEFAULT_MOCKINGJAY_TRANSFORMER"):
        from . import mockingjay

        return getattr(mockingjay, name)
    if name in ("finetune_hubert", "DEFAULT_FINETUNE"):
        from . import finetune

        return getattr(finetune, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LOCAL_ENTRIES",
    "UpstreamDownloadError",
    "available_names",
    "checkpoint_entry",
    "describe",
    "family_of",
    "load_upstream",
    "save_checkpoint",
    "pretrain_hubert",
    "pretrain_mockingjay",
    "finetune_hubert",
]
