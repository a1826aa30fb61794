"""Fine-tuning on Hugging Face ``Trainer``: one function, sensible defaults, JSONL logs.

Why a thin layer over ``Trainer`` rather than a loop of our own: AdamW + linear warm-up,
gradient accumulation, length-grouped batches, per-epoch evaluation with best-checkpoint
selection, checkpoint rotation, resuming, seeding and progress bars all come with it, and
the models stay plain ``PreTrainedModel`` s that any ``Trainer`` recipe can use. What we
add: a separate learning rate for the freshly initialised knowledge modules (the
backbone is pre-trained, the entity-side weights are not), the metric function, a
callback that writes every log record to ``log.jsonl`` (learning curves), checkpoints
renamed into place once complete (a kill never leaves half of one), a resume that cuts
the log back to its checkpoint, and one readable console line per evaluation instead
of Trainer's raw log dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import (
    EvalPrediction,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ernie_kg.checks import check_settings
from ernie_kg.hub import no_save_progress_bars
from ernie_kg.memory import keep_freed_memory
from ernie_kg.modeling.entity_modules import (  # noqa: F401  (also this module's API)
    GATE_PARAMETERS,
    KNOWLEDGE_PARAMETERS,
    knowledge_role,
)
from ernie_kg.training.checkpoints import (
    STATE_FILE,
    finetune_staging_dir,
    publish_staged_checkpoint,
    refuse_earlier_finetune,
    remove_staging,
    resumable_finetune_checkpoint,
    truncate_finetune_log,
)
from ernie_kg.training.log_callbacks import (  # noqa: F401  (re-exported)
    JsonlLogCallback,
    LogLineCallback,
    ProgressLineCallback,
)
from ernie_kg.training.metrics import relation_metrics

#: Defaults sized for the packaged MiniLM on a CPU (see experiments/relation_classification.py).
DEFAULT_FINETUNE_SETTINGS: dict[str, Any] = {
    "epochs": 3,
    "learning_rate": 5e-5,
    # the fresh entity modules (None: learning_rate); 5e-4: the FewRel-16 recipe's
    "knowledge_learning_rate": 5e-4,
    "gate_learning_rate": None,  # None: knowledge_learning_rate (see ErnieKGTrainer)
    "batch_size": 32,
    "eval_batch_size": 64,
    "gradient_accumulation_steps": 1,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "seed": 0,
    "group_by_length": True,
    "save_total_limit": 1,
    "logging_steps": 10,
    "metric_for_best_model": "macro_f1",
    "progress": True,
}


def training_arguments(output_dir: str | Path, **settings: Any) -> TrainingArguments:
    """``TrainingArguments`` from :data:`DEFAULT_FINETUNE_SETTINGS` names; any other
    keyword is passed to ``TrainingArguments`` unchanged."""
    known = {k: settings.pop(k) for k in list(settings) if k in DEFAULT_FINETUNE_SETTINGS}
    s = {**DEFAULT_FINETUNE_SETTINGS, **known}
    s.pop("knowledge_learning_rate")
    s.pop("gate_learning_rate")
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=s["epochs"],
        learning_rate=s["learning_rate"],
        per_device_train_batch_size=s["batch_size"],
        per_device_eval_batch_size=s["eval_batch_size"],
        gradient_accumulation_steps=s["gradient_accumulation_steps"],
        warmup_steps=s["warmup_ratio"],  # a float in [0, 1) is a ratio of the total steps
        weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"],
        lr_scheduler_type="linear",
        optim="adamw_torch_fused",
        seed=s["seed"],
        data_seed=s["seed"],
        train_sampling_strategy="group_by_length" if s["group_by_length"] else "random",
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=s["logging_steps"],
        save_total_limit=s["save_total_limit"],
        load_best_model_at_end=True,
        metric_for_best_model=s["metric_for_best_model"],
        greater_is_better=True,
        disable_tqdm=not s["progress"],
        report_to="none",
        dataloader_pin_memory=False,
    )
    kwargs.update(settings)  # explicit TrainingArguments fields win
    return TrainingArguments(**kwargs)


class ErnieKGTrainer(Trainer):
    """``Trainer`` whose AdamW gives the fresh knowledge modules and the knowledge gates'
    openings their own learning rates, whose checkpoints appear only complete, and whose
    console shows short lines.

    The gates train at ``knowledge_learning_rate`` unless ``gate_learning_rate`` is given.
    AdamW moves a parameter by about one learning rate per step, so the rate sets how far
    a gate can open: at 5e-4 over FewRel-16's 420 steps every opening ended near
    ``tanh(0.1)``. Opening faster helps where the KG holds the evaluation facts and hurts
    where it does not (FewRel-16 dev, seed 0, gate lr 5e-4 / 2e-3 / 1e-2: closed KG 94.2 /
    97.5 / 98.0, open KG 89.5 / 87.0 / 83.0 against the baseline's 88.9;
    results/fewrel16_gate_dev.md), and the open KG is the one users have.
    """

    _staging: Path | None = None  # set while a checkpoint is being written

    def __init__(self, *args: Any, knowledge_learning_rate: float | None = None,
                 gate_learning_rate: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep_freed_memory()  # no page faults on every step's largest buffers (ernie_kg.memory)
        self.knowledge_learning_rate = knowledge_learning_rate
        self.gate_learning_rate = gate_learning_rate
        callbacks = self.callback_handler.callbacks  # readable lines, not raw log dicts
        for i, callback in enumerate(callbacks):
            if type(callback) is ProgressCallback:
                callbacks[i] = ProgressLineCallback()
            elif type(callback) is PrinterCallback:
                callbacks[i] = LogLineCallback()

    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is saved, Trainer's run directory is the staging directory.
        return str(self._staging) if self._staging else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        # Trainer writes checkpoint-N in place, so a kill mid-save would leave half of one:
        # let it write into run_dir/.tmp-checkpoint-N/checkpoint-N, point the best
        # checkpoint at the final path, rename it into place, then rotate (Trainer's own
        # rotation saw only the staging directory).
        run_dir = super()._get_output_dir(trial)
        staging = finetune_staging_dir(run_dir, self.state.global_step)
        if self.args.should_save:
            remove_staging(run_dir)  # left by a killed run
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            with no_save_progress_bars():  # not a "Writing model shards" bar per checkpoint
                super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every process has written its files
        target = Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged = staging / target.name
        best = self.state.best_model_checkpoint
        if best is not None and Path(best) == staged:
            self.state.best_model_checkpoint = str(target)
            if self.args.should_save:
                self.state.save_to_json(str(staged / STATE_FILE))
        if self.args.should_save:
            publish_staged_checkpoint(staging, target)
            rotate_checkpoints(run_dir, self.args.save_total_limit,
                               self.state.best_model_checkpoint, use_mtime=True)

    def _load_from_checkpoint(self, resume_from_checkpoint: str,
                              model: nn.Module | None = None) -> None:
        # Trainer reads the checkpoint's config.json with the *base* PreTrainedConfig
        # (only to compare versions); its validator rejects ErnieKGConfig's "sim"/"mix"/
        # "norm" layer_types. Read it with the model's own config class instead.
        import transformers.trainer as trainer_module

        config_class = type((model if model is not None else self.model).config)
        original = trainer_module.PreTrainedConfig
        trainer_module.PreTrainedConfig = config_class
        try:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        finally:
            trainer_module.PreTrainedConfig = original
        _restore_table(model if model is not None else self.model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        super()._load_best_model()  # weights only: a trained table's rows are beside them
        _restore_table(self.model, self.state.best_model_checkpoint)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        table = [k for k in load_result.missing_keys if k.endswith("entity_embeddings.weight")]
        if table and getattr(self.model.config, "entity_table", None):  # referred to
            load_result.missing_keys.remove(table[0])
        super()._issue_warnings_after_load(load_result)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's hook: AdamW with ``knowledge_learning_rate`` for the fresh knowledge
        modules and ``gate_learning_rate`` (default: the knowledge rate) for the gates'
        openings, which are never weight-decayed (zero is where a gate starts, not a
        prior to pull it back to)."""
        model = model if model is not None else self.model
        names = [name for name, p in model.named_parameters() if p.requires_grad]
        has_gates = any(self._role(name) == "gate" for name in names)
        if self.optimizer is not None or (self.knowledge_learning_rate is None
                                          and self.gate_learning_rate is None
                                          and not has_gates):
            return super().create_optimizer(model)
        rates = {"backbone": self.args.learning_rate,
                 "knowledge": self.knowledge_learning_rate or self.args.learning_rate,
                 "gate": self.gate_learning_rate or self.knowledge_learning_rate
                 or self.args.learning_rate}
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                role = self._role(name)
                decayed = name in decay and role != "gate"
                groups.setdefault((role, decayed), []).append(parameter)
        param_groups = [
            {"params": params, "lr": rates[role],
             "weight_decay": self.args.weight_decay if decayed else 0.0}
            for (role, decayed), params in sorted(groups.items())
        ]
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate,
                                       **optimizer_kwargs)
        return self.optimizer

    @staticmethod
    def _role(name: str) -> str:
        return knowledge_role(name) or "backbone"


