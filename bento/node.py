"""BentoML edge-node service: one sub-model of the decomposition, driven round by round.

Everything it needs comes from its settings (``COFORMER_NODE_NAME``, ``COFORMER_ARTIFACTS``,
``COFORMER_NODE_TOKEN``, optional ``COFORMER_DEPLOYMENT`` / ``COFORMER_CORE``), so one template
serves every device. Bodies are raw safetensors bytes (a positional-only ``bytes`` parameter): a
keyword one would expect JSON. Torch runs in a worker thread so health checks stay responsive.
``/healthz``, ``/readyz`` and ``/metrics`` are BentoML's own.
"""

import asyncio

import bentoml

with bentoml.importing():
    from coformer.serving.build import build_node
    from coformer.serving.config import NodeSettings
    from coformer.serving.http import answer
    from coformer.serving.logs import logger, request_id
    from coformer.serving.security import check_token


@bentoml.service(name="coformer-node", workers=1, traffic={"timeout": 600, "concurrency": 64})
class EdgeNode:
    def __init__(self) -> None:
        self.settings = NodeSettings.from_env()
        self.runtime = build_node(self.settings)
        self.log = logger("node")

    def _authorized(self, ctx: bentoml.Context) -> None:
        check_token(ctx.request.headers.get("authorization"), self.settings.node_token, f"node {self.settings.node_name}")

    @bentoml.api(route="/step")
    async def step(self, body: bytes, /, ctx: bentoml.Context) -> bytes:
        """One round of a forward pass (see ``coformer.serving.node``)."""

        async def call():
            self._authorized(ctx)
            return await asyncio.to_thread(self.runtime.handle, body)

        return await answer(ctx, self.log, "step", request_id(ctx.request.headers), call, node=self.settings.node_name, bytes=len(body))

    @bentoml.api(route="/profile")
    async def profile(self, ctx: bentoml.Context, batch: int = 1, seq_len: int = 128, repeats: int = 3) -> dict:
        """This board measured as a device profile at the original model's shapes (takes seconds)."""
        from coformer.serving.profiling import profile_here

        async def call():
            self._authorized(ctx)
            config, shape = self.runtime.model.config, self.runtime.shape
            return await asyncio.to_thread(profile_here, config, shape, batch, seq_len, repeats, self.settings.core)

        return await answer(ctx, self.log, "profile", request_id(ctx.request.headers), call, node=self.settings.node_name)
