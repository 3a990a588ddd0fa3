"""BentoML aggregator service: the public API. It tokenises, fans every round out to the edge
nodes, merges their streams, applies final norm and head, and answers even when nodes fail
(``failure_mode``). Settings: ``COFORMER_ARTIFACTS``, ``COFORMER_DEPLOYMENT`` (node URLs, token,
timeouts, failure mode, wire dtype), optional ``COFORMER_API_TOKEN`` for the public API.
``/metrics`` adds per-node latency and error counts to BentoML's own.
"""


import bentoml

with bentoml.importing():
    from coformer.serving.build import build_frontend
    from coformer.serving.config import AggregatorSettings
    from coformer.serving.frontend import Classes, Embeddings, Generated
    from coformer.serving.http import answer
    from coformer.serving.logs import logger, request_id
    from coformer.serving.security import check_token
    from coformer.serving.sessions import Sampling

NODE_LATENCY = bentoml.metrics.Histogram(
    name="coformer_node_latency_seconds", documentation="one round on one edge node, retries included", labelnames=["node"]
)
NODE_ERRORS = bentoml.metrics.Counter(name="coformer_node_errors", documentation="failed rounds per edge node and kind", labelnames=["node", "kind"])


class Metrics:
    def latency(self, node: str, seconds: float) -> None:
        NODE_LATENCY.labels(node=node).observe(seconds)

    def error(self, node: str, kind: str) -> None:
        NODE_ERRORS.labels(node=node, kind=kind).inc()


@bentoml.service(name="coformer-aggregator", workers=1, traffic={"timeout": 600, "concurrency": 256})
class CoFormerAggregator:
    def __init__(self) -> None:
        self.settings = AggregatorSettings.from_env()
        self.frontend = build_frontend(self.settings, Metrics())
        self.log = logger("aggregator")

    async def _answer(self, ctx: bentoml.Context, api: str, call, **fields):
        """Every public call: the API token when one is set, the request id echoed, idle sessions swept."""
        rid = request_id(ctx.request.headers)

        async def checked():
            if self.settings.api_token:
                check_token(ctx.request.headers.get("authorization"), self.settings.api_token, "the aggregator API")
            self.frontend.check_body(int(ctx.request.headers.get("content-length") or 0))
            return await call(rid)

        ctx.response.headers["x-request-id"] = rid
        self.frontend.start_sweeper()
        return await answer(ctx, self.log, api, rid, checked, **fields)

    @bentoml.api
    async def embed(self, ctx: bentoml.Context, texts: list[str] | None = None, input_ids: list[list[int]] | None = None) -> Embeddings:
        """Sentence embeddings (BERT family): the pooled output per text."""

        async def call(rid: str):
            return await self.frontend.embed(self.frontend.tokens(texts, input_ids), rid)

        return await self._answer(ctx, "embed", call)

    @bentoml.api
    async def classify(
        self, ctx: bentoml.Context, texts: list[str] | None = None, input_ids: list[list[int]] | None = None, images: list[str] | None = None
    ) -> Classes:
        """Sequence or image classification; ``images`` are base64-encoded image files."""
        async def call(rid: str):
            inputs = self.frontend.images(images) if images is not None else self.frontend.tokens(texts, input_ids)
            return await self.frontend.classify(inputs, rid)

        return await self._answer(ctx, "classify", call)

    @bentoml.api
    async def generate(
        self,
        ctx: bentoml.Context,
        texts: list[str] | None = None,
        input_ids: list[list[int]] | None = None,
        max_new_tokens: int = 16,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        session: str | None = None,
        keep: bool = False,
    ) -> Generated:
        """Greedy or sampled continuation of left-padded prompts (GPT-2 family).

        ``keep`` holds the session (KV caches on every node) for a later call with ``session`` and
        no prompt; it is freed by ``close_session``, on error or disconnect, or after idling."""
        async def call(rid: str):
            sampling = Sampling(do_sample, temperature, top_k, top_p)
            return await self.frontend.generate(texts, input_ids, max_new_tokens, sampling, seed, session, keep, rid, ctx.request.is_disconnected)

        return await self._answer(ctx, "generate", call, tokens=max_new_tokens)

    @bentoml.api
    async def close_session(self, ctx: bentoml.Context, session: str) -> dict:
        async def call(rid: str):
            await self.frontend.sessions.close(session, rid)
            return {"request_id": rid, "closed": session}

        return await self._answer(ctx, "close_session", call)

    @bentoml.api(route="/forward")
    async def forward(self, body: bytes, /, ctx: bentoml.Context) -> bytes:
        """Debugging: safetensors inputs in, safetensors ``hidden`` and ``output`` out."""
        return await self._answer(ctx, "forward", lambda rid: self.frontend.forward_raw(body, rid), bytes=len(body))
