"""Training: metrics, fine-tuning and pre-training loops, checkpoints."""

from ernie_kg.training.metrics import per_label_f1, relation_metrics, typing_metrics

__all__ = ["per_label_f1", "relation_metrics", "typing_metrics"]
