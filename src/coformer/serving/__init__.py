"""Serving the decomposition: edge nodes and an aggregator over HTTP (BentoML services in bento/).

* ``wire``: safetensors messages between aggregator and nodes (dtype + shape, never pickle);
* ``node``: one sub-model driven round by round (``coformer.executor.DeviceRun``), KV caches per session;
* ``aggregate``: fan-out, merge and head (``coformer.modeling.Aggregator``), failure modes;
* ``sessions`` / ``frontend``: generation and the public API; ``config``: settings;
* ``packaging``: artifacts into the BentoML store and ``bentoml build``; ``local``: a localhost deployment.
"""
