"""The knowledge-graph layer: graph, PyKEEN entity embeddings, faiss index."""

from ernie_kg.kg.embeddings import (
    DEFAULT_EMBEDDING_SETTINGS,
    EntityEmbeddings,
    train_entity_embeddings,
)
from ernie_kg.kg.graph import Entity, KnowledgeGraph, Relation, read_triples
from ernie_kg.kg.index import EntityIndex

__all__ = [
    "DEFAULT_EMBEDDING_SETTINGS",
    "Entity",
    "EntityEmbeddings",
    "EntityIndex",
    "KnowledgeGraph",
    "Relation",
    "read_triples",
    "train_entity_embeddings",
]
