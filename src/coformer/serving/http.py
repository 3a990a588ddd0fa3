"""Our errors as HTTP answers inside a BentoML API, and one log line per request."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from http import HTTPStatus

from coformer.errors import CoFormerError
from coformer.serving.errors import ServingError
from coformer.serving.logs import event


@contextmanager
def http_errors(log: logging.Logger, api: str, request_id: str, **fields):
    """Log the outcome; turn a ``ServingError`` into its status (any other of ours into a 400)."""
    import bentoml

    started = time.perf_counter()
    try:
        yield
    except CoFormerError as e:
        status = e.status if isinstance(e, ServingError) else 400
        event(log, api, request_id, logging.WARNING, status=status, error=str(e), ms=_ms(started), **fields)
        raise bentoml.exceptions.BentoMLException(str(e), error_code=HTTPStatus(status)) from None
    event(log, api, request_id, status=200, ms=_ms(started), **fields)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1e3, 2)
