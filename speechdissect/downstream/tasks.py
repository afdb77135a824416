"""Downstream task registry: task name -> s3prl expert, our config, data files.

Every task runs through s3prl's own legacy downstream runner
(``s3prl/run_downstream.py`` -> ``s3prl.downstream.runner.Runner``) with one of
s3prl's own experts. This module knows, for each task:

* which expert (``-d``) to run and which of our config files (``-c``) to pass;
* which data files the expert reads, and how to write them from a corpus in
  LibriSpeech layout (:func:`prepare_task_data`);
* which tensorboard scalar holds the metric, and whether higher is better.

Task data directory
-------------------
:func:`prepare_task_data` writes everything a task needs into one directory and
finishes by writing ``datarc.yaml`` there: the ``downstream_expert.datarc``
path keys for the expert, relative to that directory (so the directory can be
moved). :func:`load_datarc` reads it back with absolute paths.

Tasks (name: s3prl expert ``-d``; files written, relative to the task data directory):

- ``phone_linear``, ``phone_1hidden``: ``phone_linear`` / ``phone_1hidden``;
  ``phones/converted_aligned_phones.txt`` (10 ms grid), ``phones/train_split.txt``,
  ``phones/test_split.txt``, ``bucket/train-clean-100.csv``.
- ``speaker_linear_utter``: ``speaker_linear_utter_libri``; ``train_split.txt``, ``test_split.txt``,
  ``bucket/train-clean-100.csv`` (audio read from the corpus).
- ``gender``: ``speaker_linear_utter_libri``; ``audio/{M|F}-{uttid}.flac`` (symlinks), the two lists,
  the bucket table.
- ``word``: ``speaker_linear_utter_libri``; ``clips/w{k:03d}-{uttid}_{i}.flac`` (cut from the corpus),
  the two lists, the bucket table, ``classes.tsv``.
- ``ctc``: ``asr`` (CTC, phone error rate); ``corpus/{split}/{spk}/{chap}/*.flac`` (symlinks) with
  ``*.trans.txt`` of phone codes, ``phones.dict``, ``phone_codes.tsv``,
  ``bucket/{train-clean-100,dev-clean,test-clean}.csv``.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import yaml

from speechdissect.frames import HOP, RECEPTIVE_FIELD, SAMPLE_RATE, n_frames

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DATARC_FILE = "datarc.yaml"
BUCKET_CSV = "train-clean-100.csv"  # the name every LibriSpeech expert of s3prl opens
GROUPS_FILE = "groups.tsv"  # item -> group per grouping (gender, speaker), read by speechdissect_utterance
PHONE_CLASSES = 41  # phone_linear / phone_1hidden hard-code 41 output classes
SILENCE_PHONES = ("sil", "spn", "sp", "", "<sil>")
SILENCE_WORDS = ("<sil>", "sil", "", "<unk>")

RUNNER_KEYS = (
    "total_steps",
    "gradient_clipping",
    "gradient_accumulate_steps",
    "log_step",
    "eval_step",
    "save_step",
    "max_keep",
    "eval_dataloaders",
)

# Keys each s3prl expert reads from ``downstream_expert`` (read off the experts'
# and datasets' sources in s3prl 0.4.18).
EXPERT_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "phone_linear": {
        "datarc": ("num_workers", "train_batch_size", "eval_batch_size", "libri_root", "phone_path", "bucket_file"),
        "modelrc": (),
    },
    "phone_1hidden": {
        "datarc": ("num_workers", "train_batch_size", "eval_batch_size", "libri_root", "phone_path", "bucket_file"),
        "modelrc": ("hidden_size", "dropout"),
    },
    "speaker_linear_utter_libri": {
        "datarc": ("num_workers", "train_batch_size", "eval_batch_size", "libri_root", "split_file", "bucket_file"),
        "modelrc": (),
    },
    # speechdissect.downstream.experts: speaker_linear_utter_libri + item predictions and group scores
    "speechdissect_utterance": {
        "datarc": ("num_workers", "train_batch_size", "eval_batch_size", "libri_root", "split_file", "bucket_file",
                   "groups_file"),
        "modelrc": (),
    },
    "asr": {
        "datarc": (
            "num_workers", "batch_size", "eval_batch_size", "libri_root", "bucket_file", "dict_path",
            "zero_infinity", "train", "dev-clean", "test-clean",
        ),
        "modelrc": ("project_dim", "select", "RNNs"),
    },
}


class TaskDataError(ValueError):
    """Task data files are missing or do not fit the expert."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Task:
    """One downstream task: an s3prl expert, our config, a data writer, a metric.

    Attributes
    ----------
    name : str
        Task name used in configs, paths and result tables.
    expert : str
        s3prl downstream expert (``s3prl.downstream.<expert>.expert``), passed as ``-d``.
    config : str
        File name of our task config under ``speechdissect/downstream/configs/``.
    metric : str
        Metric name reported in results (``acc``, ``per``).
    scalar : str
        Tensorboard tag template of the metric, ``{split}`` filled with the split name.
    higher_is_better : bool
        Direction used to pick the best dev step.
    dev_split, test_split : str
        Split names the expert uses in ``eval_dataloaders``.
    inputs : tuple of str
        Inputs :func:`prepare_task_data` needs besides ``corpus_root``.
    scale : float
        Multiplier applied to the logged value (asr logs PER in percent; we report a fraction).
    description : str
        One line for humans.
    """

    name: str
    expert: str
    config: str
    metric: str
    scalar: str
    higher_is_better: bool
    prepare: Callable[..., dict] = field(repr=False, compare=False)
    inputs: tuple[str, ...] = ()
    dev_split: str = "dev"
    test_split: str = "test"
    scale: float = 1.0
    description: str = ""

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / self.config

    def load_config(self) -> dict:
        """Our config template for this task (a fresh dict)."""
        with open(self.config_path) as fh:
            return yaml.safe_load(fh)

    def tag(self, split: str) -> str:
        return self.scalar.format(split=split)


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to :data:`TASKS` (a new task is one call here plus one config file)."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """Look a task up by name; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown downstream task {name!r}; valid tasks: {', '.join(sorted(TASKS))}") from None


