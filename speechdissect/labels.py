"""Frame-level label tables and the label files s3prl's phone probes read.

One row per frame of the shared 20 ms grid (:mod:`speechdissect.frames`), so
that row ``t`` of an utterance lines up with activation frame ``t``. See
``docs/formats.md`` (label table) for the contract.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import frames
from .alignments import UNK_WORD, Alignment, Interval, load_alignments
from .phones import PHONE_CLASS, PHONE_TO_ID, PHONES, SIL, check_phones, phone_id_table

log = logging.getLogger(__name__)

COLUMNS = ["utterance", "frame", "phone", "phone_class", "word", "speaker", "gender"]
SIL_WORD = "<sil>"
#: s3prl's PhoneDataset hard-codes ``class_num = 41``: every id must be below it.
S3PRL_CLASS_NUM = 41
#: The bucket csv name s3prl's phone_linear and speaker_linear_utter_libri always open.
S3PRL_BUCKET_CSV = "train-clean-100.csv"


class LabelError(ValueError):
    """Corpus, audio or alignment that cannot be turned into frame labels."""


# --------------------------------------------------------------------------- frames

def frame_centre_samples(n: int) -> np.ndarray:
    """Centre sample ``320 t + 200`` of frames ``0..n-1`` (integers, so boundary ties are exact)."""
    return np.arange(n, dtype=np.int64) * frames.HOP + frames.RECEPTIVE_FIELD // 2


def interval_index(intervals: list[Interval], centres: np.ndarray,
                   sample_rate: int = frames.SAMPLE_RATE) -> np.ndarray:
    """Index of the interval containing each centre (in samples), -1 where none does.

    Interval ``[start, end)``: a centre exactly on a boundary belongs to the later
    interval. Times are converted to samples and rounded to 1e-6 sample so that
    a boundary written as e.g. ``0.0325`` s equals centre sample 520 exactly.
    """
    out = np.full(len(centres), -1, dtype=np.int64)
    if not intervals or not len(centres):
        return out
    starts = np.round(np.array([iv.start for iv in intervals]) * sample_rate, 6)
    ends = np.round(np.array([iv.end for iv in intervals]) * sample_rate, 6)
    c = centres.astype(float)
    i = np.searchsorted(ends, c, side="right")  # first interval ending after the centre
    j = np.minimum(i, len(ends) - 1)
    inside = (i < len(ends)) & (starts[j] <= c)
    out[inside] = j[inside]
    return out


def label_at(intervals: list[Interval], centres: np.ndarray, fill: str) -> np.ndarray:
    """Label of the interval containing each centre (samples), ``fill`` elsewhere (object array)."""
    idx = interval_index(intervals, centres)
    labels = np.array([iv.label for iv in intervals] + [fill], dtype=object)
    return labels[idx]  # -1 picks the trailing fill


class _Vocab(dict):
    """Label -> integer code, growing as labels are seen (codes keep the table cheap to build)."""

    def __init__(self, first: Iterable[str] = ()):
        super().__init__()
        for label in first:
            self.code(label)

    def code(self, label: str) -> int:
        return self.setdefault(label, len(self))

    def labels(self) -> list[str]:
        return list(self)


def _label_codes(alignment: Alignment, n_samples: int, words: _Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Phone ids (:data:`PHONE_TO_ID`) and word codes (``words``, ``<sil>`` = 0) per frame."""
    n = frames.n_frames(n_samples)
    centres = frame_centre_samples(n)
    duration = n_samples / frames.SAMPLE_RATE
    if alignment.end > duration + 0.1:
        log.warning("%s: alignment ends at %.3f s but the audio lasts %.3f s; frames past the audio are dropped",
                    alignment.source, alignment.end, duration)
    ph_codes = np.array([PHONE_TO_ID[iv.label] for iv in alignment.phones] + [PHONE_TO_ID[SIL]], dtype=np.int16)
    wd_codes = np.array([words.code(iv.label) for iv in alignment.words] + [words.code(SIL_WORD)], dtype=np.int32)
    return ph_codes[interval_index(alignment.phones, centres)], wd_codes[interval_index(alignment.words, centres)]


