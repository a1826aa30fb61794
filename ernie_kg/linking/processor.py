"""One call from raw text to model inputs, in the style of LUKE's tokenizer.

``processor(text, head=(s, e), tail=(s, e), return_tensors="pt")`` links the text
(unless spans and ids are given), wraps the task's spans in marker tokens, tokenizes,
puts each entity's row on its first wordpiece (:mod:`ernie_kg.linking.alignment`),
truncates around the marked spans so they survive, pads, and returns a
:class:`~transformers.BatchEncoding` with ``input_ids``, ``attention_mask``,
``token_type_ids``, ``entity_ids`` and, for a task, ``marker_positions``, so that
``model(**processor(...))`` works for every ERNIE-KG head.

Markers default to plain vocabulary characters, as ERNIE did ('#' around the head, '$'
around the tail; '@' around a typed mention), so no embedding resize is needed.
"""

from __future__ import annotations

import json
import operator
import os
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from ernie_kg.errors import SpanError
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.linking.alignment import EntitySpan, RowLookup, align_offsets, resolve_overlaps
from ernie_kg.linking.fewrel import token_char_spans
from ernie_kg.linking.linker import EntityLinker, check_span

__all__ = ["DEFAULT_MARKERS", "PROCESSOR_FILE", "TASKS", "ErnieKGProcessor"]

TASKS = (None, "relation_classification", "entity_typing")
#: ERNIE's choice for relation classification; '@' marks a typed mention.
DEFAULT_MARKERS: dict[str, str] = {
    "head_start": "#", "head_end": "#",
    "tail_start": "$", "tail_end": "$",
    "mention_start": "@", "mention_end": "@",
}
#: The processor's own settings inside a saved directory.
PROCESSOR_FILE = "ernie_kg_processor.json"
_ENTITY_IDS_FILE = "processor_entity_ids.json"
_LINKER_DIR = "linker"
_TASK_SPANS = {
    None: (),
    "relation_classification": ("head", "tail"),
    "entity_typing": ("mention",),
}
_PADDING = {True: "longest", "longest": "longest", False: None, "do_not_pad": None,
            "max_length": "max_length"}