# --------------------------------------------------------------------------- corpus helpers


@dataclass(frozen=True)
class Utterance:
    uttid: str
    split: str
    speaker: str
    chapter: str
    path: Path  # absolute
    relpath: str  # relative to the corpus root


def scan_corpus(corpus_root: str | os.PathLike) -> list[Utterance]:
    """All ``{split}/{speaker}/{chapter}/{uttid}.flac`` files of a LibriSpeech-layout corpus, sorted."""
    root = Path(corpus_root).resolve()
    if not root.is_dir():
        raise TaskDataError(f"corpus root not found: {root} (write the corpus first)")
    out = []
    for path in sorted(root.glob("*/*/*/*.flac")):
        split, speaker, chapter = path.relative_to(root).parts[:3]
        out.append(Utterance(path.stem, split, speaker, chapter, path, path.relative_to(root).as_posix()))
    if not out:
        raise TaskDataError(f"no {{split}}/{{speaker}}/{{chapter}}/*.flac files under {root}")
    return out


def audio_frames(path: str | os.PathLike) -> int:
    """Number of samples of an audio file (header only)."""
    import soundfile as sf

    try:
        return int(sf.info(str(path)).frames)
    except Exception as exc:  # noqa: BLE001 - name the file
        raise TaskDataError(f"corrupt audio: {path} ({exc})") from exc


