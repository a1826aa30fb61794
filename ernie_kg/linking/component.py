"""The linker as a spaCy pipeline component: ``nlp.add_pipe("ernie_kg_linker", config=...)``.

Follows spaCy's entity-linking convention: linked mentions become ``doc.ents`` with
``span.kb_id_`` set to the KG id, and ``doc._.linked_mentions`` keeps every
:class:`~ernie_kg.linking.LinkedMention` (NIL ones and candidate scores included).
Registered with ``@Language.factory`` when :mod:`ernie_kg.linking` is imported and
through the ``spacy_factories`` entry point, so ``spacy.load`` finds it without an import.

Config::

    {"kg_dir": "kg_data/demo",      # KG (names, aliases.json, coherence); or
     "linker_dir": None,            # a saved linker (aliases + settings), with kg_dir
     "embeddings_dir": None,        # TransE vectors for coherence (optional)
     "label": "ENTITY",             # label of new entities ("" -> the entity's first KG type)
     "keep_ents": True,             # keep existing entities that no mention overlaps
     "settings": {...}}             # linker settings (see DEFAULT_LINKER_CONFIG)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import filter_spans

from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.linking.linker import EntityLinker
from ernie_kg.linking.mentions import LinkedMention, LinkerConfigError

__all__ = ["COMPONENT_NAME", "EntityLinkerComponent", "make_entity_linker"]

COMPONENT_NAME = "ernie_kg_linker"
#: The Doc extension holding the full list of linked mentions.
DOC_EXTENSION = "linked_mentions"

_STORE_KEY = ("ernie_kg", DOC_EXTENSION)  # where the mentions live in doc.user_data
_OLD_KEY = ("._.", DOC_EXTENSION, None, None)  # where earlier versions kept them


def _stored_mentions(doc: Doc) -> list[LinkedMention] | None:
    """The doc's mentions as LinkedMentions, also after a trip through ``to_bytes`` or
    ``nlp.pipe(n_process=...)``: spaCy serialises user data with msgpack, which turns
    the named tuples into lists. The stored list itself is returned (edits stick)."""
    stored = doc.user_data.get(_STORE_KEY)
    if stored is None:
        stored = doc.user_data.get(_OLD_KEY)
        if stored is None:
            return None
    if not all(isinstance(m, LinkedMention) for m in stored):
        stored = [m if isinstance(m, LinkedMention) else
                  LinkedMention(*m[:5], tuple(tuple(c) for c in m[5]), *m[6:])
                  for m in stored]
    doc.user_data[_STORE_KEY] = stored
    return stored


def _store_mentions(doc: Doc, mentions: list[LinkedMention] | None) -> None:
    doc.user_data[_STORE_KEY] = mentions


Doc.set_extension(DOC_EXTENSION, getter=_stored_mentions, setter=_store_mentions, force=True)


class EntityLinkerComponent:
    """Runs an :class:`EntityLinker` over ``doc.text`` and writes the results on the doc."""

    def __init__(
        self, linker: EntityLinker, label: str = "ENTITY", keep_ents: bool = True
    ) -> None:
        self.linker = linker
        self.label = label
        self.keep_ents = keep_ents

    def _label(self, entity_id: str) -> str:
        if self.label:
            return self.label
        kg = self.linker.kg
        if kg is not None and entity_id in kg and kg.entity(entity_id).types:
            return kg.entity(entity_id).types[0]
        return "ENTITY"

    def __call__(self, doc: Doc) -> Doc:
        """Link the doc's text and add the mentions to the doc."""
        return self._annotate(doc, self.linker(doc.text))

    def pipe(self, docs: Any, batch_size: int = 256) -> Any:
        """Link docs in batches (the linker tokenizes them with ``nlp.pipe``)."""
        batch: list[Doc] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= batch_size:
                yield from self._annotate_all(batch, batch_size)
                batch = []
        if batch:
            yield from self._annotate_all(batch, batch_size)

    def _annotate_all(self, docs: list[Doc], batch_size: int) -> Any:
        linked = self.linker.pipe((d.text for d in docs), batch_size=batch_size)
        for doc, mentions in zip(docs, linked):
            yield self._annotate(doc, mentions)

    def _annotate(self, doc: Doc, mentions: list[LinkedMention]) -> Doc:
        doc._.set(DOC_EXTENSION, mentions)
        existing = {(e.start_char, e.end_char): e.label_ for e in doc.ents}
        spans = []
        for mention in mentions:
            if mention.entity_id is None:
                continue
            label = existing.get((mention.start, mention.end)) or self._label(mention.entity_id)
            span = doc.char_span(mention.start, mention.end, label=label,
                                 kb_id=mention.entity_id, alignment_mode="expand")
            if span is not None:
                spans.append(span)
        spans = filter_spans(spans)
        if self.keep_ents:
            covered = bytearray(len(doc))
            for span in spans:
                covered[span.start:span.end] = b"\x01" * len(span)
            spans += [e for e in doc.ents if 1 not in covered[e.start:e.end]]
        doc.ents = sorted(spans, key=lambda s: s.start)
        return doc


def build_linker(
    kg_dir: str | None,
    linker_dir: str | None = None,
    embeddings_dir: str | None = None,
    settings: dict[str, Any] | None = None,
) -> EntityLinker:
    """The linker a component config describes."""
    settings = dict(settings or {})
    if kg_dir is None and linker_dir is None:
        raise LinkerConfigError(
            f"{COMPONENT_NAME}: set config 'kg_dir' (a KG directory) or 'linker_dir' "
            "(a saved linker)"
        )
    embeddings = EntityEmbeddings.load(embeddings_dir) if embeddings_dir else None
    if kg_dir is None:
        return EntityLinker.load(Path(linker_dir), None, embeddings, **settings)
    return EntityLinker.from_kg_dir(kg_dir, embeddings, linker_dir, **settings)


@Language.factory(
    COMPONENT_NAME,
    default_config={
        "kg_dir": None,
        "linker_dir": None,
        "embeddings_dir": None,
        "label": "ENTITY",
        "keep_ents": True,
        "settings": {},
    },
    assigns=["doc.ents", "token.ent_type", "token.ent_iob", "token.ent_kb_id",
             f"doc._.{DOC_EXTENSION}"],
)
def make_entity_linker(
    nlp: Language,
    name: str,
    kg_dir: str | None,
    linker_dir: str | None,
    embeddings_dir: str | None,
    label: str,
    keep_ents: bool,
    settings: dict[str, Any],
) -> EntityLinkerComponent:
    """spaCy factory of :class:`EntityLinkerComponent` (``lang`` follows the pipeline)."""
    settings = {"lang": nlp.lang, **(settings or {})}
    return EntityLinkerComponent(
        build_linker(kg_dir, linker_dir, embeddings_dir, settings), label, keep_ents
    )
