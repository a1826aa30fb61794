"""Feature-based use of a frozen encoder: :func:`extract_features`.

Why: the BERT paper's feature-based recipe (NER from the concatenated last four layers,
within 0.3 F1 of fine-tuning) feeds a small model from fixed contextual vectors; this
reads them out of any ERNIE-KG model or head, with the entities its processor's linker
finds, as numpy arrays aligned to wordpieces, words or texts.

The processor is the one tokenizer and linker (its task, if any, is dropped: plain texts
carry no head/tail spans, so no markers). Texts are encoded once, sorted by length and
run in batches padded to their own longest sequence, in eval mode without gradients;
the results come back in the input order.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ernie_kg.data.collator import ErnieKGCollator
from ernie_kg.data.features import check_entity_source
from ernie_kg.errors import ErnieKGError
from ernie_kg.spans import token_char_spans

__all__ = ["COMBINES", "LEVELS", "SENTENCE_POOLINGS", "WORD_POOLINGS", "extract_features"]

COMBINES = ("concat", "sum", "mean")
LEVELS = ("token", "word", "sentence")
WORD_POOLINGS = ("first", "mean")
SENTENCE_POOLINGS = ("cls", "mean")
_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "entity_ids", "entity_links")


def extract_features(
    model: torch.nn.Module, processor: Any, texts: str | Sequence[str] | None = None, *,
    layers: Sequence[int] = (-1, -2, -3, -4), combine: str = "concat", level: str = "token",
    text_pairs: Sequence[str] | None = None, words: Sequence[Sequence[str]] | None = None,
    word_pooling: str = "first", sentence_pooling: str = "cls", batch_size: int = 32,
    entities: str = "linker", max_length: int | None = None, return_offsets: bool = False,
) -> list[np.ndarray] | np.ndarray | tuple[list[np.ndarray], list[np.ndarray]]:
    """Hidden states of ``texts`` from a frozen ``model`` (``ErnieKGModel`` or a head).

    Args:
        model: the encoder; left in the train/eval mode it was in.
        processor: its ``ErnieKGProcessor`` (tokenizer, entity rows, linker).
        texts: the texts (one str counts as a batch of one); or give ``words=``.
        layers: indices into the hidden states, as Hugging Face's ``hidden_states``: 0 is
            the embeddings output, -1 the last layer (BERT's recipe: -1..-4).
        combine: ``"concat"`` (``len(layers) * hidden`` wide), ``"sum"`` or ``"mean"``.
        level: ``"token"``: per text a ``[num_wordpieces, dim]`` array over the whole
            unpadded input sequence, special tokens included (row k is ``input_ids[k]``,
            as Hugging Face's feature-extraction pipeline returns); ``"word"``: per text
            a ``[num_words, dim]`` array; ``"sentence"``: one ``[num_texts, dim]`` array.
        text_pairs: a second text per text (BERT's segment B); token and sentence level.
        words: pre-split words per text instead of ``texts`` (the text is
            ``" ".join(words)``); otherwise the words are the whitespace-split tokens.
        word_pooling: a word's vector: its ``"first"`` wordpiece's (the BERT NER recipe)
            or the ``"mean"`` of its wordpieces.
        sentence_pooling: ``"cls"`` (the first token's state) or ``"mean"`` over the
            sequence, special tokens included (as sentence-transformers pools).
        batch_size: sequences per forward pass.
        entities: ``"linker"`` (the processor's linker, if any) or ``"none"`` (the
            text-only baseline); ``"both"`` is the linker's and ``"gold"`` none (plain
            texts carry no gold ids).
        max_length: wordpieces per sequence (default: the processor's); longer texts
            are truncated, and at word level a word that loses all its wordpieces is an
            error.
        return_offsets: token level only: also return, per text, the ``[num_wordpieces,
            2]`` char spans of the rows (``(0, 0)`` for special tokens; segment B's are
            into its ``text_pair``).
    """
    check_entity_source(entities)
    texts, split = _inputs(texts, words)
    selected = _check(model, layers, combine, level, word_pooling, sentence_pooling,
                      batch_size, text_pairs, len(texts), return_offsets)
    plain = copy.copy(processor)
    plain.task = None  # plain texts: no task spans, no markers
    if entities in ("gold", "none"):
        plain.linker = None
    encoded = plain(texts, text_pair=None if text_pairs is None else list(text_pairs),
                    padding=False, max_length=max_length, is_split_into_words=split,
                    return_offsets_mapping=True)
    features = [dict(zip(encoded.keys(), values)) for values in zip(*encoded.values())]
    states = _encode(model, features, selected, combine, batch_size, entities != "none",
                     processor.tokenizer.pad_token_id)
    if level == "token":
        return (states, [np.asarray(f["offset_mapping"], dtype=np.int64).reshape(-1, 2)
                         for f in features]) if return_offsets else states
    if level == "sentence":
        pooled = [s[0] if sentence_pooling == "cls" else s.mean(0) for s in states]
        return np.stack(pooled)
    spans = [token_char_spans(w) for w in words] if words is not None else [
        [m.span() for m in re.finditer(r"\S+", text)] for text in texts]
    return [_pool_words(s, f["offset_mapping"], w, word_pooling, n)
            for n, (s, f, w) in enumerate(zip(states, features, spans))]


def _inputs(texts: Any, words: Any) -> tuple[list[Any], bool]:
    """The processor's texts and whether they are split into words; empty input is an
    error."""
    if (texts is None) == (words is None):
        raise ValueError("give texts or words= (pre-split words per text), not "
                         + ("both" if words is not None else "neither"))
    if words is not None:
        if isinstance(words, str) or any(isinstance(w, str) for w in words):
            raise TypeError("words= expects one list of words per text")
        batch = [list(w) for w in words]
    else:
        batch = [texts] if isinstance(texts, str) else list(texts)
        wrong = [type(t).__name__ for t in batch if not isinstance(t, str)]
        if wrong:
            raise TypeError(f"texts must be str, got {wrong[0]} (pre-split words go to words=)")
    if not batch:
        raise ValueError("no texts to extract features from")
    return batch, words is not None


def _check(model: torch.nn.Module, layers: Sequence[int], combine: str, level: str,
           word_pooling: str, sentence_pooling: str, batch_size: int,
           text_pairs: Sequence[str] | None, size: int, return_offsets: bool) -> list[int]:
    """Every argument checked before any work; the layer indices made non-negative."""
    for name, value, known in (("combine", combine, COMBINES), ("level", level, LEVELS),
                               ("word_pooling", word_pooling, WORD_POOLINGS),
                               ("sentence_pooling", sentence_pooling, SENTENCE_POOLINGS)):
        if value not in known:
            raise ValueError(f"{name}={value!r}: expected one of {list(known)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if text_pairs is not None:
        if isinstance(text_pairs, str) or len(text_pairs) != size:
            raise ValueError(f"text_pairs must be a list with one text per text ({size})")
        if level == "word":
            raise ValueError("level='word' takes single texts; text_pairs work at the "
                             "token and sentence level")
    if return_offsets and level != "token":
        raise ValueError("return_offsets=True is for level='token' (words and sentences "
                         "are aligned to the input already)")
    count = model.config.num_hidden_layers
    if isinstance(layers, int) or not layers:
        raise ValueError(f"layers must be a non-empty sequence of indices, got {layers!r}")
    selected = []
    for index in layers:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not (
                -count - 1 <= index <= count):
            raise IndexError(f"layer index {index!r} is out of range: the model has {count} "
                             f"layers (hidden states 0..{count}, 0 = embeddings; or "
                             f"-1..-{count + 1}, -1 = last)")
        selected.append(int(index) % (count + 1))
    return selected


def _encode(model: torch.nn.Module, features: list[dict[str, Any]], layers: list[int],
            combine: str, batch_size: int, with_entities: bool, pad_id: int | None,
            ) -> list[np.ndarray]:
    """The combined layers of each feature's unpadded sequence, longest batches first."""
    base = model.base_model
    device = next(model.parameters()).device
    collate = ErnieKGCollator(pad_id or 0)
    keys = [k for k in _MODEL_KEYS if with_entities or k not in ("entity_ids", "entity_links")]
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    states: list[np.ndarray] = [np.empty(0)] * len(features)
    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                batch = collate([{k: features[i][k] for k in keys if k in features[i]}
                                 for i in chunk])
                hidden = base(**{k: v.to(device) for k, v in batch.items()},
                              output_hidden_states=True, return_dict=True).hidden_states
                picked = [hidden[n] for n in layers]
                combined = (torch.cat(picked, -1) if combine == "concat" else
                            torch.stack(picked).sum(0) if combine == "sum" else
                            torch.stack(picked).mean(0)).float().cpu().numpy()
                for row, i in enumerate(chunk):
                    states[i] = combined[row, :len(features[i]["input_ids"])].copy()
    finally:
        model.train(training)
    return states


def _pool_words(states: np.ndarray, offsets: Sequence[Sequence[int]],
                spans: Sequence[tuple[int, int]], pooling: str, text: int) -> np.ndarray:
    """One row per word: its first wordpiece's state or the mean of its wordpieces'."""
    starts = np.asarray([s for s, _ in spans], dtype=np.int64)
    pieces: list[list[int]] = [[] for _ in spans]
    for row, (start, end) in enumerate(offsets):
        word = int(np.searchsorted(starts, start, side="right")) - 1
        if end > start and word >= 0 and start < spans[word][1]:
            pieces[word].append(row)
    empty = [n for n, rows in enumerate(pieces) if not rows]
    if empty:
        last = max((n for n, rows in enumerate(pieces) if rows), default=-1)
        why = (f"words {empty[0]}-{len(pieces) - 1} of {len(pieces)} were truncated: raise "
               "max_length (up to the model's max_position_embeddings)" if empty[0] > last
               else f"word {empty[0]} gives the tokenizer no wordpieces")
        raise ErnieKGError(f"text {text}: {why}")
    if pooling == "first" or not pieces:
        return states[[rows[0] for rows in pieces]]
    return np.stack([states[rows].mean(0) for rows in pieces])
