"""The ``ernie-kg`` command line (also ``python -m ernie_kg``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ernie_kg.cli_options import gate_rate_option, one_of, positive
from ernie_kg.cli_pretrain import pretrain_app
from ernie_kg.errors import ErnieKGError
from ernie_kg.hub import check_backbone
from ernie_kg.io import check_writable, claim_run_dir, write_json
from ernie_kg.kg.embeddings import DEFAULT_EMBEDDING_SETTINGS
from ernie_kg.memory import keep_freed_memory

app = typer.Typer(help="Knowledge-enhanced language models in the style of ERNIE.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
kg_app = typer.Typer(help="Knowledge graphs: statistics, TransE embeddings, neighbours.",
                     no_args_is_help=True)
app.add_typer(kg_app, name="kg")
app.add_typer(pretrain_app, name="pretrain")
data_app = typer.Typer(help="Public datasets: download with a checksum check, or copy offline.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)

_D = DEFAULT_EMBEDDING_SETTINGS


@kg_app.command("stats")
def kg_stats(kg: Annotated[Path, typer.Option(help="KG directory")]) -> None:
    """Print entity, relation, triple and degree statistics of a KG directory."""
    from ernie_kg.kg import KnowledgeGraph

    graph = KnowledgeGraph.load(kg, progress=True)
    table = Table(title=str(kg))
    table.add_column("statistic")
    table.add_column("value", justify="right")
    table.add_row("entities", str(len(graph.entities)))
    table.add_row("relations", str(len(graph.relations)))
    for split, triples in graph.splits.items():
        table.add_row(f"{split} triples", str(len(triples)))
    for name, value in graph.degree_stats().items():
        table.add_row(f"degree {name}", f"{value:g}")
    Console().print(table)


@kg_app.command("index")
def kg_index(
    kg: Annotated[Path, typer.Option(help="KG directory")],
    rebuild: Annotated[bool, typer.Option(help="Rebuild even when the index is current")] = False,
    lang: Annotated[str, typer.Option(help="Language of the alias patterns (spaCy)")] = "en",
    workers: Annotated[int, typer.Option(min=0, help="Processes for the alias pass "
                                         "(0: every CPU available)")] = 0,
) -> None:
    """Build (or check) the on-disk index of a KG directory and its alias index; every
    --kg command uses them.

    The index goes into KG_DIR/.ernie_kg (or, read-only, under ERNIE_KG_CACHE or the
    platform cache directory) and is rebuilt when a KG file changes."""
    import time

    from ernie_kg.kg.store import open_store
    from ernie_kg.linking.alias_build import default_workers
    from ernie_kg.linking.alias_index import open_alias_index

    started = time.perf_counter()
    store = open_store(kg, progress=True, rebuild=rebuild)
    aliases = open_alias_index(store, kg, lang, progress=True,
                               workers=workers or default_workers())
    console.print(f"{store.entity_count} entities, {len(store.relations)} relations, "
                  f"{len(store.triple_array)} triples, {len(aliases)} alias keys: index at "
                  f"{store.directory} ({time.perf_counter() - started:.1f} s)")


@kg_app.command("embed")
def kg_embed(
    triples_dir: Annotated[Path, typer.Option(help="KG directory with train.txt (+valid/test)")],
    out: Annotated[Path, typer.Option(help="Output directory for embeddings + metrics.json")],
    model: Annotated[str, typer.Option(help="PyKEEN model name")] = _D["model"],
    dim: Annotated[int, typer.Option(min=1, help="Embedding dimension")] = _D["dim"],
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs")] = _D["epochs"],
    seed: Annotated[int, typer.Option(help="Random seed")] = _D["seed"],
    lr: Annotated[float, typer.Option(callback=positive, help="Adam learning rate")] = _D[
        "learning_rate"],
    batch_size: Annotated[int, typer.Option(min=1, help="Training batch size")] = _D["batch_size"],
    training_loop: Annotated[str, typer.Option(
        help="LCWA (1-vs-all) or sLCWA")] = _D["training_loop"],
    loss: Annotated[str, typer.Option(help="PyKEEN loss name")] = _D["loss"],
    norm: Annotated[int, typer.Option(
        min=1, max=2, help="TransE distance norm (1 or 2)")] = _D["scoring_fct_norm"],
    overwrite: Annotated[bool, typer.Option(
        help="Replace an earlier run in --out (it is moved aside to OUT.old-N)")] = False,
    devices: Annotated[int, typer.Option(help="Processes per machine (>1: DDP)")] = 1,
    num_nodes: Annotated[int, typer.Option(help="Machines (torchrun, srun: README)")] = 1,
    accelerator: Annotated[str, typer.Option(help="cpu, gpu or auto (Lightning)")] = "cpu",
    lightning: Annotated[bool, typer.Option(help="Lightning on 1 process (checkpoints)")] = False,
    resume: Annotated[bool, typer.Option(help="Continue a Lightning run in --out")] = False,
    sparse: Annotated[bool, typer.Option(help="Sparse tables + SparseAdam: for large KGs "
                                              "(README)")] = _D["sparse"],
) -> None:
    """Train entity embeddings with PyKEEN, evaluate on test.txt, write OUT/metrics.json."""
    from ernie_kg.kg import KnowledgeGraph, train_entity_embeddings
    from ernie_kg.kg import distributed_embedding as ddp
    from ernie_kg.kg.embeddings import check_pykeen_names

    check_pykeen_names({"model": model, "training_loop": training_loop, "loss": loss})
    settings = dict(model=model, dim=dim, epochs=epochs, seed=seed, learning_rate=lr,
                    batch_size=batch_size, training_loop=training_loop, loss=loss,
                    scoring_fct_norm=norm, sparse=sparse)
    distributed = lightning or resume or devices * num_nodes != 1 or accelerator != "cpu"
    if not distributed or ddp.global_rank(devices) == 0:  # torchrun/srun: every rank is here
        _moved_aside(claim_run_dir(out, resume=resume, overwrite=overwrite))
    if distributed:  # Lightning: rank 0 writes OUT and alone gets the table back
        embeddings = ddp.train_entity_embeddings_distributed(
            triples_dir, out, devices=devices, num_nodes=num_nodes, accelerator=accelerator,
            resume=resume, **settings)
    else:
        graph = KnowledgeGraph.load(triples_dir)
        console.print(f"[bold]{graph}[/bold]")
        embeddings = train_entity_embeddings(graph, **settings)
        embeddings.save(out)
        write_json(out / "metrics.json", {**embeddings.metrics, "config": embeddings.config})
    if embeddings is not None:
        summary = ", ".join(f"{k}={v:.4f}" for k, v in embeddings.metrics.items())
        console.print(f"[green]wrote {out}[/green]: {summary}")


@kg_app.command("import-embeddings")
def kg_import_embeddings(
    format: Annotated[str, typer.Option(
        help="openke (ERNIE's kg_embed/), pbg, dglke, pykeen or word2vec")],
    source: Annotated[Path, typer.Option(help="The export: a directory, or the word2vec "
                                              "text file")],
    kg: Annotated[Path, typer.Option(help="KG directory whose entities get the vectors")],
    out: Annotated[Path, typer.Option(help="Output embeddings directory (as kg embed's)")],
    missing: Annotated[str, typer.Option(
        help="KG entities without a vector: zero, mean or error")] = "zero",
    overwrite: Annotated[bool, typer.Option(
        help="Replace an earlier run in --out (it is moved aside to OUT.old-N)")] = False,
) -> None:
    """Map entity vectors trained elsewhere onto a KG's entities (streamed, by id)."""
    from tqdm import tqdm

    from ernie_kg.kg import KnowledgeGraph
    from ernie_kg.kg.importing import MISSING_POLICIES, import_embeddings
    from ernie_kg.kg.vector_formats import FORMATS

    if format not in FORMATS:
        raise typer.BadParameter(f"must be one of {sorted(FORMATS)}", param_hint="--format")
    if missing not in MISSING_POLICIES:
        raise typer.BadParameter(f"must be one of {list(MISSING_POLICIES)}",
                                 param_hint="--missing")
    _moved_aside(claim_run_dir(out, overwrite=overwrite))
    graph = KnowledgeGraph.load(kg, progress=True)
    with tqdm(unit=" rows", desc="import", unit_scale=True) as bar:
        _, report = import_embeddings(source, graph, out, format, missing, progress=bar.update)
    console.print(
        f"[green]wrote {out}[/green]: {report.covered} of {report.kg_entities} KG entities "
        f"({report.coverage:.1%}) got a {report.dim}-dim vector; {report.not_in_kg} source "
        f"rows are not in the KG, {report.duplicates} repeat an entity; the other "
        f"{report.kg_entities - report.covered} entities: {missing} ({report.seconds:.1f} s)")