def relation_compute_metrics(
    id2label: Mapping[int, str], negative_label: str | None = None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer``: logits -> :func:`relation_metrics`."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        predicted = np.asarray(logits).argmax(-1)
        gold = np.asarray(prediction.label_ids).reshape(-1)
        return relation_metrics([id2label[int(i)] for i in gold],
                                [id2label[int(i)] for i in predicted], negative_label)

    return compute


def typing_compute_metrics(
    threshold: float = 0.5,
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for multi-label typing: sigmoid > ``threshold`` ->
    :func:`~ernie_kg.training.metrics.typing_metrics` (strict accuracy, loose F1s)."""
    from ernie_kg.training.metrics import typing_metrics

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        probabilities = 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))
        return typing_metrics(np.asarray(prediction.label_ids) > 0.5, probabilities > threshold)

    return compute


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the trained model (best checkpoint loaded) and logs."""

    model: nn.Module
    trainer: Trainer
    metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    best_checkpoint: str | None = None
    seconds: float = 0.0


def finetune(
    model: nn.Module,
    train_dataset: Sequence[Mapping[str, Any]],
    eval_dataset: Sequence[Mapping[str, Any]] | None = None,
    *,
    output_dir: str | Path,
    data_collator: Callable | None = None,
    compute_metrics: Callable[[EvalPrediction], dict[str, float]] | None = None,
    id2label: Mapping[int, str] | None = None,
    resume_from_checkpoint: str | bool | None = None,
    log_path: str | Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    **settings: Any,
) -> FinetuneResult:
    """Fine-tune ``model`` with :class:`ErnieKGTrainer`; return the best model and metrics.

    ``settings`` are :data:`DEFAULT_FINETUNE_SETTINGS` names (``epochs``, ``learning_rate``,
    ``knowledge_learning_rate``, ``batch_size``, ...) or ``TrainingArguments`` fields.
    With ``eval_dataset`` the model is evaluated each epoch and the best
    ``metric_for_best_model`` (macro-F1) checkpoint is loaded at the end; for relation
    classification ``id2label`` is enough to get the metric function. Checkpoints go to
    ``output_dir/checkpoint-*``, each renamed into place once complete;
    ``resume_from_checkpoint=True`` resumes from the newest complete one
    (:func:`~ernie_kg.training.checkpoints.resumable_finetune_checkpoint`), and a resume
    drops the ``log_path`` lines written after its checkpoint.
    """
    check_settings(settings)
    if data_collator is None:
        from ernie_kg.data.collator import ErnieKGCollator

        data_collator = ErnieKGCollator()
    if compute_metrics is None and id2label is not None:
        compute_metrics = relation_compute_metrics(id2label)
    knowledge_lr = settings.get("knowledge_learning_rate",
                                DEFAULT_FINETUNE_SETTINGS["knowledge_learning_rate"])
    gate_lr = settings.get("gate_learning_rate")
    if eval_dataset is None:
        settings.setdefault("eval_strategy", "no")
        settings.setdefault("load_best_model_at_end", False)
    elif compute_metrics is None:
        settings.setdefault("metric_for_best_model", "loss")
        settings.setdefault("greater_is_better", False)
    if not resume_from_checkpoint:
        refuse_earlier_finetune(output_dir, log_path)  # never mix two runs' files
    args = _arguments(output_dir, settings)
    all_callbacks = list(callbacks)
    if log_path is not None:
        all_callbacks.append(JsonlLogCallback(log_path))
    trainer = ErnieKGTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=data_collator,
        compute_metrics=compute_metrics,
        callbacks=all_callbacks,
        knowledge_learning_rate=knowledge_lr,
        gate_learning_rate=gate_lr,
    )
    if resume_from_checkpoint is True:  # the newest complete one, not merely the newest
        with args.main_process_first(local=False, desc="finding the checkpoint"):
            resume_from_checkpoint = str(resumable_finetune_checkpoint(output_dir))
    if resume_from_checkpoint and log_path is not None and trainer.is_world_process_zero():
        truncate_finetune_log(log_path, resume_from_checkpoint)  # each step logged once
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = dict(output.metrics)
    metrics.update(_best_eval(trainer))
    return FinetuneResult(
        model=trainer.model,
        trainer=trainer,
        metrics=metrics,
        log_history=list(trainer.state.log_history),
        best_checkpoint=trainer.state.best_model_checkpoint,
        seconds=time.perf_counter() - started,
    )


def _best_eval(trainer: Trainer) -> dict[str, float]:
    """The eval record of the best checkpoint (the last one without selection)."""
    records = [r for r in trainer.state.log_history if any(k.startswith("eval_") for k in r)]
    if not records:
        return {}
    metric = trainer.args.metric_for_best_model
    key = metric if metric is None or metric.startswith("eval_") else f"eval_{metric}"
    best = trainer.state.best_metric
    chosen = [r for r in records if key in r and best is not None and r[key] == best]
    return dict((chosen or records)[-1])


def _arguments(output_dir: str | Path, settings: dict[str, Any]) -> TrainingArguments:
    settings = dict(settings)
    settings.pop("knowledge_learning_rate", None)
    settings.pop("gate_learning_rate", None)
    return training_arguments(output_dir, **settings)


def set_threads(threads: int | None) -> None:
    """Torch intra-op threads (the CPU cores one run may use); None leaves the default."""
    if threads:
        torch.set_num_threads(threads)


def _restore_table(model: nn.Module, checkpoint: str | None) -> None:
    if checkpoint and hasattr(model, "restore_entity_table"):
        model.restore_entity_table(checkpoint)
