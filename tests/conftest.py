"""Shared fixtures: small graphs the project writes itself (no ../shared data)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from ernie_kg.kg import Entity, KnowledgeGraph, Relation
from ernie_kg.paths import PROJECT_ROOT, default_backbone, demo_kg_dir


@pytest.fixture(scope="session")
def nations_dir(tmp_path_factory) -> Path:
    """PyKEEN's built-in Nations written as a KG directory (train/valid/test)."""
    from pykeen.datasets import Nations

    dataset = Nations()

    def rows(factory):
        return [tuple(t) for t in factory.triples]

    directory = tmp_path_factory.mktemp("nations")
    KnowledgeGraph.from_triples(rows(dataset.training), rows(dataset.validation),
                                rows(dataset.testing)).save(directory)
    return directory


@pytest.fixture
def tiny_kg() -> KnowledgeGraph:
    """Eight capitals/countries/continents facts with names and aliases."""
    train = [
        ("paris", "capital_of", "france"),
        ("berlin", "capital_of", "germany"),
        ("france", "continent", "europe"),
        ("germany", "continent", "europe"),
        ("france", "shares_border_with", "germany"),
        ("germany", "shares_border_with", "france"),
        ("tokyo", "capital_of", "japan"),
    ]
    test = [("japan", "continent", "asia")]
    entities = [
        Entity("france", "France", aliases=("French Republic",), types=("country",)),
        Entity("paris", "Paris", types=("city",), description="capital of France"),
        Entity("germany", "Germany", aliases=("Deutschland", "FRG")),
    ]
    relations = [Relation("capital_of", "capital of")]
    return KnowledgeGraph.from_triples(train, test=test, entities=entities, relations=relations)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> str:
    """A 2-layer random BERT with MiniLM's vocabulary and tokenizer."""
    path = tmp_path_factory.mktemp("tiny_backbone")
    tokenizer = AutoTokenizer.from_pretrained(default_backbone())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def benchmark_script(monkeypatch) -> Callable[[str], ModuleType]:
    """Loads ``benchmarks/<name>.py`` as a module; the sys.path entry and OMP variable
    the benchmarks set are undone after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))

    return partial(load_script, "benchmarks")


@pytest.fixture
def experiment_script(monkeypatch) -> Callable[[str], ModuleType]:
    """Loads ``experiments/<name>.py`` as a module; the sys.path entry it may add is
    undone after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    return partial(load_script, "experiments")


def load_script(folder: str, name: str) -> ModuleType:
    """``<folder>/<name>.py`` of the project, imported as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tiny models (2 threads only contend on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo_knowledge():
    """The bundled demo KG, random 8-dim entity vectors and the finished alias table: the
    KG's names plus the demo corpus's mentions."""
    from ernie_kg.data.fewrel import fewrel_aliases
    from ernie_kg.kg import EntityEmbeddings
    from ernie_kg.linking.aliases import AliasTable
    from ernie_kg.paths import kg_data_dir

    kg = KnowledgeGraph.load(kg_data_dir() / "demo")
    embeddings = EntityEmbeddings.random(list(kg.entities), dim=8)
    aliases = fewrel_aliases(kg_data_dir() / "demo_corpus" / "train.json",
                             AliasTable.from_kg(kg))
    return kg, embeddings, aliases


@pytest.fixture(scope="module")
def tokenizer():
    """The packaged MiniLM's tokenizer."""
    return AutoTokenizer.from_pretrained(default_backbone())


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    """The bundled demo KG."""
    return KnowledgeGraph.load(demo_kg_dir())


@pytest.fixture(scope="module")
def entity_ids(kg) -> list[str]:
    """The demo KG's entity ids, sorted (an entity table's rows)."""
    return sorted(kg.entities)
