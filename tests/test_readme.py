"""README.md's Python examples run as written.

Every ```python block of README.md is executed with ``exec``, in order, in one namespace
(as one script), inside a temporary working directory, so an example that no longer
matches the code fails here. The README's bash blocks are not run: the shell commands
are covered by the CLI tests (tests/test_demo.py and the others).

One block loads ``runs/demo/ernie-kg/model``, which the README says comes from
``make demo``. The full demo fine-tunes two MiniLM models on 1,500 sentences (minutes),
so the test makes that directory the way the demo does, only smaller: the demo's own
recipe (``build_relation_classifier`` on the demo KG, its labels, the packaged MiniLM
backbone, ``knowledge=True``, seed 0) and ``train_relation_classifier`` into
``runs/demo/ernie-kg``, which saves ``runs/demo/ernie-kg/model``; but with 2 TransE
epochs and one training step on 16 sentences. Its predictions are therefore not the
README's figures; the test checks their form only (a known label and a probability).
Nothing is mocked: every model is real.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    """The source of every ```python block of README.md, in order."""
    return FENCE.findall(README.read_text(encoding="utf-8"))


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine a second one only contends."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_demo_model(root: Path) -> Path:
    """``root/runs/demo/ernie-kg/model`` as ``make demo`` writes it, from a tiny run."""
    from ernie_kg.data.features import LabelMap
    from ernie_kg.data.fewrel import read_fewrel
    from ernie_kg.kg import KnowledgeGraph, train_entity_embeddings
    from ernie_kg.paths import demo_kg_dir, kg_data_dir
    from ernie_kg.pipelines import build_relation_classifier, train_relation_classifier

    kg = KnowledgeGraph.load(demo_kg_dir())
    embeddings = train_entity_embeddings(kg, dim=32, epochs=2, evaluate=False,
                                         progress=False)
    train = read_fewrel(kg_data_dir() / "demo_corpus" / "train.json")
    classifier = build_relation_classifier(LabelMap.from_examples(train), kg, embeddings,
                                           knowledge=True, seed=0)
    train_relation_classifier(classifier, train[::100][:16], None,
                              root / "runs" / "demo" / "ernie-kg", max_steps=1,
                              batch_size=16, seed=0, progress=False)
    return root / "runs" / "demo" / "ernie-kg" / "model"


def test_readme_has_the_examples():
    blocks = python_blocks()
    assert len(blocks) >= 4
    assert any("RelationClassifier.load" in block for block in blocks)


def test_readme_python_blocks_run(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    assert (make_demo_model(tmp_path) / "ernie_kg_classifier.json").is_file()

    namespace: dict = {"__name__": "__readme__"}
    for number, block in enumerate(python_blocks(), start=1):
        code = compile(block, f"README.md python block {number}", "exec")
        exec(code, namespace)  # noqa: S102 - running the README is the point

    from ernie_kg.linking import LinkedMention

    mentions = namespace["linker"]("Ludwig van Beethoven was born in Bonn.")
    assert mentions and all(isinstance(m, LinkedMention) for m in mentions)
    assert namespace["model"](**namespace["inputs"]).logits.shape == (1, 2)

    classifier = namespace["classifier"]
    label, probability = classifier.predict("The entry on Vienna links to Austria .",
                                            head="Vienna", tail="Austria")
    assert label in classifier.labels and 0.0 <= probability <= 1.0

    typer = namespace["typer"]  # the one loaded back from runs/typer/model
    found = typer.predict("Ludwig van Beethoven was born in Bonn.", mention="Bonn")
    assert all(t in ("person", "city") and 0.0 <= p <= 1.0 for t, p in found)
    assert (tmp_path / "runs" / "demo-emb").is_dir()
