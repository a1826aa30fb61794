"""Arguments out of range or not among the choices are refused at the CLI and the API,
naming the option and what it allows, before any work starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.paths import demo_kg_dir


@pytest.mark.parametrize(("command", "option"), [
    (["kg", "embed", "--triples-dir", "KG", "--out", "OUT", "--epochs", "-3"], "--epochs"),
    (["kg", "embed", "--triples-dir", "KG", "--out", "OUT", "--dim", "0"], "--dim"),
    (["kg", "embed", "--triples-dir", "KG", "--out", "OUT", "--lr", "-0.1"], "--lr"),
    (["kg", "embed", "--triples-dir", "KG", "--out", "OUT", "--norm", "3"], "--norm"),
    (["finetune", "--train", "T", "--output-dir", "O", "--epochs", "0"], "--epochs"),
    (["finetune", "--train", "T", "--output-dir", "O", "--epochs", "-2"], "--epochs"),
    (["finetune", "--train", "T", "--output-dir", "O", "--batch-size", "0"], "--batch-size"),
    (["finetune", "--train", "T", "--output-dir", "O", "--lr", "0"], "--lr"),
    (["pretrain", "run", "--data", "D", "--output", "O", "--max-steps", "0"],
     "--max-steps"),
    (["pretrain", "run", "--data", "D", "--output", "O", "--save-steps", "0"],
     "--save-steps"),
    (["pretrain", "run", "--data", "D", "--output", "O", "--dropout", "1.5"],
     "--dropout"),
    (["pretrain", "run", "--data", "D", "--output", "O", "--mixed-precision", "fp8"],
     "--mixed-precision"),
    (["pretrain", "prepare", "--corpus", "C", "--kg", "KG", "--out", "O", "--lang",
      "english"], "--lang"),
    (["pretrain", "post-train", "--corpus", "C", "--output", "O", "--max-steps", "0"],
     "--max-steps"),
    (["pretrain", "post-train", "--corpus", "C", "--output", "O", "--max-length", "4"],
     "--max-length"),
    (["finetune", "--train", "T", "--output-dir", "O", "--entities", "all"], "--entities"),
    (["finetune", "--train", "T", "--output-dir", "O", "--format", "csv"], "--format"),
    (["finetune", "--train", "T", "--output-dir", "O", "--model", "luke"], "--model"),
])
def test_cli_refuses_out_of_range_numbers(tmp_path, command, option):
    command = [str(tmp_path / part) if part in ("OUT", "O") else part for part in command]
    command = [str(demo_kg_dir()) if part == "KG" else part for part in command]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert not any(tmp_path.iterdir())  # nothing written


def test_api_refuses_out_of_range_numbers(tiny_kg):
    from ernie_kg.kg import train_entity_embeddings
    from ernie_kg.training.pretrain import PretrainingSettings

    with pytest.raises(ValueError, match="epochs must be >= 0, not -3"):
        train_entity_embeddings(tiny_kg, epochs=-3)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        train_entity_embeddings(tiny_kg, batch_size=0)
    with pytest.raises(ValueError, match="max_steps must be >= 1, not 0"):
        PretrainingSettings(max_steps=0)
    with pytest.raises(ValueError, match="learning_rate must be a finite number"):
        PretrainingSettings(learning_rate=float("nan"))


@pytest.mark.parametrize(("option", "value", "kind"), [
    ("--model", "TrnasE", "model"), ("--training-loop", "lcwa2", "training loop"),
    ("--loss", "hinge", "loss")])
def test_kg_embed_refuses_names_pykeen_lacks(tmp_path, option, value, kind):
    result = CliRunner().invoke(app, ["kg", "embed", "--triples-dir", str(demo_kg_dir()),
                                      "--out", str(tmp_path / "out"), option, value])
    assert result.exit_code == 1 and not (tmp_path / "out").exists()
    assert f"is not a PyKEEN {kind}; one of:" in str(result.exception)


def test_api_refuses_settings_outside_their_choices(tiny_backbone):
    from ernie_kg.errors import SettingError
    from ernie_kg.modeling import ErnieKGForRelationClassification
    from ernie_kg.training.pretrain import PretrainingSettings

    with pytest.raises(SettingError, match="mixed_precision='fp8'"):
        PretrainingSettings(mixed_precision="fp8")
    with pytest.raises(SettingError, match=r"num_knowledge_layers=99 must lie in \[0, "):
        ErnieKGForRelationClassification.from_backbone(tiny_backbone, num_labels=2,
                                                       num_knowledge_layers=99)
