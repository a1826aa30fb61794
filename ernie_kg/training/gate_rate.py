"""How fast the knowledge gates open, chosen on dev: how far a task should trust its KG.

Why: the gates start closed (the untrained model is its backbone) and open at their own
learning rate. No single rate suits every KG. Where the KG holds the facts of the pairs
the model is scored on (ERNIE's closed setting), a fast rate (1e-2) lets the entities in
and gains most: FewRel-16 dev +9.1 macro-F1 over the text-only twin, against +5.3 at the
knowledge modules' rate (5e-4). Where it does not (the open setting, what users meet),
the same fast rate trusts facts the test pairs lack and falls 5.9 below the twin, while
5e-4 gains +0.6 (results/fewrel16_gate_dev.md). Which case a user is in is a property of
their KG and data, and dev shows it: so by default both rates are trained, from the same
start with the same seed and batches (twins). The first, gentler rate is kept unless the
other scores higher on dev on at least 95% of paired bootstrap resamples of the dev set
(:mod:`.dev_confidence`): a gap the dev set cannot resolve is noise, and following it
trusts the KG further than the data shows (SemEval-2010, where the KG has little to say:
the fast rate led on dev by 0.2-0.9 macro-F1 on every seed and, kept, trailed the twin
on test on two seeds of three; README, results/semeval.md). The closed KG's gaps (3-9
points) are far beyond noise (FewRel-16 closed: ahead on 100% of resamples, 3 seeds).
That costs a second training run; a single rate (``gate_learning_rate=<float>``, or
None: the knowledge modules' rate) trains once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import EvalPrediction

from ernie_kg.errors import ErnieKGError, SettingError
from ernie_kg.modeling.entity_modules import GATE_PARAMETERS
from ernie_kg.training.checkpoints import refuse_earlier_finetune, truncate_log
from ernie_kg.training.dev_confidence import paired_bootstrap_wins
from ernie_kg.training.finetuning import DEFAULT_FINETUNE_SETTINGS, FinetuneResult, finetune

__all__ = ["CHOOSE_ON_DEV", "DEFAULT_GATE_RATES", "SWITCH_CONFIDENCE",
           "finetune_choosing_gate_rate", "finetune_started", "gate_rate_candidates",
           "parse_gate_rate", "rate_to_keep"]

#: The default: choose among :data:`DEFAULT_GATE_RATES` on dev.
CHOOSE_ON_DEV = "dev"
#: None is the knowledge modules' rate (``knowledge_learning_rate``, 5e-4 by default).
DEFAULT_GATE_RATES: tuple[float | None, ...] = (None, 1e-2)
#: A later candidate replaces the first only when it wins on this share of the paired
#: bootstrap resamples of dev (a one-sided 95% confidence that it is better).
SWITCH_CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 1000
#: A candidate's checkpoints sit in ``<finetune output_dir>/gate-lr-<rate>/``.
CANDIDATE_PREFIX = "gate-lr-"


def gate_rate_candidates(setting: Any, model: nn.Module, can_choose: bool = True
                         ) -> tuple[float | None, ...]:
    """The gate rates to train: ``setting`` is :data:`CHOOSE_ON_DEV`, one rate (a float,
    or None) or a sequence of rates. One candidate when there is nothing to choose: a
    model without gates (``knowledge_gate="none"``), or not ``can_choose`` (no dev set;
    a model trained without entities, whose gates never move)."""
    if setting == CHOOSE_ON_DEV:
        rates: tuple[float | None, ...] = DEFAULT_GATE_RATES
    elif setting is None or isinstance(setting, (int, float)):
        rates = (setting,)
    elif isinstance(setting, Sequence) and not isinstance(setting, str) and setting:
        rates = tuple(setting)
    else:
        raise SettingError(f"gate_learning_rate={setting!r}: expected {CHOOSE_ON_DEV!r} "
                           "(chosen on dev), a rate, None (the knowledge modules' rate) or "
                           "a list of rates")
    for rate in rates:
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not 0 < rate < float("inf")):
            raise SettingError(f"gate_learning_rate: {rate!r} is not a positive rate")
    has_gates = any(any(g in name for g in GATE_PARAMETERS) for name, _ in
                    model.named_parameters())
    if not (has_gates and can_choose):
        return rates[:1]
    return tuple(dict.fromkeys(rates))  # each rate once, in order


def parse_gate_rate(text: str) -> Any:
    """A command line's gate rate: ``dev`` (chosen on dev), ``knowledge`` (the knowledge
    modules' rate), a rate, or rates separated by commas (chosen on dev)."""
    parts = [part.strip() for part in text.split(",")]
    if parts == [CHOOSE_ON_DEV]:
        return CHOOSE_ON_DEV
    try:
        rates = [None if part == "knowledge" else float(part) for part in parts]
    except ValueError:
        raise SettingError(f"gate rate {text!r}: expected {CHOOSE_ON_DEV!r}, 'knowledge', a "
                           "positive number, or several separated by commas") from None
    gate_rate_candidates(rates, nn.Module(), can_choose=False)  # checks each rate
    return rates[0] if len(rates) == 1 else rates


