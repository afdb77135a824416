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
