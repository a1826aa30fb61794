"""Training engines: fine-tuning (Hugging Face ``Trainer``), pre-training, evaluation,
metrics. The task recipes and saved raw-text models are :mod:`ernie_kg.pipelines`.

Heavy names (``Trainer`` and the models) are imported on first use, so
``from ernie_kg.training import relation_metrics`` stays light. The modules are named
after what they hold (``finetuning``), never after a function they export, so
``from ernie_kg.training import finetune`` always gives the function.
"""

from importlib import import_module
from typing import Any

from ernie_kg.training.metrics import per_label_f1, relation_metrics, typing_metrics

_LAZY = {
    "DEFAULT_FINETUNE_SETTINGS": "ernie_kg.training.finetuning",
    "ErnieKGTrainer": "ernie_kg.training.finetuning",
    "FinetuneResult": "ernie_kg.training.finetuning",
    "finetune": "ernie_kg.training.finetuning",
    "finetune_choosing_gate_rate": "ernie_kg.training.gate_rate",
    "relation_compute_metrics": "ernie_kg.training.finetuning",
    "typing_compute_metrics": "ernie_kg.training.finetuning",
    "training_arguments": "ernie_kg.training.finetuning",
    "evaluate_relations": "ernie_kg.training.evaluation",
    "predict_logits": "ernie_kg.training.evaluation",
}

__all__ = ["per_label_f1", "relation_metrics", "typing_metrics", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ernie_kg.training' has no attribute {name!r}")
