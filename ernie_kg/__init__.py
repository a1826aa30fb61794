"""ernie-kg: knowledge-enhanced language models in the style of ERNIE (Zhang et al., 2019)."""

from ernie_kg.errors import (
    EmptyGraphError,
    ErnieKGError,
    KGFormatError,
    SpanError,
    UnknownIdError,
)
from ernie_kg.kg import (
    Entity,
    EntityEmbeddings,
    EntityIndex,
    KnowledgeGraph,
    Relation,
    train_entity_embeddings,
)

__version__ = "0.1.0"

__all__ = [
    "EmptyGraphError",
    "Entity",
    "EntityEmbeddings",
    "EntityIndex",
    "ErnieKGError",
    "KGFormatError",
    "KnowledgeGraph",
    "Relation",
    "SpanError",
    "UnknownIdError",
    "train_entity_embeddings",
]
