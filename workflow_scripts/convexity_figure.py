"""Rule convexity_figure: convexity vs layer per property and upstream (pretrained vs fine-tuned)."""
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from speechdissect.logs import setup_logging
from speechdissect.plots import save_figure

setup_logging(snakemake.log[0])
frames = []
for upstream, path in zip(snakemake.params.upstreams, snakemake.input.summaries):
    t = pd.read_csv(path, sep="\t")
    t["upstream"] = upstream
    frames.append(t)
data = pd.concat(frames, ignore_index=True)
props = list(dict.fromkeys(data["property"]))
fig, axes = plt.subplots(1, len(props), figsize=(4 * len(props), 3.4), squeeze=False, sharey=True)
for ax, prop in zip(axes[0], props):
    d = data[data["property"] == prop]
    sns.lineplot(d, x="layer", y="mean", hue="upstream", marker="o", ax=ax)
    for upstream, g in d.groupby("upstream"):
        ax.fill_between(g["layer"], g["ci_low"], g["ci_high"], alpha=0.2)
    ax.set_title(f"{prop} regions")
    ax.set_ylabel("graph convexity (%)")
fig.tight_layout()
save_figure(fig, snakemake.output.png, snakemake.output.svg)
