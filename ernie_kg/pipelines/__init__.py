"""Saved raw-text models (the inference home, as Hugging Face pipelines): build / fit /
evaluate / predict / save / load for relation classification, entity typing and text
(pair) classification, and frozen-encoder features (:func:`extract_features`).

Heavy names (the models, ``Trainer``) are imported on first use.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "SavedTextModel": "ernie_kg.pipelines.base",
    "find_span": "ernie_kg.pipelines.base",
    "extract_features": "ernie_kg.pipelines.features",
    "RelationClassifier": "ernie_kg.pipelines.relation",
    "build_relation_classifier": "ernie_kg.pipelines.relation",
    "train_relation_classifier": "ernie_kg.pipelines.relation",
    "predict": "ernie_kg.pipelines.relation",
    "EntityTyper": "ernie_kg.pipelines.entity_typing",
    "build_entity_typer": "ernie_kg.pipelines.entity_typing",
    "train_entity_typer": "ernie_kg.pipelines.entity_typing",
    "PairClassifier": "ernie_kg.pipelines.pair",
    "build_pair_classifier": "ernie_kg.pipelines.pair",
    "train_pair_classifier": "ernie_kg.pipelines.pair",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ernie_kg.pipelines' has no attribute {name!r}")
