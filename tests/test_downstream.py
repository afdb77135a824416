"""speechdissect.downstream: task registry, configs, task data files, aggregation, and one real s3prl run."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from speechdissect.downstream import aggregate as agg
from speechdissect.downstream import tasks as T
from speechdissect.frames import HOP, RECEPTIVE_FIELD, SAMPLE_RATE, n_frames

# --------------------------------------------------------------------------- a tiny corpus

PHONES = {  # name -> (id in 0..40, kind, frequency Hz)
    "sil": (0, "silence", 0.0),
    "AA": (1, "tone", 300.0),
    "IY": (2, "tone", 700.0),
    "M": (3, "tone", 150.0),
    "S": (4, "noise", 0.0),
    "T": (5, "click", 0.0),
}
WORDS = {"MISS": ["M", "IY", "S"], "SAW": ["S", "AA"], "TEA": ["T", "IY"], "MAT": ["M", "AA", "T"]}
SPEAKERS = [  # speaker, gender, split, pitch factor
    ("101", "M", "train", 1.0),
    ("102", "F", "train", 1.7),
    ("103", "M", "train", 0.9),
    ("104", "F", "train", 1.5),
    ("201", "M", "dev", 1.1),
    ("301", "M", "test", 0.95),
    ("302", "F", "test", 1.6),
]
UTTS_PER_SPEAKER = 4


def _segment(rng, kind, freq, n):
    t = np.arange(n) / SAMPLE_RATE
    if kind == "silence":
        return 0.002 * rng.standard_normal(n)
    if kind == "noise":
        return 0.2 * rng.standard_normal(n)
    if kind == "click":
        x = np.zeros(n)
        x[:: max(1, n // 6)] = 0.8
        return x
    return 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 2 * freq * t)


def build_corpus(root: Path, seed: int = 0) -> dict:
    """LibriSpeech-layout corpus + label parquets + s3prl phone files (20 ms grid), all tiny."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    corpus = root / "corpus"
    labels_dir = root / "labels"
    phone_dir = root / "phones"
    labels_dir.mkdir(parents=True)
    phone_dir.mkdir(parents=True)
    tables: dict[str, list[pd.DataFrame]] = {}
    phone_lines, split_of = [], {}
    for spk, gender, split, factor in SPEAKERS:
        chap = "10"
        d = corpus / split / spk / chap
        d.mkdir(parents=True)
        trans = []
        for u in range(UTTS_PER_SPEAKER):
            uttid = f"{spk}-{chap}-{u:04d}"
            words = list(rng.choice(list(WORDS), size=3))
            segs = [("sil", "<sil>", int(0.1 * SAMPLE_RATE))]
            for w in words:
                for p in WORDS[w]:
                    segs.append((p, w, int(rng.uniform(0.07, 0.12) * SAMPLE_RATE)))
                segs.append(("sil", "<sil>", int(0.05 * SAMPLE_RATE)))
            wav = np.concatenate([_segment(rng, PHONES[p][1], PHONES[p][2] * factor, n) for p, _, n in segs])
            sf.write(d / f"{uttid}.flac", wav.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            trans.append(f"{uttid} {' '.join(words)}")
            ends = np.cumsum([n for _, _, n in segs])
            nf = n_frames(len(wav))
            centres = np.arange(nf) * HOP + RECEPTIVE_FIELD // 2
            idx = np.minimum(np.searchsorted(ends, centres, side="right"), len(segs) - 1)
            ph = [segs[i][0] for i in idx]
            wd = [segs[i][1] for i in idx]
            tables.setdefault(split, []).append(pd.DataFrame({
                "utterance": uttid, "frame": np.arange(nf, dtype=np.int32), "phone": ph,
                "word": wd, "speaker": spk, "gender": gender,
            }))
            phone_lines.append(uttid + " " + " ".join(str(PHONES[p][0]) for p in ph))
            split_of[uttid] = split
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(trans) + "\n")
    for split, parts in tables.items():
        pd.concat(parts, ignore_index=True).to_parquet(labels_dir / f"{split}.parquet")
    pd.DataFrame([(s, g, sp) for s, g, sp, _ in SPEAKERS], columns=["speaker", "gender", "split"]).to_csv(
        corpus / "speakers.tsv", sep="\t", index=False)
    (phone_dir / "converted_aligned_phones.txt").write_text("\n".join(phone_lines) + "\n")
    (phone_dir / "train_split.txt").write_text("".join(f"{u}\n" for u, s in split_of.items() if s != "test"))
    (phone_dir / "test_split.txt").write_text("".join(f"{u}\n" for u, s in split_of.items() if s == "test"))
    return {"corpus": corpus, "labels_dir": labels_dir, "phone_dir": phone_dir}


def save_tiny_hubert(path: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer HuBERT in s3prl's ``hubert_local`` format."""
    import torch

    model_cfg = {
        "label_rate": 50.0, "encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
        "encoder_attention_heads": 2, "conv_feature_layers": "[(32,10,5)] + [(32,3,2)]*4 + [(32,2,2)]*2",
        "final_dim": 16, "conv_pos": 16, "conv_pos_groups": 4, "dropout": 0.0, "attention_dropout": 0.0,
    }
    task_cfg = {"label_rate": 50.0, "sample_rate": 16000, "normalize": False}
    torch.manual_seed(seed)
    try:  # the project's own saver, when present
        from speechdissect.upstreams.hubert import build_hubert, hubert_checkpoint

        state = hubert_checkpoint(build_hubert(model_cfg, task_cfg, 10), model_cfg, task_cfg, 10)
    except ImportError:  # the dict s3prl's hubert/convert.py writes
        from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
        from s3prl.upstream.utils import merge_with_parent

        symbols = [[str(i) for i in range(10)]]
        model = HubertModel(merge_with_parent(HubertConfig, model_cfg),
                            merge_with_parent(HubertPretrainingConfig, task_cfg), symbols)
        state = {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict(),
                 "dictionaries_symbols": symbols}
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("ds_corpus"))


