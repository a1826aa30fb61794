"""ernie-kg: knowledge-enhanced language models in the style of ERNIE (Zhang et al., 2019)."""

from ernie_kg.errors import (
    DataFormatError,
    EmptyGraphError,
    ErnieKGError,
    KGFormatError,
    SavedFileError,
    SettingError,
    SpanError,
    UnknownIdError,
)
from ernie_kg.kg import (
    Entity,
    EntityEmbeddings,
    EntityIndex,
    EntityVocab,
    KnowledgeGraph,
    Relation,
    train_entity_embeddings,
)

__version__ = "0.1.0"

# Linking and processing pull in spaCy and transformers (seconds): exported lazily (PEP 562).
_LAZY_EXPORTS = {
    "EntityLinker": "ernie_kg.linking",
    "LinkedMention": "ernie_kg.linking",
    "ErnieKGProcessor": "ernie_kg.processing",
}


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'ernie_kg' has no attribute {name!r}")


__all__ = [
    "DataFormatError",
    "EmptyGraphError",
    "Entity",
    "EntityEmbeddings",
    "EntityIndex",
    "EntityLinker",
    "EntityVocab",
    "ErnieKGProcessor",
    "ErnieKGError",
    "KGFormatError",
    "KnowledgeGraph",
    "LinkedMention",
    "Relation",
    "SavedFileError",
    "SettingError",
    "SpanError",
    "UnknownIdError",
    "train_entity_embeddings",
]
