"""Structured logs: one JSON object per line, with the request id that follows a request from the
aggregator to every node (header ``X-Request-ID``; a new id when the client sends none)."""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid

REQUEST_ID = "x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id(headers) -> str:
    """The caller's id when it is a plain token of at most 64 characters, else a fresh one."""
    given = headers.get(REQUEST_ID) if headers is not None else None
    return given if given and _SAFE_ID.match(given) else uuid.uuid4().hex


def logger(name: str) -> logging.Logger:
    log = logging.getLogger(f"coformer.serving.{name}")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def event(log: logging.Logger, name: str, request_id: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, json.dumps({"event": name, "service": log.name.rsplit(".", 1)[-1], "request_id": request_id} | fields, default=str))
