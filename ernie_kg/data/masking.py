"""Pre-training corruptions: BERT masked LM (token, whole-word, whole-entity) and dEA.

Pure torch on ``[B, L]`` id tensors, so collators, tests and other projects can call
them directly; pass a ``torch.Generator`` for reproducible draws.

* :func:`mask_tokens` selects *units* with probability ``mlm_probability``: a unit is a
  token, a whole word (``word_ids``) or a whole entity mention (``entity_spans``, merged
  with the words it touches), so a word or mention is never split. Each selected token
  then becomes [MASK] (80%), a random token (10%) or stays (10%), as in BERT.
* :func:`dea_noise` corrupts token-entity alignments as ERNIE's dEA does: 5% get a
  random entity of the batch, 15% lose their entity, 80% are kept; every aligned token
  is labelled with its original entity row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ernie_kg.errors import SettingError

IGNORE_INDEX = -100

WordIds = torch.Tensor | Sequence[Sequence[int | None]]
EntitySpans = Sequence[Sequence[tuple[int, int]]]


@dataclass(frozen=True)
class MaskingVocab:
    """The few tokenizer facts masking needs: [MASK], vocabulary size, special ids."""

    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...] = ()

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> MaskingVocab:
        """From a Hugging Face tokenizer (``mask_token_id``, ``len``, ``all_special_ids``)."""
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token; masked LM needs one")
        return cls(int(tokenizer.mask_token_id), len(tokenizer),
                   tuple(int(i) for i in tokenizer.all_special_ids))


def _as_vocab(vocab: MaskingVocab | Any) -> MaskingVocab:
    return vocab if isinstance(vocab, MaskingVocab) else MaskingVocab.from_tokenizer(vocab)


def _word_id_tensor(word_ids: WordIds, shape: torch.Size) -> torch.Tensor:
    """``word_ids`` as a ``[B, L]`` long tensor with -1 for tokens outside any word."""
    if not isinstance(word_ids, torch.Tensor):
        word_ids = torch.tensor(
            [[-1 if w is None else int(w) for w in row] for row in word_ids], dtype=torch.long
        )
    word_ids = word_ids.reshape(shape[0], -1) if word_ids.dim() == 1 else word_ids
    if tuple(word_ids.shape) != tuple(shape):
        raise ValueError(f"word_ids has shape {tuple(word_ids.shape)}, expected {tuple(shape)}")
    return word_ids.long()


def masking_units(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    word_ids: WordIds | None = None,
    entity_spans: EntitySpans | None = None,
) -> torch.Tensor:
    """Unit index of every token (``[B, L]``, increasing over the flattened batch).

    Tokens of one word (same ``word_ids`` value, adjacent) or of one entity span share a
    unit; every non-maskable token is a unit of its own.
    """
    batch, length = input_ids.shape
    starts = torch.ones(batch, length, dtype=torch.bool, device=input_ids.device)
    if word_ids is not None:
        words = _word_id_tensor(word_ids, input_ids.shape).to(input_ids.device)
        starts[:, 1:] = (words[:, 1:] != words[:, :-1]) | (words[:, 1:] < 0)
    if entity_spans is not None:
        if len(entity_spans) != batch:
            raise ValueError(f"entity_spans has {len(entity_spans)} rows, expected {batch}")
        for row, spans in enumerate(entity_spans):
            for start, end in spans:
                if not 0 <= start < end <= length:
                    raise ValueError(
                        f"entity_spans[{row}]: span ({start}, {end}) is not a non-empty "
                        f"half-open token range within [0, {length})"
                    )
                starts[row, start + 1:end] = False
    starts |= ~maskable
    starts[:, 1:] |= ~maskable[:, :-1]
    starts[:, 0] = True
    return starts.reshape(-1).long().cumsum(0).reshape(batch, length) - 1


def mask_tokens(
    input_ids: torch.Tensor,
    vocab: MaskingVocab | Any,
    mlm_probability: float = 0.15,
    word_ids: WordIds | None = None,
    entity_spans: EntitySpans | None = None,
    generator: torch.Generator | None = None,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption; returns ``(corrupted input_ids, labels)``.

    Args:
        input_ids: ``[B, L]`` (or ``[L]``) token ids; special tokens (padding included)
            are never selected.
        vocab: a :class:`MaskingVocab` or a Hugging Face tokenizer.
        mlm_probability: chance that a unit (token, word or entity mention) is selected.
        word_ids: ``[B, L]`` word index of each token (-1 or None outside words), e.g.
            from ``encoding.word_ids()``: whole-word masking.
        entity_spans: per sequence, half-open ``(start, end)`` wordpiece spans of entity
            mentions, each masked as a whole.
        generator: the random source.
        mask_fraction / random_fraction: of the selected tokens, how many become [MASK]
            and how many a random non-special token; the rest stay unchanged.

    ``labels`` hold the original id at selected tokens and -100 elsewhere.
    """
    if not 0.0 <= mlm_probability <= 1.0:
        raise SettingError(f"mlm_probability={mlm_probability} must lie in [0, 1]")
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
        raise ValueError("mask_fraction and random_fraction must be >= 0 and sum to <= 1")
    vocab = _as_vocab(vocab)
    single = input_ids.dim() == 1
    ids = input_ids[None] if single else input_ids
    device = ids.device
    special = torch.tensor(vocab.special_ids, dtype=ids.dtype, device=device)
    maskable = ~torch.isin(ids, special)
    units = masking_units(ids, maskable, word_ids, entity_spans)
    num_units = int(units[-1, -1]) + 1
    chosen = torch.rand(num_units, generator=generator, device=device) < mlm_probability
    selected = chosen[units] & maskable

    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    draw = torch.rand(ids.shape, generator=generator, device=device)
    to_mask = selected & (draw < mask_fraction)
    to_random = selected & (draw >= mask_fraction) & (draw < mask_fraction + random_fraction)
    allowed = torch.arange(vocab.vocab_size, dtype=ids.dtype, device=device)
    allowed = allowed[~torch.isin(allowed, special)]
    picks = torch.randint(len(allowed), (int(to_random.sum()),), generator=generator,
                          device=device)
    corrupted = ids.clone()
    corrupted[to_mask] = vocab.mask_token_id
    corrupted[to_random] = allowed[picks]
    if single:
        return corrupted[0], labels[0]
    return corrupted, labels


