"""`ernie-kg demo` without its fine-tuning step (the full demo takes minutes)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ernie_kg.cli import app


def test_demo_kg_steps(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--output-dir", str(tmp_path), "--no-finetune"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["link_prediction"]["hits_at_10"] > 0.3  # a random ranking gives ~0.02
    assert len(summary["nearest"]) == 3
    assert all(len(found) == 5 for found in summary["nearest"].values())
    assert (tmp_path / "embeddings" / "embeddings.json").is_file()
