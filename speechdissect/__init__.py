"""speech-dissect: dissect self-supervised speech transformers (neurons, heads, layers).

The library is pure Python and knows nothing of Snakemake; the workflow's
scripts in ``workflow_scripts/`` are thin glue around it.
"""

__version__ = "0.1.0"
