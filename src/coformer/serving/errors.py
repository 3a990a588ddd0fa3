"""Serving errors: each carries the HTTP status it becomes, and a message naming the bad value or
the limit and how to fix it. The BentoML services turn them into that status; nothing else does."""

from __future__ import annotations

from coformer.errors import CoFormerError


class ServingError(CoFormerError):
    status = 500


class RequestError(ServingError):
    """The request breaks a limit or is malformed (the client must change it)."""

    status = 400

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Unauthorized(ServingError):
    status = 401


class CacheMiss(ServingError):
    """A node's KV cache for a session does not hold the tokens the aggregator expects (the node
    restarted, or missed a step): the aggregator rebuilds it from the session's tokens."""

    status = 409


class RunLost(ServingError):
    """A node no longer knows a multi-round forward pass (it restarted between two rounds)."""

    status = 410


class NodeUnavailable(ServingError):
    """Nodes that did not answer within the timeout and retries (fail_fast, or every node down)."""

    status = 503

    def __init__(self, nodes: list[str], reason: str):
        super().__init__(f"node(s) {', '.join(nodes)} unavailable ({reason}); check them or deploy with failure_mode: degraded")
        self.nodes, self.reason = nodes, reason
