"""Rule provenance: the config this run used and the versions of the software it ran on."""
import platform
import subprocess
from importlib import metadata

import pandas as pd
import yaml

from speechdissect.labels import write_atomic, write_text_atomic
from speechdissect.logs import setup_logging

setup_logging(snakemake.log[0])
write_text_atomic(snakemake.output.config, yaml.safe_dump(dict(snakemake.config), sort_keys=False))
rows = [{"software": "python", "version": platform.python_version()}, {"software": "platform", "version": platform.platform()}]
for dist in ("speechdissect", "torch", "torchaudio", "s3prl", "snakemake", "snakemake-executor-plugin-slurm", "numpy",
             "scipy", "pandas", "pyarrow", "scikit-learn", "pynndescent", "praat-parselmouth", "soundfile", "seaborn"):
    try:
        rows.append({"software": dist, "version": metadata.version(dist)})
    except metadata.PackageNotFoundError:
        rows.append({"software": dist, "version": "not installed"})
for tool, args in (("festival", ["--version"]), ("sox", ["--version"])):
    try:
        out = subprocess.run([tool, *args], capture_output=True, text=True, timeout=20)
        rows.append({"software": tool, "version": (out.stdout or out.stderr).strip().splitlines()[0]})
    except (OSError, subprocess.SubprocessError, IndexError):
        rows.append({"software": tool, "version": "not found"})
table = pd.DataFrame(rows)
write_atomic(snakemake.output.versions, lambda tmp: table.to_csv(tmp, sep="\t", index=False))
