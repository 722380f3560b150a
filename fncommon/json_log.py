"""One JSON line per event handled, on stdout, where Knative's log collection expects it."""

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
    """Every logger under `package`, and under this shared package (whose modules log for the
    function that runs them: the metrics server, for one), writes JSON lines to stdout, and only
    there."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    for name in dict.fromkeys((package, __name__.rpartition(".")[0])):
        root = logging.getLogger(name)
        root.handlers[:] = [handler]
        root.setLevel(level)
        root.propagate = False


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, /, **fields: object) -> None:
    """One line: `msg` and the structured `fields` (positional-only parameters, so no field name
    can be taken for the level)."""
    logger.log(level, msg, extra={"fields": fields})