@kg_app.command("nearest")
def kg_nearest(
    embeddings: Annotated[Path, typer.Option(help="Saved embeddings directory")],
    entity: Annotated[str, typer.Option(help="Entity id")],
    k: Annotated[int, typer.Option(min=1, help="How many neighbours")] = 10,
) -> None:
    """Print the k nearest entities of ENTITY in embedding space (faiss)."""
    from ernie_kg.kg import EntityEmbeddings, EntityIndex

    index = EntityIndex(EntityEmbeddings.load(embeddings))
    for entity_id, score in index.nearest(entity, k):
        typer.echo(f"{entity_id}\t{score:.4f}")


@app.command("demo")
def demo(
    output_dir: Annotated[Path, typer.Option(help="Where results go")] = Path("runs/demo"),
    kg: Annotated[Path | None, typer.Option(help="KG directory (default: bundled)")] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    finetune: Annotated[bool, typer.Option(help="Fine-tune and compare the baseline and "
                                           "ERNIE-KG (the slow part)")] = True,
) -> None:
    """Run the whole pipeline on the bundled demo KG (offline, a few minutes on a CPU)."""
    from ernie_kg.demo import run_demo

    run_demo(output_dir, kg_dir=kg, seed=seed, finetune=finetune)


@app.command("link")
def link(
    kg: Annotated[Path, typer.Option(help="KG directory (names, aliases.json)")],
    input: Annotated[Path, typer.Option(help='JSONL: {"text": ...} or {"tokens": [...]}')],
    output: Annotated[Path, typer.Option(help="JSONL: each input record + 'mentions'")],
    linker_dir: Annotated[Path | None, typer.Option(help="A saved linker instead")] = None,
    embeddings: Annotated[Path | None, typer.Option(help="TransE vectors (coherence)")] = None,
    nil_threshold: Annotated[float | None, typer.Option(help="Least score to link")] = None,
    fuzzy: Annotated[bool, typer.Option(help="faiss near-miss candidates")] = False,
    ner: Annotated[bool, typer.Option(help="Extra recall from a spaCy NER model")] = False,
    engine: Annotated[str, typer.Option(callback=one_of("local", "dask"), help="local: here; "
                                        "dask: in shards on a Dask cluster")] = "local",
    address: Annotated[str | None, typer.Option(help="Dask scheduler to join (default: "
                                                "start a local cluster)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Local cluster's worker "
                                                "processes (default: usable cores)")] = None,
    shard_lines: Annotated[int | None, typer.Option(min=1, help="Input lines per shard "
                                                    "(default: 10000)")] = None,
) -> None:
    """Link every line of a JSONL file to KG entities; prints the throughput. With
    --engine dask, rerunning a stopped run resumes it."""
    from ernie_kg.errors import DataFormatError
    from ernie_kg.kg import EntityEmbeddings
    from ernie_kg.linking import EntityLinker
    from ernie_kg.linking.alias_build import default_workers
    from ernie_kg.linking.cluster import LinkerSpec, cluster_linker
    from ernie_kg.linking.files import link_jsonl, summary

    if not input.is_file():
        raise DataFormatError(input, None, "missing: no such input file")
    check_writable(output)  # before the linker is built, not after the whole file
    settings: dict = {"fuzzy": fuzzy, "use_ner": ner}
    if nil_threshold is not None:
        settings["nil_threshold"] = nil_threshold
    cluster = cluster_linker(engine, lambda: LinkerSpec.of(kg, embeddings, linker_dir,
                                                           **settings), address, workers,
                             shard_lines, say=lambda line: console.print(line, markup=False))
    if cluster is not None:
        stats = cluster.link_file(input, output)
    else:
        table = EntityEmbeddings.load(embeddings) if embeddings is not None else None
        linker = EntityLinker.from_kg_dir(kg, table, linker_dir, progress=True,
                                          workers=default_workers(), **settings)
        linker.detector  # build the matcher before the clock starts  # noqa: B018
        stats = link_jsonl(linker, input, output)
    console.print(f"[green]wrote {output}[/green]: {summary(stats)}")


