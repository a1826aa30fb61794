"""The ``ernie-kg`` command line (also ``python -m ernie_kg``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ernie_kg.errors import ErnieKGError
from ernie_kg.kg.embeddings import DEFAULT_EMBEDDING_SETTINGS

app = typer.Typer(help="Knowledge-enhanced language models in the style of ERNIE.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
kg_app = typer.Typer(help="Knowledge graphs: statistics, TransE embeddings, neighbours.",
                     no_args_is_help=True)
app.add_typer(kg_app, name="kg")
console = Console(stderr=True)

_D = DEFAULT_EMBEDDING_SETTINGS


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


@kg_app.command("stats")
def kg_stats(kg: Annotated[Path, typer.Option(help="KG directory")]) -> None:
    """Print entity, relation, triple and degree statistics of a KG directory."""
    from ernie_kg.kg import KnowledgeGraph

    graph = KnowledgeGraph.load(kg)
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


@kg_app.command("embed")
def kg_embed(
    triples_dir: Annotated[Path, typer.Option(help="KG directory with train.txt (+valid/test)")],
    out: Annotated[Path, typer.Option(help="Output directory for embeddings + metrics.json")],
    model: Annotated[str, typer.Option(help="PyKEEN model name")] = _D["model"],
    dim: Annotated[int, typer.Option(help="Embedding dimension")] = _D["dim"],
    epochs: Annotated[int, typer.Option(help="Training epochs")] = _D["epochs"],
    seed: Annotated[int, typer.Option(help="Random seed")] = _D["seed"],
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = _D["learning_rate"],
    batch_size: Annotated[int, typer.Option(help="Training batch size")] = _D["batch_size"],
    training_loop: Annotated[str, typer.Option(help="LCWA (1-vs-all) or sLCWA")] = _D[
        "training_loop"
    ],
    loss: Annotated[str, typer.Option(help="PyKEEN loss name")] = _D["loss"],
    norm: Annotated[int, typer.Option(help="TransE distance norm (1 or 2)")] = _D[
        "scoring_fct_norm"
    ],
) -> None:
    """Train entity embeddings with PyKEEN, evaluate on test.txt, write OUT/metrics.json."""
    from ernie_kg.kg import KnowledgeGraph, train_entity_embeddings

    graph = KnowledgeGraph.load(triples_dir)
    console.print(f"[bold]{graph}[/bold]")
    embeddings = train_entity_embeddings(
        graph, model=model, dim=dim, epochs=epochs, seed=seed, learning_rate=lr,
        batch_size=batch_size, training_loop=training_loop, loss=loss,
        scoring_fct_norm=norm,
    )
    embeddings.save(out)
    metrics = dict(embeddings.metrics)
    _write_json(out / "metrics.json", {**metrics, "config": embeddings.config})
    summary = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    console.print(f"[green]wrote {out}[/green]: {summary}")


@kg_app.command("nearest")
def kg_nearest(
    embeddings: Annotated[Path, typer.Option(help="Saved embeddings directory")],
    entity: Annotated[str, typer.Option(help="Entity id")],
    k: Annotated[int, typer.Option(help="How many neighbours")] = 10,
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
) -> None:
    """Run the whole pipeline on the bundled demo KG (offline, a few minutes on a CPU)."""
    from ernie_kg.demo import run_demo

    run_demo(output_dir, kg_dir=kg, seed=seed)


def main() -> None:
    """Entry point: run the app, turning user errors into one clear line."""
    try:
        app()
    except ErnieKGError as error:
        console.print(f"[red]error:[/red] {error}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
