"""Dynamic padding of ERNIE-KG features: pad each batch only to its own longest sequence.

Why our own collator: ``DataCollatorWithPadding`` pads through the tokenizer, which knows
nothing of ``entity_ids`` (padded with 0, the "no entity" row) or ``marker_positions``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

#: Per-token keys and the value their padding takes.
SEQUENCE_KEYS = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0, "entity_ids": 0,
                 "entity_links": 0}
#: Keys that never reach the model (bookkeeping kept on a feature).
DROPPED_KEYS = ("length",)


class ErnieKGCollator:
    """Pads ``input_ids`` (``pad_token_id``), ``attention_mask``/``token_type_ids`` and
    ``entity_ids`` (0) to the batch's longest sequence (rounded up to
    ``pad_to_multiple_of``); stacks ``marker_positions`` and ``labels`` (class ids,
    multi-hot float rows for multi-label typing, or float scores for regression)."""

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad and stack ``features`` into one batch of tensors."""
        if not features:
            raise ValueError("cannot collate an empty batch")
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            multiple = self.pad_to_multiple_of
            longest = (longest + multiple - 1) // multiple * multiple
        batch: dict[str, torch.Tensor] = {}
        for key, pad in SEQUENCE_KEYS.items():
            if key not in features[0]:
                continue
            value = self.pad_token_id if pad is None else pad
            rows = torch.full((len(features), longest), value, dtype=torch.long)
            for i, feature in enumerate(features):
                sequence = torch.as_tensor(feature[key], dtype=torch.long)
                rows[i, : len(sequence)] = sequence
            batch[key] = rows
        if "marker_positions" in features[0]:
            batch["marker_positions"] = torch.stack(
                [torch.as_tensor(f["marker_positions"], dtype=torch.long) for f in features]
            )
        if "labels" in features[0] and features[0]["labels"] is not None:
            labels = [torch.as_tensor(f["labels"]) for f in features]
            stacked = torch.stack(labels)
            # float rows (multi-label) or float scores (regression) stay float
            batch["labels"] = (stacked.float() if stacked.dim() > 1
                               or stacked.is_floating_point() else stacked.long())
        for key in features[0]:
            if key not in batch and key not in DROPPED_KEYS and key != "labels":
                batch[key] = torch.stack([torch.as_tensor(f[key]) for f in features])
        return batch