_RELATION_FORMATS = ("fewrel", "semeval", "tacred", "jsonl")


def _read_relations(path: Path, data_format: str, gold_ids: bool = True) -> list:
    from ernie_kg.data import readers
    from ernie_kg.errors import DataFormatError

    if data_format == "fewrel":
        examples = readers.read_fewrel(path, gold_ids=gold_ids)
    else:
        examples = {"semeval": readers.read_semeval, "tacred": readers.read_tacred,
                    "jsonl": readers.read_relation_jsonl}[data_format](path)
    if not examples:
        raise DataFormatError(path, None, f"no examples (read as --format {data_format})")
    return examples


@app.command("finetune")
def finetune_command(
    train: Annotated[Path, typer.Option(help="Training file (FewRel format by default)")],
    output_dir: Annotated[Path, typer.Option(help="Writes model/, metrics.json, log.jsonl")],
    dev: Annotated[Path | None, typer.Option(help="Dev file (best epoch by macro-F1)")] = None,
    kg: Annotated[Path | None, typer.Option(help="Background KG directory (default: "
                                                 "bundled demo KG)")] = None,
    kg_extra: Annotated[list[Path] | None, typer.Option(
        help="FewRel files whose facts and names join the KG and the alias table")] = None,
    embeddings: Annotated[Path | None, typer.Option(
        help="Saved entity embeddings (default: TransE trained here, cached)")] = None,
    model: Annotated[str, typer.Option(callback=one_of("ernie", "baseline"), help="ernie "
                                       "(with entities) or baseline (text only)")] = "ernie",
    entities: Annotated[str, typer.Option(callback=one_of("gold", "linker", "both"),
                                          help="Training entities: gold, linker or "
                                               "both")] = "both",
    data_format: Annotated[str, typer.Option(
        "--format", callback=one_of(*_RELATION_FORMATS),
        help="fewrel, semeval, tacred or jsonl")] = "fewrel",
    backbone: Annotated[str | None, typer.Option(help="BERT checkpoint (default: "
                                                      "packaged MiniLM)")] = None,
    epochs: Annotated[float, typer.Option(callback=positive, help="Training epochs")] = 3,
    lr: Annotated[float, typer.Option(callback=positive, help="Peak learning rate")] = 5e-5,
    knowledge_lr: Annotated[float, typer.Option(
        callback=positive,
        help="Learning rate of the fresh knowledge modules (the FewRel-16 recipe's)")] = 5e-4,
    knowledge_gate: Annotated[str | None, typer.Option(
        callback=one_of("none", "layer", "token"),
        help="How entities enter their tokens: token or layer gates start closed (the "
             "untrained model is its backbone); none: the paper, at full strength "
             "(default: the recipe's, token)")] = None,
    gate_lr: Annotated[str, typer.Option(
        callback=gate_rate_option,
        help="Learning rate of the gates' openings: dev (5e-4, or 1e-2 where --dev is "
             "95% sure it scores better: two training runs), knowledge (= --knowledge-lr), "
             "a rate, or rates separated by commas (the first unless dev is sure)")] = "dev",
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per step")] = 32,
    grad_accum: Annotated[int, typer.Option(min=1, help="Gradient accumulation steps")] = 1,
    max_length: Annotated[int, typer.Option(min=8, help="Wordpieces per sequence")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    kg_dim: Annotated[int, typer.Option(min=1, help="TransE dimension (= entity_dim)")] = 100,
    kg_epochs: Annotated[int, typer.Option(min=1, help="TransE epochs")] = 25,
    resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint")] = False,
    min_kg_coverage: Annotated[float, typer.Option(
        min=0, max=1, help="Warn when the entity table covers less of the KG (none: an "
                           "error)")] = 0.5,
    overwrite: Annotated[bool, typer.Option(
        help="Start again over an earlier run in --output-dir (moved aside to "
             "DIR.old-N)")] = False,
) -> None:
    """Fine-tune a relation classifier (ERNIE-KG or the text-only baseline)."""
    from ernie_kg.data.features import LabelMap
    from ernie_kg.data.knowledge import relation_knowledge
    from ernie_kg.paths import demo_kg_dir
    from ernie_kg.pipelines.relation import (
        build_relation_classifier,
        train_relation_classifier,
    )

    if backbone is not None:
        check_backbone(backbone)  # before any work: a hub name needs the hub
    _moved_aside(claim_run_dir(output_dir, resume=resume, overwrite=overwrite))
    train_examples = _read_relations(train, data_format)
    dev_examples = _read_relations(dev, data_format) if dev else None
    sources = [train] if data_format == "fewrel" else []
    sources += list(kg_extra or [])
    graph, table, aliases = relation_knowledge(
        sources, kg or demo_kg_dir(), embeddings, dim=kg_dim, epochs=kg_epochs,
    )
    classifier = build_relation_classifier(
        LabelMap.from_examples(train_examples), graph, table, aliases,
        knowledge=model == "ernie", backbone=backbone, seed=seed, max_length=max_length,
        min_kg_coverage=min_kg_coverage,
        **({"knowledge_gate": knowledge_gate} if knowledge_gate else {}),
    )
    metrics = train_relation_classifier(
        classifier, train_examples, dev_examples, output_dir, train_entities=entities,
        log_path=output_dir / "log.jsonl", resume_from_checkpoint=True if resume else None,
        epochs=epochs, learning_rate=lr, knowledge_learning_rate=knowledge_lr,
        batch_size=batch_size, gradient_accumulation_steps=grad_accum, seed=seed,
        gate_learning_rate=gate_lr,
    )
    write_json(output_dir / "metrics.json", metrics)
    summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("accuracy", "macro_f1", "micro_f1")
                        if k in metrics)
    console.print(f"[green]wrote {output_dir}/model[/green] {summary}")


