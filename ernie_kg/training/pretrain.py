"""Knowledge-aware pre-training loop: MLM + NSP + dEA, resumable, single or distributed.

Why a hand-written loop rather than ``Trainer``: exact resume and exact equivalence
between one process and N processes need control over three things ``Trainer`` hides:

* **Data order is a function of the step.** Epoch ``e`` visits the instances in the
  permutation drawn from ``seed + e``; optimizer step ``s`` takes the next ``global_batch``
  of them. A checkpoint therefore needs only the step number to resume the stream.
* **Corruption is a function of the instance** (:class:`PretrainingCollator`): every
  process collates the whole global batch (cheap) and keeps its own rows, so the masks,
  the dEA noise and the dEA candidate set (the entities of the global batch, as ERNIE's
  collate_fn) do not depend on the number of processes.
* **Losses are normalised over the global batch**: each micro-batch's mean losses are
  reweighted by its share of the global batch's masked tokens / aligned entities /
  pairs, so summing over accumulation steps and averaging over processes (DDP) gives
  exactly the global mean. Dropout draws from a generator reseeded at every step (so a
  resume is exact); its masks depend on the process layout, so N processes match one
  process exactly only without dropout, and in expectation with it.

Checkpoints (model, optimizer, scheduler, step) are written to a temporary directory and
renamed into place, so a killed run never leaves a half-written checkpoint; the run's
files are :mod:`ernie_kg.training.checkpoints`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ernie_kg.checks import check_number, check_settings
from ernie_kg.data.masking import IGNORE_INDEX, MaskingVocab
from ernie_kg.data.pretraining import PretrainingShards
from ernie_kg.data.pretraining_collator import PretrainingCollator, entity_row_map
from ernie_kg.errors import ErnieKGError, SettingError
from ernie_kg.memory import keep_freed_memory
from ernie_kg.training.checkpoints import (  # latest_checkpoint: also this module's API
    LOG_FILE,
    append_log,
    check_resume,
    latest_checkpoint,
    plot_log,
    restore_checkpoint,
    save_checkpoint,
    truncate_log,
    write_finished,
)
from ernie_kg.training.pretrain_schedule import (
    hold_backbone,
    pretraining_optimizer,
    pretraining_scheduler,
    schedule_record,
    start_mlm_prior,
)

logger = logging.getLogger(__name__)

OBJECTIVES = ("mlm", "nsp", "dea")


@dataclass
class PretrainingSettings:
    """Every knob of a run; saved with each checkpoint and checked on resume. Rates and
    warm-up by role: :mod:`ernie_kg.training.pretrain_schedule`."""

    max_steps: int = 1000
    batch_size: int = 32  # global batch: per process x processes x accumulation
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5  # the backbone's (ERNIE's run_pretrain.py)
    head_learning_rate: float = 1e-3  # the fresh heads and knowledge modules
    gate_learning_rate: float = 1e-2  # gates open here so dEA trains the entity path
    head_warmup_steps: int = 50  # backbone frozen while the heads learn its states
    #: hold the word embeddings (and the MLM decoder tied to them) as loaded: see
    #: :func:`~ernie_kg.training.pretrain_schedule.pretraining_optimizer`
    freeze_word_embeddings: bool = False
    #: hold the embeddings and the first N encoder layers as loaded (on the packaged
    #: MiniLM this alone did not keep post-training from costing fine-tuning dev score:
    #: results/absa_post_probes.md)
    held_bottom_layers: int = 0
    #: domain post-training only: how far the saved backbone moves from the loaded
    #: weights to the trained ones (1: all the way; see ``interpolate_backbone``)
    interpolation: float = 1.0
    mlm_prior: bool = True  # an untrained MLM head's bias: the data's log token counts
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    save_steps: int = 200
    save_total_limit: int = 2
    logging_steps: int = 10
    seed: int = 0
    mlm_probability: float = 0.15
    whole_word_masking: bool = True
    whole_entity_masking: bool = False
    dea: bool = True
    nsp: bool = True
    mixed_precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; or "no"
    progress: bool = True
    #: least share of the data's entities with a row in the model's table (less: a
    #: warning; none, with entities in the data: an error)
    min_entity_coverage: float = 0.5

    def __post_init__(self) -> None:
        check_settings(vars(self))
        check_number("mlm_probability", self.mlm_probability, 0, True, 1)
        check_number("save_total_limit", self.save_total_limit, 1)
        check_number("min_entity_coverage", self.min_entity_coverage, 0, False, 1)
        check_number("head_learning_rate", self.head_learning_rate, 0, True)
        check_number("head_warmup_steps", self.head_warmup_steps, 0)
        check_number("interpolation", self.interpolation, 0, False, 1)
        check_number("held_bottom_layers", self.held_bottom_layers, 0)
        if self.mixed_precision not in ("auto", "no"):
            raise SettingError(f"mixed_precision={self.mixed_precision!r}: expected 'auto' "
                               "(bf16 autocast on CUDA) or 'no'")


class DistributedContext:
    """Rank, world size and device from the launcher's environment (torchrun, accelerate)."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes the files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for alone)."""
        if self.distributed:
            torch.distributed.barrier()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the processes, on the CPU."""
        if self.distributed:
            values = values.to(self.device)
            torch.distributed.all_reduce(values)
        return values.cpu()


def global_batches(
    num_instances: int, batch_size: int, seed: int, start_step: int = 0
) -> Iterator[list[tuple[int, int]]]:
    """``[(epoch, instance index), ...]`` per optimizer step, from ``start_step`` on."""
    if num_instances < batch_size:
        raise ErnieKGError(
            f"the prepared data holds {num_instances} instances, fewer than one global "
            f"batch ({batch_size}); lower --batch-size or prepare more text"
        )
    per_epoch = num_instances // batch_size  # a partial last batch is dropped
    step = start_step
    while True:
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng(seed + epoch).permutation(num_instances)
        chunk = order[position * batch_size:(position + 1) * batch_size]
        yield [(epoch, int(i)) for i in chunk]
        step += 1


def _micro_batches(
    batch: dict[str, torch.Tensor], context: DistributedContext, accumulation: int
) -> list[dict[str, torch.Tensor]]:
    """This process's rows of the global batch, cut into accumulation steps."""
    size = batch["input_ids"].shape[0]
    per_process = size // context.world_size
    mine = slice(context.rank * per_process, (context.rank + 1) * per_process)
    rows = {k: v[mine] for k, v in batch.items() if k != "entity_candidates"}
    per_micro = per_process // accumulation
    micros = []
    for m in range(accumulation):
        part = slice(m * per_micro, (m + 1) * per_micro)
        micro = {k: v[part] for k, v in rows.items()}
        width = int(micro["attention_mask"].sum(dim=1).max())  # trim shared padding
        micros.append({k: (v[:, :width] if v.dim() == 2 else v).contiguous()
                       for k, v in micro.items()})
    return micros


