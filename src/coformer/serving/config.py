"""Serving settings: plain pydantic models with a comment per field, read from a YAML deployment
file and from ``COFORMER_*`` environment variables (the per-process parts: node name, tokens).

``Deployment`` is what an operator writes for a site: node URLs, shared token, timeouts, failure
mode, wire dtype, limits. ``PackageConfig`` is the ``package:`` section of params.yaml.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coformer.errors import CoFormerError
from coformer.serving.wire import WireDtype

FailureMode = Literal["fail_fast", "degraded"]
ENV_PREFIX = "COFORMER_"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides):
        """Fields from ``COFORMER_<FIELD>`` variables (unset ones keep their defaults)."""
        environ = os.environ if environ is None else environ
        values = {f: environ[ENV_PREFIX + f.upper()] for f in cls.model_fields if ENV_PREFIX + f.upper() in environ}
        try:
            return cls.model_validate(values | overrides)
        except ValidationError as e:
            raise CoFormerError(f"serving settings from {ENV_PREFIX}* variables are invalid: {e}") from None


class Limits(Settings):
    max_batch: int = Field(32, ge=1)  # sequences or images per request
    max_seq_len: int = Field(512, ge=1)  # tokens per sequence, prompt + generated (the model's positions cap it too)
    max_image_side: int = Field(4096, ge=1)  # pixels of an uploaded image's longer side, before the processor resizes it
    max_new_tokens: int = Field(256, ge=1)  # tokens one generate call may produce
    max_body_bytes: int = Field(64 * 2**20, ge=1024)  # request body, at the aggregator and at every node
    max_sessions: int = Field(64, ge=1)  # generation sessions (KV caches) held at once


class Deployment(Settings):
    nodes: dict[str, str] = {}  # device name (as in policy.json) -> node base URL
    token: str = ""  # shared secret the nodes require (COFORMER_NODE_TOKEN overrides it)
    timeout_s: float = Field(10.0, gt=0)  # per node call, retries included: a fail_fast 503 comes no later
    retries: int = Field(2, ge=0)  # extra attempts after a refused connection or a node answering 503
    backoff_s: float = Field(0.05, ge=0)  # wait before the first retry, doubling each time
    down_s: float = Field(1.0, ge=0)  # a failed node is skipped this long, then tried again
    max_inflight: int = Field(4, ge=1)  # forward passes on the nodes at once; more wait at the aggregator, outside timeout_s
    failure_mode: FailureMode = "fail_fast"  # fail_fast: 503 naming the node; degraded: merge the streams that came
    wire_dtype: WireDtype = "float32"  # tensors between aggregator and nodes: float32 exact, float16/bfloat16 half the bytes
    session_idle_s: float = Field(300.0, gt=0)  # a generation session unused this long is freed everywhere
    limits: Limits = Limits()  # request limits, checked at the aggregator and at the nodes

    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        try:
            return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})
        except FileNotFoundError:
            raise CoFormerError(f"no deployment file at {path}; write one (see README, Serving) or unset COFORMER_DEPLOYMENT") from None
        except (yaml.YAMLError, ValidationError) as e:
            raise CoFormerError(f"deployment file {path} is invalid: {e}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.model_dump(), sort_keys=False))
        return path


class NodeSettings(Settings):
    node_name: str  # this node's device name in policy.json
    artifacts: str  # calibrated folder, or a BentoML model tag holding one
    node_token: str  # shared secret every request must carry (Authorization: Bearer ...)
    deployment: str | None = None  # deployment file for limits and idle timeout (None: defaults)
    core: int | None = None  # pin the node to this CPU core (None: no pinning)
    threads: int = Field(1, ge=1)  # torch threads of the node


class AggregatorSettings(Settings):
    artifacts: str  # calibrated folder, or a BentoML model tag holding one
    deployment: str | None = None  # deployment file (None: the one packaged with the artifacts, else defaults)
    node_token: str | None = None  # overrides the deployment file's token
    api_token: str | None = None  # if set, the public API requires it (Authorization: Bearer ...)
    processor: str | None = None  # tokenizer / image processor: folder or model name (None: the packaged one)
    threads: int = Field(1, ge=1)  # torch threads for merges and the head


class PackageConfig(Settings):
    model_name: str = "coformer-student"  # BentoML model-store name of the calibrated artifacts
    node_service: str = "coformer-node"  # bento name of the edge-node service
    aggregator_service: str = "coformer-aggregator"  # bento name of the aggregator service
    processor: str | None = None  # tokenizer / image processor shipped with the model (None: base.model)
    bentoml_home: str | None = None  # BentoML store folder (None: $BENTOML_HOME, else ~/bentoml)
    deployment: Deployment = Deployment()  # defaults baked into the bentos; node URLs come with the site's file
