"""Wrapper experts: s3prl's own downstream experts, plus per-item predictions and group scores.

``speechdissect_utterance`` is s3prl's ``speaker_linear_utter_libri`` (mean pooling over frames + one
linear layer; class = file-name prefix; same datasets, model, loss, logging and best-checkpoint
choice, so its numbers are the base expert's) that also

* records, for every dev / test evaluation, each item's name, label and prediction and writes them to
  ``{expdir}/predictions/{split}-step{step}.tsv``;
* logs the accuracy of each group of items given by the task's ``groups_file`` (a TSV with an
  ``item`` column and one column per grouping, e.g. ``gender``) as tensorboard scalars
  ``libri_speaker/{split}-acc_by_{grouping}/{group}`` (e.g. ``libri_speaker/test-acc_by_gender/M``),
  which :func:`speechdissect.downstream.runner.select_score` turns into ``score_by_{grouping}``.

s3prl finds an expert as the module ``s3prl.downstream.{name}.expert``; :func:`install` registers
the wrappers under those names in ``sys.modules`` (the pip package's directory is left alone). The
downstream runner calls it in its subprocess before s3prl's ``run_downstream.main()``.
"""

from __future__ import annotations

import csv
import importlib.machinery
import os
import sys
import types
from collections import defaultdict
from pathlib import Path

UTTERANCE_EXPERT = "speechdissect_utterance"
GROUPS_FILE = "groups.tsv"
EXPERTS = (UTTERANCE_EXPERT,)


def read_groups(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``groups_file`` -> grouping -> {item: group}; the file has a header ``item`` + grouping names."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if reader.fieldnames is None or reader.fieldnames[0] != "item":
            raise ValueError(f"{path}: expected a TSV whose first column is 'item', got {reader.fieldnames}")
        out: dict[str, dict[str, str]] = {c: {} for c in reader.fieldnames[1:]}
        for row in reader:
            for col in out:
                out[col][row["item"]] = row[col]
    return out


def group_accuracy(names, correct, groups: dict[str, dict[str, str]]) -> dict[str, dict[str, float]]:
    """Accuracy per group: grouping -> group -> mean of ``correct`` over the named items in it (items
    without a group are left out)."""
    out: dict[str, dict[str, float]] = {}
    for col, of in groups.items():
        hits: dict[str, list[float]] = defaultdict(list)
        for n, c in zip(names, correct):
            if n in of:
                hits[of[n]].append(float(c))
        out[col] = {g: sum(v) / len(v) for g, v in sorted(hits.items()) if v}
    return out


def _utterance_expert_module() -> types.ModuleType:
    import torch
    from s3prl.downstream.speaker_linear_utter_libri import expert as base
    from s3prl.downstream.speaker_linear_utter_libri.dataset import SpeakerDataset

    class NamedSpeakerDataset(SpeakerDataset):
        """s3prl's SpeakerDataset whose batches also carry the item names."""

        def __getitem__(self, index):
            wavs, labels = super().__getitem__(index)
            return wavs, labels, [self._parse_x_name(x) for x in self.X[index]]

        def collate_fn(self, items):
            return items[0]

    class DownstreamExpert(base.DownstreamExpert):
        """``speaker_linear_utter_libri`` + item predictions and group accuracies (see module doc)."""

        def __init__(self, upstream_dim, downstream_expert, expdir, **kwargs):
            super().__init__(upstream_dim, downstream_expert, expdir, **kwargs)
            d = self.datarc
            # same arguments, same order (each dataset reseeds python's random the same way)
            self.train_dataset = NamedSpeakerDataset("train", d["train_batch_size"], **d)
            self.dev_dataset = NamedSpeakerDataset("dev", d["eval_batch_size"], **d)
            self.test_dataset = NamedSpeakerDataset("test", d["eval_batch_size"], **d)
            self.idx2class = {i: c for c, i in self.train_dataset.speaker2idx.items()}
            gf = d.get("groups_file")
            self.groups = read_groups(gf) if gf else {}
            self.expdir = expdir

        def forward(self, mode, features, labels, names=None, records=None, **kwargs):
            features = torch.stack([f.mean(dim=0) for f in features], dim=0)
            labels = labels.to(features.device)
            predicted = self.model(features)
            loss = self.objective(predicted, labels)
            predicted_classid = predicted.max(dim=-1).indices
            records["acc"] += (predicted_classid == labels).view(-1).cpu().float().tolist()
            if names is not None and mode != "train":
                records["name"] += list(names)
                records["label"] += labels.view(-1).cpu().tolist()
                records["predicted"] += predicted_classid.view(-1).cpu().tolist()
            return loss

        def log_records(self, mode, records, logger, global_step, **kwargs):
            save_ckpt = super().log_records(mode, records, logger, global_step, **kwargs)
            names = records.get("name") or []
            if mode == "train" or not names:
                return save_ckpt
            correct = records["acc"]
            prefix = f"libri_speaker/{mode}-acc_by_"
            for col, accs in group_accuracy(names, correct, self.groups).items():
                for g, acc in accs.items():
                    logger.add_scalar(f"{prefix}{col}/{g}", acc, global_step=global_step)
            out = Path(self.expdir) / "predictions" / f"{mode}-step{global_step}.tsv"
            out.parent.mkdir(parents=True, exist_ok=True)
            cols = list(self.groups)
            with open(out, "w") as fh:
                fh.write("\t".join(["item", "label", "predicted", "correct", *cols]) + "\n")
                for n, y, p, c in zip(names, records["label"], records["predicted"], correct):
                    extra = [self.groups[col].get(n, "") for col in cols]
                    fh.write("\t".join([n, self.idx2class[y], self.idx2class[p], str(int(c)), *extra]) + "\n")
            return save_ckpt

    mod = types.ModuleType(f"s3prl.downstream.{UTTERANCE_EXPERT}.expert", __doc__)
    mod.DownstreamExpert = DownstreamExpert
    mod.NamedSpeakerDataset = NamedSpeakerDataset
    return mod


def install() -> None:
    """Register the wrapper experts as ``s3prl.downstream.{name}.expert`` (idempotent)."""
    import s3prl.downstream

    for name, build in ((UTTERANCE_EXPERT, _utterance_expert_module),):
        full = f"s3prl.downstream.{name}"
        if f"{full}.expert" in sys.modules:
            continue
        pkg = types.ModuleType(full, f"speechdissect wrapper expert {name}")
        pkg.__path__ = []
        pkg.__spec__ = importlib.machinery.ModuleSpec(full, None, is_package=True)
        mod = build()
        mod.__spec__ = importlib.machinery.ModuleSpec(f"{full}.expert", None)
        pkg.expert = mod
        sys.modules[full] = pkg
        sys.modules[f"{full}.expert"] = mod
        setattr(s3prl.downstream, name, pkg)
