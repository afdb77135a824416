"""Festival segs/words and MFA TextGrid parsing."""

import shutil
import subprocess
import tarfile
import zipfile

import pytest

from speechdissect.alignments import AlignmentError, Interval, load_alignments, read_festival, read_textgrid
from speechdissect.phones import UnknownPhoneError

SEGS = """#
0.0325 100 pau
0.0600 100 hh
0.0925 100 ax
0.1000 100 l
0.1300 100 ow
0.1400 100 pau
0.1600 100 w
"""
WORDS = """#
0.1300 100 Hello
0.1600 100 we
"""


def textgrid(phones, words, xmax):
    """Long-format TextGrid text with tiers words and phones; entries are (start, end, label)."""
    def tier(name, ivs):
        body = "".join(
            f'        intervals [{i}]:\n            xmin = {a}\n            xmax = {b}\n            text = "{t}"\n'
            for i, (a, b, t) in enumerate(ivs, 1))
        return (f'        class = "IntervalTier"\n        name = "{name}"\n        xmin = 0\n        xmax = {xmax}\n'
                f"        intervals: size = {len(ivs)}\n" + body)
    return ('File type = "ooTextFile"\nObject class = "TextGrid"\n\n'
            f"xmin = 0\nxmax = {xmax}\ntiers? <exists>\nsize = 2\nitem []:\n"
            "    item [1]:\n" + tier("words", words) + "    item [2]:\n" + tier("phones", phones))


TG_PHONES = [(0, 0.0325, ""), (0.0325, 0.06, "HH"), (0.06, 0.0925, "AH0"), (0.0925, 0.1, "L"),
             (0.1, 0.13, "OW1"), (0.13, 0.14, "sp"), (0.14, 0.16, "spn")]
TG_WORDS = [(0, 0.0325, ""), (0.0325, 0.13, "hello"), (0.13, 0.14, ""), (0.14, 0.16, "<unk>")]


def test_festival_segs_and_words(tmp_path):
    (tmp_path / "u.segs").write_text(SEGS)
    (tmp_path / "u.words").write_text(WORDS)
    a = read_festival(tmp_path / "u.segs")
    assert [p.label for p in a.phones] == ["sil", "HH", "AH", "L", "OW", "sil", "W"]
    assert a.phones[0] == Interval(0.0, 0.0325, "sil")
    assert a.phones[1].start == 0.0325
    # "we" starts after the pause, not at the previous word's end
    assert a.words == [Interval(0.0325, 0.13, "HELLO"), Interval(0.14, 0.16, "WE")]


def test_festival_unknown_phone_names_file(tmp_path):
    (tmp_path / "bad.segs").write_text("#\n0.1 100 pau\n0.2 100 qx\n")
    with pytest.raises(UnknownPhoneError, match=r"'qx'.*bad\.segs"):
        read_festival(tmp_path / "bad.segs")


def test_real_festival_output(tmp_path):
    assert shutil.which("festival"), "festival (required for the synthetic corpus) is not installed"
    scm = (f'(voice_kal_diphone)(set! u (utt.synth (Utterance Text "Hello world, the butter.")))'
           f'(utt.save.segs u "{tmp_path}/f.segs")(utt.save.words u "{tmp_path}/f.words")')
    (tmp_path / "s.scm").write_text(scm)
    subprocess.run(["festival", "-b", str(tmp_path / "s.scm")], check=True, timeout=60)
    a = read_festival(tmp_path / "f.segs")
    assert a.word_labels() == ["HELLO", "WORLD", "THE", "BUTTER"]
    assert a.phones[0].label == "sil" and a.phones[-1].label == "sil"
    assert a.words[0].start == a.phones[1].start  # after the leading pause
    ends = [p.end for p in a.phones]
    assert ends == sorted(ends)


def test_textgrid(tmp_path):
    p = tmp_path / "1-2-0000.TextGrid"
    p.write_text(textgrid(TG_PHONES, TG_WORDS, 0.16))
    a = read_textgrid(p)
    assert [x.label for x in a.phones] == ["HH", "AH", "L", "OW", "sil", "spn"]  # empty intervals dropped
    assert a.word_labels() == ["HELLO", "<UNK>"]
    assert a.phones[1] == Interval(0.06, 0.0925, "AH")


def test_textgrid_errors(tmp_path):
    p = tmp_path / "x.TextGrid"
    p.write_text(textgrid(TG_PHONES, TG_WORDS, 0.16).replace('name = "phones"', 'name = "segments"'))
    with pytest.raises(AlignmentError, match=r"x\.TextGrid.*phones"):
        read_textgrid(p)
    p.write_text(textgrid([(0, 0.1, "QQ1")], TG_WORDS, 0.16))
    with pytest.raises(UnknownPhoneError, match=r"'QQ1'.*x\.TextGrid"):
        read_textgrid(p)


def _write_tree(root):
    for spk, utt in (("1", "1-2-0000"), ("1", "1-2-0001"), ("3", "3-4-0000")):
        d = root / spk
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{utt}.TextGrid").write_text(textgrid(TG_PHONES, TG_WORDS, 0.16))


def test_load_from_dir_zip_tar(tmp_path):
    tree = tmp_path / "tree"
    _write_tree(tree)
    (tree / "9-9-0009.segs").write_text(SEGS)
    (tree / "9-9-0009.words").write_text(WORDS)
    got = load_alignments(tree, progress=False)
    assert sorted(got) == ["1-2-0000", "1-2-0001", "3-4-0000", "9-9-0009"]
    assert got["9-9-0009"].word_labels() == ["HELLO", "WE"]

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        for f in tree.rglob("*.TextGrid"):
            zf.write(f, f"dev-clean/{f.relative_to(tree)}")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        tf.add(tree, arcname="alignments")
    for arc in ("a.zip", "a.tar.gz"):
        got = load_alignments(tmp_path / arc, utterances={"1-2-0001", "3-4-0000"}, progress=False)
        assert sorted(got) == ["1-2-0001", "3-4-0000"]
        assert got["3-4-0000"].word_labels() == ["HELLO", "<UNK>"]
        assert "::" in got["3-4-0000"].source


def test_duplicate_utterance(tmp_path):
    _write_tree(tmp_path)
    (tmp_path / "extra").mkdir()
    shutil.copy(tmp_path / "1" / "1-2-0000.TextGrid", tmp_path / "extra")
    with pytest.raises(AlignmentError, match="duplicate alignment for utterance 1-2-0000"):
        load_alignments(tmp_path, progress=False)