def finetune_started(checkpoints: str | Path) -> bool:
    """Does ``checkpoints`` (a fine-tuning output_dir) hold a checkpoint, of one run or of
    a gate-rate candidate? What a caller asks before resuming."""
    checkpoints = Path(checkpoints)
    return any(checkpoints.glob("checkpoint-*")) or any(
        checkpoints.glob(f"{CANDIDATE_PREFIX}*/checkpoint-*"))


def finetune_choosing_gate_rate(
    model: nn.Module, train_dataset: Any, eval_dataset: Any, *, output_dir: str | Path,
    gate_learning_rate: Any = CHOOSE_ON_DEV, log_path: str | Path | None = None,
    resume_from_checkpoint: str | bool | None = None, knowledge: bool = True,
    **settings: Any,
) -> FinetuneResult:
    """:func:`~ernie_kg.training.finetuning.finetune` once per gate rate
    (:func:`gate_rate_candidates`), each from the model's starting weights, keeping the
    first unless a later one is better on dev (``metric_for_best_model``) with
    :data:`SWITCH_CONFIDENCE` (then the best such one); ``knowledge=False``: the data
    carries no entities. With one candidate this is ``finetune`` itself. The result's
    metrics add ``gate_learning_rate`` (the rate kept), ``gate_learning_rate_dev`` (each
    candidate's best dev score: Trainer's evaluation, so with the dev features' entities,
    e.g. the dataset's ids for the task spans under ``train_entities="both"``) and
    ``gate_learning_rate_confidence`` (for each later candidate, the share of dev
    resamples on which it beats the first). A resume resumes
    each candidate that has a checkpoint (a finished one trains nothing) and starts the
    others; each candidate logs to ``<log>.gate-lr-<rate>.jsonl``, and the kept one's
    records are copied into ``log_path``."""
    rates = gate_rate_candidates(gate_learning_rate, model,
                                 knowledge and eval_dataset is not None)
    knowledge_rate = settings.get("knowledge_learning_rate",
                                  DEFAULT_FINETUNE_SETTINGS["knowledge_learning_rate"]) \
        or settings.get("learning_rate", DEFAULT_FINETUNE_SETTINGS["learning_rate"])
    resolved = {_tag(r): r for r in (knowledge_rate if r is None else r for r in rates)}
    if len(resolved) == 1:  # one run, with the setting as given (None stays None)
        return finetune(model, train_dataset, eval_dataset, output_dir=output_dir,
                        log_path=log_path, resume_from_checkpoint=resume_from_checkpoint,
                        gate_learning_rate=rates[0], **settings)
    rates = tuple(resolved.values())  # one folder each
    _check_before_the_first_run(output_dir, log_path, resume_from_checkpoint, settings)
    # Keep a finished candidate's newest checkpoint beside its best (Trainer deletes it
    # when the limit is 1): a resume then starts at its last step and trains nothing.
    limit = settings.get("save_total_limit", DEFAULT_FINETUNE_SETTINGS["save_total_limit"])
    if limit is not None and limit < 2:  # None keeps every checkpoint
        settings["save_total_limit"] = 2
    callbacks = list(settings.pop("callbacks", ()))
    start = _trainable_state(model)
    finished: dict[str, tuple[FinetuneResult, dict[str, torch.Tensor]]] = {}
    scores: dict[str, float] = {}
    dev_predictions: dict[str, EvalPrediction] = {}
    seconds = 0.0
    for rate in rates:
        _load_trainable_state(model, start)
        directory = Path(output_dir) / f"{CANDIDATE_PREFIX}{_tag(rate)}"
        started = any(directory.glob("checkpoint-*"))
        candidate_log = _candidate_log(log_path, rate)
        if candidate_log is not None and not started:  # killed before its first checkpoint
            truncate_log(candidate_log, 0)
        result = finetune(model, train_dataset, eval_dataset, output_dir=directory,
                          log_path=candidate_log,
                          resume_from_checkpoint=True if resume_from_checkpoint and started
                          else None, callbacks=copy.deepcopy(callbacks),
                          gate_learning_rate=rate, **settings)
        seconds += result.seconds
        scores[_tag(rate)] = _dev_score(result)
        output = result.trainer.predict(eval_dataset)  # the best epoch's dev predictions
        dev_predictions[_tag(rate)] = EvalPrediction(output.predictions, output.label_ids)
        _release_optimizer(result)
        finished[_tag(rate)] = (result, _trainable_state(result.model))
    confidence = _confidence_over_the_first(result, dev_predictions)
    kept = rate_to_keep(scores, confidence)
    rate, (result, weights) = resolved[kept], finished[kept]
    _load_trainable_state(result.model, weights)
    if log_path is not None:
        _copy_log(_candidate_log(log_path, rate), Path(log_path))
    result.metrics.update(gate_learning_rate=rate, gate_learning_rate_dev=scores,
                          gate_learning_rate_confidence=confidence)
    result.seconds = seconds
    if settings.get("progress", True):
        dev = ", ".join(f"{tag}: {score:.4f}" for tag, score in scores.items())
        sure = ", ".join(f"{tag}: {share:.2f}" for tag, share in confidence.items())
        print(f"gate rate {kept} kept on dev ({dev}; share of resamples on which each "
              f"beats {_tag(rates[0])}: {sure})")
    return result