def _counts(batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """How many targets each objective has: the normalisers of the global mean."""
    counts = {"mlm": float((batch["labels"] != IGNORE_INDEX).sum())}
    if "next_sentence_label" in batch:
        counts["nsp"] = float(batch["next_sentence_label"].numel())
    if "entity_labels" in batch:
        counts["dea"] = float((batch["entity_labels"] > 0).sum())
    return counts


def pretrain(
    data_dir: str | Path,
    model: nn.Module,
    output_dir: str | Path,
    tokenizer: Any,
    settings: PretrainingSettings | None = None,
    resume: bool = True,
    save_model: Callable[[nn.Module, Path], Any] | None = None,
) -> dict[str, Any]:
    """Pre-train ``model`` (an :class:`~ernie_kg.modeling.ErnieKGForPreTraining`) on a
    prepared directory; resumes from the newest checkpoint in ``output_dir``. The trained
    model goes to ``output_dir`` by ``save_model(model, output_dir)`` (default: its
    ``save_pretrained``; domain post-training saves a plain BERT instead)."""
    from tqdm.auto import tqdm

    settings = settings or PretrainingSettings()
    if settings.interpolation != 1.0 and save_model is None:
        raise SettingError(f"interpolation={settings.interpolation}: only domain "
                           "post-training (saved as a BERT backbone) moves the saved "
                           "weights back toward the loaded ones: use post_train() (it saves "
                           "through save_post_trained), or interpolation=1.0")
    context = DistributedContext()
    output_dir = Path(output_dir)
    data = PretrainingShards(data_dir)
    if data.manifest.get("instances") == "segments" and (settings.nsp or settings.dea):
        raise SettingError(f"{data_dir} was prepared without a KG (single segments for "
                           "masked LM: no sentence pairs, no entities): train it with NSP "
                           "and dEA off (on the command line: without --kg)")
    per_step = context.world_size * settings.gradient_accumulation_steps
    if settings.batch_size % per_step:
        raise ErnieKGError(
            f"batch_size {settings.batch_size} is not a multiple of processes x "
            f"gradient_accumulation_steps = {per_step}"
        )
    if data.manifest.get("vocab_size") not in (None, len(tokenizer)):
        raise ErnieKGError(
            f"{data_dir} was prepared with a tokenizer of {data.manifest['vocab_size']} "
            f"tokens, but the model's has {len(tokenizer)}: prepare it with the same backbone"
        )
    entity_rows, coverage = np.zeros(len(data.entity_vocab) + 1, dtype=np.int64), None
    if settings.dea or model.config.knowledge_layer_indices:  # else the text alone (MLM)
        entity_rows = entity_row_map(data.entity_vocab, model.base_model.entity_row)
        coverage = _entity_coverage(entity_rows, data_dir, settings.min_entity_coverage)
    if context.is_main and settings.progress and coverage is not None:
        print(f"entity table: rows for {coverage:.1%} of the data's entities")
    collator = PretrainingCollator(
        vocab=MaskingVocab.from_tokenizer(tokenizer),
        entity_rows=entity_rows,
        pad_token_id=tokenizer.pad_token_id or 0,
        mlm_probability=settings.mlm_probability,
        whole_word=settings.whole_word_masking,
        whole_entity=settings.whole_entity_masking,
        dea=settings.dea,
        seed=settings.seed,
    )
    start_step = 0
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if checkpoint is None and settings.mlm_prior:  # every process counts the same tokens
        start_mlm_prior(model, data, len(tokenizer), collator.vocab.special_ids)
    model.to(context.device)
    optimizer = pretraining_optimizer(model, settings)
    scheduler = pretraining_scheduler(optimizer, settings)
    if checkpoint is not None:
        start_step, saved = restore_checkpoint(checkpoint, model, optimizer, scheduler,
                                               context.device)
        check_resume(checkpoint, saved, asdict(settings))
    engine: nn.Module = model
    if context.distributed:
        engine = nn.parallel.DistributedDataParallel(
            model, device_ids=[context.device.index] if context.device.type == "cuda" else None,
            find_unused_parameters=True)  # a micro-batch without entities skips the dEA head
    autocast = settings.mixed_precision == "auto" and context.device.type == "cuda"
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        truncate_log(output_dir / LOG_FILE, start_step)
    batches = global_batches(len(data), settings.batch_size, settings.seed, start_step)
    bar = tqdm(total=settings.max_steps, initial=start_step, desc="pre-training",
               unit="step", disable=not (settings.progress and context.is_main))
    model.train()
    keep_freed_memory()  # no page faults on every step's largest buffers (ernie_kg.memory)
    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    for step in range(start_step, settings.max_steps):
        chosen = next(batches)
        batch = collator([{**data[i], "epoch": epoch} for epoch, i in chosen])
        if not settings.nsp:
            batch.pop("next_sentence_label")
        counts = _counts(batch)
        candidates = _candidates(batch)
        torch.manual_seed(settings.seed * 7_919 + step * context.world_size + context.rank)
        totals = torch.zeros(len(OBJECTIVES) + 2, dtype=torch.float64)  # + dEA correct, chance
        micros = _micro_batches(batch, context, settings.gradient_accumulation_steps)
        for m, micro in enumerate(micros):
            micro = {k: v.to(context.device) for k, v in micro.items()}
            last = m == len(micros) - 1
            sync = engine.no_sync() if context.distributed and not last else nullcontext()
            with sync, torch.autocast(context.device.type, dtype=torch.bfloat16,
                                      enabled=autocast):
                output = engine(**micro, entity_candidates=candidates.to(context.device)
                                if candidates is not None else None)
                loss, sums = _weighted_loss(output, micro, counts, context.world_size)
            if loss is not None:
                loss.backward()
            totals += sums
        hold_backbone(optimizer, step, settings)
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        rates = schedule_record(optimizer, model)  # this step's rates
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        totals = context.sum(totals)
        record = _record(step + 1, totals, counts, rates, started)
        history.append(record)
        if context.is_main:
            append_log(output_dir, record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", **(
                {"dea_acc": f"{record['dea_accuracy']:.2f}"} if "dea_accuracy" in record else {}))
        bar.update(1)
        if (step + 1) % settings.save_steps == 0 and step + 1 < settings.max_steps:
            if context.is_main:
                save_checkpoint(output_dir, step + 1, model, optimizer, scheduler,
                                asdict(settings), settings.save_total_limit)
            context.barrier()
    bar.close()
    if context.is_main:
        if save_model is None:
            model.save_pretrained(output_dir)
        else:
            save_model(model, output_dir)
        tokenizer.save_pretrained(output_dir)
        plot_log(output_dir, OBJECTIVES)
        write_finished(output_dir, asdict(settings))  # last: its presence means a whole model
    context.barrier()
    return {"steps": settings.max_steps, "resumed_from": start_step, "history": history,
            "entity_coverage": coverage}


