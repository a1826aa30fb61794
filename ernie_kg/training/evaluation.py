"""Evaluation of a relation classifier on encoded features: metrics + per-label F1.

Why a plain loop and not ``Trainer.evaluate``: evaluation also runs outside training
(``ernie-kg evaluate``, one-call inference, experiment drivers), where building a
``Trainer`` with an output directory would be noise; this loop is the same maths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ernie_kg.data.collator import ErnieKGCollator
from ernie_kg.training.metrics import per_label_f1, relation_metrics

#: The model inputs a relation-classification forward takes.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "entity_ids", "entity_links",
                "marker_positions")


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    features: Sequence[Mapping[str, Any]],
    batch_size: int = 64,
    collator: ErnieKGCollator | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``[N, num_labels]`` float32 logits, in ``features`` order (batches sorted by length
    internally so padding stays small)."""
    collator = collator or ErnieKGCollator()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    ordered = [features[i] for i in order]
    loader = DataLoader(ordered, batch_size=batch_size, shuffle=False, collate_fn=collator)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="predict", unit="batch")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    try:
        for batch in loader:
            inputs = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
            chunks.append(model(**inputs).logits.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    logits = np.concatenate(chunks)
    result = np.empty_like(logits)
    result[np.asarray(order)] = logits
    return result


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the maximum so large logits do not overflow."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def evaluate_relations(
    model: torch.nn.Module,
    features: Sequence[Mapping[str, Any]],
    id2label: Mapping[int, str] | None = None,
    batch_size: int = 64,
    negative_label: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy, macro-F1, micro-F1 (+ TACRED-style ``micro_f1_no_negative`` when a
    negative label such as ``no_relation`` is present), ``per_label_f1`` and the
    predicted labels. Every feature needs ``labels``."""
    id2label = id2label or {int(k): v for k, v in model.config.id2label.items()}
    logits = predict_logits(model, features, batch_size, progress=progress)
    predicted = [id2label[int(i)] for i in logits.argmax(-1)]
    gold = [id2label[int(f["labels"])] for f in features]
    metrics: dict[str, Any] = relation_metrics(gold, predicted, negative_label)
    metrics["per_label_f1"] = per_label_f1(gold, predicted)
    metrics["num_examples"] = len(gold)
    metrics["predictions"] = predicted
    return metrics
