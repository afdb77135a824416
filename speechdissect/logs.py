"""Logging set-up shared by the workflow scripts (one log file per job)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send log records (and uncaught errors) to ``log_path`` and to stderr.

    Snakemake shows a failed job's log file; writing errors there as well as to
    stderr means the message naming the bad file or key is never lost.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        handlers=handlers, force=True)
    logger = logging.getLogger("speechdissect")

    def _excepthook(exc_type, exc, tb):
        logger.error("%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = _excepthook
    return logger
