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
