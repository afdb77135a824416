"""The per-stage conda environments (envs/*.yaml, for HPC users) stay in step with pyproject.toml."""
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip())[0].lower().replace("_", "-")


def test_env_files_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {name(r): r.replace(" ", "") for r in project}
    seen = set()
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        for req in pip:
            if req.startswith("-e"):
                continue
            assert name(req) in pinned, f"{env_file.name}: {req} is not a dependency in pyproject.toml"
            assert req.replace(" ", "") == pinned[name(req)], f"{env_file.name}: {req} differs from pyproject ({pinned[name(req)]})"
            seen.add(name(req))
    assert seen == set(pinned), f"pyproject dependencies in no env file: {sorted(set(pinned) - seen)}"


def test_every_rule_names_an_existing_env():
    for smk in (REPO / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[\w.]+)"', smk.read_text()):
            assert (REPO / env).is_file(), f"{smk.name} names missing {env}"