Span = tuple[int, int]
_NIL = object()  # the linker left this mention unlinked: no entity, do not link again


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
        entity_rows: entity id -> row of the model's entity table: a mapping, a function
            (None/0 = no row), :class:`~ernie_kg.kg.EntityEmbeddings` (row = index + 1)
            or the ids of rows 1, 2, ... (e.g. ``model.entity_ids``). Unknown ids get no
            entity.
        linker: links raw text (and spans without ids); without it, only the ids you
            pass become entities.
        task: None, ``"relation_classification"`` (``head`` and ``tail`` required,
            ``marker_positions`` ``[B, 2]``) or ``"entity_typing"`` (``mention``,
            ``marker_positions`` ``[B, 1]``).
        max_length: wordpieces per sequence, special tokens included.
        markers: overrides of :data:`DEFAULT_MARKERS`; each must be one token of the
            tokenizer's vocabulary (add new ones with ``tokenizer.add_tokens`` and resize
            the model's embeddings).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        entity_rows: RowLookup,
        linker: EntityLinker | None = None,
        task: str | None = None,
        max_length: int = 128,
        markers: Mapping[str, str] | None = None,
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
        self._prefix, self._suffix, self._content_type = self._special_template()
        if max_length <= len(self._prefix) + len(self._suffix):
            raise ValueError(f"max_length={max_length} leaves no room for text")
        self.max_length = int(max_length)
        self._lookup = _row_function(entity_rows)
        self._check_markers()

    # ------------------------------------------------------------------ setup
    def _special_template(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
        """(id, type id) of the special tokens before and after one sequence's text."""
        probe = self.tokenizer("a", return_special_tokens_mask=True, return_token_type_ids=True,
                               verbose=False)
        ids, mask = probe["input_ids"], probe["special_tokens_mask"]
        types = probe.get("token_type_ids") or [0] * len(ids)
        content = [i for i, m in enumerate(mask) if not m]
        if not content:
            raise ValueError("the tokenizer turned 'a' into special tokens only")
        first, last = content[0], content[-1]
        prefix = list(zip(ids[:first], types[:first]))
        suffix = list(zip(ids[last + 1:], types[last + 1:]))
        return prefix, suffix, types[first]

    def _check_markers(self) -> None:
        for role in _TASK_SPANS[self.task]:
            for edge in ("start", "end"):
                name = f"{role}_{edge}"
                marker = self.markers[name]
                ids = self.tokenizer(marker, add_special_tokens=False, verbose=False)["input_ids"]
                if not marker.strip() or len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
                    raise ValueError(
                        f"marker {name}={marker!r} is not a single known token of the "
                        f"tokenizer (it gives {ids}); pick a vocabulary character or add it "
                        "with tokenizer.add_tokens and resize the model's embeddings"
                    )

    @property
    def task_roles(self) -> tuple[str, ...]:
        """The spans the task marks: ``("head", "tail")``, ``("mention",)`` or ``()``."""
        return _TASK_SPANS[self.task]

    # ------------------------------------------------------------------ call
    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        entity_spans: Any = None,
        entity_ids: Any = None,
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
    ) -> BatchEncoding:
        """Model inputs for one text or a batch of texts.

        Spans are half-open char offsets ``(start, end)`` into each text (token indices
        when ``is_split_into_words``: texts are then lists of words). For a batch, every
        argument is a list with one entry per text. ``entity_ids`` are KG ids (str),
        rows (int) or None (link that span). ``head_id``/``tail_id``/``mention_id``
        override what the linker would pick. Bad spans raise
        :class:`~ernie_kg.errors.SpanError` naming the span.
        """
        single = _is_single(text, is_split_into_words)
        args = {"entity_spans": entity_spans, "entity_ids": entity_ids, "head": head,
                "tail": tail, "mention": mention, "head_id": head_id, "tail_id": tail_id,
                "mention_id": mention_id}
        if single:
            texts = [text]
            per_text = [args]
        else:
            texts = list(text)
            per_text = _unbatch(args, len(texts))
        examples = [
            self._example(t, kw, None if single else n, is_split_into_words)
            for n, (t, kw) in enumerate(zip(texts, per_text))
        ]
        limit = self.max_length if max_length is None else int(max_length)
        features = self._features(examples, truncation, limit)
        return self._pad(features, padding, limit, return_tensors, single)

    # ------------------------------------------------------------------ linking
    def _example(
        self, raw: Any, kw: dict[str, Any], index: int | None, split: bool
    ) -> _Example:
        where = "" if index is None else f"text {index}: "
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
                return _stripped(text, check_span(span, len(text), where + name), where + name)

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
        _check_nesting(example.task_spans, where)
        explicit = self._other_spans(text, kw, where, to_chars, words)
        example.entities = self._entities(text, example.task_spans, task_ids, explicit, where)
        return example

    def _other_spans(
        self, text: str, kw: dict[str, Any], where: str, to_chars: Callable[[Any, str], Span],
        words: list[str] | None,
    ) -> list[tuple[Span, Any]]:
        """The non-task spans with their ids: given ones (None: to link) or, without
        ``entity_spans``, the linker's mentions of the whole text (NIL ones as _NIL)."""
        explicit: list[tuple[Span, Any]] = []
        spans, ids = kw["entity_spans"], kw["entity_ids"]
        if spans is not None:
            if isinstance(spans, (str, bytes)) or not isinstance(spans, Sequence):
                raise SpanError(f"{where}entity_spans must be a list of (start, end) pairs")
            if ids is not None and (isinstance(ids, (str, bytes)) or len(ids) != len(spans)):
                raise SpanError(f"{where}entity_ids must be a list as long as entity_spans "
                                f"({len(spans)})")
            if ids is None and self.linker is None:
                raise ValueError(f"{where}entity_spans without entity_ids need a linker")
            for n, span in enumerate(spans):
                explicit.append((to_chars(span, f"entity_spans[{n}]"),
                                 None if ids is None else ids[n]))
        elif ids is not None:
            raise ValueError(f"{where}entity_ids given without entity_spans")
        elif self.linker is not None:
            if words is not None:
                detected = self.linker.link_tokens(words)
            else:
                detected = self.linker(text)
            explicit = [((m.start, m.end), _NIL if m.entity_id is None else m.entity_id)
                        for m in detected]
        return explicit

    def _entities(
        self, text: str, task_spans: dict[str, Span], task_ids: dict[str, Any],
        explicit: list[tuple[Span, Any]], where: str,
    ) -> list[EntitySpan]:
        """Entity rows of the task spans (first) and the other spans, in claim order.

        Task spans win over other spans they overlap; a given id for the very same span
        fills a task span's missing id. Among the others, one entity per char: the
        longest of overlapping spans, then the leftmost. Spans still without an id are
        linked together (so they are coherent with the rest)."""
        roles = list(task_spans)
        taken = list(task_spans.values())
        others: list[tuple[Span, Any]] = []
        for span, entity in explicit:
            same = [r for r, s in task_spans.items() if s == span]
            if same:
                for role in same:
                    if task_ids[role] is None and entity is not None and entity is not _NIL:
                        task_ids[role] = entity
            elif not any(span[0] < e and s < span[1] for s, e in taken):
                others.append((span, entity))
        order = resolve_overlaps([EntitySpan(s, e, n + 1) for n, ((s, e), _) in
                                  enumerate(others)])
        others = [others[span.row - 1] for span in order]

        slots: list[tuple[Span, Any]] = [(task_spans[r], task_ids[r]) for r in roles]
        slots += others
        unresolved = [n for n, (_, entity) in enumerate(slots) if entity is None]
        if unresolved and self.linker is not None:
            linked = self.linker.link_spans(text, [span for span, _ in slots])
            for n in unresolved:
                slots[n] = (slots[n][0], linked[n].entity_id)
        entities = []
        for (start, end), entity in slots:
            row = self._row(entity, where)
            if row > 0:
                entities.append(EntitySpan(start, end, row))
        return entities

    def _row(self, entity: Any, where: str) -> int:
        if entity is None or entity is _NIL:
            return 0
        if isinstance(entity, str):
            return self._lookup(entity)
        if isinstance(entity, bool) or not hasattr(entity, "__index__"):
            raise TypeError(f"{where}entity ids must be str (KG id), int (row) or None, "
                            f"got {entity!r}")
        entity = operator.index(entity)
        if entity < 0:
            raise ValueError(f"{where}entity row must be >= 0, got {entity}")
        return entity

    # ------------------------------------------------------------------ features
    def _features(
        self, examples: list[_Example], truncation: bool, max_length: int
    ) -> list[dict[str, list[int]]]:
        marked = [self._mark(example) for example in examples]
        encoded = self.tokenizer(
            [m[0] for m in marked], add_special_tokens=False, return_offsets_mapping=True,
            return_attention_mask=False, return_token_type_ids=False, verbose=False,
        )
        budget = max_length - len(self._prefix) - len(self._suffix)
        features = []
        for n, (example, (text, shift, marker_chars)) in enumerate(zip(examples, marked)):
            ids = encoded["input_ids"][n]
            offsets = [tuple(o) for o in encoded["offset_mapping"][n]]
            entities = [EntitySpan(shift(s), shift(e - 1) + 1, r) for s, e, r in
                        ((x.start, x.end, x.row) for x in example.entities)]
            rows = align_offsets(offsets, text, entities, resolve=False)
            marker_tokens = {
                name: _token_at(offsets, char) for name, char in marker_chars.items()
            }
            keep = list(range(len(ids)))
            if truncation and len(ids) > budget:
                keep = _window(len(ids), budget, marker_tokens, self.task_roles)
            position = {token: len(self._prefix) + k for k, token in enumerate(keep)}
            input_ids = ([i for i, _ in self._prefix] + [ids[k] for k in keep]
                         + [i for i, _ in self._suffix])
            feature = {
                "input_ids": input_ids,
                "token_type_ids": ([t for _, t in self._prefix] + [self._content_type] * len(keep)
                                   + [t for _, t in self._suffix]),
                "attention_mask": [1] * len(input_ids),
                "entity_ids": ([0] * len(self._prefix) + [rows[k] for k in keep]
                               + [0] * len(self._suffix)),
            }
            if self.task is not None:
                feature["marker_positions"] = [
                    position[marker_tokens[f"{role}_start"]] for role in self.task_roles
                ]
            features.append(feature)
        return features

    def _mark(self, example: _Example) -> tuple[str, Callable[[int], int], dict[str, int]]:
        """The text with markers, old char -> new char, and each marker's new char."""
        inserts = []  # (position, order at that position, string, marker name)
        for n, (role, (start, end)) in enumerate(example.task_spans.items()):
            length = end - start
            # at one position: ends before starts, inner ends first, outer starts first
            # (the earlier role counts as outer when two spans are equal)
            inserts.append((start, (1, -length, n), self.markers[f"{role}_start"] + " ",
                            f"{role}_start"))
            inserts.append((end, (0, length, -n), " " + self.markers[f"{role}_end"],
                            f"{role}_end"))
        inserts.sort(key=lambda x: x[:2])
        pieces, positions, cumulative, marker_chars = [], [], [], {}
        last = added = 0
        text = example.text
        for position, _, string, name in inserts:
            pieces.append(text[last:position])
            new_position = position + added
            marker_chars[name] = new_position + (0 if name.endswith("_start") else 1)
            pieces.append(string)
            added += len(string)
            positions.append(position)
            cumulative.append(added)
            last = position
        pieces.append(text[last:])

        def shift(char: int) -> int:
            k = bisect_right(positions, char)
            return char + (cumulative[k - 1] if k else 0)

        return "".join(pieces), shift, marker_chars

    def _pad(
        self, features: list[dict[str, list[int]]], padding: bool | str, max_length: int,
        return_tensors: str | None, single: bool,
    ) -> BatchEncoding:
        if padding not in _PADDING:
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or "
                             f"'do_not_pad', not {padding!r}")
        strategy = _PADDING[padding]
        names = ["input_ids", "token_type_ids", "attention_mask", "entity_ids"]
        if "token_type_ids" not in self.tokenizer.model_input_names:
            names.remove("token_type_ids")
        if strategy is not None and features:
            target = (max(len(f["input_ids"]) for f in features) if strategy == "longest"
                      else max_length)
            pad_id = self.tokenizer.pad_token_id
            if pad_id is None:
                raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token")
            values = {"input_ids": pad_id, "token_type_ids": self.tokenizer.pad_token_type_id,
                      "attention_mask": 0, "entity_ids": 0}
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
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the tokenizer, the processor settings, the entity rows (unless a
        function gave them) and the linker (aliases + settings; the KG is not copied)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        settings: dict[str, Any] = {
            "format": "ernie_kg.processor", "version": 1, "task": self.task,
            "max_length": self.max_length, "markers": self.markers,
            "entity_rows": None, "linker": None,
        }
        rows = _serialisable_rows(self.entity_rows)
        if rows is not None:
            _write_json(directory / _ENTITY_IDS_FILE, rows)
            settings["entity_rows"] = _ENTITY_IDS_FILE
        if self.linker is not None:
            self.linker.save(directory / _LINKER_DIR)
            settings["linker"] = _LINKER_DIR
        _write_json(directory / PROCESSOR_FILE, settings)
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
        rows, else to the model's ``entity_ids.json`` in the same directory; ``kg`` (a
        KnowledgeGraph or its directory) gives the saved linker its coherence."""
        from ernie_kg.errors import KGFormatError

        directory = Path(directory)
        path = directory / PROCESSOR_FILE
        if not path.exists():
            raise KGFormatError(path, None, "missing: not a saved ErnieKGProcessor directory")
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise KGFormatError(path, error.lineno, f"invalid JSON: {error.msg}") from None
        if entity_rows is None:
            entity_rows = _saved_rows(directory, settings.get("entity_rows"))
        if linker is None and settings.get("linker"):
            from ernie_kg.kg.graph import KnowledgeGraph

            if isinstance(kg, (str, os.PathLike)):
                kg = KnowledgeGraph.load(kg)
            linker = EntityLinker.load(directory / settings["linker"], kg=kg)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        options = {"task": settings.get("task"), "max_length": settings.get("max_length", 128),
                   "markers": settings.get("markers"), **overrides}
        return cls(tokenizer, entity_rows, linker, **options)

    def __repr__(self) -> str:
        return (f"ErnieKGProcessor(task={self.task!r}, max_length={self.max_length}, "
                f"linker={'yes' if self.linker is not None else 'no'}, "
                f"tokenizer={type(self.tokenizer).__name__})")


# ---------------------------------------------------------------------- helpers
def _row_function(entity_rows: RowLookup) -> Callable[[str], int]:
    from ernie_kg.linking.alignment import row_lookup

    return row_lookup(entity_rows)


def _is_single(text: Any, split: bool) -> bool:
    if isinstance(text, str):
        if split:
            raise TypeError("is_split_into_words=True expects a list of words, not a str")
        return True
    if not isinstance(text, Sequence):
        raise TypeError(f"expected a str or a list of str, got {type(text).__name__}")
    if split:
        return not text or isinstance(text[0], str)
    return False


def _unbatch(args: dict[str, Any], size: int) -> list[dict[str, Any]]:
    for name, value in args.items():
        if value is not None and (not isinstance(value, Sequence) or len(value) != size):
            raise ValueError(f"batched call: {name} must be a list with one entry per text "
                             f"({size}), got {value!r}")
    return [{name: None if value is None else value[n] for name, value in args.items()}
            for n in range(size)]


def _stripped(text: str, span: Span, name: str) -> Span:
    """The span without surrounding whitespace (markers then hug the words)."""
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start == end:
        raise SpanError(f"{name} {span}: covers only whitespace")
    return start, end


def _check_nesting(spans: dict[str, Span], where: str) -> None:
    items = list(spans.items())
    for i, (a, (s1, e1)) in enumerate(items):
        for b, (s2, e2) in items[i + 1:]:
            crossing = s1 < s2 < e1 < e2 or s2 < s1 < e2 < e1
            if crossing:
                raise SpanError(
                    f"{where}{a} ({s1}, {e1}) and {b} ({s2}, {e2}) overlap without one "
                    "containing the other, so their markers cannot be nested"
                )


def _token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """The token whose char span holds ``char`` (markers are whole tokens)."""
    for k, (start, end) in enumerate(offsets):
        if start <= char < end:
            return k
    raise RuntimeError(f"no token at char {char}: the marker vanished in tokenization")


def _window(
    length: int, budget: int, markers: dict[str, int], roles: Sequence[str]
) -> list[int]:
    """Token indices to keep: ``budget`` tokens holding every start marker (and, when
    they fit, every end marker, else the wordpiece after each start marker), centred on
    the marked spans; if the spans lie too far apart, one window from each start
    marker, joined."""
    if not markers:
        return list(range(budget))
    if budget < len(roles):
        raise ValueError(f"max_length leaves {budget} wordpieces for text: too few to keep "
                         f"the {len(roles)} start markers")
    starts = [markers[f"{role}_start"] for role in roles]
    firsts = starts + [min(length - 1, k + 1) for k in starts]  # + each first wordpiece
    for needed in (list(markers.values()), firsts, starts):
        low, high = min(needed), max(needed)
        if high - low + 1 <= budget:
            start = max(0, min(low - (budget - (high - low + 1)) // 2, length - budget))
            return list(range(start, start + budget))
    # each role gets its share; its start marker first, then its words, then context
    share = [budget // len(roles) + (1 if n < budget % len(roles) else 0)
             for n in range(len(roles))]
    regions = []
    for role, size in sorted(zip(roles, share), key=lambda x: markers[f"{x[0]}_start"]):
        first = markers[f"{role}_start"]
        regions.append((first, min(length, first + size)))
    kept: set[int] = set()
    for first, stop in regions:
        kept.update(range(first, stop))
    spare = budget - len(kept)
    extra = regions[0][1]
    while spare > 0 and extra < length:  # fill with the text after the first region
        if extra not in kept:
            kept.add(extra)
            spare -= 1
        extra += 1
    back = regions[0][0] - 1
    while spare > 0 and back >= 0:
        kept.add(back)
        spare -= 1
        back -= 1
    return sorted(kept)


def _serialisable_rows(entity_rows: Any) -> list[str] | dict[str, int] | None:
    if isinstance(entity_rows, EntityEmbeddings):
        return list(entity_rows.entity_ids)
    if isinstance(entity_rows, Mapping):
        rows = {str(k): int(v) for k, v in entity_rows.items()}
        if sorted(rows.values()) == list(range(1, len(rows) + 1)):
            return [k for k, _ in sorted(rows.items(), key=lambda item: item[1])]
        return rows
    if isinstance(entity_rows, Sequence) and not isinstance(entity_rows, (str, bytes)):
        return [str(e) for e in entity_rows]
    return None


def _saved_rows(directory: Path, name: str | None) -> RowLookup:
    from ernie_kg.errors import KGFormatError

    candidates = [directory / name] if name else []
    candidates.append(directory / "entity_ids.json")  # a saved ErnieKG model's rows
    for path in candidates:
        if path.exists():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise KGFormatError(path, error.lineno, f"invalid JSON: {error.msg}") from None
    raise ValueError(
        f"{directory} holds no entity rows (the processor was built with a function); "
        "pass entity_rows=..."
    )


def _write_json(path: Path, payload: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(temporary, path)