def write_bucket_csv(path: Path, rows: Iterable[tuple[str, int]]) -> None:
    """s3prl length-bucket table: ``file_path`` (relative to ``libri_root``), ``length`` (samples)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.write("file_path,length,label\n")
        for rel, length in rows:
            if "," in rel:
                raise TaskDataError(f"comma in audio path breaks the s3prl bucket csv: {rel}")
            fh.write(f"{rel},{int(length)},\n")


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for line in lines:
            fh.write(f"{line}\n")


def _symlink(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.abspath(target), link)


def read_speaker_genders(corpus_root: str | os.PathLike) -> dict[str, str]:
    """Speaker -> ``M``/``F`` from ``speakers.tsv`` (synthetic corpus) or ``SPEAKERS.TXT`` (LibriSpeech)."""
    root = Path(corpus_root)
    tsv = root / "speakers.tsv"
    if tsv.is_file():
        import pandas as pd

        table = pd.read_csv(tsv, sep="\t", dtype=str)
        if not {"speaker", "gender"} <= set(table.columns):
            raise TaskDataError(f"{tsv} needs columns speaker and gender, has {list(table.columns)}")
        return {str(s): str(g).strip().upper()[:1] for s, g in zip(table["speaker"], table["gender"])}
    for name in ("SPEAKERS.TXT", "../SPEAKERS.TXT"):
        txt = root / name
        if txt.is_file():
            genders = {}
            for line in txt.read_text(errors="replace").splitlines():
                if line.startswith(";") or "|" not in line:
                    continue
                parts = [p.strip() for p in line.split("|")]
                genders[parts[0]] = parts[1].upper()[:1]
            return genders
    raise TaskDataError(
        f"no speaker genders for {root}: write speakers.tsv (columns speaker, gender) "
        "or SPEAKERS.TXT there, or pass genders={speaker: 'M'|'F'}"
    )


def _split_names(utts: list[Utterance]) -> list[str]:
    return sorted({u.split for u in utts})


def _test_dirs(utts: list[Utterance], test_splits: Iterable[str] | None) -> set[str]:
    names = set(_split_names(utts))
    wanted = set(test_splits) if test_splits else {s for s in names if s.startswith("test")}
    return wanted & names


# --------------------------------------------------------------------------- writers


def _subset(items: list, n: int | None, seed: int) -> list:
    """At most ``n`` items, a seeded random choice kept in the original order (all when ``n`` is None)."""
    if n is None or len(items) <= n:
        return list(items)
    keep = set(random.Random(seed).sample(range(len(items)), int(n)))
    return [x for i, x in enumerate(items) if i in keep]


def _collapse_phone_lines(path: Path) -> dict[str, list[int]]:
    out = {}
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                out[parts[0]] = [int(p) for p in parts[1:]]
            except ValueError:
                raise TaskDataError(f"{path}:{n}: expected 'uttid id id ...' with integer phone ids") from None
    return out


def prepare_phone(
    corpus_root,
    out_dir: Path,
    *,
    phone_dir,
    bucket_dir=None,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    **_,
) -> dict:
    """Files for ``phone_linear`` / ``phone_1hidden``.

    ``phone_dir`` holds s3prl's phone files (``converted_aligned_phones.txt``: ``uttid id id ...``, one
    id in ``0..40`` per frame; ``train_split.txt`` / ``test_split.txt``: one uttid a line), as written
    by :mod:`speechdissect.labels`. Labels on the 20 ms frame grid are repeated twice to the 10 ms grid
    s3prl's own LibriSpeech files use: the expert then tiles 20 ms features (HuBERT family) by 2 and
    matches 10 ms features (Mockingjay) 1:1, so both families are aligned. Labels already at 10 ms are
    copied. ``bucket_dir`` (a directory with ``train-clean-100.csv``) is used when given; otherwise the
    bucket table is written from the corpus. ``max_train`` / ``max_test`` keep a seeded random subset
    of the utterances of ``train_split.txt`` / ``test_split.txt`` (s3prl's runner recomputes the
    frozen upstream for every batch, so the audio probed sets the cost of a run).
    """
    phone_dir = Path(phone_dir)
    for name in ("converted_aligned_phones.txt", "train_split.txt", "test_split.txt"):
        if not (phone_dir / name).is_file():
            raise TaskDataError(f"missing phone file: {phone_dir / name} (run the labels step first)")
    labels = _collapse_phone_lines(phone_dir / "converted_aligned_phones.txt")
    train = [x.strip() for x in (phone_dir / "train_split.txt").read_text().splitlines() if x.strip()]
    test = [x.strip() for x in (phone_dir / "test_split.txt").read_text().splitlines() if x.strip()]
    train, test = _subset(train, max_train, seed), _subset(test, max_test, seed + 1)
    utts = {u.uttid: u for u in scan_corpus(corpus_root)}
    used = train + test
    missing = [u for u in used if u not in utts or u not in labels]
    if missing:
        raise TaskDataError(
            f"{len(missing)} utterances of {phone_dir}/*_split.txt lack audio under {corpus_root} "
            f"or labels in converted_aligned_phones.txt, e.g. {missing[:3]}"
        )
    bad = max(max(v, default=0) for v in labels.values())
    if bad >= PHONE_CLASSES or min(min(v, default=0) for v in labels.values()) < 0:
        raise TaskDataError(
            f"{phone_dir}/converted_aligned_phones.txt has phone id {bad}: s3prl's phone experts have "
            f"{PHONE_CLASSES} classes, ids must be in 0..{PHONE_CLASSES - 1}"
        )
    lengths = {u: audio_frames(utts[u].path) for u in used}
    out_phones = out_dir / "phones"
    out_phones.mkdir(parents=True, exist_ok=True)
    with open(out_phones / "converted_aligned_phones.txt", "w") as fh:
        for uttid in used:
            ids = labels[uttid]
            n = lengths[uttid]
            ratio = len(ids) / max(n_frames(n), 1)
            if 0.8 <= ratio <= 1.25:  # 20 ms grid -> 10 ms
                ids = [i for i in ids for _ in range(2)]
            elif not 1.6 <= ratio <= 2.5:
                raise TaskDataError(
                    f"{uttid}: {len(ids)} phone labels for {n} samples fits neither the 20 ms grid "
                    f"({n_frames(n)} frames) nor the 10 ms grid (~{n // 160})"
                )
            fh.write(uttid + " " + " ".join(map(str, ids)) + "\n")
    write_lines(out_phones / "train_split.txt", train)
    write_lines(out_phones / "test_split.txt", test)
    if bucket_dir is not None:
        bucket = Path(bucket_dir).resolve()
        if not (bucket / BUCKET_CSV).is_file():
            raise TaskDataError(f"missing bucket table: {bucket / BUCKET_CSV}")
    else:
        bucket = out_dir / "bucket"
        write_bucket_csv(bucket / BUCKET_CSV, [(utts[u].relpath, lengths[u]) for u in used])
    return {"libri_root": Path(corpus_root).resolve(), "phone_path": out_phones, "bucket_file": bucket}


def prepare_speaker(
    corpus_root,
    out_dir: Path,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    max_per_speaker: int | None = None,
    **_,
) -> dict:
    """Files for closed-set utterance speaker ID (``speaker_linear_utter_libri``).

    The expert names the class of ``.../{spk}-{chap}-{utt}.flac`` by ``spk`` and keeps speakers with at
    least two rows in the bucket table. Speaker ID needs every speaker in training and test, so each
    speaker's utterances (from every split directory) are shuffled with ``seed`` and ``test_fraction``
    of them (at least one) go to ``test_split.txt``, the rest to ``train_split.txt`` (s3prl takes 10 %
    of that for dev). Speakers with fewer than three utterances are left out.
    """
    rng = random.Random(seed)
    by_spk: dict[str, list[Utterance]] = defaultdict(list)
    for u in scan_corpus(corpus_root):
        by_spk[u.uttid.split("-")[0]].append(u)
    train, test = [], []
    for spk in sorted(by_spk):
        utts = sorted(by_spk[spk], key=lambda u: u.uttid)
        if len(utts) < 3:
            continue
        rng.shuffle(utts)
        if max_per_speaker:
            utts = utts[:max_per_speaker]
        n_test = min(max(1, round(test_fraction * len(utts))), len(utts) - 2)
        test += utts[:n_test]
        train += utts[n_test:]
    if len({u.uttid.split("-")[0] for u in test}) < 2:
        raise TaskDataError(f"speaker ID needs at least two speakers with 3+ utterances under {corpus_root}")
    write_lines(out_dir / "train_split.txt", sorted(u.uttid for u in train))
    write_lines(out_dir / "test_split.txt", sorted(u.uttid for u in test))
    rows = [(u.relpath, audio_frames(u.path)) for u in sorted(train + test, key=lambda u: u.uttid)]
    write_bucket_csv(out_dir / "bucket" / BUCKET_CSV, rows)
    items = sorted(u.uttid for u in train + test)
    write_groups(out_dir / GROUPS_FILE, _gender_groups(corpus_root, {u.uttid: u.speaker for u in train + test}), items)
    return {"libri_root": Path(corpus_root).resolve(), "split_file": out_dir, "bucket_file": out_dir / "bucket",
            "groups_file": out_dir / GROUPS_FILE}


def _gender_groups(corpus_root, speaker_of: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{"gender": item -> M/F}`` when the corpus knows its speakers' genders, else no grouping."""
    try:
        genders = read_speaker_genders(corpus_root)
    except TaskDataError:
        return {}
    return {"gender": {i: genders[s] for i, s in speaker_of.items() if genders.get(s) in ("M", "F")}}


def read_speaker_table(corpus_root: str | os.PathLike):
    """``speakers.tsv`` of a corpus as a DataFrame of strings (None when the corpus has none)."""
    tsv = Path(corpus_root) / "speakers.tsv"
    if not tsv.is_file():
        return None
    import pandas as pd

    return pd.read_csv(tsv, sep="\t", dtype=str)


