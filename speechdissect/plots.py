"""Figure helpers: one seaborn style and one way to save (PNG + SVG, atomically)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(context="paper", style="whitegrid")


#: what makes two saves of one figure differ: the SVG's date and its random element ids (salted
#: with a fresh uuid unless svg.hashsalt is set), the matplotlib version in both formats
_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}
_RC = {"svg.hashsalt": "speechdissect"}


def save_figure(fig, png: str | os.PathLike, svg: str | os.PathLike | None = None, dpi: int = 150) -> None:
    """Write ``fig`` to ``png`` (and ``svg``) through temporary names, then close it.

    The one way figures are saved: byte-identical files for the same figure, on every run
    (no date, no matplotlib version, element ids from a fixed salt).
    """
    for path, fmt in ((png, "png"), (svg, "svg")):
        if path is None:
            continue
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with plt.rc_context(_RC):
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_METADATA[fmt])
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    plt.close(fig)


def training_curve(log: dict, title: str = ""):
    """Loss (and accuracy, when logged) per training step, with the untrained/trained held-out figures."""
    steps = log.get("step") or list(range(len(log.get("loss", []))))
    frame = pd.DataFrame({"step": steps, "loss": log.get("loss", [])})
    has_acc = bool(log.get("acc"))
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(9 if has_acc else 5, 3.2), squeeze=False)
    sns.lineplot(frame, x="step", y="loss", ax=axes[0, 0])
    axes[0, 0].set_title("training loss")
    if has_acc:
        frame["acc"] = log["acc"]
        sns.lineplot(frame, x="step", y="acc", ax=axes[0, 1])
        axes[0, 1].set_title("training accuracy (masked frames)")
    start, end = log.get("start") or {}, log.get("end") or {}
    if start and end:
        fig.suptitle(f"{title}  held-out: " + ", ".join(f"{k} {start[k]:.3g} → {end[k]:.3g}" for k in start if k in end and isinstance(start[k], (int, float))))
    elif title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
