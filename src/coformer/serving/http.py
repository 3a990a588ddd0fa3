"""Our errors as HTTP answers of a BentoML API, and one structured log line per request.

BentoML hides the message of any 401 or 5xx raised as an exception; a 503 must name the missing
node, so errors are returned as JSON responses (``{"error": message}``) instead of raised, their
status set on the BentoML context (which overrides the status of a returned response).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from coformer.errors import CoFormerError
from coformer.serving.errors import ServingError
from coformer.serving.logs import event

T = TypeVar("T")


async def answer(ctx, log: logging.Logger, api: str, request_id: str, call: Callable[[], Awaitable[T]], **fields) -> T:
    """``await call()``, logged; an error of ours becomes its status (others of ours a 400)."""
    from starlette.responses import JSONResponse

    started = time.perf_counter()
    try:
        result = await call()
    except CoFormerError as e:
        status = e.status if isinstance(e, ServingError) else 400
        event(log, api, request_id, logging.WARNING, status=status, error=str(e), ms=_ms(started), **fields)
        ctx.response.status_code = status
        return JSONResponse({"error": str(e), "request_id": request_id}, status_code=status)
    event(log, api, request_id, status=200, ms=_ms(started), **fields)
    return result


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1e3, 2)