def write_groups(path: Path, groups: Mapping[str, Mapping[str, str]], items: Iterable[str]) -> None:
    """``groups.tsv`` for the wrapper expert: ``item`` + one column per grouping (grouping -> item -> group)."""
    cols = sorted(groups)
    write_lines(path, ["\t".join(["item", *cols])] + ["\t".join([i, *(groups[c].get(i, "") for c in cols)]) for i in items])


def choose_test_speakers(
    speakers_by_gender: Mapping[str, list[str]],
    n_test: float | int,
    seed: int = 0,
    strata: Mapping[str, str] | None = None,
    preferred: Iterable[str] = (),
) -> set[str]:
    """Speakers held out for a speaker-disjoint gender test: ``n_test`` per gender (an int, or a fraction of
    the gender's speakers), at least one and at most all but one of each gender.

    Within a gender, ``preferred`` speakers (e.g. the corpus's held-out speakers) come first, then the
    others in seeded random order; with ``strata`` (speaker -> e.g. source voice) the choice takes one
    speaker of each stratum in turn, so every stratum is held out about equally in both genders and a
    stratum (a voice) cannot stand in for gender.
    """
    rng = random.Random(seed)
    preferred = set(preferred)
    chosen: set[str] = set()
    for g in sorted(speakers_by_gender):
        spk = sorted(speakers_by_gender[g])
        if len(spk) < 2:
            raise TaskDataError(
                f"gender {g} has {len(spk)} speaker(s): a speaker-disjoint gender test needs 2+ speakers of "
                "each gender (one to train on, one to test)"
            )
        k = int(n_test) if float(n_test) >= 1 else round(float(n_test) * len(spk))
        k = max(1, min(len(spk) - 1, k))
        by_stratum: dict[str, list[str]] = defaultdict(list)
        for x in spk:
            by_stratum[(strata or {}).get(x, "")].append(x)
        for lst in by_stratum.values():
            rng.shuffle(lst)
            lst.sort(key=lambda x: x not in preferred)  # stable: preferred first, else the seeded order
        order = sorted(by_stratum, key=lambda st: (not any(x in preferred for x in by_stratum[st]), rng.random()))
        picked: list[str] = []
        while len(picked) < k:
            for st in order:
                if by_stratum[st] and len(picked) < k:
                    picked.append(by_stratum[st].pop(0))
        chosen |= set(picked)
    return chosen


def prepare_gender(
    corpus_root,
    out_dir: Path,
    *,
    seed: int = 0,
    genders: Mapping[str, str] | None = None,
    test_speakers: float | int = 0.5,
    stratify: str | None = "voice",
    max_per_speaker: int | None = None,
    **_,
) -> dict:
    """Files for utterance gender classification on unseen speakers (``speechdissect_utterance``).

    s3prl has no gender expert; the LibriSpeech speaker expert is a linear classifier on mean-pooled
    features whose class is the file name's prefix before the first ``-``. So the task is a label view
    of the corpus: ``audio/{G}-{uttid}.flac`` symlinks (``G`` = ``F``/``M``) make the "speaker" the
    gender.

    The split is by speaker, so every test speaker is unseen in training: ``test_speakers`` of each
    gender (an int, or a fraction of that gender's speakers; default half) are held out, the corpus's
    held-out speakers (all utterances in the test split directories) first, and every utterance of a
    speaker (any split directory, at most ``max_per_speaker``, a seeded choice) goes to that speaker's
    side. ``stratify`` names a column of ``speakers.tsv`` (default ``voice``, the Festival voice a
    synthetic pseudo-speaker is made from; ignored when the column is absent) whose values are held out
    evenly within each gender: in the synthetic corpus each gender is made from all three voices, so a
    split that left a voice mostly male in training and female in test would test voice identity, not
    gender. With equal speakers per gender and utterances per speaker the test split is balanced.
    ``groups.tsv`` gives each item's gender and speaker (scores per group).
    """
    genders = dict(genders) if genders is not None else read_speaker_genders(corpus_root)
    utts = scan_corpus(corpus_root)

    def spk_of(u: Utterance) -> str:
        return u.speaker if u.speaker in genders else u.uttid.split("-")[0]

    missing = sorted({u.speaker for u in utts if genders.get(spk_of(u)) is None})
    if missing:
        raise TaskDataError(f"no gender for speakers {missing[:5]} of {corpus_root}")

    def g(u: Utterance) -> str:
        value = genders[spk_of(u)]
        if value not in ("M", "F"):
            raise TaskDataError(f"gender of speaker {u.speaker} is {value!r}; expected M or F")
        return value

    rng = random.Random(seed)
    by_spk: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_spk[spk_of(u)].append(u)
    for spk in sorted(by_spk):
        lst = sorted(by_spk[spk], key=lambda u: u.uttid)
        rng.shuffle(lst)
        by_spk[spk] = sorted(lst[:max_per_speaker] if max_per_speaker else lst, key=lambda u: u.uttid)
    speakers_by_gender: dict[str, list[str]] = defaultdict(list)
    for spk, lst in by_spk.items():
        speakers_by_gender[g(lst[0])].append(spk)
    if set(speakers_by_gender) != {"M", "F"}:
        raise TaskDataError(f"gender task needs speakers of both genders under {corpus_root}, has {sorted(speakers_by_gender)}")
    table = read_speaker_table(corpus_root)
    strata = None
    if stratify and table is not None and stratify in table.columns:
        strata = dict(zip(table["speaker"].astype(str), table[stratify].astype(str)))
    test_dirs = _test_dirs(utts, None)
    heldout = [spk for spk, lst in by_spk.items() if all(u.split in test_dirs for u in lst)]
    test_spk = choose_test_speakers(speakers_by_gender, test_speakers, seed=seed, strata=strata, preferred=heldout)
    train = [u for spk in sorted(by_spk) if spk not in test_spk for u in by_spk[spk]]
    test = [u for spk in sorted(by_spk) if spk in test_spk for u in by_spk[spk]]
    for u in train + test:
        _symlink(u.path, out_dir / "audio" / f"{g(u)}-{u.uttid}.flac")
    write_lines(out_dir / "train_split.txt", sorted(f"{g(u)}-{u.uttid}" for u in train))
    write_lines(out_dir / "test_split.txt", sorted(f"{g(u)}-{u.uttid}" for u in test))
    rows = [(f"audio/{g(u)}-{u.uttid}.flac", audio_frames(u.path)) for u in sorted(train + test, key=lambda u: u.uttid)]
    write_bucket_csv(out_dir / "bucket" / BUCKET_CSV, rows)
    items = sorted(f"{g(u)}-{u.uttid}" for u in train + test)
    spk_map = {f"{g(u)}-{u.uttid}": spk_of(u) for u in train + test}
    write_groups(out_dir / GROUPS_FILE, {"gender": {i: i.split("-")[0] for i in items}, "speaker": spk_map}, items)
    write_lines(out_dir / "speakers_split.tsv", ["speaker\tgender\tstratum\tpart"] + [
        f"{spk}\t{g(by_spk[spk][0])}\t{(strata or {}).get(spk, '')}\t{'test' if spk in test_spk else 'train'}"
        for spk in sorted(by_spk)])
    return {"libri_root": out_dir, "split_file": out_dir, "bucket_file": out_dir / "bucket",
            "groups_file": out_dir / GROUPS_FILE}


