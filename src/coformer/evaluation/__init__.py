"""Quality metrics shared by calibration and evaluation: output fidelity and retrieval recall."""

from coformer.evaluation.fidelity import output_fidelity
from coformer.evaluation.retrieval import encode, encode_pairs, recall_at_k, retrieval_recall

__all__ = ["encode", "encode_pairs", "output_fidelity", "recall_at_k", "retrieval_recall"]