def _moved_aside(aside: Path | None) -> None:
    if aside is not None:
        console.print(f"[yellow]moved the earlier run aside to {aside}[/yellow]")


@app.command("evaluate")
def evaluate_command(
    model: Annotated[Path, typer.Option(help="A saved classifier directory (.../model)")],
    data: Annotated[Path, typer.Option(help="Labelled file to score")],
    output: Annotated[Path | None, typer.Option(help="Write metrics here (JSON)")] = None,
    data_format: Annotated[str, typer.Option(
        "--format", callback=one_of(*_RELATION_FORMATS),
        help="fewrel, semeval, tacred or jsonl")] = "fewrel",
    entities: Annotated[str | None, typer.Option(
        callback=one_of("linker", "gold", "both", "none"),
        help="Override the model's entity source (linker, none)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per batch")] = 64,
    dtype: Annotated[str, typer.Option(
        callback=one_of("float32", "bfloat16", "int8"),
        help="Inference precision: float32, bfloat16 or int8 (CPU only)")] = "float32",
) -> None:
    """Score a saved relation classifier; entities come from the model's own linker
    (gold KG ids in the file are ignored)."""
    from ernie_kg.pipelines.relation import RelationClassifier

    classifier = RelationClassifier.load(model, entities=entities, dtype=dtype)
    examples = _read_relations(data, data_format, gold_ids=False)
    metrics = classifier.evaluate(examples, batch_size=batch_size, progress=True)
    predictions = metrics.pop("predictions")
    metrics.update(model=str(model), data=str(data), entities=classifier.entities,
                   dtype=classifier.dtype)
    if output is not None:
        write_json(output, {**metrics, "predictions": predictions})
    console.print(", ".join(f"{k}={metrics[k]:.4f}" for k in ("accuracy", "macro_f1",
                                                               "micro_f1")))


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[str, typer.Argument(help="dataset name (fewrel)")],
    dest: Annotated[Path, typer.Option(help="directory to write the files into")],
    from_dir: Annotated[Path | None, typer.Option(
        help="copy the files from this local directory instead of downloading")] = None,
    timeout: Annotated[float, typer.Option(callback=positive,
                                           help="seconds to wait for the network")] = 10.0,
) -> None:
    """Download DATASET from its official location (or copy it with --from-dir) and check
    every file's checksum."""
    from ernie_kg.data.fetch import fetch

    fetch(dataset, dest, from_dir=from_dir, timeout=timeout,
          progress=lambda line: console.print(line))


def _close_progress_bars() -> None:
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main() -> None:
    """Entry point: run the app, turning user errors into one clear line."""
    keep_freed_memory()
    try:
        app()
    except ErnieKGError as error:
        console.print(f"[red]error:[/red] {error}")
        raise SystemExit(2) from None
    except SystemExit as done:
        if done.code == 130:  # Typer turns Ctrl-C (KeyboardInterrupt) into exit 130
            _close_progress_bars()  # else a bar's last redraw lands after the line below
            console.print("[yellow]interrupted[/yellow]: files are written whole or not at "
                          "all; a run directory continues with --resume where the command "
                          "has it")
        raise


if __name__ == "__main__":
    main()
