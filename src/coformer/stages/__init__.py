"""The pipeline's stages, each one function over validated ``Params``.

``prepare -> profile -> search -> calibrate -> evaluate -> package``: the DVC scripts in
``pipelines/`` and the ``coformer`` CLI both call these functions, so the same parameters give
the same outputs either way. Every stage writes only into its own output folder, logs one MLflow
run (nested under the pipeline's parent run when DVC runs it, see ``coformer.tracking``) and
returns its metrics.
"""
