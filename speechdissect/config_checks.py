"""Cross-key checks of a workflow config: the one place for checks the JSON schema cannot make.

The schema (``config.schema.yaml``) checks each key on its own: types, ranges, names of keys.
What it cannot check is a key that names another entry of the config (a fine-tune ``base``,
an analysis split, a task under ``downstream.steps``, ...). Those checks live here, run by the
Snakefile right after schema validation and before any job is planned, so that a bad value
fails at once with a message naming the key, the bad value and the valid names.
"""

from __future__ import annotations

from typing import Callable, Mapping

__all__ = ["ConfigError", "CHECKS", "check", "check_config"]


class ConfigError(ValueError):
    """A config value names something the config does not define."""


#: every cross-key check: a function of the whole config returning a list of problems
#: (each a sentence that names the config key, the bad value and the valid names)
CHECKS: list[Callable[[Mapping], list[str]]] = []


def check(fn: Callable[[Mapping], list[str]]) -> Callable[[Mapping], list[str]]:
    """Register ``fn`` as a cross-key check (decorator)."""
    CHECKS.append(fn)
    return fn


def check_config(config: Mapping) -> None:
    """Run every registered check; raise :class:`ConfigError` listing all problems found."""
    problems = [p for fn in CHECKS for p in fn(config)]
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


@check
def _analysis_corpus_defined(config: Mapping) -> list[str]:
    corpora = config.get("corpora", {})
    name = config.get("analysis_corpus")
    if name not in corpora:
        return [f"config key analysis_corpus: {name!r} is not one of corpora: {sorted(corpora)}; "
                "add it under corpora: or pick an existing name"]
    return []


@check
def _downstream_baselines_and_layerwise(config: Mapping) -> list[str]:
    """downstream.baselines / downstream.layerwise name defined upstreams and configured tasks."""
    ds = config.get("downstream", {}) or {}
    upstreams = config.get("upstreams", {}) or {}
    problems = []
    for key, names in (("downstream.baselines", ds.get("baselines", [])),
                       ("downstream.layerwise.upstreams", (ds.get("layerwise") or {}).get("upstreams", []))):
        bad = [n for n in names if n not in upstreams]
        if bad:
            problems.append(f"config key {key}: {bad} not defined under upstreams: {sorted(upstreams)} "
                            "(a baseline such as s3prl's mfcc is `mfcc: {source: hub, name: mfcc}`)")
    bad = [t for t in (ds.get("layerwise") or {}).get("tasks", []) if t not in ds.get("tasks", [])]
    if bad:
        problems.append(f"config key downstream.layerwise.tasks: {bad} not in downstream.tasks {ds.get('tasks', [])}")
    return problems
# --------------------------------------------------------------------------- #
# Names one config key gives to another entry (issue 19.1, 19.2, 19.7).
# The defaults below are the ones the rules use when a key is absent
# (rules/*.smk); keep them in step.
# --------------------------------------------------------------------------- #
#: upstream sources trained here, i.e. with a checkpoint under resources/upstreams/
_TRAINED_HERE = ("pretrain", "finetune")
_DEFAULT_NEURON_PROPERTIES = ["phone_type", "gender", "pitch"]
_DEFAULT_MASK_METHODS = ["norm", "protected_norm", "random"]
_DEFAULT_MASK_SPARSITIES = [0.1, 0.2, 0.3, 0.4, 0.5]
_DEFAULT_NEURON_SETS = ["all", "property"]


def _section(config: Mapping, *keys: str) -> Mapping:
    """``config[k1][k2]...`` or ``{}`` when a level is absent or null."""
    for key in keys:
        config = (config or {}).get(key) or {}
    return config


def _not_one_of(key: str, bad, valid, what: str, fix: str = "") -> str:
    """The message of one bad name: the key as spelled in config.yaml, the value, the valid names."""
    return f"config key {key}: {bad!r} is not one of {what}: {sorted(valid)}" + (f"; {fix}" if fix else "")


def _undefined_upstream(key: str, name, upstreams) -> str:
    return (f"config key {key}: {name!r} is not defined under upstreams: {sorted(upstreams)}; "
            "define it there or fix the name")


def _tag(x) -> str:
    """How a sparsity/fraction is written in file names (rules/common.smk fraction_tag)."""
    return f"{float(x):g}"


def _task_names() -> list[str]:
    from speechdissect.downstream.tasks import TASKS

    return sorted(TASKS)


def _upstream_names(config: Mapping) -> list[str]:
    return list(_section(config, "upstreams"))


def _analysis_upstream_names(config: Mapping) -> list[str]:
    return list(config.get("analysis_upstreams", _upstream_names(config)))


def _pruning_upstream_names(config: Mapping) -> list[str]:
    return list(_section(config, "pruning").get("upstreams", []))