def frame_labels(alignment: Alignment, n_samples: int, utterance: str, speaker: str, gender: str) -> pd.DataFrame:
    """Label table rows of one utterance (columns as in docs/formats.md).

    Frame ``t`` is labelled by the phone/word interval containing sample
    ``320 t + 200``; frames in gaps or past the alignment get ``sil`` and ``<sil>``.
    """
    words = _Vocab([SIL_WORD])
    phones, word_codes = _label_codes(alignment, n_samples, words)
    return _table([(utterance, phones, word_codes, speaker, gender)], words)


def _table(rows: list[tuple[str, np.ndarray, np.ndarray, str, str]], words: _Vocab) -> pd.DataFrame:
    """One DataFrame from per-utterance code arrays.

    Built once, through Arrow dictionary arrays: creating string columns row by
    row costs ~100x more than the labelling itself (10 s per 1000 utterances).
    """
    import pyarrow as pa

    lengths = np.array([len(r[1]) for r in rows], dtype=np.int64)

    def cat(arrays: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(arrays).astype(dtype) if arrays else np.empty(0, dtype=dtype)

    def strings(codes: np.ndarray, labels: list[str]) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(labels, pa.string())).cast(pa.string())

    def per_utt(i: int) -> pa.Array:
        values = _Vocab(r[i] for r in rows)
        return strings(np.repeat(np.array([values[r[i]] for r in rows], dtype=np.int32), lengths), values.labels())

    phones = cat([r[1] for r in rows], np.int32)
    class_of_id = _Vocab(PHONE_CLASS[p] for p in PHONES)
    phone_to_class = np.array([class_of_id[PHONE_CLASS[p]] for p in PHONES], dtype=np.int32)
    table = pa.Table.from_arrays([
        per_utt(0),
        pa.array(cat([np.arange(n, dtype=np.int32) for n in lengths], np.int32)),
        strings(phones, list(PHONES)),
        strings(phone_to_class[phones], class_of_id.labels()),
        strings(cat([r[2] for r in rows], np.int32), words.labels()),
        per_utt(3),
        per_utt(4),
    ], names=COLUMNS)
    return table.to_pandas()


# --------------------------------------------------------------------------- corpus