def _prepare(tiny, task, out):
    return T.prepare_task_data(task, tiny["corpus"], out, phone_dir=tiny["phone_dir"], labels_dir=tiny["labels_dir"], seed=0)


# --------------------------------------------------------------------------- registry and configs


def test_registry_has_the_tasks():
    assert {"phone_linear", "phone_1hidden", "speaker_linear_utter", "gender", "word", "ctc"} <= set(T.TASKS)


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="valid tasks:.*phone_linear"):
        T.get_task("phone_lineaar")


def test_unknown_task_fails_before_training(tmp_path):
    from speechdissect.downstream.runner import run_task

    with pytest.raises(ValueError, match="unknown downstream task 'nope'"):
        run_task("nope", "hubert_local", tmp_path / "x.pt", tmp_path, tmp_path / "exp")
    assert not (tmp_path / "exp").exists()


def test_missing_checkpoint_fails_before_training(tiny, tmp_path):
    from speechdissect.downstream.runner import UpstreamLoadError, run_task

    data = _prepare(tiny, "phone_linear", tmp_path / "data")
    with pytest.raises(UpstreamLoadError, match="not found"):
        run_task("phone_linear", "hubert_local", tmp_path / "missing.pt", data, tmp_path / "exp")
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("name", sorted(T.TASKS))
def test_config_has_the_keys_its_expert_reads(name):
    from speechdissect.downstream import experts

    experts.install()  # the runner's subprocess does the same before s3prl's run_downstream
    task = T.TASKS[name]
    cfg = task.load_config()
    assert importlib.util.find_spec(f"s3prl.downstream.{task.expert}.expert") is not None
    for key in T.RUNNER_KEYS:
        assert key in cfg["runner"], (name, key)
    assert cfg["runner"]["eval_dataloaders"] == [task.dev_split, task.test_split]
    assert cfg["runner"]["save_step"] == cfg["runner"]["total_steps"]
    assert "name" in cfg["optimizer"]
    keys = T.EXPERT_KEYS[task.expert]
    for key in keys["datarc"]:
        assert key in cfg["downstream_expert"]["datarc"], (name, key)
    for key in keys["modelrc"]:
        assert key in cfg["downstream_expert"]["modelrc"], (name, key)
    # small CPU budgets, full evaluation sets
    assert cfg["runner"]["total_steps"] <= 1000
    assert cfg["downstream_expert"]["datarc"]["eval_batch_size"] == 1
    assert cfg["downstream_expert"]["datarc"]["num_workers"] == 0


def test_build_config_applies_budget_and_paths(tiny, tmp_path):
    task = T.get_task("phone_linear")
    datarc = T.load_datarc(_prepare(tiny, "phone_linear", tmp_path / "d"))
    cfg = T.build_config(task, datarc, steps=40, overrides={"optimizer.lr": 0.5}, n_train=3)
    assert cfg["runner"]["total_steps"] == 40 and cfg["runner"]["save_step"] == 40
    assert cfg["runner"]["eval_step"] <= 40
    assert cfg["optimizer"]["lr"] == 0.5
    assert cfg["downstream_expert"]["datarc"]["train_batch_size"] == 3
    assert Path(cfg["downstream_expert"]["datarc"]["phone_path"]).is_dir()
    with pytest.raises(ValueError):
        T.build_config(task, datarc, steps=0)


# --------------------------------------------------------------------------- task data files


def test_phone_files_are_upsampled_to_10ms(tiny, tmp_path):
    datarc = T.load_datarc(_prepare(tiny, "phone_linear", tmp_path / "d"))
    src = T._collapse_phone_lines(tiny["phone_dir"] / "converted_aligned_phones.txt")
    out = T._collapse_phone_lines(Path(datarc["phone_path"]) / "converted_aligned_phones.txt")
    uttid = next(iter(src))
    assert out[uttid] == [i for i in src[uttid] for _ in range(2)]
    table = pd.read_csv(Path(datarc["bucket_file"]) / T.BUCKET_CSV)
    assert list(table.columns[:2]) == ["file_path", "length"]
    assert all((Path(datarc["libri_root"]) / p).is_file() for p in table["file_path"])


def test_phone_files_reject_ids_over_40(tiny, tmp_path):
    bad = tmp_path / "phones"
    bad.mkdir()
    for f in ("train_split.txt", "test_split.txt"):
        (bad / f).write_text((tiny["phone_dir"] / f).read_text())
    lines = (tiny["phone_dir"] / "converted_aligned_phones.txt").read_text().splitlines()
    lines[0] = lines[0] + " 57"
    (bad / "converted_aligned_phones.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(T.TaskDataError, match="0..40"):
        T.prepare_task_data("phone_linear", tiny["corpus"], tmp_path / "d", phone_dir=bad)
    assert not (tmp_path / "d").exists()


def test_speaker_gender_word_ctc_files(tiny, tmp_path):
    # speaker ID: every test speaker also in training
    d = T.load_datarc(_prepare(tiny, "speaker_linear_utter", tmp_path / "spk"))
    train = (Path(d["split_file"]) / "train_split.txt").read_text().split()
    test = (Path(d["split_file"]) / "test_split.txt").read_text().split()
    assert {u.split("-")[0] for u in test} <= {u.split("-")[0] for u in train}
    assert not set(train) & set(test)
    groups = pd.read_csv(Path(d["groups_file"]), sep="\t", dtype=str).set_index("item")
    assert set(groups.index) == set(train) | set(test)
    assert (groups.loc[test, "gender"] == [dict((s, g) for s, g, _, _ in SPEAKERS)[u.split("-")[0]] for u in test]).all()
    # gender: file-name prefix is the gender; split by speaker, so every test speaker is unseen in training,
    # the corpus's held-out speakers (301, 302: all their utterances in test/) first
    d = T.load_datarc(_prepare(tiny, "gender", tmp_path / "gender"))
    train = (Path(d["split_file"]) / "train_split.txt").read_text().split()
    test = (Path(d["split_file"]) / "test_split.txt").read_text().split()
    assert {x.split("-")[0] for x in test} == {"M", "F"} == {x.split("-")[0] for x in train}
    test_spk, train_spk = {x.split("-")[1] for x in test}, {x.split("-")[1] for x in train}
    assert {"301", "302"} <= test_spk and not test_spk & train_spk
    assert test_spk | train_spk == {s for s, *_ in SPEAKERS}
    assert all((Path(d["libri_root"]) / "audio" / f"{x}.flac").is_file() for x in test)
    groups = pd.read_csv(Path(d["groups_file"]), sep="\t", dtype=str).set_index("item")
    assert (groups.loc[test, "gender"] == [x[0] for x in test]).all()
    # word: closed vocabulary of clips
    d = T.load_datarc(_prepare(tiny, "word", tmp_path / "word"))
    classes = pd.read_csv(tmp_path / "word" / "classes.tsv", sep="\t")
    assert set(classes["word"]) <= set(WORDS) and len(classes) >= 2
    rows = pd.read_csv(Path(d["bucket_file"]) / T.BUCKET_CSV)
    assert rows["length"].min() >= 1600
    # ctc: phone-code transcripts next to symlinked audio
    d = T.load_datarc(_prepare(tiny, "ctc", tmp_path / "ctc"))
    codes = dict(pd.read_csv(tmp_path / "ctc" / "phone_codes.tsv", sep="\t", dtype=str).values)
    assert "sil" not in codes and set(codes) == set(PHONES) - {"sil"}
    uttid, phones = next(Path(d["libri_root"]).rglob("*.trans.txt")).read_text().splitlines()[0].split()
    assert set(phones) <= set(codes.values()) and len(phones) >= 3
    for name in ("train-clean-100", "dev-clean", "test-clean"):
        assert len(pd.read_csv(Path(d["bucket_file"]) / f"{name}.csv")) > 0


def test_unknown_data_option_is_an_error(tiny, tmp_path):
    with pytest.raises(TypeError, match="max_trian"):
        T.prepare_task_data("phone_linear", tiny["corpus"], tmp_path / "d", phone_dir=tiny["phone_dir"], max_trian=3)


def test_task_dir_is_relocatable(tiny, tmp_path):
    _prepare(tiny, "word", tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / "b")
    d = T.load_datarc(tmp_path / "b")
    assert d["libri_root"] == str((tmp_path / "b").resolve())
    T.check_datarc(T.get_task("word"), d)


@pytest.mark.parametrize("name", sorted(T.TASKS))
def test_expert_reads_the_task_files(tiny, tmp_path, name):
    """Build s3prl's own expert from our config + files and run one train and one test batch."""
    import torch

    task = T.get_task(name)
    datarc = T.load_datarc(_prepare(tiny, name, tmp_path / "d"))
    cfg = T.build_config(task, datarc, steps=5, n_train=T.count_train_items(task, datarc))
    from speechdissect.downstream import experts

    experts.install()
    expert_mod = importlib.import_module(f"s3prl.downstream.{task.expert}.expert")
    torch.manual_seed(0)
    expert = expert_mod.DownstreamExpert(upstream_dim=8, upstream_rate=320, downstream_expert=cfg["downstream_expert"],
                                         expdir=str(tmp_path))
    from collections import defaultdict

    for split in ("train", task.dev_split, task.test_split):
        loader = expert.get_dataloader(split)
        assert len(loader) > 0, (name, split)
        wavs, *others = next(iter(loader))
        feats = [torch.randn(round(len(w) / 320), 8) for w in wavs]
        records = defaultdict(list)
        loss = expert(split, feats, *others, records=records)
        assert torch.isfinite(loss)
    if task.expert in ("phone_linear", "phone_1hidden", "speaker_linear_utter_libri", "speechdissect_utterance"):
        n_test = len((Path(datarc.get("phone_path") or datarc["split_file"]) / "test_split.txt").read_text().split())
        assert sum(len(b) for b in expert.test_dataset.X) == n_test  # eval_batch_size 1 keeps every test item


# --------------------------------------------------------------------------- scores and aggregation


def test_select_score_takes_test_at_best_dev_step():
    from speechdissect.downstream.runner import select_score

    task = T.get_task("phone_linear")
    scalars = {"libri_phone/dev-acc": [(10, 0.5), (20, 0.7), (30, 0.7), (40, 0.6)],
               "libri_phone/test-acc": [(10, 0.4), (20, 0.65), (30, 0.66), (40, 0.8)]}
    s = select_score(task, scalars)
    assert (s["best_step"], s["score"], s["dev_score"], s["score_last"]) == (20, 0.65, 0.7, 0.8)
    ctc = T.get_task("ctc")  # lower is better, logged in percent
    s = select_score(ctc, {"asr/dev-clean-uer": [(5, 80.0), (10, 60.0)], "asr/test-clean-uer": [(5, 82.0), (10, 61.0)]})
    assert s["best_step"] == 10 and s["score"] == pytest.approx(0.61)
    s = select_score(task, {"libri_phone/dev-acc": [(10, float("nan"))], "libri_phone/test-acc": [(10, 0.3)]})
    assert s["score"] == 0.3


def test_mean_ci_on_fixed_numbers():
    r = agg.mean_ci([0.8, 0.9, 1.0])
    assert r["n"] == 3 and r["mean"] == pytest.approx(0.9)
    assert r["std"] == pytest.approx(0.1)
    # t_{0.975, 2} = 4.302653 ; sem = 0.1 / sqrt(3)
    assert r["ci_half"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert r["ci_low"] == pytest.approx(0.9 - r["ci_half"]) and r["ci_high"] == pytest.approx(0.9 + r["ci_half"])
    one = agg.mean_ci([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["ci_half"])
    assert agg.mean_ci([0.5, float("nan"), 0.7])["n"] == 2


def test_aggregate_writes_one_table_per_task(tmp_path):
    rows = []
    for up, base in (("mini_hubert", 0.6), ("mini_mockingjay", 0.5)):
        for variant, delta in (("original", 0.0), ("pruned", -0.1)):
            for seed, noise in enumerate((-0.01, 0.0, 0.01)):
                for task in ("phone_linear", "gender"):
                    rows.append({"upstream": up, "variant": variant, "task": task, "seed": seed, "metric": "acc",
                                 "higher_is_better": True, "score": base + delta + noise, "wall_seconds": 10.0 + seed})
    paths = []
    for i, row in enumerate(rows):
        p = tmp_path / "res" / f"{i}.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(json.dumps(row))
        paths.append(p)
    tables = agg.summarize(paths, tmp_path / "tables")
    assert set(tables) == {"phone_linear", "gender"}
    t = pd.read_csv(tables["phone_linear"], sep="\t")
    assert len(t) == 4 and set(t["n"]) == {3}
    row = t[(t["upstream"] == "mini_hubert") & (t["variant"] == "pruned")].iloc[0]
    assert row["mean"] == pytest.approx(0.5) and row["std"] == pytest.approx(0.01)
    assert row["ci_half"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)
    assert row["wall_seconds"] == pytest.approx(11.0) and row["seeds"] == "0,1,2"
    figs = agg.plot_scores(agg.aggregate(agg.load_results(paths)), tmp_path / "fig" / "scores")
    assert all(p.is_file() and p.stat().st_size > 0 for p in figs)


def test_gender_test_speakers_balance_voices_within_each_gender():
    # the synthetic design: every gender made from all three voices, two speakers per (gender, voice)
    voice = {"101": "kal", "103": "ked", "105": "slt", "107": "kal", "109": "ked", "111": "slt",
             "102": "slt", "104": "kal", "106": "ked", "108": "slt", "110": "kal", "112": "ked"}
    by_gender = {"M": ["101", "103", "105", "107", "109", "111"], "F": ["102", "104", "106", "108", "110", "112"]}
    for seed in range(5):
        test = T.choose_test_speakers(by_gender, 0.5, seed=seed, strata=voice, preferred={"111", "112"})
        assert {"111", "112"} <= test and len(test) == 6
        for g, spk in by_gender.items():  # one speaker of each voice per gender: voice cannot stand in for gender
            assert sorted(voice[x] for x in spk if x in test) == ["kal", "ked", "slt"]
    assert T.choose_test_speakers(by_gender, 1, seed=0) & set(by_gender["M"]) != set()
    assert len(T.choose_test_speakers(by_gender, 10, seed=0)) == 10  # at most all but one per gender
    with pytest.raises(T.TaskDataError, match="2\\+ speakers of each gender"):
        T.choose_test_speakers({"M": ["1", "2"], "F": ["3"]}, 0.5)


def test_chance_level_from_the_test_split(tiny, tmp_path):
    from collections import Counter

    # frame phone tasks: share of the most frequent phone among the test utterances' frames
    d = _prepare(tiny, "phone_linear", tmp_path / "phone")
    src = T._collapse_phone_lines(tiny["phone_dir"] / "converted_aligned_phones.txt")
    test = (tiny["phone_dir"] / "test_split.txt").read_text().split()
    counts = Counter(i for u in test for i in src[u])
    c = T.chance_level("phone_linear", d)
    assert c["chance_kind"] == "majority" and c["chance"] == pytest.approx(max(counts.values()) / sum(counts.values()))
    assert c["n_classes"] == len(counts) and c["chance_uniform"] == pytest.approx(1 / len(counts))
    assert c["majority_class"] == str(counts.most_common(1)[0][0])
    # utterance tasks: most frequent class (file-name prefix) of test_split.txt
    d = _prepare(tiny, "gender", tmp_path / "gender")
    items = (tmp_path / "gender" / "test_split.txt").read_text().split()
    n_m = sum(x.startswith("M-") for x in items)
    c = T.chance_level("gender", d)
    assert c["chance"] == pytest.approx(max(n_m, len(items) - n_m) / len(items)) and c["n_test"] == len(items)
    assert T.chance_level("ctc", {})["chance"] == 1.0  # PER of an empty output


def test_aggregate_adds_chance_and_group_scores_on_fixed_numbers(tmp_path):
    rows = [{"upstream": "u", "variant": "original", "task": "speaker_linear_utter", "seed": s, "metric": "acc",
             "higher_is_better": True, "score": sc, "score_by_gender": {"M": m, "F": f}}
            for s, (sc, m, f) in enumerate([(0.5, 0.4, 0.6), (0.6, 0.5, 0.7), (0.7, 0.6, 0.8)])]
    chance = {"speaker_linear_utter": {"chance": 0.1, "chance_kind": "majority", "chance_uniform": 0.0833}}
    t = agg.aggregate(rows, chance=chance)
    row = t.iloc[0]
    assert row["mean"] == pytest.approx(0.6) and row["chance"] == 0.1 and row["chance_kind"] == "majority"
    assert row["mean_by_gender_M"] == pytest.approx(0.5) and row["mean_by_gender_F"] == pytest.approx(0.7)
    assert row["ci_half_by_gender_M"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert "chance" not in agg.aggregate(rows).columns
    figs = agg.plot_scores(t, tmp_path / "fig")
    assert all(p.stat().st_size > 0 for p in figs)
    assert "chance (majority class)" in figs[1].read_text()  # the svg keeps the legend text


def test_select_score_reads_group_scores_at_the_best_dev_step():
    from speechdissect.downstream.runner import select_score

    task = T.get_task("speaker_linear_utter")
    scalars = {"libri_speaker/dev-acc": [(10, 0.5), (20, 0.7)], "libri_speaker/test-acc": [(10, 0.4), (20, 0.6)],
               "libri_speaker/test-acc_by_gender/M": [(10, 0.3), (20, 0.5)],
               "libri_speaker/test-acc_by_gender/F": [(10, 0.5), (20, 0.7)],
               "libri_speaker/dev-acc_by_gender/M": [(10, 0.9), (20, 0.9)]}
    s = select_score(task, scalars)
    assert s["best_step"] == 20 and s["score_by_gender"] == {"F": 0.7, "M": 0.5}
    assert "score_by_gender" not in select_score(task, {k: v for k, v in scalars.items() if "_by_" not in k})


def test_wrapper_expert_matches_s3prl_and_scores_groups(tiny, tmp_path):
    """speechdissect_utterance = speaker_linear_utter_libri (same init, loss, accuracy) + group accuracies."""
    import torch
    from collections import defaultdict

    from speechdissect.downstream import experts

    experts.install()
    task = T.get_task("speaker_linear_utter")
    datarc = T.load_datarc(_prepare(tiny, "speaker_linear_utter", tmp_path / "d"))
    cfg = T.build_config(task, datarc, steps=5, n_train=T.count_train_items(task, datarc))
    base_mod = importlib.import_module("s3prl.downstream.speaker_linear_utter_libri.expert")
    wrap_mod = importlib.import_module(f"s3prl.downstream.{experts.UTTERANCE_EXPERT}.expert")
    torch.manual_seed(0)
    base = base_mod.DownstreamExpert(upstream_dim=8, downstream_expert=cfg["downstream_expert"], expdir=str(tmp_path / "b"))
    torch.manual_seed(0)
    wrap = wrap_mod.DownstreamExpert(upstream_dim=8, downstream_expert=cfg["downstream_expert"], expdir=str(tmp_path / "w"))
    assert base.test_dataset.X == wrap.test_dataset.X and base.train_dataset.X == wrap.train_dataset.X

    class Logger:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, global_step):
            self.scalars[tag] = value

    rb, rw = defaultdict(list), defaultdict(list)
    for (wb, lb), (ww, lw, names) in zip(base.get_dataloader("test"), wrap.get_dataloader("test")):
        feats = [torch.randn(10, 8, generator=torch.Generator().manual_seed(len(w))) for w in wb]
        assert torch.equal(base("test", feats, lb, records=rb), wrap("test", feats, lw, names, records=rw))
    assert rb["acc"] == rw["acc"]
    (tmp_path / "b").mkdir()
    (tmp_path / "w").mkdir()
    log = Logger()
    wrap.log_records("test", records=rw, logger=log, global_step=3)
    groups = pd.read_csv(datarc["groups_file"], sep="\t", dtype=str).set_index("item")["gender"]
    for g in ("M", "F"):
        want = np.mean([c for n, c in zip(rw["name"], rw["acc"]) if groups[n] == g])
        assert log.scalars[f"libri_speaker/test-acc_by_gender/{g}"] == pytest.approx(want)
    assert log.scalars["libri_speaker/test-acc"] == pytest.approx(np.mean(rw["acc"]))
    pred = pd.read_csv(tmp_path / "w" / "predictions" / "test-step3.tsv", sep="\t", dtype=str)
    assert len(pred) == len(rw["name"]) and set(pred.columns) >= {"item", "label", "predicted", "correct", "gender"}
    assert (pred["label"] == [n.split("-")[0] for n in pred["item"]]).all()


def test_memo_upstream_reuses_frozen_outputs_only():
    import torch

    from speechdissect.downstream.runner import _memo_upstream_class

    class Up(torch.nn.Module):
        calls = 0

        def forward(self, wavs):
            Up.calls += 1
            return {"hidden_states": [w[None, :4] * 2 for w in wavs]}

    memo = _memo_upstream_class()(Up().eval(), max_bytes=10**6)
    wavs = [torch.arange(8.0), torch.ones(6)]
    with torch.no_grad():
        a = memo(wavs)
        b = memo([w.clone() for w in wavs])
        c = memo([torch.arange(8.0) + 1, torch.ones(6)])
    assert a is b and c is not a and Up.calls == 2 and (memo.hits, memo.misses) == (1, 2)
    memo(wavs)  # gradients enabled: never cached
    memo.train()
    with torch.no_grad():
        memo(wavs)  # training mode: never cached
    assert Up.calls == 4


# --------------------------------------------------------------------------- the real s3prl runner


@pytest.mark.slow
def test_phone_linear_end_to_end_through_s3prl(tiny, tmp_path):
    from speechdissect.downstream.runner import run_task

    ckpt = save_tiny_hubert(tmp_path / "tiny_hubert.pt")
    data = _prepare(tiny, "phone_linear", tmp_path / "data")
    result = run_task("phone_linear", "hubert_local", ckpt, data, tmp_path / "exp", seed=1, steps=12,
                      variant="original", latency_runs=3)
    saved = json.loads((tmp_path / "exp" / "result.json").read_text())
    assert saved["score"] == pytest.approx(result["score"])
    assert 0.0 <= result["score"] <= 1.0 and result["metric"] == "acc"
    assert result["steps"] == 12 and result["seed"] == 1 and result["upstream"] == "tiny_hubert"
    assert result["n_hidden_states"] == 3 and result["hidden_dim"] == 32
    # linear 32 -> 41 classes, plus s3prl's featurizer weights over 3 hidden states
    assert result["downstream_params"] == 32 * 41 + 41 and result["featurizer_params"] == 3
    assert result["upstream_params"] > 10_000 and result["upstream_latency_ms"] > 0
    assert result["wall_seconds"] > result["train_seconds"] > 0
    log = (tmp_path / "exp" / "log.log").read_text()
    assert "libri_phone/test-|step:12|acc:" in log  # s3prl's expert wrote it
    assert not list((tmp_path / "exp").glob("*.ckpt"))

    # a file that is not a hubert_local checkpoint fails with a clear message before training
    import torch

    from speechdissect.downstream.runner import UpstreamLoadError

    torch.save({"not": "a model"}, tmp_path / "bad.pt")
    with pytest.raises(UpstreamLoadError, match="could not load checkpoint"):
        run_task("phone_linear", "hubert_local", tmp_path / "bad.pt", data, tmp_path / "exp_bad", steps=2)
    assert not (tmp_path / "exp_bad" / "log.log").exists()


@pytest.mark.slow
def test_seeds_in_one_process_match_separate_runs(tiny, tmp_path):
    """run_seeds shares the process and the upstream outputs, yet each seed's numbers are a lone run's."""
    from speechdissect.downstream.runner import run_seeds, run_task

    ckpt = save_tiny_hubert(tmp_path / "tiny_hubert.pt")
    data = _prepare(tiny, "phone_linear", tmp_path / "data")
    both = run_seeds("phone_linear", "hubert_local", ckpt, data, [tmp_path / "s3", tmp_path / "s4"], [3, 4], steps=8,
                     layer=2, latency_runs=1)
    assert [r["seed"] for r in both] == [3, 4] and both[1]["feature_cache"]["misses"] == 0
    assert both[0]["featurizer_params"] == 0  # one layer selected: no weighted sum
    alone = run_task("phone_linear", "hubert_local", ckpt, data, tmp_path / "alone", seed=4, steps=8, layer=2,
                     latency_runs=1, feature_cache_mb=0)
    assert alone["history"] == both[1]["history"]
    with pytest.raises(ValueError, match="layer 3 out of range"):
        run_task("phone_linear", "hubert_local", ckpt, data, tmp_path / "badlayer", steps=2, layer=3, latency_runs=1)


@pytest.mark.slow
def test_speaker_id_per_gender_through_s3prl(tiny, tmp_path):
    """The utterance tasks run through the wrapper expert in s3prl's runner: score_by_gender on the test split."""
    from speechdissect.downstream.runner import run_task

    ckpt = save_tiny_hubert(tmp_path / "tiny_hubert.pt")
    data = _prepare(tiny, "speaker_linear_utter", tmp_path / "data")
    r = run_task("speaker_linear_utter", "hubert_local", ckpt, data, tmp_path / "exp", seed=0, steps=6, latency_runs=1)
    assert r["expert"] == "speechdissect_utterance" and set(r["score_by_gender"]) == {"M", "F"}
    pred = pd.read_csv(tmp_path / "exp" / "predictions" / f"test-step{r['best_step']}.tsv", sep="\t", dtype=str)
    assert len(pred) == len((tmp_path / "data" / "test_split.txt").read_text().split())
    correct = pred["correct"].astype(int)
    assert r["score"] == pytest.approx(correct.mean())
    for g in ("M", "F"):
        assert r["score_by_gender"][g] == pytest.approx(correct[pred["gender"] == g].mean())


@pytest.mark.slow
def test_unknown_upstream_name_lists_valid_names(tiny, tmp_path):
    from speechdissect.downstream.runner import UpstreamLoadError, run_task

    data = _prepare(tiny, "phone_linear", tmp_path / "data")
    with pytest.raises(UpstreamLoadError, match=r"unknown s3prl upstream 'hubert_locall'.*Close matches: .*hubert_local"):
        run_task("phone_linear", "hubert_locall", None, data, tmp_path / "exp", steps=2, latency_runs=1)
    assert not (tmp_path / "exp" / "log.log").exists()


def test_readout_names_and_resolution():
    from speechdissect.downstream.runner import readout_name, resolve_readouts

    assert [readout_name(x) for x in (None, -1, 0, 3)] == ["weighted", "last", "L0", "L3"]
    assert resolve_readouts(["weighted", "last", "each"], n_hidden=3) == [None, -1, 0, 1, 2]
    assert resolve_readouts(["each", "each"], n_hidden=2) == [0, 1]
    with pytest.raises(ValueError, match="n_hidden"):
        resolve_readouts(["each"])
    with pytest.raises(ValueError, match="unknown readout"):
        resolve_readouts(["first"])


@pytest.mark.slow
def test_readouts_in_one_process_match_lone_runs(tiny, tmp_path):
    """Several readouts share one process; the last-layer run equals a lone run of its layer index."""
    from speechdissect.downstream.runner import run_seeds, run_task

    ckpt = save_tiny_hubert(tmp_path / "tiny_hubert.pt")  # 2 layers: hidden states 0, 1, 2
    data = _prepare(tiny, "phone_linear", tmp_path / "data")
    runs = run_seeds("phone_linear", "hubert_local", ckpt, data, [tmp_path / "w", tmp_path / "last", tmp_path / "l0"],
                     [0, 0, 0], steps=8, layers=[None, -1, 0], latency_runs=1)
    assert [r["readout"] for r in runs] == ["weighted", "last", "L0"]
    assert runs[0]["featurizer_params"] == 3 and runs[1]["featurizer_params"] == 0
    assert runs[2]["feature_cache"]["misses"] == 0  # the upstream ran once for all readouts
    lone = run_task("phone_linear", "hubert_local", ckpt, data, tmp_path / "lone", seed=0, steps=8, layer=2,
                    latency_runs=1, feature_cache_mb=0)
    assert lone["history"] == runs[1]["history"]
    assert runs[2]["history"] != runs[1]["history"]
    with pytest.raises(ValueError, match="out of range"):
        run_seeds("phone_linear", "hubert_local", ckpt, data, [tmp_path / "bad"], [0], steps=2, layers=[-4], latency_runs=1)


def test_aggregate_keys_rows_by_readout():
    from speechdissect.downstream.aggregate import aggregate

    rows = [{"upstream": "u", "variant": "original", "task": "t", "readout": r, "seed": s, "score": v, "metric": "acc"}
            for r, vals in (("weighted", [0.5, 0.6]), ("last", [0.2, 0.3])) for s, v in enumerate(vals)]
    out = aggregate(rows).set_index("readout")
    assert out.loc["weighted", "mean"] == pytest.approx(0.55) and out.loc["last", "mean"] == pytest.approx(0.25)
    legacy = aggregate([{k: v for k, v in r.items() if k != "readout"} for r in rows[:2]])
    assert legacy["readout"].tolist() == ["weighted"]


def test_layerwise_table_marks_best_layer_and_baselines():
    import pandas as pd

    from speechdissect.downstream.layerwise import layerwise_table

    rows = [{"upstream": "m", "variant": "original", "task": "phone_linear", "readout": f"L{k}", "seed": s,
             "score": v + 0.01 * s, "metric": "acc"} for k, v in enumerate([0.3, 0.5, 0.4]) for s in range(3)]
    rows += [{"upstream": "m", "variant": "original", "task": "phone_linear", "readout": "weighted", "seed": 0,
              "score": 0.9, "metric": "acc"}]  # not a layer: dropped for a non-baseline
    rows += [{"upstream": "mfcc", "variant": "original", "task": "phone_linear", "readout": "weighted", "seed": s,
              "score": 0.45, "metric": "acc"} for s in range(3)]
    t = layerwise_table(pd.DataFrame(rows), baselines=["mfcc"])
    model = t[~t["baseline"]].set_index("layer")
    assert list(model.index) == [0.0, 1.0, 2.0]
    assert model["best_layer"].tolist() == [False, True, False]
    assert model.loc[1.0, "mean"] == pytest.approx(0.51)
    base = t[t["baseline"]]
    assert base["upstream"].tolist() == ["mfcc"] and base["mean"].iloc[0] == pytest.approx(0.45)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mfcc", "fbank", "fbank_no_cmvn"])
def test_baseline_upstreams_load_and_probe_through_s3prl(tiny, tmp_path, name):
    """s3prl's own baseline upstreams (downstream.baselines) load with no checkpoint and no network, and
    s3prl's runner probes them like any upstream (10 ms frames: labels at 100 Hz)."""
    import torch

    from speechdissect.downstream.runner import run_task
    from speechdissect.upstreams.registry import count_hidden_states, load_upstream

    model = load_upstream(name)
    hidden, _ = model(torch.zeros(1, 16000), torch.tensor([16000]))
    assert len(hidden) == 1 and hidden[0].shape[1] in (100, 101)  # one feature matrix at 10 ms
    assert hidden[0].shape[2] == {"mfcc": 39, "fbank": 240, "fbank_no_cmvn": 240}[name]
    assert count_hidden_states(name) == 1
    data = _prepare(tiny, "phone_linear", tmp_path / "data")
    r = run_task("phone_linear", name, None, data, tmp_path / "exp", seed=0, steps=6, latency_runs=1)
    assert r["s3prl_upstream"] == name and r["ckpt"] is None and 0.0 <= r["score"] <= 1.0
    assert r["n_hidden_states"] == 1 and r["upstream_params"] == 0

# --------------------------------------------------------------------------- runner: parsing and failure paths (fast)


def _write_events(expdir: Path, scalars: dict[str, list[tuple[int, float]]]) -> None:
    """A tensorboard file as s3prl's runner writes it (tensorboardX SummaryWriter.add_scalar)."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(expdir)) as w:
        for tag, points in scalars.items():
            for step, value in points:
                w.add_scalar(tag, value, step)


def test_read_scalars_of_a_tensorboard_file(tmp_path):
    from speechdissect.downstream.runner import read_scalars, select_score

    logged = {"libri_phone/dev-acc": [(10, 0.5), (20, 0.75), (30, 0.625)],
              "libri_phone/test-acc": [(10, 0.25), (20, 0.5), (30, 0.875)],
              "libri_phone/train-acc": [(5, 0.125)]}
    _write_events(tmp_path, logged)
    assert read_scalars(tmp_path) == logged   # values exact in float32
    assert read_scalars(tmp_path / "nowhere") == {}
    s = select_score(T.get_task("phone_linear"), read_scalars(tmp_path))
    assert (s["best_step"], s["score"], s["dev_score"], s["score_last"]) == (20, 0.5, 0.75, 0.875)
    assert s["history"] == {"dev": [[10, 0.5], [20, 0.75], [30, 0.625]], "test": [[10, 0.25], [20, 0.5], [30, 0.875]]}


def test_select_score_edge_cases():
    from speechdissect.downstream.runner import DownstreamRunError, select_score

    task = T.get_task("phone_linear")
    with pytest.raises(DownstreamRunError, match=r"no 'libri_phone/test-acc' scalar was logged \(tags: \['libri_phone/dev-acc'\]\)"):
        select_score(task, {"libri_phone/dev-acc": [(10, 0.5)]})
    # a dev evaluation without a test one at that step is not a candidate
    s = select_score(task, {"libri_phone/dev-acc": [(10, 0.9), (20, 0.5)], "libri_phone/test-acc": [(20, 0.4)]})
    assert (s["best_step"], s["score"]) == (20, 0.4)
    # no dev split: the last evaluation, dev_score NaN
    s = select_score(task, {"libri_phone/test-acc": [(10, 0.3), (20, 0.35)]})
    assert s["best_step"] == 20 and s["score"] == 0.35 and math.isnan(s["dev_score"])
    # lower is better, ties: the earliest step
    ctc = T.get_task("ctc")
    s = select_score(ctc, {"asr/dev-clean-uer": [(5, 60.0), (10, 60.0), (15, 70.0)],
                           "asr/test-clean-uer": [(5, 62.0), (10, 61.0), (15, 50.0)]})
    assert s["best_step"] == 5 and s["score"] == pytest.approx(0.62) and s["score_last"] == pytest.approx(0.50)


class _FakeChild:
    """Stands in for the runner subprocess: writes what the real one writes on a given outcome."""

    def __init__(self, code: int, finished: int = 0, error: str | None = None, log: str = ""):
        self.code, self.finished, self.error, self.log = code, finished, error, log

    def __call__(self, cmd, cwd=None, env=None, stdout=None, stderr=None, timeout=None):
        import subprocess

        spec = json.loads(Path(cmd[-1]).read_text())
        for k, run in enumerate(spec["runs"]):
            if self.error is not None:
                Path(run["probe_out"]).write_text(json.dumps({"error": self.error}))
            elif k < self.finished:
                _write_events(Path(run["expdir"]), {"libri_phone/dev-acc": [(10, 0.5)], "libri_phone/test-acc": [(10, 0.25)]})
                Path(run["probe_out"]).write_text(json.dumps({"finished": True, "run_seconds": 1.0, "latency_ms": 2.0}))
            elif k == self.finished and self.log:
                Path(run["log"]).write_text(self.log)
        return subprocess.CompletedProcess(cmd, self.code)


@pytest.fixture
def fake_run(tiny, tmp_path, monkeypatch):
    """run_seeds with the subprocess replaced: (outcome) -> the call's result or exception."""
    from speechdissect.downstream import runner

    data = _prepare(tiny, "phone_linear", tmp_path / "data")
    ckpt = tmp_path / "up.ckpt"
    ckpt.write_bytes(b"only its existence is checked before the subprocess")

    def call(child: _FakeChild, layer=None):
        monkeypatch.setattr(runner.subprocess, "run", child)
        return runner.run_seeds("phone_linear", "hubert_local", ckpt, data, [tmp_path / "s0", tmp_path / "s1"], [0, 1],
                                steps=10, layer=layer)
    return call, tmp_path


def test_runner_reports_an_upstream_that_does_not_load(fake_run):
    from speechdissect.downstream.runner import EXIT_UPSTREAM, UpstreamLoadError

    call, tmp = fake_run
    msg = "upstream hubert_local could not load checkpoint up.ckpt: KeyError: 'model_cfg'"
    with pytest.raises(UpstreamLoadError, match=re.escape(msg)):
        call(_FakeChild(EXIT_UPSTREAM, error=msg))
    assert not (tmp / "s0" / "result.json").exists() and not (tmp / "s1" / "result.json").exists()


def test_runner_reports_a_layer_out_of_range(fake_run):
    from speechdissect.downstream.runner import EXIT_LAYER

    call, tmp = fake_run
    with pytest.raises(ValueError, match=r"layer 7 out of range: upstream hubert_local \(up.ckpt\) has hidden states 0\.\.3"):
        call(_FakeChild(EXIT_LAYER, error="layer 7 out of range: upstream hubert_local (up.ckpt) has hidden states 0..3"), layer=7)
    assert not (tmp / "s0" / "result.json").exists()


def test_runner_reports_s3prl_failing_with_its_log(fake_run):
    """s3prl dies in the second seed: the first seed's result is kept, the error names the seed and shows the log."""
    from speechdissect.downstream.runner import DownstreamRunError

    call, tmp = fake_run
    log = "Traceback (most recent call last):\n  File \"expert.py\", line 9\nRuntimeError: shape mismatch in s3prl\n"
    with pytest.raises(DownstreamRunError, match=r"(?s)exit 1\) for task phone_linear, seed 1; log: .*s1/run_downstream\.log"
                                                 r".*RuntimeError: shape mismatch in s3prl"):
        call(_FakeChild(1, finished=1, log=log))
    first = json.loads((tmp / "s0" / "result.json").read_text())
    assert (first["seed"], first["score"], first["best_step"]) == (0, 0.25, 10)
    assert not (tmp / "s1" / "result.json").exists()


def test_runner_reports_a_child_that_died_without_a_word(fake_run):
    from speechdissect.downstream.runner import DownstreamRunError

    call, tmp = fake_run
    with pytest.raises(DownstreamRunError, match=r"exit -9\) for task phone_linear, seed 0; log: .*launcher\.log"):
        call(_FakeChild(-9))


@pytest.mark.slow
def test_s3prl_failing_in_the_real_runner_is_reported_with_its_log(tiny, tmp_path):
    """An optimizer s3prl cannot build: the upstream loads (probe passes), then s3prl's own code fails."""
    from speechdissect.downstream.runner import DownstreamRunError, run_task

    ckpt = save_tiny_hubert(tmp_path / "tiny_hubert.pt")
    data = _prepare(tiny, "phone_linear", tmp_path / "data")
    with pytest.raises(DownstreamRunError, match=r"(?s)s3prl run_downstream failed \(exit 1\) for task phone_linear, seed 0"
                                                 r".*NoSuchOptim"):
        run_task("phone_linear", "hubert_local", ckpt, data, tmp_path / "exp", steps=2, latency_runs=1,
                 overrides={"optimizer.torch_optim_name": "NoSuchOptim"})
    assert not (tmp_path / "exp" / "result.json").exists()
