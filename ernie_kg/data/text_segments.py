"""Masked-LM-only instances (domain post-training): each text cut into single segments.

Why not the sentence pairs of knowledge-aware pre-training: post-training has no NSP
and no entities, and a domain corpus is often one short text per line (reviews,
benchmark sentences), many without end punctuation, which a sentence splitter runs
together into one over-long "sentence" that truncation then cuts short. Here every
line is a text; a text longer than ``max_length`` wordpieces continues in the next
segment, each cut made at a word boundary, so every word of the corpus is seen once and
whole-word masking never meets half a word. Words are the spaCy tokens (jieba words for
Chinese), as in :mod:`ernie_kg.data.pretraining`; the instances have the same fields,
so they go into the same shards and through the same collator and training loop.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any


def word_containing(words: Sequence[tuple[int, int]], starts: Sequence[int],
                    char: int) -> int | None:
    """Index of the word (a char span; ``starts`` their starts, sorted) holding ``char``."""
    k = bisect_right(starts, char) - 1
    return k if k >= 0 and words[k][0] <= char < words[k][1] else None


def cut_points(word_ids: Sequence[int], width: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``word_ids`` in pieces of at most ``width``, each
    cut at a word start (a word longer than ``width`` alone is cut inside)."""
    pieces: list[tuple[int, int]] = []
    start, total = 0, len(word_ids)
    while start < total:
        end = min(start + width, total)
        cut = end
        while end < total and cut > start and word_ids[cut] >= 0 \
                and word_ids[cut] == word_ids[cut - 1]:
            cut -= 1  # back to the start of the word the cut would split
        end = cut if cut > start else end
        pieces.append((start, end))
        start = end
    return pieces


def segment_instances(
    texts: Iterable[str], tokenizer: Any, max_length: int, nlp: Any, batch_size: int = 256,
) -> Iterator[dict[str, list[int]]]:
    """Single-segment instances (``[CLS] piece [SEP]``, the fields of
    :func:`~ernie_kg.data.pretraining.encode_pair`, no entities) of every text; ``nlp``
    gives the words (:func:`~ernie_kg.data.pretraining.sentence_splitter`)."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise ValueError("the tokenizer has no [CLS]/[SEP] tokens; masked LM segments need "
                         "a BERT-style tokenizer")
    texts = iter(texts)
    while chunk := list(islice(texts, batch_size)):
        encodings = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True,
                              verbose=False)
        for doc, ids, offsets in zip(nlp.pipe(chunk), encodings["input_ids"],
                                     encodings["offset_mapping"]):
            words = [(t.idx, t.idx + len(t.text)) for t in doc if not t.is_space]
            starts = [a for a, _ in words]
            word_ids = [-1 if b <= a else _or_none(word_containing(words, starts, a))
                        for a, b in offsets]
            for start, end in cut_points(word_ids, max_length - 2):
                length = end - start + 2
                yield {
                    "input_ids": [cls_id, *ids[start:end], sep_id],
                    "token_type_ids": [0] * length,
                    "entity_ids": [0] * length,
                    "word_ids": [-1, *word_ids[start:end], -1],
                    "mention_ids": [-1] * length,
                }


def _or_none(word: int | None) -> int:
    return -1 if word is None else word