@check
def _upstream_sources(config: Mapping) -> list[str]:
    """A fine-tune ``base`` is an upstream trained here; a trained upstream's corpus and split exist."""
    upstreams = _section(config, "upstreams")
    corpora = _section(config, "corpora")
    splits = list(config.get("splits") or [])
    problems = []
    for name, spec in upstreams.items():
        spec = spec or {}
        if spec.get("source") == "finetune":
            base = spec.get("base")
            trained = [n for n, s in upstreams.items() if (s or {}).get("source") in _TRAINED_HERE and n != name]
            if base not in trained:
                problems.append(_not_one_of(
                    f"upstreams.{name}.base", base, trained, "the upstreams trained here (source: pretrain or finetune)",
                    "a fine-tune starts from the checkpoint of another entry under upstreams:, named by its key"))
            else:  # a chain of fine-tunes must end at a pretrained entry
                seen = [name]
                while base is not None and upstreams.get(base, {}).get("source") == "finetune":
                    if base in seen:
                        problems.append(f"config key upstreams.{name}.base: the fine-tune chain "
                                        f"{' -> '.join([*seen, base])} is a cycle; end it at a source: pretrain entry")
                        break
                    seen.append(base)
                    base = upstreams[base].get("base")
        if spec.get("source") in _TRAINED_HERE:
            corpus = spec.get("corpus", config.get("analysis_corpus"))
            if corpus not in corpora:
                problems.append(_not_one_of(f"upstreams.{name}.corpus", corpus, corpora, "corpora"))
            split = spec.get("split", "train")
            if split not in splits:
                problems.append(_not_one_of(f"upstreams.{name}.split", split, splits, "splits"))
    return problems


@check
def _analysis_upstreams_defined(config: Mapping) -> list[str]:
    """``analysis_upstreams`` (default: every upstream) is non-empty and names defined upstreams."""
    upstreams = _upstream_names(config)
    names = _analysis_upstream_names(config)
    if not names:
        return ["config key analysis_upstreams: empty (or no upstreams: defined); the analyses need at least one "
                f"upstream: name one or more of upstreams: {sorted(upstreams)}"]
    return [_undefined_upstream("analysis_upstreams", n, upstreams) for n in names if n not in upstreams]


@check
def _analysis_splits(config: Mapping) -> list[str]:
    """Every split an analysis reads (cached, labelled or pitch-referenced) is one of ``splits``."""
    splits = list(config.get("splits") or [])
    keys = [("cache.splits", s) for s in _section(config, "cache").get("splits", [])]
    keys += [("convexity.split", _section(config, "convexity").get("split", "test")),
             ("neurons.split", _section(config, "neurons").get("split", "test")),
             ("attention.split", _section(config, "attention").get("split", "test")),
             ("attention.tune_split", _section(config, "attention").get("tune_split", "dev"))]
    if "reference_split" in _section(config, "pitch"):
        keys.append(("pitch.reference_split", config["pitch"]["reference_split"]))
    return [_not_one_of(key, split, splits, "splits", "labels, caches and analyses exist only for those splits")
            for key, split in keys if split not in splits]


@check
def _downstream_references(config: Mapping) -> list[str]:
    """Upstreams, tasks, per-task steps and per-task data options of ``downstream:`` exist."""
    ds = _section(config, "downstream")
    upstreams = _upstream_names(config)
    tasks = _task_names()
    problems = [_undefined_upstream("downstream.upstreams", n, upstreams)
                for n in ds.get("upstreams", _analysis_upstream_names(config)) if n not in upstreams]
    problems += [_not_one_of("downstream.tasks", t, tasks, "the downstream tasks") for t in ds.get("tasks", []) if t not in tasks]
    for key in ("steps", "data"):
        problems += [_not_one_of(f"downstream.{key}", t, tasks, "the downstream tasks",
                                 "a key here is a task name; a misspelt one would be ignored")
                     for t in ds.get(key) or {} if t not in tasks]
    for task, options in (ds.get("data") or {}).items():
        if task in tasks:
            known = _data_options(task)
            problems += [_not_one_of(f"downstream.data.{task}", o, known, f"the data options of {task}")
                         for o in options or {} if o not in known]
    return problems


def _data_options(task: str) -> list[str]:
    """Keyword options a task's data preparation takes (speechdissect.downstream.tasks.prepare_task_data)."""
    import inspect

    from speechdissect.downstream.tasks import TASKS

    t = TASKS[task]
    return sorted(n for n, p in inspect.signature(t.prepare).parameters.items()
                  if p.kind is p.KEYWORD_ONLY and n not in (*t.inputs, "seed"))


