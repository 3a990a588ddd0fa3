"""Bearer tokens, compared in constant time."""

from __future__ import annotations

import hmac

from coformer.serving.errors import Unauthorized


def check_token(authorization: str | None, expected: str, who: str) -> None:
    """Raise ``Unauthorized`` unless ``authorization`` is ``Bearer <expected>``."""
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized(f"{who} requires the header 'Authorization: Bearer <token>' with its token; the one given is {'missing' if not given else 'wrong'}")
