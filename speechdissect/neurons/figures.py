"""Figures of the property-neuron study (Lin et al., 2024): pure functions, table in, figure out.

Every function takes the tables the workflow writes (or the arrays behind
them) and returns a :class:`matplotlib.figure.Figure`; saving is the caller's
job (:func:`speechdissect.plots.save_figure`, PNG + SVG). Nothing is read from
or written to disk here.

Conventions
-----------
* Layers are the 0-based encoder layers of the cache and are shown as such.
* Groups are drawn in the order of :data:`~speechdissect.neurons.property.PROPERTIES`
  with the display names of :data:`~speechdissect.neurons.property.GROUP_LABELS`;
  a group keeps the same colour in every figure.
* Empty inputs (no rows, an all-NaN silhouette) give a figure with a note
  instead of an exception, so a tiny run still produces its report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..plots import plt, sns
from .property import GROUP_LABELS, PROPERTIES, get_property

__all__ = [
    "GROUP_COLOURS",
    "counts_per_layer",
    "mds_scatter",
    "models_side_by_side",
    "models_table",
    "pick_phone",
    "silhouette_per_layer",
    "sorted_probabilities",
    "sorted_probability_table",
]

_GROUP_ORDER = [g for spec in PROPERTIES.values() for g in spec.groups]
GROUP_COLOURS: dict[str, tuple] = dict(zip(_GROUP_ORDER, sns.color_palette("tab10", len(_GROUP_ORDER))))
"""Group -> colour, shared by every figure."""


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def pick_phone(index: pd.DataFrame, phone: str) -> tuple[str, bool]:
    """The phone to show: ``phone`` if the ``phone`` table has it, else its most frequent phone.

    Returns
    -------
    phone, substituted
        The phone and whether it replaces the requested one.
    """
    phones = index["phone"].astype(str)
    if (phones == phone).any():
        return phone, False
    if len(index) == 0:
        raise ValueError("the phone probability table has no rows")
    return str(phones.iloc[int(np.argmax(index["count"].to_numpy()))]), True


def sorted_probability_table(probs: np.ndarray, index: pd.DataFrame, phone: str) -> pd.DataFrame:
    """Tidy ``layer, rank, p``: each layer's activation probabilities for ``phone``, sorted descending.

    Parameters
    ----------
    probs
        ``[n_layers, n_rows, d_ffn]`` probabilities of the ``phone`` condition.
    index
        Its row index (column ``phone``).
    phone
        Phone whose row is shown.
    """
    probs = np.asarray(probs)
    rows = np.flatnonzero(index["phone"].astype(str).to_numpy() == phone)
    if rows.size != 1:
        raise ValueError(f"phone {phone!r} has {rows.size} rows in the phone table (expected 1)")
    p = -np.sort(-probs[:, rows[0], :], axis=1)
    n_layers, d = p.shape
    return pd.DataFrame({
        "layer": np.repeat(np.arange(n_layers), d),
        "rank": np.tile(np.arange(1, d + 1), n_layers),
        "p": p.ravel(),
    })


def sorted_probabilities(probs: np.ndarray, index: pd.DataFrame, phone: str = "AH", chance: float | None = None,
                         title: str = ""):
    """Sorted activation probabilities of every neuron for one phone, one line per layer (the paper's Fig. 2).

    Only a small fraction of a layer's neurons fire with high probability for
    a phone; the x axis is logarithmic so those few stay visible.

    Parameters
    ----------
    probs, index
        Probabilities ``[n_layers, n_rows, d_ffn]`` of the ``phone`` condition and its row index.
    phone
        The phone (must be in ``index``; see :func:`pick_phone`).
    chance
        Chance level ``tau / d_ffn``, drawn as a dashed line when given.
    title
        Figure title; default names the phone and its number of segments.
    """
    table = sorted_probability_table(probs, index, phone)
    n_layers = int(table["layer"].max()) + 1 if len(table) else 0
    count = int(index.loc[index["phone"].astype(str) == phone, "count"].iloc[0])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(table, x="rank", y="p", hue="layer", palette="viridis", ax=ax, legend="full" if n_layers <= 13 else "brief")
    if chance is not None:
        ax.axhline(chance, ls="--", lw=0.8, color="0.3", label=f"chance ({chance:.3g})")
    ax.set_xscale("log")
    ax.set_xlim(1, table["rank"].max())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("neuron rank (sorted by activation probability)")
    ax.set_ylabel("activation probability")
    ax.set_title(title or f"[{phone}]: sorted activation probabilities ({count} segments)")
    ax.legend(title="layer", fontsize=7, title_fontsize=8, loc="upper right", ncol=2 if n_layers > 6 else 1)
    fig.tight_layout()
    return fig


def counts_per_layer(counts: pd.DataFrame, properties: Sequence[str] | None = None, d_ffn: int | None = None):
    """Group neurons (top row) and property neurons (bottom row) per layer, one column per property.

    Parameters
    ----------
    counts
        :func:`~speechdissect.neurons.property.summary_counts` table
        (``layer, property, group, n_group_neurons, n_property_neurons``).
    properties
        Properties to show, in order (default: those in ``counts``).
    d_ffn
        Layer width, for the y label.
    """
    props = list(dict.fromkeys(counts["property"])) if properties is None else list(properties)
    fig, axes = plt.subplots(2, max(1, len(props)), figsize=(3.4 * max(1, len(props)), 5.2), squeeze=False, sharex=True)
    per_group = counts[counts["group"] != "all"]
    for j, prop in enumerate(props):
        groups = list(get_property(prop).groups)
        sub = per_group[per_group["property"] == prop]
        for i, (col, what) in enumerate((("n_group_neurons", "group neurons"), ("n_property_neurons", "property neurons"))):
            ax = axes[i, j]
            if sub.empty:
                _empty(ax, f"no {prop} results")
                continue
            tidy = sub.assign(label=sub["group"].map(lambda g: GROUP_LABELS.get(g, g)))
            sns.barplot(tidy, x="layer", y=col, hue="label", hue_order=[GROUP_LABELS.get(g, g) for g in groups],
                        palette=[GROUP_COLOURS.get(g, "0.5") for g in groups], ax=ax)
            ax.set_ylabel((what + (f" (of {d_ffn})" if d_ffn else "")) if j == 0 else "")
            ax.set_title(f"{prop}: {what}")
            if i == 0:
                ax.legend(fontsize=7, title=None)
            elif ax.get_legend() is not None:
                ax.get_legend().remove()
    fig.tight_layout()
    return fig


def silhouette_per_layer(geometry: pd.DataFrame):
    """Silhouette of each property's groups per layer, in the 2-D MDS map and in the row-vector space.

    Parameters
    ----------
    geometry
        :func:`~speechdissect.neurons.geometry.geometry_tables` scores
        (``layer, property, neuron_set, silhouette_mds, silhouette_vectors``; optional ``representation``).
    """
    rep = str(geometry["representation"].iloc[0]) if "representation" in geometry and len(geometry) else "binary"
    vec_space = "binary vectors 1[p > chance]" if rep == "binary" else f"{rep} vectors"
    tidy = geometry.melt(id_vars=["layer", "property", "neuron_set"], value_vars=["silhouette_mds", "silhouette_vectors"],
                         var_name="space", value_name="silhouette")
    tidy["space"] = tidy["space"].map({"silhouette_mds": "2-D MDS map", "silhouette_vectors": vec_space})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True, squeeze=False)
    for ax, space in zip(axes[0], ["2-D MDS map", vec_space]):
        sub = tidy[tidy["space"] == space]
        if sub["silhouette"].notna().sum() == 0:
            _empty(ax, "silhouette undefined\n(too few rows or groups, or empty neuron sets)")
            ax.set_title(space)
            continue
        sns.lineplot(sub, x="layer", y="silhouette", hue="property", style="neuron_set", markers=True, dashes=True, ax=ax)
        ax.axhline(0, lw=0.6, color="0.5")
        ax.set_xticks(sorted(sub["layer"].unique()))
        ax.set_title(space)
        if ax is axes[0, -1]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        elif ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def mds_scatter(coords: pd.DataFrame, prop: str, neuron_set: str = "all", scores: pd.DataFrame | None = None,
                col_wrap: int = 4, label_points: bool = True):
    """MDS map of one property's rows in every layer, coloured by group.

    Parameters
    ----------
    coords
        :func:`~speechdissect.neurons.geometry.geometry_tables` coordinates
        (``layer, property, neuron_set, phone, group, mds_1, mds_2``).
    prop, neuron_set
        Which maps to draw.
    scores
        Geometry scores; when given, each panel title carries its silhouette.
    col_wrap
        Panels per row.
    label_points
        Write the phone next to each point.
    """
    spec = get_property(prop)
    sub = coords[(coords["property"] == spec.name) & (coords["neuron_set"] == neuron_set)]
    layers = sorted(sub["layer"].unique())
    n = max(1, len(layers))
    ncol = min(col_wrap, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.9 * nrow + 0.8), squeeze=False, layout="constrained")
    flat = axes.ravel()
    if not layers:
        _empty(flat[0], f"no MDS map for {spec.name} / {neuron_set}")
    best = None
    if scores is not None:
        mine = scores[(scores["property"] == spec.name) & (scores["neuron_set"] == neuron_set)]
        if mine["silhouette_mds"].notna().any():
            best = int(mine.loc[mine["silhouette_mds"].idxmax(), "layer"])
    for ax, layer in zip(flat, layers):
        pts = sub[sub["layer"] == layer]
        title = f"layer {layer}"
        if scores is not None:
            s = scores[(scores["layer"] == layer) & (scores["property"] == spec.name) & (scores["neuron_set"] == neuron_set)]
            if len(s):
                title += f"  (silhouette {s['silhouette_mds'].iloc[0]:.2f})" + ("  best" if layer == best else "")
        if pts[["mds_1", "mds_2"]].isna().all().all():
            _empty(ax, "empty neuron set")
            ax.set_title(title, fontsize=9, fontweight="bold" if layer == best else "normal")
            continue
        sns.scatterplot(pts, x="mds_1", y="mds_2", hue="group", hue_order=list(spec.groups),
                        palette=[GROUP_COLOURS.get(g, "0.5") for g in spec.groups], s=22, ax=ax, legend=False)
        if label_points and "phone" in pts.columns:
            for x, y, ph in zip(pts["mds_1"], pts["mds_2"], pts["phone"]):
                ax.annotate(str(ph), (x, y), fontsize=5, xytext=(2, 2), textcoords="offset points", color="0.25")
        ax.set_title(title, fontsize=9, fontweight="bold" if layer == best else "normal")
        ax.set_xlabel("MDS 1")
        ax.set_ylabel("MDS 2")
        ax.set_aspect("equal", adjustable="datalim")
    for ax in flat[len(layers):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=GROUP_COLOURS.get(g, "0.5"), label=GROUP_LABELS.get(g, g)) for g in spec.groups]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    rep = str(scores["representation"].iloc[0]) if scores is not None and "representation" in scores and len(scores) else None
    what = {"binary": "above-chance neurons (binary)", "probability": "activation probabilities"}.get(rep, "neuron vectors")
    fig.suptitle(f"{spec.name}: MDS of {what} ({neuron_set} neurons)", fontsize=10)
    return fig


def models_table(counts: dict[str, pd.DataFrame], geometry: dict[str, pd.DataFrame], d_ffn: dict[str, int],
                 neuron_set: str = "all") -> pd.DataFrame:
    """Tidy ``upstream, layer, property, n_property_neurons, share_property_neurons, silhouette_mds`` of several models.

    Parameters
    ----------
    counts, geometry
        Upstream -> its ``counts.tsv`` / ``geometry.tsv`` table.
    d_ffn
        Upstream -> FFN width (the share is ``n_property_neurons / d_ffn``).
    neuron_set
        Neuron set whose silhouette is shown.
    """
    frames = []
    for up, c in counts.items():
        tot = c[c["group"] == "all"][["layer", "property", "n_group_neurons", "n_property_neurons"]]
        g = geometry[up]
        g = g[g["neuron_set"] == neuron_set][["layer", "property", "silhouette_mds"]]
        t = tot.merge(g, on=["layer", "property"], how="outer")
        t.insert(0, "upstream", up)
        t["d_ffn"] = int(d_ffn[up])
        t["share_property_neurons"] = t["n_property_neurons"] / t["d_ffn"]
        frames.append(t)
    cols = ["upstream", "layer", "property", "d_ffn", "n_group_neurons", "n_property_neurons", "share_property_neurons", "silhouette_mds"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def models_side_by_side(table: pd.DataFrame, properties: Sequence[str] | None = None):
    """Property neurons (share of the layer) and MDS silhouette per layer, one line per upstream, one column per property.

    Parameters
    ----------
    table
        :func:`models_table` output.
    properties
        Properties to show, in order (default: those in ``table``).
    """
    props = list(dict.fromkeys(table["property"])) if properties is None else list(properties)
    fig, axes = plt.subplots(2, max(1, len(props)), figsize=(3.6 * max(1, len(props)), 5.6), squeeze=False, sharex="col")
    if not props:
        _empty(axes[0, 0], "no neuron results")
    for j, prop in enumerate(props):
        sub = table[table["property"] == prop].assign(share=lambda t: 100 * t["share_property_neurons"])
        for i, (col, label) in enumerate((("share", "property neurons (% of layer)"), ("silhouette_mds", "silhouette (2-D MDS)"))):
            ax = axes[i, j]
            if sub[col].notna().sum() == 0:
                _empty(ax, f"no {label}")
                continue
            sns.lineplot(sub, x="layer", y=col, hue="upstream", style="upstream", markers=True, dashes=False, ax=ax)
            ax.set_ylabel(label if j == 0 else "")
            ax.set_title(f"{prop}: {label.split(' (')[0]}")
            ax.set_xticks(sorted(sub["layer"].dropna().unique()))
            if i == 1:
                ax.axhline(0, lw=0.6, color="0.5")
            if (i, j) != (0, len(props) - 1) and ax.get_legend() is not None:
                ax.get_legend().remove()
            elif ax.get_legend() is not None:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig
