"""The knowledge-graph layer: graph (over an on-disk store), PyKEEN entity embeddings,
faiss index, and the entity vocabulary (KG ids <-> table rows, 0 = no entity)."""

from ernie_kg.kg.embeddings import (
    DEFAULT_EMBEDDING_SETTINGS,
    EntityEmbeddings,
    train_entity_embeddings,
)
from ernie_kg.kg.graph import Entity, KnowledgeGraph, Relation, read_triples
from ernie_kg.kg.index import EntityIndex
from ernie_kg.kg.store import KGStore, open_store
from ernie_kg.kg.vocab import NO_ENTITY, EntityVocab

__all__ = [
    "DEFAULT_EMBEDDING_SETTINGS",
    "NO_ENTITY",
    "Entity",
    "EntityEmbeddings",
    "EntityIndex",
    "EntityVocab",
    "KGStore",
    "KnowledgeGraph",
    "Relation",
    "open_store",
    "read_triples",
    "train_entity_embeddings",
]
