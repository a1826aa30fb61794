"""`ernie-kg demo`: the whole pipeline on the bundled demo KG, offline, in minutes.

KG -> TransE (PyKEEN) -> nearest entities (faiss) -> linking (spaCy) -> fine-tune the
text-only baseline and ERNIE-KG on the demo relation corpus -> a comparison table
(printed, ``demo.json`` + ``demo.md``) and one plot (``demo.png``).

The demo corpus (kg_data/demo_corpus) is built so that about a third of its sentences
use wordings shared by every relation ("{h} ( {t} )"): the text alone cannot tell
born_in from died_in there, only the KG fact can, which is what the comparison shows.
Both models see the same data, seed and settings; at test time ERNIE-KG's entities come
from its own linker (no gold ids).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ernie_kg.io import write_atomic, write_json
from ernie_kg.kg import EntityIndex, KnowledgeGraph, train_entity_embeddings
from ernie_kg.paths import demo_kg_dir, kg_data_dir

#: Demo TransE settings: the demo KG is small, so fewer epochs and a larger step suffice.
DEMO_EMBEDDING = {"dim": 100, "epochs": 60, "learning_rate": 5e-3, "batch_size": 128}
#: Brief fine-tuning: about a minute per model on 2 CPU cores (so one gate rate, the
#: knowledge modules', not the default's two runs chosen on dev).
DEMO_FINETUNE = {"epochs": 2.0, "learning_rate": 1e-4, "knowledge_learning_rate": 1e-3,
                 "gate_learning_rate": None, "batch_size": 32}
DEMO_SENTENCES = [
    ("Ludwig van Beethoven was born in Bonn .", "Ludwig van Beethoven", "Bonn"),
    ("The entry on Vienna links to Austria .", "Vienna", "Austria"),
]


def run_demo(output_dir: Path, kg_dir: Path | None = None, seed: int = 0,
             finetune: bool = True) -> dict[str, Any]:
    """Run the demo steps, print what they find, write ``output_dir/demo.{json,md,png}``."""
    console = Console()
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)

    kg = KnowledgeGraph.load(kg_dir or demo_kg_dir())
    console.rule("[bold]1. Knowledge graph")
    console.print(kg)
    stats = kg.degree_stats()
    console.print(f"degree mean {stats['mean']:.1f}, max {stats['max']:.0f}")

    console.rule("[bold]2. TransE entity embeddings (PyKEEN)")
    embeddings = train_entity_embeddings(kg, seed=seed, **DEMO_EMBEDDING)
    embeddings.save(output_dir / "embeddings")
    table = Table("link prediction (test, filtered)", "value")
    for name, value in embeddings.metrics.items():
        table.add_row(name, f"{value:.3f}")
    console.print(table)

    console.rule("[bold]3. Nearest entities (faiss)")
    index = EntityIndex(embeddings)
    neighbours = {}
    for probe in _probe_entities(kg):
        found = index.nearest(probe, k=5)
        neighbours[probe] = found
        names = ", ".join(kg.entity(e).label for e, _ in found)
        console.print(f"{kg.entity(probe).label}: {names}")

    summary: dict[str, Any] = {"kg": repr(kg), "link_prediction": embeddings.metrics,
                               "nearest": neighbours}
    if finetune:
        summary.update(_relation_classification(kg, embeddings, output_dir, seed, console))
    summary["seconds"] = time.perf_counter() - started
    write_json(output_dir / "demo.json", summary)
    written = [output_dir / name for name in ("demo.json", "demo.md", "demo.png")
               if (output_dir / name).is_file()]
    console.print(f"[green]done in {summary['seconds']:.0f} s[/green]; wrote "
                  + ", ".join(str(path) for path in written))
    return summary


def _relation_classification(kg, embeddings, output_dir: Path, seed: int,
                             console: Console) -> dict[str, Any]:
    from ernie_kg.data.features import LabelMap
    from ernie_kg.data.fewrel import read_fewrel
    from ernie_kg.pipelines.relation import build_relation_classifier, train_relation_classifier

    corpus = kg_data_dir() / "demo_corpus"
    train, dev, test = (read_fewrel(corpus / f"{split}.json") for split in ("train", "dev", "test"))
    labels = LabelMap.from_examples(train)

    console.rule("[bold]4. Entity linking (alias patterns over spaCy tokens + KG coherence)")
    ernie = build_relation_classifier(labels, kg, embeddings, knowledge=True, seed=seed)
    linker = ernie.processor.linker
    for text, _, _ in DEMO_SENTENCES:
        found = ", ".join(f"{m.text!r}->{m.entity_id}" for m in linker(text) if m.entity_id)
        console.print(f"{text}\n   {found}")

    console.rule("[bold]5. Fine-tuning: text-only baseline vs ERNIE-KG")
    results: dict[str, dict[str, Any]] = {}
    classifiers = {"baseline": build_relation_classifier(labels, kg, embeddings,
                                                         knowledge=False, seed=seed),
                   "ernie-kg": ernie}
    for name, classifier in classifiers.items():
        console.print(f"[bold]{name}[/bold]: {len(train)} training sentences, "
                      f"{DEMO_FINETUNE['epochs']:g} epochs")
        shutil.rmtree(output_dir / name, ignore_errors=True)  # an earlier demo's: rerun
        train_relation_classifier(classifier, train, dev, output_dir / name, seed=seed,
                                  progress=True, **DEMO_FINETUNE)
        scored = classifier.evaluate(test)
        results[name] = {k: scored[k] for k in ("accuracy", "macro_f1", "micro_f1")}
        results[name]["per_label_f1"] = scored["per_label_f1"]
        text, head, tail = DEMO_SENTENCES[1]
        results[name]["example"] = {"text": text, "head": head, "tail": tail,
                                    "prediction": classifier.predict(text, head, tail)}

    table = Table(title=f"demo corpus test set ({len(test)} sentences, entities from the "
                        "model's own linker)")
    table.add_column("model")
    for column in ("accuracy", "macro-F1", "micro-F1"):
        table.add_column(column, justify="right")
    for name, metrics in results.items():
        table.add_row(name, *(f"{100 * metrics[k]:.1f}" for k in
                              ("accuracy", "macro_f1", "micro_f1")))
    console.print(table)
    text, head, tail = DEMO_SENTENCES[1]
    for name, metrics in results.items():
        label, probability = metrics["example"]["prediction"]
        console.print(f"{name}: {text!r} ({head} -> {tail}): {label} ({probability:.2f})")
    _write_report(output_dir, results, len(test))
    return {"relation_classification": results}


def _write_report(output_dir: Path, results: dict[str, dict[str, Any]], num_test: int) -> None:
    """``demo.md`` (the comparison table) and ``demo.png`` (per-relation F1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# ernie-kg demo: relation classification on the demo corpus", "",
             f"Test set: {num_test} sentences; ERNIE-KG links them with its own linker.", "",
             "| model | accuracy | macro-F1 | micro-F1 |", "|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {100 * m['accuracy']:.1f} | {100 * m['macro_f1']:.1f} | "
                     f"{100 * m['micro_f1']:.1f} |")
    write_atomic(output_dir / "demo.md", lambda handle: handle.write("\n".join(lines) + "\n"))

    relations = sorted(next(iter(results.values()))["per_label_f1"])
    figure, axis = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(results)
    for n, (name, metrics) in enumerate(results.items()):
        axis.bar([i + n * width for i in range(len(relations))],
                 [metrics["per_label_f1"].get(r, 0.0) for r in relations], width, label=name)
    axis.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(relations))])
    axis.set_xticklabels(relations, rotation=40, ha="right")
    axis.set(ylabel="F1", ylim=(0, 1.05), title="demo corpus: per-relation F1 (test)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "demo.png", dpi=100)
    plt.close(figure)


def _probe_entities(kg: KnowledgeGraph, count: int = 3) -> list[str]:
    """The best-connected entities: their neighbours are the easiest to judge."""
    degrees = sorted(kg.graph.degree(), key=lambda item: (-item[1], item[0]))
    return [entity for entity, _ in degrees[:count]]
