"""One call from raw text to model inputs, in the style of LUKE's tokenizer.

``processor(text, head=(s, e), tail=(s, e), return_tensors="pt")`` links the text
(unless spans and ids are given), wraps the task's spans in marker tokens, tokenizes,
puts each entity's row on its first wordpiece (:mod:`ernie_kg.processing.alignment`),
truncates around the marked spans so they survive, pads, and returns a
:class:`~transformers.BatchEncoding` with ``input_ids``, ``attention_mask``,
``token_type_ids``, ``entity_ids`` and, for a task, ``marker_positions``, so that
``model(**processor(...))`` works for every ERNIE-KG head. ``processor(text, text_pair)``
builds a sentence pair as BERT does (:mod:`ernie_kg.processing.templates`), with the
entities of both segments.

Markers default to plain vocabulary characters, as ERNIE did ('#' around the head, '$'
around the tail; '@' around a typed mention), so no embedding resize is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from ernie_kg.errors import SavedFileError, SpanError
from ernie_kg.io import read_json, write_json
from ernie_kg.kg.vocab import EntityVocab
from ernie_kg.linking.linker import EntityLinker
from ernie_kg.processing.alignment import EntitySpan, RowLookup, align_offsets, row_lookup
from ernie_kg.processing.arguments import is_single, pair_texts, unbatch
from ernie_kg.processing.entities import entity_links, other_spans, resolve_entities
from ernie_kg.processing.markers import (
    DEFAULT_MARKERS,
    check_marker_tokens,
    check_nesting,
    insert_markers,
    token_at,
    truncation_window,
    unmarked_offsets,
)
from ernie_kg.processing.templates import SegmentTemplate, pair_features
from ernie_kg.spans import Span, check_span, strip_span, token_char_spans

__all__ = ["DEFAULT_MARKERS", "MODEL_TABLE_ROWS", "PROCESSOR_FILE", "TASKS",
           "ErnieKGProcessor"]

TASKS = (None, "relation_classification", "entity_typing")
#: The processor's own settings inside a saved directory.
PROCESSOR_FILE = "ernie_kg_processor.json"
#: Where a processor saved on its own keeps its entity vocabulary.
_ENTITY_IDS_FILE = "processor_entity_ids.json"
#: A saved ErnieKG model's vocabulary (modeling's ENTITY_IDS_FILE), read when no other.
_MODEL_ENTITY_IDS_FILE = "entity_ids.json"
#: ``entity_rows`` of a processor saved with a model whose table is referred to: the
#: rows are that table's (``config.entity_table``), not a file of the directory.
MODEL_TABLE_ROWS = "config.json#entity_table"
_LINKER_DIR = "linker"
_TASK_SPANS = {
    None: (),
    "relation_classification": ("head", "tail"),
    "entity_typing": ("mention",),
}
_PADDING = {True: "longest", "longest": "longest", False: None, "do_not_pad": None,
            "max_length": "max_length"}


@dataclass
class _Example:
    """One text on its way to features: original text, its entities, its markers."""

    text: str
    task_spans: dict[str, Span] = field(default_factory=dict)  # role -> stripped char span
    entities: list[EntitySpan] = field(default_factory=list)  # in claim order


class ErnieKGProcessor:
    """Text (+ spans) -> ERNIE-KG model inputs.

    Args:
        tokenizer: a Hugging Face *fast* tokenizer (char offsets are needed).
        entity_rows: entity id -> row of the model's entity table: an
            :class:`~ernie_kg.kg.vocab.EntityVocab` (e.g. ``model.entity_vocab``),
            :class:`~ernie_kg.kg.EntityEmbeddings` (their vocabulary), the ids of rows
            1, 2, ..., a mapping or a function (None/0 = no row). Unknown ids get no
            entity.
        linker: links raw text (and spans without ids); without it, only the ids you
            pass become entities.
        task: None, ``"relation_classification"`` (``head`` and ``tail`` required,
            ``marker_positions`` ``[B, 2]``) or ``"entity_typing"`` (``mention``,
            ``marker_positions`` ``[B, 1]``).
        max_length: wordpieces per sequence (or sentence pair), special tokens included.
        markers: overrides of :data:`DEFAULT_MARKERS`; each must be one token of the
            tokenizer's vocabulary (add new ones with ``tokenizer.add_tokens`` and resize
            the model's embeddings).
        entity_links: also return ``entity_links`` (1 where the linker's KG has a fact
            between the token's entity and another entity of the sequence), for models
            with ``config.knowledge_links``; needs a linker with a KG and a vocabulary.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        entity_rows: RowLookup,
        linker: EntityLinker | None = None,
        task: str | None = None,
        max_length: int = 128,
        markers: Mapping[str, str] | None = None,
        entity_links: bool = False,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, not {task!r}")
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("ErnieKGProcessor needs a fast tokenizer (char offsets)")
        unknown = set(markers or {}) - set(DEFAULT_MARKERS)
        if unknown:
            raise ValueError(f"unknown marker names {sorted(unknown)}; known: "
                             f"{sorted(DEFAULT_MARKERS)}")
        self.tokenizer = tokenizer
        self.entity_rows = entity_rows
        self.linker = linker
        self.task = task
        self.markers = {**DEFAULT_MARKERS, **(markers or {})}
        self._template = SegmentTemplate.of(tokenizer)
        self._pair_template = SegmentTemplate.of(tokenizer, pair=True)
        if max_length <= self._template.num_special:
            raise ValueError(f"max_length={max_length} leaves no room for text")
        self.max_length = int(max_length)
        self._lookup = row_lookup(entity_rows)
        check_marker_tokens(self.tokenizer, self.markers, self.task_roles)
        self.entity_links = bool(entity_links)
        if self.entity_links and (linker is None or linker.kg is None or self.vocab is None):
            raise ValueError("entity_links=True needs a linker with its KG (the facts) and "
                             "an entity vocabulary (rows -> KG ids)")
        # kept apart from the linker, so gold ids (the linker switched off) get links too
        self._neighbours = linker.disambiguator.neighbours if self.entity_links else None

    @property
    def task_roles(self) -> tuple[str, ...]:
        """The spans the task marks: ``("head", "tail")``, ``("mention",)`` or ``()``."""
        return _TASK_SPANS[self.task]

    # ------------------------------------------------------------------ call
    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        text_pair: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        entity_spans: Any = None,
        entity_ids: Any = None,
        entity_spans_pair: Any = None,
        entity_ids_pair: Any = None,
        head: Any = None,
        tail: Any = None,
        mention: Any = None,
        head_id: Any = None,
        tail_id: Any = None,
        mention_id: Any = None,
        return_tensors: str | None = None,
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = None,
        is_split_into_words: bool = False,
        return_offsets_mapping: bool = False,
    ) -> BatchEncoding:
        """Model inputs for one text or a batch of texts.

        Spans are half-open char offsets ``(start, end)`` into each text (token indices
        when ``is_split_into_words``: texts are then lists of words). For a batch, every
        argument is a list with one entry per text. ``entity_ids`` are KG ids (str),
        rows (int) or None (link that span). ``head_id``/``tail_id``/``mention_id``
        override what the linker would pick. Bad spans raise
        :class:`~ernie_kg.errors.SpanError` naming the span.

        ``text_pair`` (one per text for a batch) makes sentence pairs as BERT reads them,
        ``[CLS] text [SEP] text_pair [SEP]`` with ``token_type_ids`` 0 on the first
        segment and 1 on the second. Each segment is linked on its own;
        ``entity_spans_pair``/``entity_ids_pair`` are the second segment's spans (offsets
        into ``text_pair``) and ids, as ``entity_spans``/``entity_ids`` are the first's.
        A pair longer than ``max_length`` is truncated longest-first (Hugging Face's
        ``truncation="longest_first"``), so both segments keep wordpieces. Pairs take no
        task spans.

        ``return_offsets_mapping`` adds each wordpiece's ``(start, end)`` char span in its
        own text (in ``text_pair`` for segment B, as Hugging Face tokenizers give it;
        ``" ".join(words)`` for split words) and ``(0, 0)`` for special tokens, markers
        and padding.
        """
        single = is_single(text, is_split_into_words)
        args = {"entity_spans": entity_spans, "entity_ids": entity_ids, "head": head,
                "tail": tail, "mention": mention, "head_id": head_id, "tail_id": tail_id,
                "mention_id": mention_id}
        texts = [text] if single else list(text)
        examples = self._examples(texts, args, single, is_split_into_words, "text")
        limit = self.max_length if max_length is None else int(max_length)
        if text_pair is None and entity_spans_pair is None and entity_ids_pair is None:
            features = self._features(examples, truncation, limit)
        else:  # the second segments: no task spans, their own entities
            pair_args = {**dict.fromkeys(args), "entity_spans": entity_spans_pair,
                         "entity_ids": entity_ids_pair}
            seconds = self._examples(pair_texts(text_pair, single, len(texts), self.task),
                                     pair_args, single, is_split_into_words, "text_pair")
            features = pair_features(self._pair_template, self._encode(examples),
                                     self._encode(seconds), truncation, limit)
        if self._neighbours is not None:
            for feature in features:
                feature["entity_links"] = entity_links(
                    feature["entity_ids"], self.vocab.entity_id, self._neighbours)
        return self._pad(features, padding, limit, return_tensors, single,
                         return_offsets_mapping)

    def _examples(self, texts: list[Any], args: dict[str, Any], single: bool,
                  split: bool, name: str) -> list[_Example]:
        per_text = [args] if single else unbatch(args, len(texts))
        where = ["" if name == "text" else f"{name}: "] if single else [
            f"{name} {n}: " for n in range(len(texts))]  # error messages name the text
        return [self._example(t, kw, w, split) for t, kw, w in zip(texts, per_text, where)]

    # ------------------------------------------------------------------ linking
    def _example(self, raw: Any, kw: dict[str, Any], where: str, split: bool) -> _Example:
        words: list[str] | None = None
        if split:
            if isinstance(raw, str) or not all(isinstance(w, str) for w in raw):
                raise TypeError(f"{where}is_split_into_words=True expects lists of words")
            words = list(raw)
            text = " ".join(words)
            word_spans = token_char_spans(words)

            def to_chars(span: Any, name: str) -> Span:
                start, end = check_span(span, len(words), where + name, "token")
                return word_spans[start][0], word_spans[end - 1][1]
        else:
            if not isinstance(raw, str):
                raise TypeError(f"{where}expected text as a str, got {type(raw).__name__}")
            text = raw

            def to_chars(span: Any, name: str) -> Span:
                return strip_span(text, check_span(span, len(text), where + name), where + name)

        example = _Example(text)
        roles = self.task_roles
        for role in ("head", "tail", "mention"):
            if kw[role] is not None and role not in roles:
                raise ValueError(
                    f"{where}{role} was given but task={self.task!r} marks {list(roles) or 'none'}"
                )
            if role in roles and kw[role] is None:
                raise SpanError(f"{where}{role} span is required for task={self.task!r}")
        task_ids: dict[str, Any] = {}
        for role in roles:
            example.task_spans[role] = to_chars(kw[role], role)
            task_ids[role] = kw[f"{role}_id"]
        check_nesting(example.task_spans, where)
        unknown = any(task_ids[role] is None for role in roles)
        others = other_spans(text, kw, where, to_chars, words, self.linker, unknown)
        example.entities = resolve_entities(text, example.task_spans, task_ids, others, where,
                                            self.linker, self._lookup)
        return example

    # ------------------------------------------------------------------ features
    def _encode(self, examples: list[_Example]) -> list[tuple[list[int], list[int], dict,
                                                           list[Span]]]:
        """Per example, without special tokens: its wordpiece ids, the entity row of each
        (offsets relative to the example's own text), the wordpiece of each marker and
        each wordpiece's char span in the unmarked text."""
        marked = [insert_markers(e.text, e.task_spans, self.markers) for e in examples]
        encoded = self.tokenizer(
            [m[0] for m in marked], add_special_tokens=False, return_offsets_mapping=True,
            return_attention_mask=False, return_token_type_ids=False, verbose=False,
        )
        result = []
        for n, (example, (text, shift, marker_chars)) in enumerate(zip(examples, marked)):
            offsets = [tuple(o) for o in encoded["offset_mapping"][n]]
            entities = [EntitySpan(shift(x.start), shift(x.end - 1) + 1, x.row)
                        for x in example.entities]
            rows = align_offsets(offsets, text, entities, resolve=False)
            markers = {name: token_at(offsets, char) for name, char in marker_chars.items()}
            spans = unmarked_offsets(offsets, len(example.text), shift) if markers else offsets
            result.append((encoded["input_ids"][n], rows, markers, spans))
        return result

    def _features(
        self, examples: list[_Example], truncation: bool, max_length: int
    ) -> list[dict[str, list[int]]]:
        budget = max_length - self._template.num_special
        start = len(self._template.parts[0])  # special tokens before the text
        features = []
        for ids, rows, marker_tokens, offsets in self._encode(examples):
            keep = list(range(len(ids)))
            if truncation and len(ids) > budget:
                keep = truncation_window(len(ids), budget, marker_tokens, self.task_roles)
            feature = self._template.assemble([([ids[k] for k in keep], [rows[k] for k in keep],
                                                [offsets[k] for k in keep])])
            if self.task is not None:
                position = {token: start + k for k, token in enumerate(keep)}
                feature["marker_positions"] = [
                    position[marker_tokens[f"{role}_start"]] for role in self.task_roles
                ]
            features.append(feature)
        return features

    def _pad(
        self, features: list[dict[str, list[int]]], padding: bool | str, max_length: int,
        return_tensors: str | None, single: bool, offsets: bool = False,
    ) -> BatchEncoding:
        if padding not in _PADDING:
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or "
                             f"'do_not_pad', not {padding!r}")
        strategy = _PADDING[padding]
        names = ["input_ids", "token_type_ids", "attention_mask", "entity_ids"]
        if "token_type_ids" not in self.tokenizer.model_input_names:
            names.remove("token_type_ids")
        names += ["offset_mapping"] if offsets else []
        names += ["entity_links"] if features and "entity_links" in features[0] else []
        if strategy is not None and features:
            target = (max(len(f["input_ids"]) for f in features) if strategy == "longest"
                      else max_length)
            pad_id = self.tokenizer.pad_token_id
            if pad_id is None:
                raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token")
            values = {"input_ids": pad_id, "token_type_ids": self.tokenizer.pad_token_type_id,
                      "attention_mask": 0, "entity_ids": 0, "offset_mapping": (0, 0),
                      "entity_links": 0}
            left = self.tokenizer.padding_side == "left"
            for feature in features:
                missing = target - len(feature["input_ids"])
                if missing <= 0:
                    continue
                for name in names:
                    pad = [values[name]] * missing
                    feature[name] = pad + feature[name] if left else feature[name] + pad
                if left and "marker_positions" in feature:
                    feature["marker_positions"] = [p + missing for p in feature["marker_positions"]]
        if self.task is not None:
            names.append("marker_positions")
        data = {name: [f[name] for f in features] for name in names}
        if single and return_tensors is None:
            data = {name: value[0] for name, value in data.items()}
        return BatchEncoding(data, tensor_type=return_tensors)

    # ------------------------------------------------------------------ storage
    @property
    def vocab(self) -> EntityVocab | None:
        """The entity vocabulary behind the rows (None when a function gives them)."""
        return self._lookup if isinstance(self._lookup, EntityVocab) else None

    def save_pretrained(self, directory: str | os.PathLike,
                        vocab_file: str | None = None) -> Path:
        """Write the tokenizer, the processor settings, the entity vocabulary and the
        linker (aliases + settings; the KG is not copied). ``vocab_file`` names a file
        of ``directory`` that already holds this vocabulary (a saved model's
        ``entity_ids.json``): it is referenced, not written a second time."""
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        settings: dict[str, Any] = {
            "format": "ernie_kg.processor", "version": 1, "task": self.task,
            "max_length": self.max_length, "markers": self.markers,
            "entity_rows": vocab_file, "linker": None, "entity_links": self.entity_links,
        }
        if vocab_file is None and self.vocab is not None:
            self.vocab.save(directory / _ENTITY_IDS_FILE)
            settings["entity_rows"] = _ENTITY_IDS_FILE
        elif vocab_file is None and isinstance(self.entity_rows, Mapping):  # no vocabulary
            write_json(directory / _ENTITY_IDS_FILE, {str(k): int(v) for k, v in
                                                      self.entity_rows.items()}, indent=1)
            settings["entity_rows"] = _ENTITY_IDS_FILE
        if self.linker is not None:
            self.linker.save(directory / _LINKER_DIR)
            settings["linker"] = _LINKER_DIR
        write_json(directory / PROCESSOR_FILE, settings)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        entity_rows: RowLookup | None = None,
        linker: EntityLinker | None = None,
        kg: Any = None,
        **overrides: Any,
    ) -> ErnieKGProcessor:
        """Read :meth:`save_pretrained`'s directory. ``entity_rows`` defaults to the saved
        vocabulary, else to the model's ``entity_ids.json`` in the same directory; ``kg``
        (a KnowledgeGraph or its directory) gives the saved linker its coherence."""
        directory = Path(directory)
        settings = read_json(directory / PROCESSOR_FILE,
                             what="not a saved ErnieKGProcessor directory")
        if entity_rows is None:
            entity_rows = _saved_rows(directory, settings.get("entity_rows"))
        if linker is None and settings.get("linker"):
            from ernie_kg.kg.graph import KnowledgeGraph

            if isinstance(kg, (str, os.PathLike)):
                kg = KnowledgeGraph.load(kg)
            linker = EntityLinker.load(directory / settings["linker"], kg=kg)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        options = {"task": settings.get("task"), "max_length": settings.get("max_length", 128),
                   "markers": settings.get("markers"),
                   "entity_links": settings.get("entity_links", False), **overrides}
        return cls(tokenizer, entity_rows, linker, **options)

    def __repr__(self) -> str:
        return (f"ErnieKGProcessor(task={self.task!r}, max_length={self.max_length}, "
                f"linker={'yes' if self.linker is not None else 'no'}, "
                f"tokenizer={type(self.tokenizer).__name__})")


# ---------------------------------------------------------------------- helpers
def _saved_rows(directory: Path, name: str | None) -> list | dict | EntityVocab:
    """The saved vocabulary (a JSON list of ids; older releases may have saved a
    ``{id: row}`` object), the table a saved model refers to, else a saved model's
    ``entity_ids.json``."""
    if name == MODEL_TABLE_ROWS:
        from ernie_kg.modeling.entity_table import find_table

        reference = read_json(directory / "config.json").get("entity_table")
        if not isinstance(reference, dict):
            raise SavedFileError(directory / "config.json", None, "no entity_table: the "
                                 "processor's entity rows are the model's table")
        return find_table(reference, directory).vocab
    for path in ([directory / name] if name else []) + [directory / _MODEL_ENTITY_IDS_FILE]:
        if path.exists():
            rows = read_json(path)
            if not isinstance(rows, (list, dict)):
                raise SavedFileError(path, None, "expected a JSON list of entity ids")
            return rows
    raise SavedFileError(
        directory, None, "holds no entity rows (the processor was built with a function); "
        "pass entity_rows=..."
    )
