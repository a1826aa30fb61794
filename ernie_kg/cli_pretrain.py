"""``ernie-kg pretrain prepare|run|post-train``: knowledge-aware pre-training, and (without
``--kg``) domain post-training: masked LM only, saved as a plain BERT backbone.

``run`` works unchanged under ``torchrun --nproc_per_node=N -m ernie_kg pretrain run ...``
and ``accelerate launch -m ernie_kg pretrain run ...``: both set RANK/WORLD_SIZE, which
:class:`~ernie_kg.training.pretrain.DistributedContext` reads.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from ernie_kg.cli_options import one_of, positive, probability_or_none, spacy_language
from ernie_kg.errors import ErnieKGError
from ernie_kg.hub import check_backbone
from ernie_kg.io import claim_run_dir

pretrain_app = typer.Typer(help="Knowledge-aware pre-training: MLM (+WWM), NSP and dEA; "
                                "without --kg, domain post-training (MLM only).",
                           no_args_is_help=True)

_NO_KG = "; without it: masked LM only (domain post-training)"

# Post-training options shared by `run` (without --kg) and `post-train`.
# Their post-training defaults are POST_TRAINING_DEFAULTS (ernie_kg.training.post_training;
# written out here so that the CLI starts without torch; a test holds them equal).
FreezeWordEmbeddings = Annotated[bool | None, typer.Option(
    help="Hold the word embeddings (and the MLM decoder tied to them) as loaded "
         "(post-training's default; off with --kg)")]
HeldBottomLayers = Annotated[int, typer.Option(
    min=0, help="Hold the embeddings and the first N encoder layers as loaded")]
Interpolation = Annotated[float | None, typer.Option(
    min=0.0, max=1.0, help="Post-training (no --kg): share of the way from the loaded "
                           "backbone to the post-trained weights that the saved backbone "
                           "takes (post-training's default 0.25; 1: all of it)")]


def load_kg_embeddings(kg_dir: Path, cache_dir: Path, progress: bool = True):
    """The KG's entity table: ``KG_DIR/embeddings`` when saved there, else TransE
    trained with PyKEEN (tuned defaults) and cached by content hash in ``cache_dir``."""
    from ernie_kg.kg import EntityEmbeddings, KnowledgeGraph
    from ernie_kg.kg.cache import cached_entity_embeddings

    saved = kg_dir / "embeddings"
    if (saved / "embeddings.json").is_file():
        return EntityEmbeddings.load(saved, mmap=False)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ErnieKGError(
            f"{kg_dir} has no embeddings/ directory: train them once before a distributed "
            f"run (ernie-kg kg embed --triples-dir {kg_dir} --out {saved}), so the "
            "processes do not each train TransE"
        )
    return cached_entity_embeddings(KnowledgeGraph.load(kg_dir), cache_dir, progress=progress)


@pretrain_app.command("prepare")
def prepare(
    corpus: Annotated[list[Path], typer.Option(help="JSONL {'text'} or plain text (blank "
                                               "lines between documents); repeatable")],
    out: Annotated[Path, typer.Option(help="Output directory for the instance shards")],
    kg: Annotated[Path | None, typer.Option(
        help="KG directory: its names feed the linker" + _NO_KG + ", one segment per "
             "line of text")] = None,
    backbone: Annotated[str | None, typer.Option(help="Tokenizer name or path "
                                                 "(default: packaged MiniLM)")] = None,
    max_length: Annotated[int, typer.Option(min=8, help="Wordpieces per sentence pair")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed (NSP partners)")] = 0,
    lang: Annotated[str, typer.Option(callback=spacy_language,
                                      help="spaCy language (zh: jieba words for WWM)")] = "en",
    shard_size: Annotated[int, typer.Option(min=1, help="Instances per shard")] = 4096,
    overwrite: Annotated[bool, typer.Option(
        help="Replace earlier data in --out (it is moved aside to OUT.old-N)")] = False,
    engine: Annotated[str, typer.Option(
        callback=one_of("local", "dask"),
        help="Link here (local) or in shards on a Dask cluster (dask)")] = "local",
    address: Annotated[str | None, typer.Option(
        help="Dask scheduler to join (default: start a local cluster)")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Worker processes of the local cluster (default: usable cores)")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue in --out: the shards a stopped dask linking finished are kept")] = False,
) -> None:
    """Sentences -> linked entities -> NSP sentence pairs -> shards in OUT (without --kg:
    lines of text -> single segments)."""
    from transformers import AutoTokenizer

    from ernie_kg.data.pretraining import prepare_pretraining_data
    from ernie_kg.linking import EntityLinker
    from ernie_kg.linking.cluster import LinkerSpec, cluster_linker
    from ernie_kg.paths import default_backbone

    check_backbone(backbone or default_backbone())
    if kg is None and engine == "dask":
        raise ErnieKGError("--engine dask links the corpus with a KG: give --kg (without "
                           "it there is nothing to link)")
    linker = None
    if kg is not None:
        linker = cluster_linker(engine, lambda: LinkerSpec.of(kg, lang=lang), address,
                                workers, say=lambda line: typer.echo(line, err=True))
    aside = claim_run_dir(out, resume=resume, overwrite=overwrite)  # can take hours
    if aside is not None:
        typer.echo(f"moved the earlier data aside to {aside}", err=True)
    tokenizer = AutoTokenizer.from_pretrained(backbone or default_backbone())
    if linker is None and kg is not None:
        linker = EntityLinker.from_kg_dir(kg, lang=lang)
    manifest = prepare_pretraining_data(corpus, linker, tokenizer, out, max_length=max_length,
                                        seed=seed, shard_size=shard_size, lang=lang,
                                        mlm_only=kg is None)
    summary = {k: manifest[k] for k in ("num_instances", "documents", "sentences",
                                        "aligned_entities") if k in manifest}
    summary["entities"] = len(manifest["entity_vocab"])
    typer.echo(json.dumps(summary))


@pretrain_app.command("run")
def run(
    data: Annotated[Path, typer.Option(help="Directory written by `pretrain prepare`")],
    output: Annotated[Path, typer.Option(help="Output directory (checkpoints, log, model)")],
    kg: Annotated[Path | None, typer.Option(
        help="KG directory (entity vectors: KG/embeddings, or TransE trained and cached)"
             + _NO_KG + ", saved as a BERT backbone")] = None,
    backbone: Annotated[str | None, typer.Option(help="BERT-family name or path "
                                                 "(default: packaged MiniLM)")] = None,
    max_steps: Annotated[int, typer.Option(min=1, help="Optimizer steps")] = 1000,
    batch_size: Annotated[int, typer.Option(min=1, help="Global batch size")] = 32,
    gradient_accumulation_steps: Annotated[int, typer.Option(
        min=1, help="Micro-batches per step")] = 1,
    learning_rate: Annotated[float, typer.Option(
        callback=positive, help="AdamW peak learning rate of the backbone")] = 5e-5,
    head_learning_rate: Annotated[float, typer.Option(
        callback=positive, help="Peak learning rate of the heads and knowledge "
                                "modules")] = 1e-3,
    head_warmup_steps: Annotated[int, typer.Option(
        min=0, help="First steps that train only the heads and knowledge modules "
                    "(backbone frozen)")] = 50,
    freeze_word_embeddings: FreezeWordEmbeddings = None,
    held_bottom_layers: HeldBottomLayers = 0,
    interpolation: Interpolation = None,
    save_steps: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    num_knowledge_layers: Annotated[int | None, typer.Option(
        min=1, help="Aggregator layers (default: half the backbone; needs --kg)")] = None,
    whole_word: Annotated[bool, typer.Option(help="Whole-word masking")] = True,
    whole_entity: Annotated[bool, typer.Option(help="Whole-entity masking (needs --kg)")
                            ] = False,
    dea: Annotated[bool | None, typer.Option(
        help="Denoising entity auto-encoder (default: on with --kg; needs it)")] = None,
    nsp: Annotated[bool | None, typer.Option(
        help="Next-sentence prediction (default: on with --kg; needs it)")] = None,
    mixed_precision: Annotated[str, typer.Option(
        callback=one_of("auto", "no"), help="auto (bf16 on GPU) or no")] = "auto",
    dropout: Annotated[float | None, typer.Option(
        callback=probability_or_none,
        help="Override the backbone's hidden and attention dropout")] = None,
    cache_dir: Annotated[Path, typer.Option(help="TransE cache")] = Path("cache"),
    resume: Annotated[bool, typer.Option(help="Resume from the newest checkpoint")] = True,
    overwrite: Annotated[bool, typer.Option(
        help="With --no-resume: start again, moving the earlier run aside to "
             "OUTPUT.old-N")] = False,
) -> None:
    """Pre-train the fusion model (MLM + NSP + dEA); without --kg, post-train the backbone
    (MLM only) and save it as BERT. Resumes after a kill."""
    import torch
    from transformers import AutoTokenizer

    from ernie_kg.data.pretraining import PretrainingShards
    from ernie_kg.modeling import ErnieKGForPreTraining
    from ernie_kg.paths import default_backbone
    from ernie_kg.training.post_training import (
        POST_TRAINING_DEFAULTS,
        post_training_model,
        save_post_trained,
    )
    from ernie_kg.training.pretrain import PretrainingSettings, latest_checkpoint, pretrain

    if not overwrite:  # an earlier run is refused before the data is even read
        claim_run_dir(output, resume=resume)
    if kg is None:
        needs_kg = [name for name, given in (
            ("--nsp", nsp), ("--dea", dea), ("--whole-entity", whole_entity),
            ("--num-knowledge-layers", num_knowledge_layers is not None)) if given]
        if needs_kg:
            raise ErnieKGError(f"{', '.join(needs_kg)} need --kg: without a KG, `pretrain "
                               "run` is masked LM only (domain post-training)")
        nsp = dea = False
        if freeze_word_embeddings is None:
            freeze_word_embeddings = POST_TRAINING_DEFAULTS["freeze_word_embeddings"]
        if interpolation is None:
            interpolation = POST_TRAINING_DEFAULTS["interpolation"]
    else:
        if interpolation is not None:
            raise ErnieKGError("--interpolation is for domain post-training (without --kg): "
                               "the knowledge-aware model is saved as trained")
        nsp, dea = nsp is not False, dea is not False  # on unless turned off
        freeze_word_embeddings, interpolation = bool(freeze_word_embeddings), 1.0
        if PretrainingShards(data).manifest.get("instances") == "segments":
            raise ErnieKGError(f"{data} was prepared without --kg (text segments for masked "
                               "LM, no entities): run it without --kg, or prepare it with "
                               "--kg for knowledge-aware pre-training")
    settings = PretrainingSettings(  # checked before an earlier run is moved aside
        max_steps=max_steps, batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate, head_learning_rate=head_learning_rate,
        head_warmup_steps=head_warmup_steps, save_steps=save_steps, seed=seed,
        freeze_word_embeddings=freeze_word_embeddings, interpolation=interpolation,
        held_bottom_layers=held_bottom_layers, whole_word_masking=whole_word,
        whole_entity_masking=whole_entity, dea=dea, nsp=nsp,
        mixed_precision=mixed_precision,
    )
    aside = claim_run_dir(output, resume=resume, overwrite=overwrite)
    if aside is not None:
        typer.echo(f"moved the earlier run aside to {aside}", err=True)
    path = backbone or default_backbone()
    check_backbone(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if resume and latest_checkpoint(output) is not None:
        typer.echo(f"resuming from {latest_checkpoint(output)}", err=True)
    torch.manual_seed(seed)  # the new fusion weights start the same in every process
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout,
                                            "attention_probs_dropout_prob": dropout}
    if kg is None:
        model = post_training_model(path, **overrides)
        result = pretrain(data, model, output, tokenizer, settings, resume=resume,
                          save_model=partial(save_post_trained, backbone=path,
                                             interpolation=interpolation))
    else:
        model = ErnieKGForPreTraining.from_backbone(path, load_kg_embeddings(kg, cache_dir),
                                                    num_knowledge_layers=num_knowledge_layers,
                                                    **overrides)
        result = pretrain(data, model, output, tokenizer, settings, resume=resume)
    last = result["history"][-1] if result["history"] else {}
    typer.echo(json.dumps({"steps": result["steps"], "resumed_from": result["resumed_from"],
                           "entity_coverage": result["entity_coverage"],
                           **{k: v for k, v in last.items() if k != "step"}}))


@pretrain_app.command("post-train")
def post_train_command(
    corpus: Annotated[list[Path], typer.Option(help="One text per line, or JSONL {'text'}; "
                                               "repeatable")],
    output: Annotated[Path, typer.Option(help="Output directory: the post-trained BERT "
                                         "backbone (and its run: data, checkpoints, log)")],
    backbone: Annotated[str | None, typer.Option(help="BERT-family name or path "
                                                 "(default: packaged MiniLM)")] = None,
    max_steps: Annotated[int, typer.Option(min=1, help="Optimizer steps")] = 1000,
    batch_size: Annotated[int, typer.Option(min=1, help="Global batch size")] = 32,
    learning_rate: Annotated[float, typer.Option(
        callback=positive, help="AdamW peak learning rate of the backbone")] = 5e-5,
    head_learning_rate: Annotated[float, typer.Option(
        callback=positive, help="Peak learning rate of the MLM head")] = 1e-3,
    head_warmup_steps: Annotated[int, typer.Option(
        min=0, help="First steps that train only the MLM head (encoder held as "
                    "loaded)")] = 50,
    freeze_word_embeddings: FreezeWordEmbeddings = True,
    held_bottom_layers: HeldBottomLayers = 0,
    interpolation: Interpolation = 0.25,
    save_steps: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    max_length: Annotated[int, typer.Option(min=8, help="Wordpieces per segment")] = 128,
    lang: Annotated[str, typer.Option(callback=spacy_language,
                                      help="spaCy language (zh: jieba words for WWM)")] = "en",
    mixed_precision: Annotated[str, typer.Option(
        callback=one_of("auto", "no"), help="auto (bf16 on GPU) or no")] = "auto",
    dropout: Annotated[float | None, typer.Option(
        callback=probability_or_none,
        help="Override the backbone's hidden and attention dropout")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from the newest checkpoint")] = True,
    overwrite: Annotated[bool, typer.Option(
        help="With --no-resume: start again, moving the earlier run aside to "
             "OUTPUT.old-N")] = False,
) -> None:
    """Domain post-training in one command: `prepare` without --kg into OUTPUT/data, then
    `run` without --kg (whole-word masked LM; a BERT backbone in OUTPUT)."""
    from ernie_kg.paths import default_backbone
    from ernie_kg.training.post_training import post_train, post_training_settings

    settings = post_training_settings(  # checked before an earlier run is moved aside
        max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
        head_learning_rate=head_learning_rate, head_warmup_steps=head_warmup_steps,
        freeze_word_embeddings=freeze_word_embeddings, interpolation=interpolation,
        held_bottom_layers=held_bottom_layers, save_steps=save_steps, seed=seed,
        mixed_precision=mixed_precision)
    check_backbone(backbone or default_backbone())
    aside = claim_run_dir(output, resume=resume, overwrite=overwrite)
    if aside is not None:
        typer.echo(f"moved the earlier run aside to {aside}", err=True)
    result = post_train(corpus, output, backbone, settings, max_length=max_length, lang=lang,
                        resume=resume, dropout=dropout)
    last = result["history"][-1] if result["history"] else {}
    typer.echo(json.dumps({"steps": result["steps"], "resumed_from": result["resumed_from"],
                           "backbone": str(output),
                           **{k: v for k, v in last.items() if k != "step"}}))
