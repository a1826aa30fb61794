"""Entity embeddings cached by the content hash of (triples, settings).

Why: every fine-tuning run of an experiment grid (models x seeds) needs the same TransE
table for the same KG; training it once per KG and reusing it saves minutes per run,
and a hash (not a name) guarantees a changed KG never reuses stale vectors.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from ernie_kg.kg.embeddings import DEFAULT_EMBEDDING_SETTINGS, EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph

#: Settings added after tables were first cached, with their defaults: at the default
#: they stay out of the key, so adding a setting does not orphan every cached table.
_LATER_SETTINGS = {"sparse": False}


def kg_content_hash(kg: KnowledgeGraph, settings: dict[str, Any] | None = None) -> str:
    """SHA-256 over the sorted training triples, the entity ids and ``settings``."""
    settings = {k: v for k, v in (settings or {}).items()
                if not (k in _LATER_SETTINGS and v == _LATER_SETTINGS[k])}
    digest = hashlib.sha256()
    for head, relation, tail in sorted(kg.train):
        digest.update(f"{head}\t{relation}\t{tail}\n".encode())
    digest.update("\n".join(sorted(kg.entities)).encode("utf-8"))
    digest.update(json.dumps(settings or {}, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()


def cached_entity_embeddings(
    kg: KnowledgeGraph,
    cache_dir: str | Path,
    evaluate: bool = False,
    progress: bool = True,
    **settings: Any,
) -> EntityEmbeddings:
    """Load ``cache_dir/<hash>/`` when it exists, else train with PyKEEN and save there.

    ``settings`` are :func:`~ernie_kg.kg.train_entity_embeddings` keywords (``dim``,
    ``epochs``, ``learning_rate``, ...); they are part of the hash.
    """
    from ernie_kg.kg.embeddings import train_entity_embeddings

    full = {**DEFAULT_EMBEDDING_SETTINGS, **settings}
    key = kg_content_hash(kg, full)[:16]
    target = Path(cache_dir) / f"{full['model'].lower()}-{key}"
    if (target / "embeddings.json").exists():  # mapped: models refer to it, not copy it
        return EntityEmbeddings.load(target)
    embeddings = train_entity_embeddings(kg, evaluate=evaluate, progress=progress, **settings)
    temporary = target.with_name(target.name + ".tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    embeddings.save(temporary)
    if target.exists():  # another process finished first: keep its table
        shutil.rmtree(temporary)
    else:
        temporary.rename(target)
    return EntityEmbeddings.load(target, verify=False)  # written just now