def word_segments(labels, silence: Iterable[str] = SILENCE_WORDS) -> list[tuple[str, str, int, int]]:
    """Runs of one word in a frame label table: ``(utterance, word, first_frame, last_frame)``.

    ``labels`` is a label table (:mod:`speechdissect` label parquet, or any frame with columns
    ``utterance``, ``frame``, ``word``) in utterance then frame order.
    """
    silence = set(silence)
    out = []
    utt_col = labels["utterance"].to_numpy()
    frame_col = labels["frame"].to_numpy()
    word_col = labels["word"].astype(object).to_numpy()
    start = 0
    n = len(labels)
    for i in range(1, n + 1):
        if i == n or utt_col[i] != utt_col[start] or word_col[i] != word_col[start] or frame_col[i] != frame_col[i - 1] + 1:
            w = word_col[start]
            if w is not None and not (isinstance(w, float) and math.isnan(w)) and str(w) not in silence:
                out.append((str(utt_col[start]), str(w), int(frame_col[start]), int(frame_col[i - 1])))
            start = i
    return out


def prepare_word(
    corpus_root,
    out_dir: Path,
    *,
    labels_dir,
    seed: int = 0,
    test_splits: Iterable[str] | None = None,
    max_words: int = 30,
    min_train: int = 4,
    min_test: int = 1,
    max_train_per_word: int = 40,
    max_test_per_word: int = 15,
    min_samples: int = 1600,
    **_,
) -> dict:
    """Files for closed-vocabulary word classification (Speech Commands style).

    Word clips are cut from the corpus by the word column of the frame label tables
    ``labels_dir/{split}.parquet`` (a run of frames ``a..b`` is samples ``[320 a, 320 b + 400)``, widened
    symmetrically to ``min_samples``) and written as ``clips/w{k:03d}-{uttid}_{i}.flac``. The
    vocabulary is the ``max_words`` most frequent words with at least ``min_train`` training clips
    (non-test split directories) and ``min_test`` test clips (test split directories); clips per word
    are capped at random (``seed``). ``classes.tsv`` maps ``w{k:03d}`` to the word.

    s3prl's ``speech_commands`` expert hard-codes the 12 Google Speech Commands classes, imports
    ``catalyst`` and decodes with libsox, so the clips are classified by the LibriSpeech utterance
    expert instead, which reads the class from the file name prefix (mean pooling + linear, like the
    SUPERB keyword-spotting probe).
    """
    import pandas as pd
    import soundfile as sf

    labels_dir = Path(labels_dir)
    utts = scan_corpus(corpus_root)
    by_id = {u.uttid: u for u in utts}
    test_dirs = _test_dirs(utts, test_splits)
    if not test_dirs:
        raise TaskDataError(f"word task needs a test split directory under {corpus_root}")
    segments = {"train": [], "test": []}
    for split in _split_names(utts):
        path = labels_dir / f"{split}.parquet"
        if not path.is_file():
            raise TaskDataError(f"missing label table: {path} (run the labels step first)")
        table = pd.read_parquet(path, columns=["utterance", "frame", "word"])
        part = "test" if split in test_dirs else "train"
        segments[part] += [s for s in word_segments(table) if s[0] in by_id]
    n_train = Counter(s[1] for s in segments["train"])
    n_test = Counter(s[1] for s in segments["test"])
    vocab = [w for w, c in n_train.most_common() if c >= min_train and n_test[w] >= min_test]
    vocab = sorted(vocab[:max_words])
    if len(vocab) < 2:
        raise TaskDataError(
            f"word task needs 2+ words with >= {min_train} training and >= {min_test} test clips; "
            f"found {len(vocab)} in {labels_dir}"
        )
    label_of = {w: f"w{k:03d}" for k, w in enumerate(vocab)}
    rng = random.Random(seed)
    chosen = {}
    for part, cap in (("train", max_train_per_word), ("test", max_test_per_word)):
        by_word = defaultdict(list)
        for s in segments[part]:
            if s[1] in label_of:
                by_word[s[1]].append(s)
        chosen[part] = []
        for w in vocab:
            lst = by_word[w]
            rng.shuffle(lst)
            chosen[part] += lst[:cap]
    clips_dir = out_dir / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    lists = {"train": [], "test": []}
    rows = []
    counter = Counter()
    audio_cache: dict[str, np.ndarray] = {}
    for part in ("train", "test"):
        for uttid, word, a, b in sorted(chosen[part]):
            if uttid not in audio_cache:
                audio_cache.clear()
                wav, sr = sf.read(str(by_id[uttid].path), dtype="float32", always_2d=False)
                if sr != SAMPLE_RATE:
                    raise TaskDataError(f"{by_id[uttid].path}: sample rate {sr}, expected {SAMPLE_RATE}")
                audio_cache[uttid] = wav
            wav = audio_cache[uttid]
            lo, hi = HOP * a, min(HOP * b + RECEPTIVE_FIELD, len(wav))
            if hi - lo < min_samples:
                pad = (min_samples - (hi - lo) + 1) // 2
                lo, hi = max(0, lo - pad), min(len(wav), hi + pad)
            i = counter[uttid]
            counter[uttid] += 1
            name = f"{label_of[word]}-{uttid}_{i}"
            sf.write(str(clips_dir / f"{name}.flac"), wav[lo:hi], SAMPLE_RATE, subtype="PCM_16")
            lists[part].append(name)
            rows.append((f"clips/{name}.flac", hi - lo))
    write_lines(out_dir / "train_split.txt", sorted(lists["train"]))
    write_lines(out_dir / "test_split.txt", sorted(lists["test"]))
    write_bucket_csv(out_dir / "bucket" / BUCKET_CSV, rows)
    items = sorted(lists["train"] + lists["test"])
    speaker_of = {i: by_id[i.split("-", 1)[1].rsplit("_", 1)[0]].speaker for i in items}
    write_groups(out_dir / GROUPS_FILE, _gender_groups(corpus_root, speaker_of), items)
    write_lines(
        out_dir / "classes.tsv",
        ["label\tword\tn_train\tn_test"]
        + [f"{label_of[w]}\t{w}\t{sum(s[1] == w for s in chosen['train'])}\t{sum(s[1] == w for s in chosen['test'])}" for w in vocab],
    )
    return {"libri_root": out_dir, "split_file": out_dir, "bucket_file": out_dir / "bucket",
            "groups_file": out_dir / GROUPS_FILE}


