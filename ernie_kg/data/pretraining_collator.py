"""Batches of prepared pre-training instances with MLM, NSP and dEA targets.

Why per-instance random streams: each instance's masking and dEA noise are drawn from a
generator seeded by ``(seed, epoch, instance index)``, so a batch is corrupted the same
way however the global batch is split over processes or gradient-accumulation steps,
and a resumed run draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ernie_kg.data.masking import IGNORE_INDEX, MaskingVocab, dea_noise, mask_tokens


def entity_row_map(entity_vocab: Sequence[str], row_of: Any) -> np.ndarray:
    """Data-set entity index (1-based) -> model row (0 when the table lacks the entity)."""
    rows = np.zeros(len(entity_vocab) + 1, dtype=np.int64)
    for index, entity_id in enumerate(entity_vocab, start=1):
        try:
            rows[index] = row_of(entity_id)
        except KeyError:
            rows[index] = 0
    return rows


@dataclass
class PretrainingCollator:
    """Pads instances and applies MLM (token / whole-word / whole-entity) and dEA noise.

    ``whole_word`` masks all wordpieces of a word together (the words are the spaCy
    tokens recorded at preparation: English words, or jieba words for Chinese);
    ``whole_entity`` also keeps each linked mention in one piece.
    """

    vocab: MaskingVocab
    entity_rows: np.ndarray
    pad_token_id: int = 0
    mlm_probability: float = 0.15
    whole_word: bool = True
    whole_entity: bool = False
    dea: bool = True
    dea_replace_probability: float = 0.05
    dea_mask_probability: float = 0.15
    seed: int = 0

    def generator(self, instance: dict[str, Any]) -> torch.Generator:
        """A generator seeded by the instance alone, so its noise never depends on the batch."""
        key = (self.seed * 1_000_003 + instance.get("epoch", 0)) * 1_000_000_007
        return torch.Generator().manual_seed((key + int(instance["index"])) % (2**63 - 1))

    def __call__(self, instances: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad ``instances`` and corrupt them (MLM, dEA) into one batch of tensors."""
        width = max(len(item["input_ids"]) for item in instances)
        batch = len(instances)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros(batch, width, dtype=torch.long)
        attention_mask = torch.zeros(batch, width, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        entity_ids = torch.zeros(batch, width, dtype=torch.long)
        entity_labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        candidates = torch.from_numpy(np.unique(np.concatenate(
            [self.entity_rows[item["entity_ids"]] for item in instances]
        )))
        candidates = candidates[candidates > 0]
        for n, item in enumerate(instances):
            length = len(item["input_ids"])
            generator = self.generator(item)
            ids = torch.as_tensor(np.asarray(item["input_ids"], dtype=np.int64))
            words = torch.as_tensor(np.asarray(item["word_ids"], dtype=np.int64))
            spans = _mention_spans(item["mention_ids"]) if self.whole_entity else None
            masked, mlm_labels = mask_tokens(
                ids[None], self.vocab, self.mlm_probability,
                word_ids=words[None] if self.whole_word else None,
                entity_spans=[spans] if spans is not None else None,
                generator=generator,
            )
            input_ids[n, :length] = masked[0]
            labels[n, :length] = mlm_labels[0]
            token_type_ids[n, :length] = torch.as_tensor(
                np.asarray(item["token_type_ids"], dtype=np.int64))
            attention_mask[n, :length] = 1
            rows = torch.as_tensor(self.entity_rows[np.asarray(item["entity_ids"])])
            if self.dea and bool((rows > 0).any()):
                noisy = dea_noise(rows[None], self.dea_replace_probability,
                                  self.dea_mask_probability, candidates, generator)
                entity_ids[n, :length] = noisy.entity_ids[0]
                entity_labels[n, :length] = noisy.entity_labels[0]
            else:
                entity_ids[n, :length] = rows
        next_sentence_label = torch.tensor(
            [int(item["next_sentence_label"]) for item in instances], dtype=torch.long)
        result = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "entity_ids": entity_ids,
            "labels": labels,
            "next_sentence_label": next_sentence_label,
        }
        if self.dea:
            result["entity_labels"] = entity_labels
        return result


def _mention_spans(mention_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous runs of equal non-negative mention ids as half-open token spans."""
    spans: list[tuple[int, int]] = []
    start = None
    values = [int(v) for v in mention_ids]
    for position, value in enumerate([*values, -1]):
        if start is not None and (value != values[start]):
            spans.append((start, position))
            start = None
        if start is None and value >= 0:
            start = position
    return spans
