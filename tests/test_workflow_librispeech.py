"""Workflow test of the LibriSpeech + MFA path as a researcher meets it (issue 17; issue 19 items 3-6).

A small LibriSpeech-format release is built from a synthetic corpus (three tarballs named like the
official ones with ``LibriSpeech/SPEAKERS.TXT`` inside, MFA-style TextGrids half ARPAbet with stress
digits and half IPA as ``english_mfa`` writes them) and served on 127.0.0.1. One config downloads it
from that mirror with checksums (corpus ``libri``) and also uses the same release unpacked beforehand
in place (``libri_local``, ``path:``); only the corpus -> labels -> pitch -> cache stages run. The
labels must equal, frame by frame, those of the Festival ground truth the release was made from.
Then: no re-download when alignments change or the download code is touched; a replaced alignment
archive or a padded flac reruns the labels; and the bad cases fail naming the file or the config key.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import threading
import zipfile
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from speechdissect import frames
from speechdissect.alignments import load_alignments
from speechdissect.corpus.synthesize import synthesize_corpus
from speechdissect.labels import build_label_table, read_label_table
from tests.conftest import REPO, run_snakemake
from tests.test_alignments import textgrid
from tests.test_download import RangeHandler

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

BASE_CONFIG = REPO / "tests" / "workflow" / "librispeech_config.yaml"
SUBSETS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
SPLITS = list(SUBSETS)
DOWNLOAD_SCRIPT = REPO / "workflow_scripts" / "download_librispeech.py"

# one IPA spelling per CMU phone, as english_mfa writes them (aspiration, length, dark l, ...)
TO_IPA = {
    "AA": "ɑː", "AE": "æ", "AH": "ə", "AO": "ɔ", "AW": "aw", "AY": "aj", "B": "b", "CH": "tʃ", "D": "d",
    "DH": "ð", "EH": "ɛ", "ER": "ɚ", "EY": "ej", "F": "f", "G": "ɡ", "HH": "h", "IH": "ɪ", "IY": "iː",
    "JH": "dʒ", "K": "kʰ", "L": "ɫ", "M": "m", "N": "n", "NG": "ŋ", "OW": "ow", "OY": "ɔj", "P": "pʰ",
    "R": "ɹ", "S": "s", "SH": "ʃ", "T": "tʰ", "TH": "θ", "UH": "ʊ", "UW": "uː", "V": "v", "W": "w",
    "Y": "j", "Z": "z", "ZH": "ʒ", "sil": "", "spn": "spn",
}
VOWELS = set("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())


def mfa_textgrid(ali, ipa: bool, n_samples: int, silence: str = "") -> str:
    """An MFA-style TextGrid of a Festival alignment: tiers words / phones, gaps as empty intervals."""
    xmax = round(n_samples / frames.SAMPLE_RATE, 6)

    def fill(ivs):
        out, t = [], 0.0
        for a, b, lab in ivs:
            if a > t + 1e-9:
                out.append((t, a, ""))
            out.append((a, b, lab))
            t = b
        if t < xmax - 1e-9:
            out.append((t, xmax, ""))
        return out

    def arpa(p):
        return silence if p == "sil" else (p + "1" if p in VOWELS else p)

    phones = [(iv.start, iv.end, TO_IPA[iv.label] if ipa else arpa(iv.label)) for iv in ali.phones]
    words = [(iv.start, iv.end, iv.label.lower()) for iv in ali.words]
    return textgrid(fill(phones), fill(words), xmax)


def tar_gz(files: dict[str, Path | bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, src in sorted(files.items()):
            data = src.read_bytes() if isinstance(src, Path) else src
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Synthetic corpus -> LibriSpeech release (tarballs, SPEAKERS.TXT, TextGrids zip + directory), served."""
    root = tmp_path_factory.mktemp("release")
    synth = root / "synthetic"
    synthesize_corpus(synth, n_speakers=2, utterances_per_speaker=4, words_per_sentence=(3, 4), seed=0,
                      splits={"train": 0.5, "dev": 0.25, "test": 0.25}, n_heldout=0, jobs=2, progress=False)
    speakers = pd.read_csv(synth / "speakers.tsv", sep="\t", dtype=str)
    speakers_txt = ("; Speakers of the test release (LibriSpeech format)\n;ID  |SEX| SUBSET           |MINUTES| NAME\n"
                    + "".join(f"{s:<5}| {g} | train-clean-100  | 1.00 | Speaker {s}\n"
                              for s, g in zip(speakers["speaker"], speakers["gender"])))
    festival = load_alignments(synth / "alignments", progress=False)
    unpacked = root / "LibriSpeech"  # the release as an existing copy (path:)
    tgdir = root / "textgrids"       # MFA output directory: {speaker}/{utt}.TextGrid
    archives, truth = {}, {}
    for split, subset in SUBSETS.items():
        members = {"LibriSpeech/SPEAKERS.TXT": speakers_txt.encode()}
        for f in sorted((synth / split).rglob("*")):
            if f.is_file():
                rel = f.relative_to(synth / split)
                members[f"LibriSpeech/{subset}/{rel.as_posix()}"] = f
                dest = unpacked / subset / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
        archives[subset] = tar_gz(members)
        for i, flac in enumerate(sorted((synth / split).glob("*/*/*.flac"))):
            utt = flac.name[:-5]
            tg = tgdir / utt.split("-")[0] / f"{utt}.TextGrid"
            tg.parent.mkdir(parents=True, exist_ok=True)
            tg.write_text(mfa_textgrid(festival[utt], ipa=i % 2 == 1, n_samples=sf.info(str(flac)).frames,
                                       silence=("", "sil", "sp")[i % 3]), encoding="utf-8")
        truth[split], _ = build_label_table(synth, split, festival, progress=False)
    (unpacked / "SPEAKERS.TXT").write_text(speakers_txt)
    zip_path = root / "alignments.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for tg in sorted(tgdir.rglob("*.TextGrid")):
            zf.write(tg, tg.relative_to(tgdir).as_posix())
    sums = {s: "sha256:" + hashlib.sha256(b).hexdigest() for s, b in archives.items()}

    srv = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.files = {f"/ls/{s}.tar.gz": b for s, b in archives.items()}
    srv.cut_once, srv.requests, srv.ignore_range = {}, [], False
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    no_proxy = os.environ.get("no_proxy")
    os.environ["no_proxy"] = "127.0.0.1,localhost"
    yield {"root": root, "synth": synth, "unpacked": unpacked, "tgdir": tgdir, "zip": zip_path, "sums": sums,
           "url": f"http://127.0.0.1:{srv.server_address[1]}/ls", "server": srv, "truth": truth,
           "festival": festival}
    srv.shutdown()
    srv.server_close()
    thread.join(5)
    if no_proxy is None:
        os.environ.pop("no_proxy", None)
    else:
        os.environ["no_proxy"] = no_proxy


