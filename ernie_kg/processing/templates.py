"""Where the special tokens go and which segment id each wordpiece gets.

Why read from the tokenizer: BERT writes ``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]``
with segment ids 0 for A (and its [SEP]) and 1 for B (and the last [SEP]); other
checkpoints differ (RoBERTa: ``<s> A </s></s> B </s>``, no segment ids). Probing the
tokenizer once with a one-word text (and pair) gives each layout exactly as its own
``tokenizer(text, text_pair)`` builds it, so processor outputs match the tokenizer's.

A pair longer than the budget is truncated longest-first, as Hugging Face
``truncation="longest_first"``: wordpieces come off the end of the longer segment until
it is as short as the other, then off both, so both segments keep wordpieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SegmentTemplate", "longest_first", "pair_features"]

#: (token id, segment id) of one special token.
Special = tuple[int, int]


@dataclass(frozen=True)
class SegmentTemplate:
    """The special tokens around one sequence or a pair, and each segment's id.

    ``parts[0]`` comes before segment A, ``parts[k]`` after segment k-1 (so a pair has
    three parts: before A, between A and B, after B); ``types[k]`` is the segment id of
    segment k's wordpieces.
    """

    parts: tuple[tuple[Special, ...], ...]
    types: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: Any, pair: bool = False) -> SegmentTemplate:
        """The layout ``tokenizer`` gives one text (``pair=False``) or a text pair."""
        probe = tokenizer("a", "b" if pair else None, return_special_tokens_mask=True,
                          return_token_type_ids=True, verbose=False)
        ids, mask = probe["input_ids"], probe["special_tokens_mask"]
        types = probe.get("token_type_ids") or [0] * len(ids)
        sequence_ids = probe.sequence_ids(0)
        segments = 2 if pair else 1
        content = [[i for i, s in enumerate(sequence_ids) if s == k and not mask[i]]
                   for k in range(segments)]
        if not all(content):
            raise ValueError("the tokenizer turned 'a' (or 'b') into special tokens only")
        bounds = [-1] + [i for k in content for i in (k[0], k[-1])] + [len(ids)]
        parts = tuple(tuple((ids[i], types[i]) for i in range(start + 1, stop))
                      for start, stop in zip(bounds[::2], bounds[1::2]))
        return cls(parts, tuple(types[k[0]] for k in content))

    @property
    def num_special(self) -> int:
        """How many special tokens the layout adds."""
        return sum(len(part) for part in self.parts)

    def assemble(self, segments: Sequence[tuple[Sequence[int], ...]]) -> dict[str, list]:
        """``input_ids``, ``token_type_ids``, ``attention_mask`` and ``entity_ids`` of the
        segments' kept ``(wordpiece ids, entity rows)``, special tokens in place (they
        carry no entity); with a third item, ``(start, end)`` char spans, also
        ``offset_mapping`` (``(0, 0)`` for special tokens)."""
        if len(segments) != len(self.types):
            raise ValueError(f"the template has {len(self.types)} segments, got "
                             f"{len(segments)}")
        input_ids: list[int] = []
        type_ids: list[int] = []
        entity_ids: list[int] = []
        offsets: list[Any] = []
        spans = all(len(segment) > 2 for segment in segments)
        for k, part in enumerate(self.parts):
            input_ids += [i for i, _ in part]
            type_ids += [t for _, t in part]
            entity_ids += [0] * len(part)
            offsets += [(0, 0)] * len(part)
            if k < len(segments):
                ids, rows, *rest = segments[k]
                input_ids += list(ids)
                type_ids += [self.types[k]] * len(ids)
                entity_ids += list(rows)
                offsets += list(rest[0]) if spans else []
        assembled: dict[str, list] = {"input_ids": input_ids, "token_type_ids": type_ids,
                                      "attention_mask": [1] * len(input_ids),
                                      "entity_ids": entity_ids}
        if spans:
            assembled["offset_mapping"] = offsets
        return assembled


def longest_first(first: int, second: int, budget: int) -> tuple[int, int]:
    """How many wordpieces of each segment to keep (from the start) within ``budget``:
    the rule of Hugging Face tokenizers' ``LongestFirst`` (the longer segment is cut to
    the shorter's length first; when both must shrink, each keeps half the budget, an odd
    one going to the segment that was longer, to the second on a tie)."""
    if first + second <= budget:
        return first, second
    if budget < 2:
        raise ValueError(f"max_length leaves {budget} wordpieces for a text pair: too few "
                         "to keep both segments")
    short, long = sorted((first, second))
    keep_long = max(short, budget - short)
    keep_short = short
    if keep_short + keep_long > budget:
        keep_short, keep_long = budget // 2, budget // 2 + budget % 2
    if first > second:
        return keep_long, keep_short
    return keep_short, keep_long


def pair_features(
    template: SegmentTemplate, firsts: Sequence[tuple[Sequence[int], Sequence[int], Any, Any]],
    seconds: Sequence[tuple[Sequence[int], Sequence[int], Any, Any]], truncation: bool,
    max_length: int,
) -> list[dict[str, list]]:
    """One feature dict per pair of encoded segments ``(wordpiece ids, entity rows,
    markers, char spans)``, truncated :func:`longest_first` to ``max_length`` (special
    tokens included) when ``truncation``; an entity whose first wordpiece is cut goes
    with it; ``offset_mapping`` holds each segment's char spans in its own text."""
    budget = max_length - template.num_special
    features = []
    for (ids_a, rows_a, _, spans_a), (ids_b, rows_b, _, spans_b) in zip(firsts, seconds,
                                                                        strict=True):
        keep_a, keep_b = len(ids_a), len(ids_b)
        if truncation:
            keep_a, keep_b = longest_first(keep_a, keep_b, budget)
        features.append(template.assemble([
            (ids_a[:keep_a], rows_a[:keep_a], spans_a[:keep_a]),
            (ids_b[:keep_b], rows_b[:keep_b], spans_b[:keep_b])]))
    return features