# one printable, non-space character per phone; upper case (the asr dataset upper-cases transcripts)
PHONE_CODE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#$%&*+=@^~"


def phone_sequences(labels, silence: Iterable[str] = SILENCE_PHONES) -> dict[str, list[str]]:
    """Phone sequence per utterance from a frame label table: runs collapsed, silences dropped."""
    silence = set(silence)
    out: dict[str, list[str]] = {}
    prev_utt, prev_phone = None, None
    for utt, phone in zip(labels["utterance"].to_numpy(), labels["phone"].astype(object).to_numpy()):
        seq = out.setdefault(str(utt), [])
        if utt != prev_utt:
            prev_phone = None
        phone = None if phone is None or (isinstance(phone, float) and math.isnan(phone)) else str(phone)
        if phone is not None and phone not in silence and phone != prev_phone:
            seq.append(phone)
        prev_utt, prev_phone = utt, phone
    return out


def prepare_ctc(
    corpus_root,
    out_dir: Path,
    *,
    labels_dir,
    seed: int = 0,
    dev_fraction: float = 0.1,
    test_splits: Iterable[str] | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    **_,
) -> dict:
    """Files for CTC phone recognition (PER) with s3prl's ``asr`` expert.

    The pip package's ``ctc`` expert lacks its ``corpus/`` module, so phone recognition uses the
    ``asr`` expert (CTC over characters, greedy decoding). Each phone becomes one character
    (``phone_codes.tsv``) and an utterance's transcript is its phone codes written as one word, so
    the expert's tokens are the phones plus one closing ``|`` and its unit error rate (``uer``) is the
    phone error rate (the closing ``|``, nearly always right, adds one token to each reference).
    Separating phones by spaces would make its WER a PER in name but teach CTC to emit a ``|``
    between all phones, and a missed one merges two phones into one wrong "word".
    A view of the corpus ``corpus/{split}/{spk}/{chap}/`` holds flac symlinks and ``.trans.txt``
    files with the phone codes; ``phones.dict`` is the fairseq character dictionary; bucket tables
    ``train-clean-100`` (non-test dirs minus dev), ``dev-clean`` (``dev_fraction`` of those at random)
    and ``test-clean`` (test dirs). ``max_train`` / ``max_test`` cap the non-test (train + dev) and test
    utterances (seeded random subsets).
    """
    import pandas as pd

    labels_dir = Path(labels_dir)
    utts = scan_corpus(corpus_root)
    test_dirs = _test_dirs(utts, test_splits)
    if not test_dirs:
        raise TaskDataError(f"ctc task needs a test split directory under {corpus_root}")
    seqs: dict[str, list[str]] = {}
    for split in _split_names(utts):
        path = labels_dir / f"{split}.parquet"
        if not path.is_file():
            raise TaskDataError(f"missing label table: {path} (run the labels step first)")
        seqs.update(phone_sequences(pd.read_parquet(path, columns=["utterance", "frame", "phone"])))
    phones = sorted({p for s in seqs.values() for p in s})
    if len(phones) > len(PHONE_CODE_ALPHABET):
        raise TaskDataError(f"{len(phones)} phones exceed the {len(PHONE_CODE_ALPHABET)} one-character codes")
    code = {p: PHONE_CODE_ALPHABET[i] for i, p in enumerate(phones)}
    utts = [u for u in utts if seqs.get(u.uttid)]
    view = out_dir / "corpus"
    trans = defaultdict(list)
    for u in utts:
        _symlink(u.path, view / u.relpath)
        trans[(u.split, u.speaker, u.chapter)].append(f"{u.uttid} {''.join(code[p] for p in seqs[u.uttid])}")
    for (split, spk, chap), lines in trans.items():
        write_lines(view / split / spk / chap / f"{spk}-{chap}.trans.txt", sorted(lines))
    counts = Counter(c for s in seqs.values() for p in s for c in code[p])
    write_lines(out_dir / "phones.dict", [f"| {len(utts)}"] + [f"{code[p]} {max(counts[code[p]], 1)}" for p in phones])
    write_lines(out_dir / "phone_codes.tsv", ["phone\tcode"] + [f"{p}\t{code[p]}" for p in phones])
    rng = random.Random(seed)
    pool = _subset(sorted((u for u in utts if u.split not in test_dirs), key=lambda u: u.uttid), max_train, seed)
    rng.shuffle(pool)
    n_dev = max(1, round(dev_fraction * len(pool)))
    parts = {
        "dev-clean": pool[:n_dev],
        "train-clean-100": pool[n_dev:],
        "test-clean": _subset([u for u in utts if u.split in test_dirs], max_test, seed + 1),
    }
    for name, lst in parts.items():
        write_bucket_csv(out_dir / "bucket" / f"{name}.csv", [(u.relpath, audio_frames(u.path)) for u in sorted(lst, key=lambda u: u.uttid)])
    return {"libri_root": view, "bucket_file": out_dir / "bucket", "dict_path": out_dir / "phones.dict"}