class DeaNoise(NamedTuple):
    """Result of :func:`dea_noise`: model inputs and dEA targets."""

    entity_ids: torch.Tensor
    entity_labels: torch.Tensor


def dea_noise(
    entity_ids: torch.Tensor,
    replace_probability: float = 0.05,
    mask_probability: float = 0.15,
    candidates: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> DeaNoise:
    """ERNIE's denoising entity auto-encoder corruption of ``entity_ids`` (rows, 0 = none).

    Each aligned token independently: with ``replace_probability`` its entity becomes a
    random one from ``candidates`` (default: the entities of this batch, as ERNIE), with
    ``mask_probability`` it loses its entity (row 0), otherwise it is kept. Labels are
    the original rows at every aligned token and ``ignore_index`` elsewhere.
    """
    if replace_probability < 0 or mask_probability < 0 or (
        replace_probability + mask_probability > 1
    ):
        raise ValueError("replace_probability and mask_probability must be >= 0, sum <= 1")
    aligned = entity_ids > 0
    labels = torch.where(aligned, entity_ids, torch.full_like(entity_ids, ignore_index))
    if candidates is None:
        candidates = torch.unique(entity_ids[aligned])
    draw = torch.rand(entity_ids.shape, generator=generator, device=entity_ids.device)
    replace = aligned & (draw < replace_probability)
    drop = aligned & (draw >= replace_probability) & (draw < replace_probability
                                                           + mask_probability)
    noisy = entity_ids.clone()
    noisy[drop] = 0
    if bool(replace.any()):
        if candidates.numel() == 0:
            raise ValueError("dea_noise: no candidate entities to draw replacements from")
        picks = torch.randint(candidates.numel(), (int(replace.sum()),), generator=generator,
                              device=entity_ids.device)
        noisy[replace] = candidates.to(entity_ids.device, entity_ids.dtype)[picks]
    return DeaNoise(noisy, labels)
