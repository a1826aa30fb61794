"""Domain post-training (Xu et al., 2019, BERT-PT): a backbone's masked LM continued on
a plain-text domain corpus, saved as a backbone every fine-tuning command accepts.

Why through knowledge-aware pre-training's own parts rather than a pipeline of its own:
the same preparation (:func:`~ernie_kg.data.pretraining.prepare_pretraining_data` with
``mlm_only``: whole-word-masked single segments, no KG), the same loop
(:func:`~ernie_kg.training.pretrain.pretrain`: atomic checkpoints, exact resume, DDP), the
same MLM-head start for a backbone without one (:mod:`ernie_kg.modeling.mlm_head`) and
the same head warm-up (``head_warmup_steps``: the encoder is held exactly as loaded while
the head learns to read it, so the first steps cannot damage it). The model is
:class:`~ernie_kg.modeling.ErnieKGForPreTraining` with no knowledge layers, which is
BERT; at the end it is saved as a plain ``BertForPreTraining`` (``model_type: bert``,
MLM head included, so post-training can be continued from it) with the tokenizer.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ernie_kg.data.pretraining import MANIFEST, prepare_pretraining_data
from ernie_kg.errors import DataFormatError, ErnieKGError, SettingError
from ernie_kg.io import read_json, write_json
from ernie_kg.modeling import ErnieKGForPreTraining
from ernie_kg.training.pretrain import PretrainingSettings, latest_checkpoint, pretrain

#: Where :func:`post_train` prepares the corpus, inside its output directory.
DATA_DIR = "data"
#: What the prepared data was made from, beside its manifest.
SOURCE_FILE = "source.json"


#: Post-training's recipe beyond :class:`PretrainingSettings`' defaults: the word
#: embeddings held as loaded and the saved encoder a quarter of the way from the loaded
#: weights to the trained ones. Why: on the packaged MiniLM, full post-training cost
#: fine-tuning 5.9 dev points (SemEval-2014 NLI-M, seed 0); this recipe 1.2, the best of
#: the recipes the CLI offers (results/absa_post_probes.md; 3 seeds: results/absa.md).
POST_TRAINING_DEFAULTS: dict[str, Any] = {"freeze_word_embeddings": True,
                                          "interpolation": 0.25}


def post_training_settings(**overrides: Any) -> PretrainingSettings:
    """:class:`PretrainingSettings` for masked LM only (NSP and dEA off), with
    :data:`POST_TRAINING_DEFAULTS`."""
    settings = PretrainingSettings(**{"nsp": False, "dea": False, **POST_TRAINING_DEFAULTS,
                                      **overrides})
    if settings.nsp or settings.dea or settings.whole_entity_masking:
        raise SettingError("post-training is masked LM only: nsp, dea and "
                           "whole_entity_masking must be off")
    return settings


def post_training_model(backbone: str | Path | None = None, **config_overrides: Any
                        ) -> ErnieKGForPreTraining:
    """The backbone (default: the packaged MiniLM) with its MLM head, no knowledge
    layers: BERT itself. A backbone without an MLM head gets the identity-path start."""
    return ErnieKGForPreTraining.from_backbone(backbone, num_knowledge_layers=0,
                                               **config_overrides)


@torch.no_grad()
def interpolate_backbone(model: ErnieKGForPreTraining, original: nn.Module,
                         weight: float) -> None:
    """Move ``model``'s encoder (embeddings, layers, pooler) to ``original + weight *
    (model - original)`` in place; the MLM head stays as trained.

    Why: weight-space ensembling (Wortsman et al., 2022, WiSE-FT) keeps part of what the
    loaded backbone knew. Masked LM reshapes a backbone that was never trained as a
    masked LM (the packaged MiniLM was distilled, then trained on sentence pairs), and
    fine-tuning pays for it (``results/absa_post_probes.md``); ``weight`` < 1 keeps
    part of the way back.
    """
    if not 0.0 <= weight <= 1.0:
        raise SettingError(f"interpolation={weight}: expected a weight in [0, 1]")
    prefix = model.base_model_prefix + "."
    loaded = dict(original.named_parameters())
    for name, parameter in model.named_parameters():
        if name.startswith(prefix) and name in loaded:
            parameter.lerp_(loaded[name].to(parameter), 1.0 - weight)


def save_backbone(model: nn.Module, directory: str | Path) -> None:
    """Save a model without knowledge layers as a plain BERT checkpoint
    (``BertForPreTraining``, numerically its weights); the caller saves the tokenizer."""
    model.to_bert().save_pretrained(directory)


def post_train(
    corpus: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    backbone: str | Path | None = None,
    settings: PretrainingSettings | None = None,
    max_length: int = 128,
    lang: str = "en",
    resume: bool = True,
    dropout: float | None = None,
) -> dict[str, Any]:
    """Post-train ``backbone`` on ``corpus`` (one text per line, or JSONL ``{"text"}``)
    with whole-word masked LM; ``output_dir`` ends as a BERT backbone directory (config,
    weights, tokenizer; also ``log.jsonl``, ``loss.png``, ``checkpoints/`` and the
    prepared ``data/``). Run it again after a kill to resume exactly. Returns
    :func:`~ernie_kg.training.pretrain.pretrain`'s summary."""
    from transformers import AutoTokenizer

    from ernie_kg.paths import default_backbone

    settings = settings or post_training_settings()
    if settings.nsp or settings.dea:
        raise SettingError("post_train is masked LM only: pass settings with nsp=False and "
                           "dea=False (post_training_settings())")
    paths = [Path(corpus)] if isinstance(corpus, (str, Path)) else [Path(p) for p in corpus]
    for file in paths:
        if not file.is_file():
            raise DataFormatError(file, None, "corpus file not found")
    output_dir = Path(output_dir)
    path = str(backbone) if backbone is not None else default_backbone()
    tokenizer = AutoTokenizer.from_pretrained(path)
    data_dir = output_dir / DATA_DIR
    source = {"corpus": [_sha256(file) for file in paths], "max_length": max_length,
              "lang": lang, "vocab_size": len(tokenizer)}
    prepared = (data_dir / MANIFEST).is_file() and (data_dir / SOURCE_FILE).is_file() \
        and read_json(data_dir / SOURCE_FILE) == source
    if not prepared:
        if resume and latest_checkpoint(output_dir) is not None:
            raise ErnieKGError(f"{output_dir}: its prepared {DATA_DIR}/ is missing or was "
                               "made from another corpus or max_length; resuming would mix "
                               "two data sets. Use another output directory, or start "
                               "again (--no-resume --overwrite)")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ErnieKGError("prepare the corpus once before a distributed run: `ernie-kg "
                               "pretrain prepare` without --kg, then `pretrain run` without "
                               "--kg under torchrun")
        prepare_pretraining_data(paths, None, tokenizer, data_dir, max_length=max_length,
                                 lang=lang, progress=settings.progress, mlm_only=True)
        write_json(data_dir / SOURCE_FILE, source)
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout,
                                            "attention_probs_dropout_prob": dropout}
    torch.manual_seed(settings.seed)  # fresh head weights start the same in every process
    model = post_training_model(path, **overrides)
    return pretrain(data_dir, model, output_dir, tokenizer, settings, resume=resume,
                    save_model=partial(save_post_trained, backbone=path,
                                       interpolation=settings.interpolation))


def save_post_trained(model: ErnieKGForPreTraining, directory: str | Path,
                      backbone: str | Path, interpolation: float = 1.0) -> None:
    """Save a post-trained model as a BERT backbone, its encoder first moved back
    toward ``backbone``'s weights by :func:`interpolate_backbone` (checkpoints keep the
    trained weights, so a resume is exact)."""
    if interpolation < 1.0:
        interpolate_backbone(model, post_training_model(backbone), interpolation)
    save_backbone(model, directory)


def _sha256(path: Path) -> str:
    """The content hash of a corpus file: a changed corpus is prepared again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