def write_config(path: Path, release, change=None) -> Path:
    cfg = yaml.safe_load(BASE_CONFIG.read_text())
    libri, local = cfg["corpora"]["libri"], cfg["corpora"]["libri_local"]
    libri.update(mirror=release["url"], checksums=dict(release["sums"]), alignments=str(release["zip"]))
    local.update(path=str(release["unpacked"]), alignments=str(release["tgdir"]))
    if change:
        change(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def planned(workdir: Path, config: Path, *targets: str) -> dict[str, int]:
    """Rule -> job count of a dry run ({} when nothing is to be done)."""
    proc = run_snakemake(workdir, *targets, "--dry-run", "--quiet", "rules", config=config, timeout=900)
    text = proc.stdout + proc.stderr
    block = re.search(r"Job stats:\n(.*?)\n\s*\n", text + "\n\n", re.S)
    if not block:
        assert "nothing to be done" in text.lower(), text[-3000:]
        return {}
    return {m.group(1): int(m.group(2)) for line in block.group(1).splitlines()
            if (m := re.match(r"^(\w+)\s+(\d+)$", line.strip())) and m.group(1) != "total"}


def labels_targets(corpus: str) -> list[str]:
    return [f"results/{corpus}/labels/{s}.parquet" for s in SPLITS]


TARGETS = [*labels_targets("libri"), *labels_targets("libri_local"),
           *[f"results/{c}/pitch/{s}.parquet" for c in ("libri", "libri_local") for s in SPLITS],
           "results/mini_hubert/libri/cache/dev", "results/mini_hubert/libri_local/cache/dev"]


def assert_labels_are_the_truth(workdir: Path, corpus: str, truth) -> None:
    for split in SPLITS:
        got = read_label_table(workdir / f"results/{corpus}/labels/{split}.parquet")
        want = truth[split]
        assert len(got) == len(want) > 0, (corpus, split)
        for col in ("utterance", "frame", "phone", "word", "speaker", "gender"):
            assert got[col].astype(str).tolist() == want[col].astype(str).tolist(), (corpus, split, col)


@pytest.fixture(scope="module")
def run(release, tmp_path_factory):
    """The mirror + path: run of corpus -> labels -> pitch -> cache."""
    workdir = tmp_path_factory.mktemp("ls_run")
    config = write_config(workdir.parent / f"{workdir.name}.yaml", release)
    run_snakemake(workdir, *TARGETS, config=config, timeout=2400)
    return workdir, config


# Timeouts: the module's run (fixture ``run``, counted in the first test's time) takes ~2 min of
# CPU on 2 idle cores; the margins are for a loaded machine (measured 14 min at load 17).
@pytest.mark.timeout(2400)
def test_mirror_with_checksums_and_existing_copy(release, run):
    workdir, _ = run
    requests = sorted(p for p, _ in release["server"].requests)
    assert requests == sorted(f"/ls/{s}.tar.gz" for s in SUBSETS.values())  # each archive fetched once
    corpus = workdir / "resources/corpora/libri"
    assert sorted(p.name for p in corpus.iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(SUBSETS.values())
    stamp = json.loads((corpus / ".download.json").read_text())
    assert stamp["checksums"] == release["sums"] and stamp["mirror"] == release["url"]
    assert not (workdir / "resources/corpora/libri_local").exists()  # path: is used in place
    for corpus_name in ("libri", "libri_local"):
        assert_labels_are_the_truth(workdir, corpus_name, release["truth"])
        for split in SPLITS:
            labels = pd.read_parquet(workdir / f"results/{corpus_name}/labels/{split}.parquet")
            pitch = pd.read_parquet(workdir / f"results/{corpus_name}/pitch/{split}.parquet")
            assert pitch["utterance"].tolist() == labels["utterance"].tolist()
            assert (pitch["f0"] > 0).mean() > 0.2
            report = json.loads((workdir / f"results/{corpus_name}/labels/{split}.report.json").read_text())
            assert report["utterances"] == labels["utterance"].nunique() and report["skipped_missing_alignment"] == 0
        meta = json.loads((workdir / f"results/mini_hubert/{corpus_name}/cache/dev/meta.json").read_text())
        assert meta["n_utterances"] == release["truth"]["dev"]["utterance"].nunique()
        assert meta["n_frames"] == len(release["truth"]["dev"])
    # both phone sets were in play, and their labels agree with the truth above
    phone_sets = {("ipa" if "ɹ" in t.read_text(encoding="utf-8") or "ə" in t.read_text(encoding="utf-8") else "arpabet")
                  for t in release["tgdir"].rglob("*.TextGrid")}
    assert phone_sets == {"ipa", "arpabet"}
    # a complete run has nothing left to do
    assert planned(workdir, run[1], *TARGETS) == {}


@pytest.mark.timeout(2400)
def test_no_redownload_when_alignments_or_download_code_change(release, run, tmp_path):
    workdir, config = run
    # alignments zip -> directory: the labels rerun, the download does not
    cfg = write_config(tmp_path / "dir.yaml", release,
                       lambda c: c["corpora"]["libri"].update(alignments=str(release["tgdir"])))
    jobs = planned(workdir, cfg, *TARGETS)
    assert "download_librispeech" not in jobs and jobs.get("ingest_alignments") == 3, jobs
    # the download script touched (a git pull): nothing to do at all
    st = DOWNLOAD_SCRIPT.stat()
    try:
        os.utime(DOWNLOAD_SCRIPT, (st.st_atime, st.st_mtime + 3600))
        assert planned(workdir, config, *TARGETS) == {}
        # forcing every job still does not download again (the complete corpus is no rule's output)
        assert "download_librispeech" not in planned(workdir, config, *labels_targets("libri"), "--forceall")
    finally:
        os.utime(DOWNLOAD_SCRIPT, (st.st_atime, st.st_mtime))


# --------------------------------------------------------------------------- bad cases

@pytest.mark.timeout(900)
def test_wrong_checksum_is_rejected_and_leaves_nothing(release, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    bad = "sha256:" + "0" * 64
    cfg = write_config(tmp_path / "c.yaml", release, lambda c: c["corpora"]["libri"].update(
        subsets=["dev-clean"], checksums={"dev-clean": bad},
        split_map={"train": "dev-clean", "dev": "dev-clean", "test": "dev-clean"}))
    proc = run_snakemake(workdir, "results/libri/labels/dev.parquet", config=cfg, check=False, timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "checksum mismatch" in text and "dev-clean.tar.gz" in text and "0" * 64 in text, text[-3000:]
    assert not (workdir / "resources/corpora/libri").exists()  # no archive, no part file, no stamp, no subset
    assert not (workdir / "results/libri/labels").exists()


def _local_copy(release, tmp_path) -> tuple[Path, Path]:
    local, tgdir = tmp_path / "LibriSpeech", tmp_path / "textgrids"
    shutil.copytree(release["unpacked"], local)
    shutil.copytree(release["tgdir"], tgdir)
    return local, tgdir


def _local_config(tmp_path, release, local, tgdir, **labels) -> Path:
    def change(c):
        c["corpora"]["libri_local"].update(path=str(local), alignments=str(tgdir))
        c["labels"].update(labels)
    return write_config(tmp_path / f"c_{len(list(tmp_path.glob('c_*.yaml')))}.yaml", release, change)


@pytest.mark.timeout(900)
def test_unpaired_audio_missing_textgrid_and_mismatch_error_or_skip(release, tmp_path):
    """19.3 and 17.6 in one existing copy: a transcript line removed, a TextGrid removed, a word changed."""
    local, tgdir = _local_copy(release, tmp_path)
    utts = sorted(release["truth"]["train"]["utterance"].unique())
    assert len(utts) >= 3
    no_line, no_tg, wrong = utts[0], utts[1], utts[2]
    next(tgdir.rglob(f"{no_tg}.TextGrid")).unlink()
    for trans in (local / "train-clean-100").rglob("*.trans.txt"):
        lines = []
        for line in trans.read_text().splitlines():
            utt, *words = line.split()
            if utt == no_line:
                continue
            lines.append(" ".join([utt, *words[:-1], "WRONGWORD"]) if utt == wrong else line)
        trans.write_text("".join(f"{line}\n" for line in lines))
    workdir = tmp_path / "run"
    target = "results/libri_local/labels/train.parquet"

    def attempt(**labels):
        proc = run_snakemake(workdir, target, config=_local_config(tmp_path, release, local, tgdir, **labels),
                             check=False, timeout=900)
        return proc.returncode, proc.stdout + proc.stderr

    rc, text = attempt()
    assert rc != 0 and f"1 audio files without a transcript line: {no_line}" in text, text[-3000:]
    assert "labels: {on_missing: skip}" in text and not (workdir / target).exists()
    rc, text = attempt(on_missing="skip")
    assert rc != 0 and f"utterance {wrong}" in text and "WRONGWORD" in text, text[-3000:]
    assert "labels: {on_mismatch: skip}" in text and not (workdir / target).exists()
    rc, text = attempt(on_missing="skip", on_mismatch="skip")
    assert rc == 0, text[-3000:]
    report = json.loads((workdir / "results/libri_local/labels/train.report.json").read_text())
    assert report["missing_transcript"] == [no_line] and report["skipped_missing_transcript"] == 1
    assert report["missing_alignment"] == [no_tg] and report["word_mismatch"] == [wrong]
    assert report["utterances"] == len(utts) - 3
    assert set(pd.read_parquet(workdir / target)["utterance"]) == set(utts[3:])
    log = (workdir / "results/logs/ingest_alignments/libri_local/train.log").read_text()
    assert no_line in log and no_tg in log and wrong in log


@pytest.mark.timeout(900)
def test_split_map_typo_fails_before_any_job(release, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    cfg = write_config(tmp_path / "c.yaml", release,
                       lambda c: c["corpora"]["libri"]["split_map"].update(dev="dev-clear"))
    proc = run_snakemake(workdir, "--dry-run", config=cfg, check=False, timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key corpora.libri.split_map.dev: 'dev-clear' is not one of corpora.libri.subsets" in text, text[-3000:]
    cfg = write_config(tmp_path / "c2.yaml", release,
                       lambda c: c["corpora"]["libri_local"]["split_map"].update(dev="dev-clear"))
    proc = run_snakemake(workdir, "--dry-run", config=cfg, check=False, timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key corpora.libri_local.path" in text and "dev-clear" in text, text[-3000:]
    assert not (workdir / "results").exists() and not (workdir / "resources").exists()


# --------------------------------------------------------------------------- in-place edits (last: they edit the run)

@pytest.mark.timeout(2400)
def test_padded_flac_and_replaced_alignments_rerun_the_labels(release, run, tmp_path):
    """19.4 (a flac of the existing copy padded in place) and 17.4 (alignments replaced in place).

    Runs last in this module: it edits the module's run and release.
    """
    workdir, config = run
    fetched = len(release["server"].requests)
    local_targets = [*labels_targets("libri_local"), *[f"results/libri_local/pitch/{s}.parquet" for s in SPLITS],
                     "results/mini_hubert/libri_local/cache/dev"]
    # 19.4: 0.5 s of silence appended to a dev flac of libri_local (path:)
    utt = sorted(release["truth"]["dev"]["utterance"].unique())[0]
    flac = next((release["unpacked"] / "dev-clean").glob(f"*/*/{utt}.flac"))
    x, sr = sf.read(flac, dtype="int16")
    sf.write(flac, np.concatenate([x, np.zeros(sr // 2, dtype=np.int16)]), sr, subtype="PCM_16")
    jobs = planned(workdir, config, *local_targets)
    assert jobs == {"corpus_manifest": 1, "ingest_alignments": 1, "extract_f0": 1, "extract_pitch": 1,
                    "cache_activations": 1}, jobs
    before = read_label_table(workdir / "results/libri_local/labels/dev.parquet")
    run_snakemake(workdir, "results/libri_local/labels/dev.parquet", config=config, timeout=900)
    after = read_label_table(workdir / "results/libri_local/labels/dev.parquet")
    n_before = int((before["utterance"] == utt).sum())
    assert int((after["utterance"] == utt).sum()) == frames.n_frames(len(x) + sr // 2) == n_before + 25

    # 17.4: a TextGrid of libri_local's alignment directory rewritten in place (last phone -> spn)
    tg = release["tgdir"] / utt.split("-")[0] / f"{utt}.TextGrid"
    tg.write_text(_last_phone_spn(tg.read_text(encoding="utf-8")), encoding="utf-8")
    assert planned(workdir, config, *labels_targets("libri_local")) == {"ingest_alignments": 3}

    # 17.4: libri's alignment archive replaced in place by one whose TextGrid of utt differs
    with zipfile.ZipFile(release["zip"]) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    name = next(n for n in members if n.endswith(f"{utt}.TextGrid"))
    members[name] = _last_phone_spn(members[name].decode("utf-8")).encode("utf-8")
    tmp = release["zip"].with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    os.replace(tmp, release["zip"])
    jobs = planned(workdir, config, *labels_targets("libri"))
    assert jobs == {"ingest_alignments": 3}, jobs
    assert "download_librispeech" not in planned(workdir, config, *TARGETS)
    old = read_label_table(workdir / "results/libri/labels/dev.parquet")
    run_snakemake(workdir, *labels_targets("libri"), config=config, timeout=900)
    new = read_label_table(workdir / "results/libri/labels/dev.parquet")
    n_spn = lambda t: int(((t["utterance"] == utt) & (t["phone"] == "spn")).sum())  # noqa: E731
    assert n_spn(new) > n_spn(old)
    assert len(release["server"].requests) == fetched  # nothing was downloaded again


def _last_phone_spn(text: str) -> str:
    """The TextGrid with its phones tier's last speech interval relabelled ``spn``."""
    head, phones = text.split('name = "phones"', 1)
    labels = list(re.finditer(r'text = "([^"]+)"', phones))
    last = [m for m in labels if m.group(1) not in ("sil", "sp")][-1]
    phones = phones[:last.start()] + 'text = "spn"' + phones[last.end():]
    return head + 'name = "phones"' + phones