def read_transcripts(split_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Read every ``*.trans.txt`` under a LibriSpeech-style split directory: ``{utt: [WORDS]}``."""
    split_dir = Path(split_dir)
    out: dict[str, list[str]] = {}
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            if line.strip():
                utt, *words = line.split()
                out[utt] = [w.upper() for w in words]
    return out


def read_speaker_genders(corpus_root: str | os.PathLike) -> dict[str, str]:
    """Speaker -> ``M``/``F`` from ``speakers.tsv`` (synthetic) or ``SPEAKERS.TXT`` (LibriSpeech).

    ``corpus_root`` is the corpus directory (its ``speakers.tsv`` is read, else its
    ``SPEAKERS.TXT``) or one such file itself (the config key
    ``corpora.{name}.speakers_file``): a ``.tsv`` with columns ``speaker, gender``,
    anything else in the ``SPEAKERS.TXT`` format (``ID | SEX | SUBSET | MINUTES | NAME``,
    ``;`` comments).
    """
    root = Path(corpus_root)
    if root.is_file():
        tsv, txt = (root, None) if root.suffix.lower() == ".tsv" else (None, root)
    else:
        tsv, txt = root / "speakers.tsv", root / "SPEAKERS.TXT"
    if tsv is not None and tsv.exists():
        df = pd.read_csv(tsv, sep="\t", dtype=str)
        if not {"speaker", "gender"} <= set(df.columns):
            raise LabelError(f"{tsv}: expected columns 'speaker' and 'gender', found {list(df.columns)}")
        return {str(s): str(g).strip().upper() for s, g in zip(df["speaker"], df["gender"])}
    if txt is not None and txt.exists():
        out = {}
        for line in txt.read_text(encoding="utf-8").splitlines():
            if line.startswith(";") or "|" not in line:
                continue
            spk, sex = (f.strip() for f in line.split("|")[:2])
            out[spk] = sex.upper()
        return out
    raise LabelError(f"no speaker table in {root}: expected speakers.tsv (speaker, gender) or SPEAKERS.TXT")


def audio_path(corpus_root: str | os.PathLike, split: str, utterance: str, ext: str = ".flac") -> Path:
    """LibriSpeech location of an utterance: ``{root}/{split}/{spk}/{chapter}/{utt}{ext}``."""
    spk, chapter, _ = utterance.split("-")
    return Path(corpus_root) / split / spk / chapter / f"{utterance}{ext}"


#: Longest audio file accepted (samples): an utterance of more than an hour is a corrupt header, not speech.
MAX_SAMPLES = 3600 * frames.SAMPLE_RATE
#: What libsndfile reports as the length of a stream whose header does not give one.
_UNKNOWN_LENGTH = 2**63 - 1


def audio_samples(path: str | os.PathLike) -> int:
    """Number of samples of a 16 kHz mono file, read from its header (no decoding).

    The length is bounds-checked: unknown (a FLAC header may say "not given"),
    zero or over :data:`MAX_SAMPLES` is refused naming the file, instead of
    sizing a frame grid by it. :func:`check_audio` also decodes the file.
    """
    import soundfile as sf

    if not Path(path).exists():
        raise LabelError(f"missing audio: {path}")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise LabelError(f"corrupt audio: {path} ({exc})") from exc
    if info.samplerate != frames.SAMPLE_RATE or info.channels != 1:
        raise LabelError(
            f"{path}: {info.samplerate} Hz, {info.channels} channel(s); the frame grid needs "
            f"{frames.SAMPLE_RATE} Hz mono. Fix: resample, e.g. `sox in.flac -r 16000 -c 1 out.flac`."
        )
    n = int(info.frames)
    if n >= _UNKNOWN_LENGTH or n < 0:
        raise LabelError(f"corrupt audio: {path}: its header gives no length (an empty or cut stream). "
                         "Fix: re-encode it (`sox in.flac out.flac` writes the length) or remove the utterance.")
    if n == 0:
        raise LabelError(f"corrupt audio: {path}: no samples. Fix: remove the utterance or replace the file.")
    if n > MAX_SAMPLES:
        raise LabelError(f"corrupt audio: {path}: its header claims {n} samples ({n / frames.SAMPLE_RATE:.0f} s, "
                         f"over {MAX_SAMPLES // frames.SAMPLE_RATE} s). Fix: re-encode or replace the file.")
    return n


def check_audio(path: str | os.PathLike, block: int = 1 << 16) -> int:
    """Bounds-check (:func:`audio_samples`) and decode a file; its number of samples.

    Decoding in blocks (bounded memory) catches what a header cannot: a truncated
    FLAC keeps its header's length but stops decoding early (or loses sync).
    """
    import soundfile as sf

    n = audio_samples(path)
    got = 0
    try:
        with sf.SoundFile(str(path)) as fh:
            while True:
                data = fh.read(block, dtype="int16")
                if not len(data):
                    break
                got += len(data)
    except Exception as exc:
        raise LabelError(f"corrupt audio: {path}: decoding failed after {got} of {n} samples ({exc}). "
                         "Fix: replace the file (truncated download?) or remove the utterance.") from exc
    if got != n:
        raise LabelError(f"corrupt audio: {path}: the header says {n} samples but {got} decode. "
                         "Fix: replace the file (truncated download?) or remove the utterance.")
    return n


def _match_words(utt: str, transcript: list[str], alignment: Alignment, trans_file: Path) -> list[Interval]:
    """Check the alignment's words against the transcript; ``<UNK>`` takes the transcript word."""
    aligned = alignment.word_labels()
    ok = len(aligned) == len(transcript) and all(a == t or a == UNK_WORD for a, t in zip(aligned, transcript))
    if not ok:
        i = next((k for k, (a, t) in enumerate(zip(aligned, transcript)) if a != t and a != UNK_WORD),
                 min(len(aligned), len(transcript)))
        raise LabelError(
            f"utterance {utt}: transcript and alignment words differ at word {i} "
            f"(transcript {transcript[i:i + 3]} vs alignment {aligned[i:i + 3]}; "
            f"{len(transcript)} vs {len(aligned)} words). Transcript: {trans_file}, alignment: {alignment.source}. "
            "Fix: re-align this utterance or correct its transcript, or set `labels: {on_mismatch: skip}` "
            "to leave such utterances out (counted in the split's report)."
        )
    return [Interval(w.start, w.end, t) for w, t in zip(alignment.words, transcript)]


def _listed(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" … ({len(items)} in all)" if len(items) > n else "")


def build_label_table(
    corpus_root: str | os.PathLike,
    split: str,
    alignments: Mapping[str, Alignment] | str | os.PathLike,
    speaker_gender: Mapping[str, str] | None = None,
    *,
    on_missing: str = "error",
    on_mismatch: str = "error",
    audio_ext: str = ".flac",
    phone_set: str = "auto",
    decode: bool = True,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Label table of one corpus split (LibriSpeech layout under ``corpus_root/split``).

    Utterances are the split's audio files and ``*.trans.txt`` lines, sorted by
    id; the two must agree. Every audio file is bounds-checked and decoded
    (:func:`check_audio`; 16 kHz mono is enforced) and its length sets the
    utterance's number of frames.

    Parameters
    ----------
    alignments
        ``{utterance: Alignment}``, or a directory / archive that
        :func:`speechdissect.alignments.load_alignments` reads (only this split's
        utterances are parsed, with ``phone_set``).
    speaker_gender
        Speaker -> ``M``/``F``; read with :func:`read_speaker_genders` when None.
    on_missing
        Config key ``labels: {on_missing: ...}``. An utterance with audio but no
        transcript line, a transcript line but no audio, or no alignment:
        ``"error"`` (default) raises naming it; ``"skip"`` leaves it out, logs it
        and counts it in the report.
    on_mismatch
        Config key ``labels: {on_mismatch: ...}``: the same choice for an
        utterance whose transcript words differ from its alignment's.
    decode
        Decode every file (default) rather than trusting its header's length.

    Returns
    -------
    table : DataFrame
        Columns ``utterance, frame, phone, phone_class, word, speaker, gender``.
    report : dict
        Counts of labelled / skipped utterances and frames, skipped ids.
    """
    for name, val in (("on_missing", on_missing), ("on_mismatch", on_mismatch)):
        if val not in ("error", "skip"):
            raise ValueError(f"config key labels: {{{name}: ...}} must be error or skip, not {val!r}")
    split_dir = Path(corpus_root) / split
    if not split_dir.is_dir():
        raise LabelError(f"corpus split not found: {split_dir}")
    transcripts = read_transcripts(split_dir)
    audio = {p.name[:-len(audio_ext)]: p for p in sorted(split_dir.glob(f"*/*/*{audio_ext}"))}
    if not transcripts and not audio:
        raise LabelError(f"no *.trans.txt transcripts and no *{audio_ext} audio under {split_dir}/*/*/")
    no_transcript = sorted(set(audio) - set(transcripts))
    no_audio = sorted(set(transcripts) - set(audio))
    for ids, what, where in ((no_transcript, "audio files without a transcript line", f"*{audio_ext}"),
                             (no_audio, "transcript lines without an audio file", "*.trans.txt")):
        if not ids:
            continue
        if on_missing == "error":
            raise LabelError(
                f"{split_dir}: {len(ids)} {what}: {_listed(ids)}. Fix: restore the missing files or lines, "
                "or set `labels: {on_missing: skip}` to leave these utterances out (counted in the split's report)."
            )
        log.warning("%s: skipping %d %s: %s", split_dir, len(ids), what, _listed(ids))
    genders = speaker_gender if speaker_gender is not None else read_speaker_genders(corpus_root)
    utterances = sorted(set(transcripts) & set(audio))
    if isinstance(alignments, (str, os.PathLike)):
        alignments = load_alignments(alignments, utterances=utterances, progress=progress, phone_set=phone_set)

    missing: list[str] = []
    mismatched: list[str] = []
    parts: list[tuple[str, np.ndarray, np.ndarray, str, str]] = []
    vocab = _Vocab([SIL_WORD])
    for utt in tqdm(utterances, desc=f"labels {split}", unit="utt", disable=not progress):
        spk, chapter, _ = utt.split("-")
        trans_file = split_dir / spk / chapter / f"{spk}-{chapter}.trans.txt"
        if spk not in genders:
            raise LabelError(f"speaker {spk} (utterance {utt}) has no gender in the speaker table of {corpus_root} "
                             "(speakers.tsv / SPEAKERS.TXT, or the file of corpora.{name}.speakers_file)")
        gender = genders[spk]
        if gender not in ("M", "F"):
            raise LabelError(f"speaker {spk}: gender {gender!r} is neither 'M' nor 'F'")
        ali = alignments.get(utt)
        if ali is None:
            if on_missing == "error":
                raise LabelError(
                    f"no alignment for utterance {utt} ({split}). Fix: provide its alignment, "
                    "or set `labels: {on_missing: skip}` to leave it out of the label table."
                )
            missing.append(utt)
            log.warning("skipping %s: no alignment", utt)
            continue
        try:
            words = _match_words(utt, transcripts[utt], ali, trans_file)
        except LabelError:
            if on_mismatch == "error":
                raise
            mismatched.append(utt)
            log.warning("skipping %s: transcript/alignment word mismatch", utt)
            continue
        n_samples = (check_audio if decode else audio_samples)(audio[utt])
        phones, word_codes = _label_codes(Alignment(ali.phones, words, ali.source), n_samples, vocab)
        parts.append((utt, phones, word_codes, spk, gender))

    table = _table(parts, vocab)
    report = {
        "split": split,
        "utterances": len(parts),
        "frames": int(len(table)),
        "skipped_missing_transcript": len(no_transcript),
        "skipped_missing_audio": len(no_audio),
        "skipped_missing_alignment": len(missing),
        "skipped_word_mismatch": len(mismatched),
        "missing_transcript": no_transcript,
        "missing_audio": no_audio,
        "missing_alignment": missing,
        "word_mismatch": mismatched,
    }
    skipped = len(no_transcript) + len(no_audio) + len(missing) + len(mismatched)
    if skipped:
        log.warning("%s: %d utterances left out (%d audio without transcript, %d transcript without audio, "
                    "%d without alignment, %d with mismatched words)", split, skipped, len(no_transcript),
                    len(no_audio), len(missing), len(mismatched))
    return table, report


# --------------------------------------------------------------------------- writing

def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are shared on clusters
    return fd, tmp


def write_atomic(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename onto ``path``: a killed job leaves no finished-looking file."""
    path = Path(path)
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` newlines) atomically."""
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    return write_atomic(path, w)


def write_label_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a label table as parquet atomically (tmp file, then ``os.replace``)."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise LabelError(f"label table lacks columns {missing}; cannot write {path}")
    check_phones(table["phone"].unique(), str(path))
    out = table.copy()
    out["frame"] = out["frame"].astype(np.int32)
    return write_atomic(path, lambda tmp: out.to_parquet(tmp, index=False))


def read_label_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a label table written by :func:`write_label_table`."""
    return pd.read_parquet(path)


# --------------------------------------------------------------------------- s3prl

def write_s3prl_phone_files(
    label_tables: Mapping[str, pd.DataFrame | str | os.PathLike],
    out_dir: str | os.PathLike,
    corpus_root: str | os.PathLike,
    *,
    train_splits: Iterable[str] = ("train",),
    test_splits: Iterable[str] = ("test",),
    upsample: int = 2,
    audio_ext: str = ".flac",
    split_dirs: Mapping[str, str] | None = None,
) -> dict:
    """Write the files s3prl's ``phone_linear`` / ``phone_1hidden`` downstreams read.

    ``label_tables`` maps split names to label tables (DataFrames or parquet
    paths); ``split_dirs`` maps a split name to its directory under
    ``corpus_root`` (e.g. ``{"train": "train-clean-100"}``; default: the name).

    Files (all written atomically)::

        out_dir/converted_aligned_phones.txt   "utt id id id ..." one line per utterance
        out_dir/train_split.txt                utterance ids (s3prl splits them 90/10 train/dev)
        out_dir/test_split.txt                 utterance ids
        out_dir/phone_ids.tsv                  id, phone, phone_class
        out_dir/bucket/train-clean-100.csv     ",file_path,length,label" for every utterance
        out_dir/len_for_bucket/{split}.csv     the same, one file per split name (asr/ctc-style readers)

    ``file_path`` is relative to ``corpus_root`` (s3prl joins it with ``libri_root``),
    ``length`` is the number of samples, rows sorted longest first, as s3prl's
    ``preprocess/generate_len_for_bucket.py`` writes them. ``train-clean-100.csv``
    is the only name PhoneDataset opens, whatever the split, so it lists train
    and test utterances alike; it lives in its own directory so that it cannot
    clobber a real ``train-clean-100`` split table in ``len_for_bucket/``.

    Labels are written at 100 Hz, the rate of the original CPC file: each 20 ms
    label-table frame is repeated ``upsample`` (=2) times. s3prl's expert tiles
    upstream features by ``round(len(labels) / len(features))`` and then cuts or
    pads them to the label length, so a 20 ms upstream (HuBERT family) gets
    factor 2 and feature ``t`` meets labels ``2t, 2t+1`` -- exactly label-table
    frame ``t``; a 10 ms upstream (Mockingjay, fbank) gets factor 1.
    With ``upsample=1`` 10 ms upstreams would be silently cut to half length.

    Returns
    -------
    dict
        The ``downstream_expert.datarc`` keys for the config: ``libri_root``,
        ``phone_path``, ``bucket_file``, ``sample_rate``, and the counts written.
    """
    if upsample < 1:
        raise ValueError("upsample must be >= 1")
    out = Path(out_dir)
    root = Path(corpus_root)
    train_splits, test_splits = list(train_splits), list(test_splits)
    unknown = [s for s in train_splits + test_splits if s not in label_tables]
    if unknown:
        raise LabelError(f"splits {unknown} have no label table (given: {sorted(label_tables)})")
    overlap = set(train_splits) & set(test_splits)
    if overlap:
        raise LabelError(f"splits {sorted(overlap)} are both train and test")
    if max(PHONE_TO_ID.values()) >= S3PRL_CLASS_NUM:
        raise LabelError("phone ids exceed s3prl's class_num = 41")

    lines: list[str] = []
    split_utts: dict[str, list[str]] = {}
    bucket_rows: dict[str, list[tuple[str, int]]] = {}
    for split in tqdm(list(label_tables), desc="s3prl phone files", unit="split"):
        tbl = label_tables[split]
        table = tbl if isinstance(tbl, pd.DataFrame) else read_label_table(tbl)
        check_phones(table["phone"].unique(), f"label table of split {split}")
        utts: list[str] = []
        seen: set[str] = set()
        rows: list[tuple[str, int]] = []
        utt_col = table["utterance"].to_numpy(dtype=object)
        frame_col = table["frame"].to_numpy()
        ids_col = table["phone"].map(PHONE_TO_ID).to_numpy(dtype=np.int64)
        cuts = np.flatnonzero(utt_col[1:] != utt_col[:-1]) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(table)]):
            utt = str(utt_col[a])
            if utt in seen or not np.array_equal(frame_col[a:b], np.arange(b - a)):
                raise LabelError(f"split {split}, utterance {utt}: rows are not contiguous with frames "
                                 f"0..{b - a - 1} in order; rebuild the label table")
            ids = np.repeat(ids_col[a:b], upsample)
            lines.append(f"{utt} " + " ".join(map(str, ids.tolist())))
            utts.append(utt)
            seen.add(utt)
            path = audio_path(root, (split_dirs or {}).get(split, split), utt, audio_ext)
            n = audio_samples(path)
            if frames.n_frames(n) != b - a:
                raise LabelError(f"{path}: {frames.n_frames(n)} frames in the audio but {b - a} in the label "
                                 f"table of split {split}; rebuild the label table")
            rows.append((path.relative_to(root).as_posix(), n))
        split_utts[split] = utts
        bucket_rows[split] = rows

    def bucket_csv(rows: list[tuple[str, int]]) -> pd.DataFrame:
        df = pd.DataFrame(rows, columns=["file_path", "length"])
        df["label"] = None
        return df.sort_values("length", ascending=False, kind="stable").reset_index(drop=True)

    write_text_atomic(out / "converted_aligned_phones.txt", "\n".join(lines) + "\n")
    train_ids = [u for s in train_splits for u in split_utts[s]]
    test_ids = [u for s in test_splits for u in split_utts[s]]
    write_text_atomic(out / "train_split.txt", "".join(f"{u}\n" for u in train_ids))
    write_text_atomic(out / "test_split.txt", "".join(f"{u}\n" for u in test_ids))
    write_text_atomic(out / "phone_ids.tsv", "id\tphone\tphone_class\n"
                      + "".join(f"{i}\t{p}\t{c}\n" for i, p, c in phone_id_table()))
    used = [r for s in train_splits + test_splits for r in bucket_rows[s]]
    write_atomic(out / "bucket" / S3PRL_BUCKET_CSV, lambda tmp: bucket_csv(used).to_csv(tmp))
    for split, rows in bucket_rows.items():
        write_atomic(out / "len_for_bucket" / f"{split}.csv", lambda tmp, rows=rows: bucket_csv(rows).to_csv(tmp))
    return {
        "libri_root": str(root),
        "phone_path": str(out),
        "bucket_file": str(out / "bucket"),
        "sample_rate": frames.SAMPLE_RATE,
        "n_train": len(train_ids),
        "n_test": len(test_ids),
        "label_rate_hz": frames.SAMPLE_RATE // frames.HOP * upsample,
        "n_classes": len(PHONES),
    }


def s3prl_phone_coverage(datarc: Mapping, train_batch_size: int, eval_batch_size: int) -> dict[str, dict[str, int]]:
    """How many utterances s3prl's PhoneDataset really loads per split, for these batch sizes.

    PhoneDataset (s3prl 0.4.18) fills buckets of ``batch_size`` utterances from
    ``train-clean-100.csv`` sorted longest first, and keeps the final partial
    bucket only if it holds more than one utterance *and* the shortest row of
    the whole csv belongs to the split. Small corpora can therefore lose a
    whole split (3 test utterances with eval_batch_size 32 -> 0 loaded). Call
    this before training and pick batch sizes that lose nothing.

    Returns ``{"train"|"dev"|"test": {"listed": n, "loaded": m}}``.
    """
    import contextlib
    import io

    from s3prl.downstream.phone_linear.dataset import PhoneDataset

    keys = ("libri_root", "phone_path", "bucket_file", "sample_rate", "train_dev_seed")
    kw = {k: datarc[k] for k in keys if k in datarc}
    out = {}
    for split, bs in (("train", train_batch_size), ("dev", eval_batch_size), ("test", eval_batch_size)):
        with contextlib.redirect_stdout(io.StringIO()):
            full = PhoneDataset(split, 1, **kw)
            ds = PhoneDataset(split, bs, **kw)
        out[split] = {"listed": sum(map(len, full.X)), "loaded": sum(map(len, ds.X))}
    return out
