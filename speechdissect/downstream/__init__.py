"""s3prl downstream tasks on frozen upstream features (original, pruned, edited upstreams).

- :mod:`.tasks`: registry ``TASKS`` (task -> s3prl expert, our config, data writer, metric),
  :func:`prepare_task_data` writes the files an expert reads from a LibriSpeech-layout corpus.
- :mod:`.runner`: :func:`run_task` runs s3prl's own downstream runner in a subprocess and writes a
  result JSON.
- :mod:`.aggregate`: seeds -> mean and 95 % CI (:func:`.aggregate.aggregate`), one TSV per task, a figure.
"""

from speechdissect.downstream.aggregate import load_results, mean_ci, plot_scores, summarize, write_task_tables
from speechdissect.downstream.tasks import TASKS, Task, TaskDataError, get_task, load_datarc, prepare_task_data

__all__ = [
    "TASKS",
    "Task",
    "TaskDataError",
    "get_task",
    "prepare_task_data",
    "load_datarc",
    "run_task",
    "load_results",
    "mean_ci",
    "summarize",
    "write_task_tables",
    "plot_scores",
]


def run_task(*args, **kwargs):
    """See :func:`speechdissect.downstream.runner.run_task` (imported lazily)."""
    from speechdissect.downstream.runner import run_task as _run_task

    return _run_task(*args, **kwargs)
