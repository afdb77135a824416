"""LibriSpeech config keys (issue 17): schema, cross-key checks, download stamp, existing-copy check, manifest.

Fast counterparts of tests/test_workflow_librispeech.py: no Snakemake run.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from speechdissect.config_checks import ConfigError, check_config
from speechdissect.download import (
    DOWNLOAD_STAMP, LIBRISPEECH_SHA256, download_complete, librispeech_checksums, write_download_stamp,
)
from speechdissect.manifest import alignment_files, check_librispeech_root, split_files, write_manifest

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "config.schema.yaml")
BASE = yaml.safe_load((REPO / "tests/workflow/librispeech_config.yaml").read_text())
SHA = "ab" * 32


def config(**libri) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg["corpora"]["libri"].update(mirror="http://127.0.0.1:1/ls", alignments="/a.zip")
    cfg["corpora"]["libri_local"].update(path="/data/LibriSpeech", alignments="/a")
    cfg["corpora"]["libri"].update(libri)
    return {k: v for k, v in cfg.items()}


def test_schema_accepts_checksums_path_and_label_keys():
    cfg = config(checksums={"dev-clean": f"sha256:{SHA}", "test-clean": "md5:" + "0" * 32, "train-clean-100": SHA})
    cfg["labels"] = {"on_missing": "skip", "on_mismatch": "skip", "phone_set": "ipa"}
    cfg["corpora"]["libri_local"]["speakers_file"] = "/data/speakers.txt"
    validate(cfg, SCHEMA)
    check_config(cfg)


@pytest.mark.parametrize("change,pattern", [
    (lambda c: c["corpora"]["libri"].update(checksums={"dev-clean": "sha1:abc"}), r"does not match"),
    (lambda c: c["labels"].update(phone_set="xsampa"), r"'xsampa' is not one of"),
    (lambda c: c["labels"].update(on_mismatch="warn"), r"'warn' is not one of"),
    (lambda c: c["corpora"]["libri_local"].pop("path"), r"libri_local|required"),  # neither subsets nor path
])
def test_schema_refuses(change, pattern):
    cfg = config()
    change(cfg)
    with pytest.raises(Exception, match=pattern):
        validate(cfg, SCHEMA)


@pytest.mark.parametrize("change,message", [
    (lambda c: c["corpora"]["libri"]["split_map"].update(dev="dev-clear"),
     "config key corpora.libri.split_map.dev: 'dev-clear' is not one of corpora.libri.subsets"),
    (lambda c: c["corpora"]["libri"]["split_map"].pop("test"),
     "config key corpora.libri.split_map: no entry for splits ['test']"),
    (lambda c: c["corpora"]["libri"].update(checksums={"dev-other": SHA}),
     "config key corpora.libri.checksums: 'dev-other' is not one of corpora.libri.subsets"),
    (lambda c: c["corpora"]["libri_local"].update(mirror="http://x"),
     "config key corpora.libri_local.path: an existing copy is used in place"),
])
def test_cross_key_checks_name_the_key(change, message):
    cfg = config()
    change(cfg)
    validate(cfg, SCHEMA)  # the schema cannot see these
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert message in str(e.value)


def test_download_stamp_covers_subsets_and_checksums(tmp_path):
    for s in ("dev-clean", "test-clean"):
        (tmp_path / s).mkdir()
    assert not download_complete(tmp_path, ["dev-clean"])
    write_download_stamp(tmp_path, ["test-clean", "dev-clean"], "http://m", {"dev-clean": f"sha256:{SHA}"})
    stamp = json.loads((tmp_path / DOWNLOAD_STAMP).read_text())
    assert stamp == {"subsets": ["dev-clean", "test-clean"], "mirror": "http://m",
                     "checksums": {"dev-clean": f"sha256:{SHA}", "test-clean": LIBRISPEECH_SHA256["test-clean"]}}
    assert download_complete(tmp_path, ["dev-clean", "test-clean"], {"dev-clean": f"sha256:{SHA}"})
    assert download_complete(tmp_path, ["dev-clean"], {"dev-clean": f"sha256:{SHA}"})
    assert not download_complete(tmp_path, ["dev-clean"])  # official checksum now: not what was checked
    assert not download_complete(tmp_path, ["dev-clean", "dev-other"], {"dev-clean": f"sha256:{SHA}"})
    (tmp_path / "test-clean").rmdir()
    assert not download_complete(tmp_path, ["test-clean"])
    assert librispeech_checksums(["dev-clean"]) == {"dev-clean": LIBRISPEECH_SHA256["dev-clean"]}


def _tree(root: Path) -> None:
    for rel in ("dev-clean/1/2/1-2-0000.flac", "dev-clean/1/2/1-2.trans.txt", "dev-clean/1/2/notes.md",
                "test-clean/3/4/3-4-0000.flac", "SPEAKERS.TXT"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")


def test_existing_copy_check_names_the_key_and_what_is_missing(tmp_path):
    _tree(tmp_path)
    check_librispeech_root(tmp_path, ["dev-clean", "test-clean"], key="corpora.ls.path")
    with pytest.raises(FileNotFoundError, match=r"config key corpora\.ls\.path: .* no subset directory dev-clear "
                                                r"\(found: dev-clean, test-clean\)"):
        check_librispeech_root(tmp_path, ["dev-clear"], key="corpora.ls.path")
    with pytest.raises(FileNotFoundError, match=r"corpora\.ls\.path: .*nowhere is not a directory"):
        check_librispeech_root(tmp_path / "nowhere", ["dev-clean"], key="corpora.ls.path")


def test_split_files_and_manifest(tmp_path):
    _tree(tmp_path)
    files = split_files(tmp_path, "dev-clean")
    assert [Path(f).relative_to(tmp_path).as_posix() for f in files] == [
        "SPEAKERS.TXT", "dev-clean/1/2/1-2-0000.flac", "dev-clean/1/2/1-2.trans.txt"]
    out = tmp_path / "m" / "dev.tsv"
    assert write_manifest(files, tmp_path, out) == 3
    rows = out.read_text().splitlines()
    assert rows[0] == "path\tbytes\tmtime_ns" and rows[1].startswith("SPEAKERS.TXT\t1\t")
    (tmp_path / "a" / "s").mkdir(parents=True)
    for name in ("s/1-2-0000.TextGrid", "s/x.txt", "1-2-0001.segs"):
        (tmp_path / "a" / name).write_text("")
    assert [Path(f).name for f in alignment_files(tmp_path / "a")] == ["1-2-0001.segs", "1-2-0000.TextGrid"]
    assert alignment_files(tmp_path / "SPEAKERS.TXT") == [str(tmp_path / "SPEAKERS.TXT")]