def _upstream_family(upstreams: Mapping, name: str) -> str | None:
    """Family of an upstream trained here (a fine-tune: its base's), None for hub / local entries."""
    seen = set()
    while name in upstreams and name not in seen:
        seen.add(name)
        spec = upstreams[name] or {}
        if spec.get("source") == "pretrain":
            return spec.get("family")
        if spec.get("source") != "finetune":
            return None
        name = spec.get("base")
    return None


@check
def _pruning_references(config: Mapping) -> list[str]:
    """Pruned upstreams, tasks, masks and layer tasks of ``pruning:`` name what the config builds."""
    pruning = _section(config, "pruning")
    upstreams = _section(config, "upstreams")
    tasks = _task_names()
    masks = _section(config, "neurons", "masks")
    problems = []
    heads, ffn, edit, layers = (_section(pruning, k) for k in ("heads", "ffn", "edit", "layers"))
    for key, names in (("heads.tasks", heads.get("tasks", [])), ("ffn.tasks", ffn.get("tasks", [])),
                       ("edit.tasks", _edit_task_names(edit)), ("layers.tasks", list(layers.get("tasks") or {}))):
        problems += [_not_one_of(f"pruning.{key}", t, tasks, "the downstream tasks") for t in names if t not in tasks]
    # variants are made from the upstream's checkpoint: only upstreams trained here have one
    makes_variants = any([ffn.get("tasks") and ffn.get("methods") and ffn.get("sparsities"),
                          edit.get("tasks") and edit.get("remove"), layers.get("tasks")])
    trained = [n for n, s in upstreams.items() if (s or {}).get("source") in _TRAINED_HERE]
    for name in _pruning_upstream_names(config):
        if name not in upstreams:
            problems.append(_undefined_upstream("pruning.upstreams", name, upstreams))
        elif makes_variants and name not in trained:
            problems.append(_not_one_of(
                "pruning.upstreams", name, trained, "the upstreams trained here (source: pretrain or finetune)",
                "pruned and edited variants are cut from a checkpoint this workflow trained"))
    # head pruning (only when its grid is non-empty, as rules/attention.smk builds it)
    if heads.get("rankings") and any(float(f) > 0 for f in heads.get("fractions", [])) and heads.get("tasks"):
        key = "pruning.heads.upstreams" if "upstreams" in heads else "pruning.upstreams"
        for name in heads.get("upstreams", _pruning_upstream_names(config)):
            if key == "pruning.upstreams" and (name not in upstreams or (makes_variants and name not in trained)):
                continue  # reported above
            if name not in upstreams:
                problems.append(_undefined_upstream(key, name, upstreams))
                continue
            family = _upstream_family(upstreams, name)
            if family != "hubert":
                what = (f"a {family} checkpoint" if family else
                        f"a {upstreams[name].get('source')} upstream (no checkpoint of its own here)")
                problems.append(
                    f"config key {key}: head pruning of {name!r} is not supported: it is {what}, and head-pruned "
                    "variants are made by zeroing the out_proj columns of a hubert_local checkpoint trained by this "
                    "workflow (speechdissect/variants.py; Mockingjay checkpoints are not supported). Use upstreams of "
                    "family hubert there (e.g. mini_hubert, mini_hubert_ft), or set pruning.heads.upstreams to "
                    "choose the head-pruned upstreams apart from the other pruning studies")
    # FFN pruning and editing evaluate the masks the neuron stage writes (neurons.masks)
    methods = masks.get("methods", _DEFAULT_MASK_METHODS)
    problems += [_not_one_of("pruning.ffn.methods", m, methods, "neurons.masks.methods",
                             "the neuron stage writes masks only for those methods")
                 for m in ffn.get("methods", []) if m not in methods]
    sparsities = [_tag(s) for s in masks.get("sparsities", _DEFAULT_MASK_SPARSITIES)]
    problems += [f"config key pruning.ffn.sparsities: {s!r} is not one of neurons.masks.sparsities: "
                 f"{[float(x) for x in sparsities]}; the neuron stage writes masks only for those sparsities: "
                 "add it there or pick one of them"
                 for s in ffn.get("sparsities", []) if _tag(s) not in sparsities]
    remove = masks.get("remove", list(_section(config, "neurons").get("properties", _DEFAULT_NEURON_PROPERTIES)))
    if isinstance(edit.get("tasks"), Mapping):  # entry -> tasks: every entry is one of pruning.edit.remove
        problems += [_not_one_of("pruning.edit.tasks", e, edit.get("remove", []), "pruning.edit.remove")
                     for e in edit["tasks"] if e not in edit.get("remove", [])]
    problems += [_not_one_of("pruning.edit.remove", e, remove, "neurons.masks.remove",
                             "the neuron stage writes removal masks only for those entries")
                 for e in edit.get("remove", []) if e not in remove]
    # layer pruning: every task list names a task of pruning.layers.tasks
    layer_tasks = list(layers.get("tasks") or {})
    for key in ("depth_tasks", "finetune_tasks", "finetune_steps"):
        problems += [_not_one_of(f"pruning.layers.{key}", t, layer_tasks, "the tasks of pruning.layers.tasks",
                                 "a layer task needs the property whose most convex layer sets its cut")
                     for t in layers.get(key) or [] if t not in layer_tasks]
    return problems