def _entity_coverage(entity_rows: np.ndarray, data_dir: Path | str, minimum: float
                     ) -> float | None:
    """The share of the data's entities the model's table has (None: the data has none);
    none is an error (dEA and the fusion would silently see only "no entity"), less than
    ``minimum`` a warning."""
    entities = len(entity_rows) - 1
    if entities <= 0:
        return None
    covered = int(np.count_nonzero(entity_rows[1:]))
    share = covered / entities
    if covered == 0:
        raise ErnieKGError(f"{data_dir}: none of its {entities} entities has a row in the "
                           "model's entity table: every entity would be 'no entity' and "
                           "dEA would learn nothing. Pre-train with the KG the data was "
                           "prepared with (--kg)")
    if share < minimum:
        message = (f"{data_dir}: the entity table covers {share:.1%} of the data's "
                   f"{entities} entities, less than {minimum:.0%}")
        logger.warning(message)
        warnings.warn(message, stacklevel=3)
    return share


def _candidates(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The dEA softmax candidates: every entity of the global batch (ERNIE's collate_fn)."""
    present = [t[t > 0] for t in (batch.get("entity_labels"), batch["entity_ids"])
               if t is not None]
    rows = torch.unique(torch.cat(present))
    return rows if rows.numel() else None


def _weighted_loss(
    output: Any, micro: dict[str, torch.Tensor], counts: dict[str, float], world: int
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """This micro-batch's share of the global mean loss (x world: DDP averages), and the
    raw sums for logging: per-objective loss sums, dEA correct and chance."""
    micro_counts = _counts(micro)
    sums = torch.zeros(len(OBJECTIVES) + 2, dtype=torch.float64)
    loss = None
    for k, name in enumerate(OBJECTIVES):
        value = getattr(output, f"{name}_loss")
        n = micro_counts.get(name, 0.0)
        if value is None or n == 0:
            continue
        sums[k] = float(value.detach()) * n
        term = value * (n / counts[name] * world)
        loss = term if loss is None else loss + term
    if output.entity_logits is not None and "entity_labels" in micro:
        labels = micro["entity_labels"]
        targets = torch.searchsorted(output.entity_candidates, labels[labels > 0])
        predicted = output.entity_logits.argmax(dim=-1)
        sums[3] = float((predicted == targets).sum())
        sums[4] = float(targets.numel()) / max(1, output.entity_candidates.numel())
    if loss is None:  # nothing to learn from (e.g. no masked token): keep DDP in step
        loss = sum(p.sum() * 0.0 for p in output.values() if isinstance(p, torch.Tensor)
                   and p.requires_grad)
    return loss, sums


def _record(step: int, totals: torch.Tensor, counts: dict[str, float],
            rates: dict[str, float], started: float) -> dict[str, Any]:
    record: dict[str, Any] = {"step": step}
    loss = 0.0
    for k, name in enumerate(OBJECTIVES):
        if counts.get(name):
            value = float(totals[k]) / counts[name]
            record[f"{name}_loss"] = value
            loss += value
    record["loss"] = loss
    if counts.get("dea"):
        record["dea_accuracy"] = float(totals[3]) / counts["dea"]
        record["dea_chance"] = float(totals[4]) / counts["dea"]
    record.update(rates)
    record["seconds"] = time.perf_counter() - started
    return record
