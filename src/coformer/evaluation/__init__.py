"""Quality metrics shared by calibration and evaluation (output fidelity, retrieval recall), and the
evaluation of every method as real device processes (``run_evaluation``, configured by ``EvaluateConfig``)."""

from coformer.evaluation.config import EvaluateConfig
from coformer.evaluation.fidelity import output_fidelity
from coformer.evaluation.retrieval import encode, encode_pairs, recall_at_k, retrieval_recall

__all__ = ["EvaluateConfig", "encode", "encode_pairs", "output_fidelity", "recall_at_k", "retrieval_recall", "run_evaluation"]


def __getattr__(name: str):
    """``run_evaluation`` imports the runtime and matplotlib: loaded on first use, not with the metrics."""
    if name == "run_evaluation":
        from coformer.evaluation.run import run_evaluation

        return run_evaluation
    raise AttributeError(f"module 'coformer.evaluation' has no attribute {name!r}")
