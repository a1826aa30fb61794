"""Training: metrics, fine-tuning (Hugging Face ``Trainer``), evaluation, one-call inference.

Heavy names (``Trainer`` and the models) are imported on first use, so
``from ernie_kg.training import relation_metrics`` stays light.
"""

from importlib import import_module
from typing import Any

from ernie_kg.training.metrics import per_label_f1, relation_metrics, typing_metrics

_LAZY = {
    "DEFAULT_FINETUNE_SETTINGS": "ernie_kg.training.finetune",
    "ErnieKGTrainer": "ernie_kg.training.finetune",
    "FinetuneResult": "ernie_kg.training.finetune",
    "finetune": "ernie_kg.training.finetune",
    "relation_compute_metrics": "ernie_kg.training.finetune",
    "typing_compute_metrics": "ernie_kg.training.finetune",
    "training_arguments": "ernie_kg.training.finetune",
    "evaluate_relations": "ernie_kg.training.evaluation",
    "predict_logits": "ernie_kg.training.evaluation",
    "RelationClassifier": "ernie_kg.training.classifier",
    "predict": "ernie_kg.training.classifier",
    "EntityTyper": "ernie_kg.training.entity_typing",
    "build_entity_typer": "ernie_kg.training.entity_typing",
    "train_entity_typer": "ernie_kg.training.entity_typing",
    "build_relation_classifier": "ernie_kg.training.relation",
    "train_relation_classifier": "ernie_kg.training.relation",
    "fewrel_knowledge": "ernie_kg.training.knowledge",
    "relation_knowledge": "ernie_kg.training.knowledge",
}

__all__ = ["per_label_f1", "relation_metrics", "typing_metrics", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ernie_kg.training' has no attribute {name!r}")
