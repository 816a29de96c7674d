"""Evaluation with the standard retrieval protocols (R@1/5/10, median and mean rank, both directions)."""
from .metrics import (
    evaluate_pair,
    format_table,
    metrics_from_ranks,
    ranks_of_positives,
    retrieval_metrics,
    retrieval_metrics_multi,
    similarity_blocks,
)

__all__ = [
    "similarity_blocks",
    "ranks_of_positives",
    "metrics_from_ranks",
    "retrieval_metrics",
    "retrieval_metrics_multi",
    "evaluate_pair",
    "format_table",
]