# --------------------------------------------------------------------------- task data API


def prepare_task_data(task: str, corpus_root, out_dir, **inputs) -> Path:
    """Write the data files of ``task`` into ``out_dir`` and return ``out_dir/datarc.yaml``.

    Parameters
    ----------
    task : str
        Registered task name.
    corpus_root : path
        LibriSpeech-layout corpus (``{split}/{spk}/{chap}/{spk}-{chap}-{utt}.flac``).
    out_dir : path
        Task data directory; built in a temporary sibling and renamed into place, so a killed job
        leaves nothing that looks finished. An existing directory is replaced.
    **inputs
        Task inputs (``phone_dir`` for the phone tasks, ``labels_dir`` for ``word`` / ``ctc``) and
        options (``seed``, caps, ...; see the ``prepare_*`` functions). Options not given default to
        the ``prepare:`` section of the task's config file; pass ``max_train=None`` etc. for no cap.
    """
    t = get_task(task)
    inputs = {**t.load_config().get("prepare", {}), **inputs}
    import inspect

    known = {n for n, p in inspect.signature(t.prepare).parameters.items() if p.kind is p.KEYWORD_ONLY}
    unknown = set(inputs) - known - {"phone_dir", "labels_dir", "seed"}  # inputs any task may be given
    if unknown:
        raise TypeError(f"task {task!r}: unknown data options {sorted(unknown)}; known: {sorted(known)}")
    missing = [k for k in t.inputs if inputs.get(k) is None]
    if missing:
        raise TypeError(f"task {task!r} needs {', '.join(missing)} besides corpus_root")
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        datarc = t.prepare(corpus_root, tmp, **inputs)
        rel = {}
        for key, value in datarc.items():
            value = Path(value).resolve()
            try:
                rel[key] = value.relative_to(tmp.resolve()).as_posix() or "."
            except ValueError:
                rel[key] = str(value)
        with open(tmp / DATARC_FILE, "w") as fh:
            yaml.safe_dump({"task": task, "expert": t.expert, "datarc": rel}, fh, sort_keys=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / DATARC_FILE


def load_datarc(data) -> dict:
    """Absolute datarc path keys from a task data dir / its ``datarc.yaml``, or a mapping passed through."""
    if isinstance(data, Mapping):
        return {k: str(v) for k, v in data.items()}
    path = Path(data)
    if path.is_dir():
        path = path / DATARC_FILE
    if not path.is_file():
        raise TaskDataError(f"missing {path} (run prepare_task_data for this task first)")
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    base = path.parent.resolve()
    return {k: str((base / v).resolve()) if not os.path.isabs(v) else v for k, v in doc["datarc"].items()}


def check_datarc(task: Task, datarc: Mapping[str, str]) -> None:
    """Fail early when a path the expert opens is missing."""
    needed = {
        "libri_root": None,
        "phone_path": ("converted_aligned_phones.txt", "train_split.txt", "test_split.txt"),
        "split_file": ("train_split.txt", "test_split.txt"),
        "bucket_file": None,
        "dict_path": None,
        "groups_file": None,
    }
    cfg_keys = EXPERT_KEYS[task.expert]["datarc"]
    for key, files in needed.items():
        if key not in cfg_keys:
            continue
        if key not in datarc:
            raise TaskDataError(f"task {task.name}: datarc lacks {key!r} (prepare the task data first)")
        p = Path(datarc[key])
        if not p.exists():
            raise TaskDataError(f"task {task.name}: {key} {p} does not exist")
        for f in files or ():
            if not (p / f).is_file():
                raise TaskDataError(f"task {task.name}: missing {p / f}")
    if task.expert != "asr" and not (Path(datarc["bucket_file"]) / BUCKET_CSV).is_file():
        raise TaskDataError(f"task {task.name}: missing {Path(datarc['bucket_file']) / BUCKET_CSV}")


def item_class(name: str) -> str:
    """Class of an utterance item of the LibriSpeech utterance experts: the file name's prefix before the
    first ``-`` (speaker id, ``M``/``F``, ``w{k:03d}``), as ``speaker_linear_utter_libri`` reads it."""
    return name.split("/")[-1].split(".")[0].split("-")[0]


def class_counts(task: Task | str, data) -> Counter:
    """Class counts of a task's test split, from its data files (``data``: task data dir, its
    ``datarc.yaml`` or a datarc mapping): frames for the phone tasks (labels of the test utterances on
    the grid the expert reads), items for the utterance tasks (class = file-name prefix). Not defined for
    ``asr`` (a sequence task)."""
    task = get_task(task) if isinstance(task, str) else task
    datarc = load_datarc(data)
    if task.expert in ("phone_linear", "phone_1hidden"):
        phone_path = Path(datarc["phone_path"])
        test = {x.strip() for x in (phone_path / "test_split.txt").read_text().splitlines() if x.strip()}
        labels = _collapse_phone_lines(phone_path / "converted_aligned_phones.txt")
        return Counter(i for u in test for i in labels.get(u, ()))
    if task.expert == "asr":
        raise ValueError(f"task {task.name}: a sequence task has no class counts")
    names = [x.strip() for x in (Path(datarc["split_file"]) / "test_split.txt").read_text().splitlines() if x.strip()]
    return Counter(item_class(n) for n in names)


def chance_level(task: Task | str, data) -> dict:
    """Chance level of a task's test metric, computed from its data files.

    Classification tasks: ``chance`` is the majority-class accuracy of the test split (the accuracy of
    always answering the most frequent test class: frames for the phone tasks, utterances or clips for
    speaker, gender and word), ``chance_kind`` ``"majority"``; ``chance_uniform`` is 1 / classes of the
    test split. Phone recognition (``asr``, PER): ``chance`` is 1.0, the error rate of an empty output
    (every reference unit deleted), ``chance_kind`` ``"empty_output"``.

    Returns
    -------
    dict
        ``task``, ``metric``, ``chance``, ``chance_kind``, ``chance_uniform``, ``n_test`` (test frames
        or items), ``n_classes`` (classes present in the test split), ``majority_class``.
    """
    task = get_task(task) if isinstance(task, str) else task
    if task.expert == "asr":
        return {"task": task.name, "metric": task.metric, "chance": 1.0, "chance_kind": "empty_output",
                "chance_uniform": float("nan"), "n_test": None, "n_classes": None, "majority_class": None}
    counts = class_counts(task, data)
    n = sum(counts.values())
    if not n:
        raise TaskDataError(f"task {task.name}: empty test split in {data}")
    top, k = counts.most_common(1)[0]
    return {"task": task.name, "metric": task.metric, "chance": k / n, "chance_kind": "majority",
            "chance_uniform": 1.0 / len(counts), "n_test": n, "n_classes": len(counts), "majority_class": str(top)}


def count_train_items(task: Task, datarc: Mapping[str, str]) -> int:
    """Training utterances the expert will see (s3prl keeps 90 % of ``train_split.txt`` for training)."""
    if task.expert == "asr":
        import pandas as pd

        names = ["train-clean-100"]
        return sum(len(pd.read_csv(Path(datarc["bucket_file"]) / f"{n}.csv")) for n in names)
    lst = Path(datarc.get("phone_path") or datarc["split_file"]) / "train_split.txt"
    n = sum(1 for line in open(lst) if line.strip())
    return int(n * 0.9)


def build_config(
    task: Task,
    datarc: Mapping[str, str],
    steps: int | None = None,
    overrides: Mapping | None = None,
    n_train: int | None = None,
) -> dict:
    """Our config template with data paths filled in and the step budget applied.

    ``steps`` sets ``runner.total_steps``; ``eval_step`` / ``log_step`` are clipped to it and
    ``save_step`` set to it (one checkpoint, at the end). ``overrides`` maps dotted keys
    (``optimizer.lr``, ``downstream_expert.datarc.train_batch_size``) to values.
    """
    cfg = task.load_config()
    cfg.pop("prepare", None)  # ours (data caps for prepare_task_data), not s3prl's
    cfg["downstream_expert"]["datarc"].update({k: str(v) for k, v in datarc.items()})
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    r = cfg["runner"]
    if steps is not None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        r["total_steps"] = int(steps)
    total = int(r["total_steps"])
    r["eval_step"] = max(1, min(int(r["eval_step"]), total))
    r["log_step"] = max(1, min(int(r["log_step"]), total))
    r["save_step"] = total
    if n_train is not None:
        # s3prl buckets utterances into batches of the batch size and drops an incomplete last one:
        # a training set smaller than one batch would be empty and the runner would loop forever.
        if n_train < 1:
            raise TaskDataError(f"task {task.name}: no training utterances")
        key = "batch_size" if task.expert == "asr" else "train_batch_size"
        d = cfg["downstream_expert"]["datarc"]
        d[key] = max(1, min(int(d[key]), n_train))
    return cfg


# --------------------------------------------------------------------------- registry entries

_PHONE_DOC = "frame phone classification ({}), 41 classes, accuracy"
register(Task("phone_linear", "phone_linear", "phone_linear.yaml", "acc", "libri_phone/{split}-acc", True,
              prepare_phone, ("phone_dir",), description=_PHONE_DOC.format("linear")))
register(Task("phone_1hidden", "phone_1hidden", "phone_1hidden.yaml", "acc", "libri_phone/{split}-acc", True,
              prepare_phone, ("phone_dir",), description=_PHONE_DOC.format("one hidden layer")))
# The utterance tasks run s3prl's speaker_linear_utter_libri through its wrapper speechdissect_utterance
# (speechdissect.downstream.experts): same model and numbers, plus test scores per group (score_by_gender).
_UTTER = "speechdissect_utterance"
register(Task("speaker_linear_utter", _UTTER, "speaker_linear_utter.yaml", "acc",
              "libri_speaker/{split}-acc", True, prepare_speaker,
              description="utterance speaker ID, mean pooling + linear, accuracy (also per speaker gender)"))
register(Task("gender", _UTTER, "gender.yaml", "acc", "libri_speaker/{split}-acc", True,
              prepare_gender, description="utterance gender (unseen speakers), mean pooling + linear, accuracy"))
register(Task("word", _UTTER, "word.yaml", "acc", "libri_speaker/{split}-acc", True,
              prepare_word, ("labels_dir",), description="closed-vocabulary word clips, mean pooling + linear, accuracy"))
register(Task("ctc", "asr", "ctc.yaml", "per", "asr/{split}-uer", False, prepare_ctc, ("labels_dir",),
              dev_split="dev-clean", test_split="test-clean", scale=0.01,
              description="CTC phone recognition, linear, phone error rate (fraction)"))
