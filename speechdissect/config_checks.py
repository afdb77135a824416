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