def rate_to_keep(scores: dict[str, float], confidence: dict[str, float]) -> str:
    """The candidate kept: the first of ``scores`` (dev score per candidate, larger
    better), unless later ones beat it on at least :data:`SWITCH_CONFIDENCE` of the dev
    resamples (``confidence``); then the one of those with the best dev score."""
    kept = next(iter(scores))
    for tag, share in confidence.items():
        if share >= SWITCH_CONFIDENCE and scores[tag] > scores[kept]:
            kept = tag
    return kept


def _confidence_over_the_first(result: FinetuneResult,
                               dev_predictions: dict[str, EvalPrediction]) -> dict[str, float]:
    """For each candidate after the first, the share of paired bootstrap resamples of dev
    on which it beats the first (``metric_for_best_model``, larger or smaller better)."""
    args, compute = result.trainer.args, result.trainer.compute_metrics
    first, *later = dev_predictions
    if compute is None or not args.metric_for_best_model:
        raise SettingError("choosing the gate rate on dev needs compute_metrics and "
                           "metric_for_best_model")
    shares = {}
    for tag in later:
        higher, lower = dev_predictions[tag], dev_predictions[first]
        if not args.greater_is_better:  # the challenger wins where it scores lower
            higher, lower = lower, higher
        shares[tag] = paired_bootstrap_wins(compute, args.metric_for_best_model, higher,
                                            lower, samples=BOOTSTRAP_SAMPLES)
    return shares


def _check_before_the_first_run(output_dir: str | Path, log_path: str | Path | None,
                                resume: Any, settings: dict[str, Any]) -> None:
    """What would fail only after a whole candidate has trained, refused first."""
    if resume not in (None, False, True):
        raise SettingError("resume_from_checkpoint: with gate rates chosen on dev, pass "
                           "True (each candidate resumes from its newest checkpoint)")
    if settings.get("eval_strategy", "epoch") == "no" or \
            settings.get("load_best_model_at_end") is False:
        raise SettingError("choosing the gate rate on dev needs an evaluation each epoch "
                           "and the best epoch loaded at the end: pass one gate rate instead")
    output_dir = Path(output_dir)
    if any(output_dir.glob("checkpoint-*")):
        raise ErnieKGError(f"{output_dir} holds a fine-tuning run with one gate rate: resume "
                           "it with that rate (--gate-lr RATE), or use another directory")
    if resume and not finetune_started(output_dir):
        raise ErnieKGError(f"{output_dir}: nothing to resume (no checkpoint of any gate-rate "
                           "candidate)")
    if not resume:  # a fresh run never writes over an earlier one
        refuse_earlier_finetune(output_dir, log_path)
        for candidate in output_dir.glob(f"{CANDIDATE_PREFIX}*"):
            refuse_earlier_finetune(candidate, None)


def _release_optimizer(result: FinetuneResult) -> None:
    """Drop a finished candidate's AdamW moments (twice its weights) before the next one."""
    trainer = result.trainer
    trainer.optimizer = trainer.lr_scheduler = None
    trainer.accelerator.free_memory()


def _tag(rate: float) -> str:
    return f"{rate:g}"


def _candidate_log(log_path: str | Path | None, rate: float) -> Path | None:
    if log_path is None:
        return None
    log_path = Path(log_path)
    return log_path.with_name(f"{log_path.stem}.{CANDIDATE_PREFIX}{_tag(rate)}"
                              f"{log_path.suffix or '.jsonl'}")


def _dev_score(result: FinetuneResult) -> float:
    """The candidate's best dev score, oriented so that larger is better."""
    args, best = result.trainer.args, result.trainer.state.best_metric
    if best is None:
        raise SettingError("choosing the gate rate on dev needs an evaluation each epoch "
                           "(eval_strategy) and metric_for_best_model")
    return float(best) if args.greater_is_better else -float(best)


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the weights training changes (a frozen entity table is left out: it can
    be millions of rows, and it stays as it is)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()
            if p.requires_grad}


def _load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


def _copy_log(source: Path | None, target: Path) -> None:
    """The kept candidate's training records into ``target`` (its earlier training
    records dropped first, so copying again after a kill does not repeat them)."""
    truncate_log(target, 0)
    if source is None or not source.is_file():
        return
    with open(source, encoding="utf-8") as lines, open(target, "a", encoding="utf-8") as out:
        out.writelines(lines)