@check
def _neuron_references(config: Mapping) -> list[str]:
    """Mask entries name a property of ``neurons.properties``; the MDS figure's set is computed."""
    neurons = _section(config, "neurons")
    props = list(neurons.get("properties", _DEFAULT_NEURON_PROPERTIES))
    masks = _section(neurons, "masks")
    problems = []
    for key in ("remove", "protect"):
        problems += [f"config key neurons.masks.{key}: {e!r} names no property of neurons.properties {props}; "
                     "use a property or property:group"
                     for e in masks.get(key, props) if str(e).split(":")[0] not in props]
    sets = list(_section(neurons, "geometry").get("neuron_sets", _DEFAULT_NEURON_SETS))
    mds = _section(neurons, "figures").get("mds_neuron_set", "all")
    if mds not in sets:
        problems.append(_not_one_of("neurons.figures.mds_neuron_set", mds, sets, "neurons.geometry.neuron_sets",
                                    "the MDS figures draw a set the geometry step computed"))
    return problems


# --------------------------------------------------------------------------- #
# The host, not the config (issue 19.17): run by the Snakefile where jobs run.
# --------------------------------------------------------------------------- #
def check_device(config: Mapping, cuda_available: bool | None = None) -> None:
    """Refuse ``device: cuda`` on a host where torch sees no CUDA device, before any job runs.

    Parameters
    ----------
    config : the workflow config.
    cuda_available : whether CUDA is usable here (default: ``torch.cuda.is_available()``,
        asked only when the config wants CUDA).
    """
    if config.get("device", "cpu") != "cuda":
        return
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        raise ConfigError(
            "config key device: 'cuda' but CUDA is not available on this host (torch.cuda.is_available() is False); "
            "set device: cpu, or run where a GPU is visible (on SLURM: profiles/slurm with SPEECHDISSECT_SLURM_GPUS)")


def _edit_task_names(edit: Mapping) -> list[str]:
    """Tasks of pruning.edit.tasks: a list, or the values of an entry -> tasks mapping."""
    tasks = edit.get("tasks", [])
    return [t for ts in tasks.values() for t in ts] if isinstance(tasks, Mapping) else list(tasks)


# --------------------------------------------------------------------------- LibriSpeech corpora (issue 17)

def _librispeech_corpora(config: Mapping) -> list[tuple[str, Mapping]]:
    return [(name, spec) for name, spec in config.get("corpora", {}).items()
            if isinstance(spec, Mapping) and spec.get("source") == "librispeech"]


@check
def _librispeech_split_map_in_subsets(config: Mapping) -> list[str]:
    """``split_map`` values must be downloaded subsets; the analysis corpus must map every split."""
    problems = []
    for name, spec in _librispeech_corpora(config):
        split_map = spec.get("split_map", {})
        subsets = spec.get("subsets")
        if subsets is not None:
            for split, subset in split_map.items():
                if subset not in subsets:
                    problems.append(
                        f"config key corpora.{name}.split_map.{split}: {subset!r} is not one of "
                        f"corpora.{name}.subsets: {list(subsets)}; fix the subset name or add it to subsets")
        if name == config.get("analysis_corpus"):
            unmapped = [s for s in config.get("splits", []) if s not in split_map]
            if unmapped:
                problems.append(
                    f"config key corpora.{name}.split_map: no entry for splits {unmapped} (config key splits: "
                    f"{list(config.get('splits', []))}); map each split to a LibriSpeech subset")
    return problems


@check
def _librispeech_checksums_and_path(config: Mapping) -> list[str]:
    """``checksums`` name downloaded subsets; ``path:`` (used in place) takes no download keys."""
    problems = []
    for name, spec in _librispeech_corpora(config):
        subsets = spec.get("subsets")
        if "path" in spec:
            extra = [k for k in ("mirror", "checksums") if k in spec]
            if extra:
                problems.append(
                    f"config key corpora.{name}.path: an existing copy is used in place and nothing is "
                    f"downloaded, so {', '.join(f'corpora.{name}.{k}' for k in extra)} would do nothing; "
                    "remove them (or remove path: to download)")
            continue
        for subset in spec.get("checksums", {}):
            if subsets is not None and subset not in subsets:
                problems.append(
                    f"config key corpora.{name}.checksums: {subset!r} is not one of corpora.{name}.subsets: "
                    f"{list(subsets)}")
    return problems
