"""Who learns how fast in pre-training: parameter roles, learning rates, head warm-up.

Why: the backbone is pre-trained, the heads (MLM transform, NSP, dEA) and the knowledge
modules are not. Trained together at one rate from step 0, the fresh heads' large,
random gradients reach the encoder first (150 steps of MLM + dEA at 1e-4 from MiniLM
cost 1.3 FewRel-16 macro-F1, results/pretrain_dea.md). So:

* **Head warm-up** (``head_warmup_steps``): the backbone (embeddings, encoder, pooler,
  the word embeddings the MLM decoder is tied to) gets no gradient, so AdamW neither
  moves it nor keeps moments for it, while the heads, the knowledge modules and the
  gates learn on the frozen states. Its rate then warms up and decays from there.
* **Rates by role**: ``learning_rate`` for the backbone, ``head_learning_rate`` for the
  heads and the knowledge modules (fresh weights), and ``gate_learning_rate`` (1e-2, no
  weight decay) for the knowledge gates' openings, which start closed and move about one
  rate per step (:class:`~ernie_kg.training.finetuning.ErnieKGTrainer` says why) - so
  dEA actually trains the entity path before fine-tuning trusts it.

Everything is a function of the step and the settings, so a resume and N processes
stay exact.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from ernie_kg.data.pretraining import PretrainingShards
from ernie_kg.errors import SettingError
from ernie_kg.modeling.entity_modules import GATE_PARAMETERS, knowledge_role
from ernie_kg.modeling.mlm_head import set_unigram_bias


def parameter_role(name: str, prefix: str = "ernie") -> str:
    """``gate``, ``knowledge`` (fresh fusion modules), ``backbone`` (the rest of the
    encoder under ``prefix``) or ``head`` (everything outside it)."""
    role = knowledge_role(name)
    if role is not None:
        return role
    return "backbone" if name.startswith(prefix + ".") else "head"


def pretraining_optimizer(model: nn.Module, settings: Any) -> torch.optim.Optimizer:
    """AdamW with one group per (role, decayed); each group's ``role`` is kept in it.

    With ``settings.freeze_word_embeddings`` the word embeddings get no gradient. Why:
    the MLM decoder is tied to them, and its softmax pushes every vocabulary row's logit
    down on every step; AdamW turns those small, same-signed gradients into full-size
    steps, so the rows of tokens the corpus never contains move most, nearly all in one
    common direction (measured on MiniLM over SemEval-2014's training sentences, 60
    steps: drift 1.8% of their norm against 1.2% for the corpus' own tokens, 99% of it
    shared). A small domain corpus thus shifts the input of every token it never saw.
    ``settings.held_bottom_layers`` holds the embeddings and the first N encoder layers.
    """
    if settings.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    prefix = getattr(model, "base_model_prefix", "ernie")
    _hold_bottom_layers(model, prefix, settings.held_bottom_layers)
    rates = {"backbone": settings.learning_rate, "head": settings.head_learning_rate,
             "knowledge": settings.head_learning_rate, "gate": settings.gate_learning_rate}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            role = parameter_role(name, prefix)
            decayed = role != "gate" and parameter.ndim >= 2 and "LayerNorm" not in name
            groups.setdefault((role, decayed), []).append(parameter)
    return torch.optim.AdamW(
        [{"params": params, "lr": rates[role], "role": role,
          "weight_decay": settings.weight_decay if decayed else 0.0}
         for (role, decayed), params in sorted(groups.items())],
        lr=settings.learning_rate)


def _hold_bottom_layers(model: nn.Module, prefix: str, layers: int) -> None:
    """No gradient for the embeddings and encoder layers 0 .. ``layers`` - 1; a count
    beyond the model's layers is an error, not a silent "all of them"."""
    if not layers:
        return
    starts = (f"{prefix}.embeddings.", *(f"{prefix}.encoder.layer.{i}." for i in range(layers)))
    found = set()
    for name, parameter in model.named_parameters():
        if name.startswith(starts):
            parameter.requires_grad_(False)
            found.update(start for start in starts if name.startswith(start))
    if len(found) < len(starts):
        raise SettingError(f"held_bottom_layers={layers}: the model has no "
                           f"{sorted(set(starts) - found)[0]}* parameters")


def _factor(step: int, start: int, warmup_ratio: float, total: int) -> float:
    """0 before ``start``; then linear warm-up over ``warmup_ratio`` of the remaining
    steps (the first step already > 0) and linear decay to 0 at ``total``."""
    if step < start:
        return 0.0
    step, span = step - start, total - start
    warmup = int(math.ceil(warmup_ratio * span))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (span - step) / max(1, span - warmup))


def pretraining_scheduler(optimizer: torch.optim.Optimizer, settings: Any
                          ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per group: the backbone's schedule starts after ``head_warmup_steps``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [
        partial(_factor, start=settings.head_warmup_steps if g["role"] == "backbone" else 0,
                warmup_ratio=settings.warmup_ratio, total=settings.max_steps)
        for g in optimizer.param_groups])


def hold_backbone(optimizer: torch.optim.Optimizer, step: int, settings: Any) -> None:
    """During the head warm-up, drop the backbone's gradients (call after backward):
    AdamW skips a parameter without one, so the backbone stays exactly as loaded."""
    if step < settings.head_warmup_steps:
        for group in optimizer.param_groups:
            if group["role"] == "backbone":
                for parameter in group["params"]:
                    parameter.grad = None


def schedule_record(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, float]:
    """Each role's current rate and the gates' mean opening, for the log."""
    record = {("learning_rate" if g["role"] == "backbone" else f"{g['role']}_learning_rate"):
              g["lr"] for g in optimizer.param_groups}
    openings = [float(torch.tanh(p.detach())) for name, p in model.named_parameters()
                if any(part in name for part in GATE_PARAMETERS)]
    if openings:
        record["gate_opening"] = sum(openings) / len(openings)
    return record


def start_mlm_prior(model: nn.Module, data: PretrainingShards, vocab_size: int,
                    special_ids: tuple[int, ...], max_instances: int = 20_000) -> bool:
    """Give an untrained MLM head (output bias all 0) the data's log token frequencies,
    counted over up to ``max_instances`` evenly spaced instances; True when it did."""
    predictions = getattr(getattr(model, "cls", None), "predictions", None)
    if predictions is None or bool(predictions.bias.detach().any()):
        return False
    counts = np.zeros(vocab_size, dtype=np.int64)
    stride = max(1, len(data) // max_instances)
    for index in range(0, len(data), stride):
        counts += np.bincount(data[index]["input_ids"], minlength=vocab_size)[:vocab_size]
    counts[list(special_ids)] = 0  # never a masked-LM target
    set_unigram_bias(predictions, torch.from_numpy(counts))
    return True

