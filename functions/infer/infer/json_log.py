"""One JSON line per event handled, on stdout, where Knative's log collection expects it.

This file is the same in every CloudEvents function (each is built from its own directory);
tests/test_function_packaging.py fails if the copies drift."""

from __future__ import annotations

import json
import logging
import sys
import time


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(time.time(), 3), "level": record.levelname.lower(), "msg": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, default=str)


def configure(package: str, level: str = "INFO") -> None:
    """Every logger under `package` writes JSON lines to stdout, and only there."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger(package)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields) -> None:
    logger.log(level, msg, extra={"fields": fields})
