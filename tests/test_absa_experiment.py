"""experiments/absa.py end to end on a tiny slice of the real benchmarks (packaged MiniLM),
and experiments/summarize_absa.py on fake runs."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ernie_kg.data.absa import build_examples
from ernie_kg.paths import PROJECT_ROOT

ABSA_DATA = PROJECT_ROOT.parent / "shared" / "data" / "absa"
CONTRACT = {
    "sentihood": ("aspect_strict_accuracy", "aspect_macro_f1", "aspect_auc",
                  "sentiment_accuracy", "sentiment_auc"),
    "semeval": ("precision", "recall", "f1", "accuracy_4way", "accuracy_3way",
                "accuracy_binary"),
}


@pytest.mark.skipif(not ABSA_DATA.is_dir(), reason="../shared/data/absa is absent")
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(("dataset", "setting"), [("semeval", "qa_m"), ("sentihood", "nli_b")])
def test_absa_experiment_writes_contract_metrics(dataset, setting, tmp_path, experiment_script):
    out = tmp_path / "run"
    metrics = experiment_script("absa").main([
        "--dataset", dataset, "--setting", setting, "--seed", "0", "--output-dir", str(out),
        "--limit", "12", "--epochs", "1", "--max-length", "48", "--eval-limit", "24",
        "--no-progress",
    ])
    saved = json.loads((out / "metrics.json").read_text())
    for key in CONTRACT[dataset]:
        assert isinstance(saved[key], float) and 0.0 <= saved[key] <= 1.0, key
        assert saved[key] == metrics[key]
    assert set(saved["dev"]) >= set(CONTRACT[dataset]) | {"absa_score"}
    if dataset == "semeval":  # one example per (sentence, category)
        assert saved["settings"]["examples"]["test"] == 24 * 5
    assert saved["timings"]["examples_per_group"] == (3 if setting == "nli_b" else 1)
    assert saved["timings"]["train_examples_per_second"] > 0
    assert saved["settings"]["limit"] == 12 and saved["lengths"]["train"]["max_length"] == 48
    assert not (out / "checkpoints").exists() and (out / "model" / "config.json").is_file()
    assert not Path(saved["settings"]["data_dir"]).is_absolute()
    assert (out / "predictions.json").is_file()


def fake_metrics(path: Path, dataset: str, values: dict[str, float], minutes: float,
                 dev: float = 0.8) -> None:
    path.mkdir(parents=True)
    path.joinpath("metrics.json").write_text(json.dumps({
        **values, "dev": {"absa_score": dev},
        "timings": {"minutes": minutes, "train_examples_per_second": 40.0},
        "machine": {"platform": "Linux-x", "cpu": "AMD EPYC", "torch_threads": 2,
                    "load_average": [2.0, 2.0, 2.0]},
        "settings": {"dataset": dataset, "backbone": "MiniLM-L6-H384"},
    }))


def test_summary_of_two_seeds_beside_the_paper(tmp_path, experiment_script):
    runs = tmp_path / "runs"
    keys = CONTRACT["sentihood"]
    fake_metrics(runs / "sentihood-qa_m-seed0", "sentihood", dict.fromkeys(keys, 0.80), 20)
    fake_metrics(runs / "sentihood-qa_m-seed1", "sentihood",
                 {**dict.fromkeys(keys, 0.90), "sentiment_auc": float("nan")}, 30)
    (runs / "notes").mkdir()  # not a run: ignored
    output = tmp_path / "results" / "absa"
    summary = experiment_script("summarize_absa").main(["--runs", str(runs), "--output",
                                                 str(output)])
    row = summary["table"]["sentihood"]["qa_m"]
    assert row["seeds"] == [0, 1]
    assert row["test"]["aspect_macro_f1"]["mean"] == pytest.approx(85.0)
    assert row["test"]["aspect_macro_f1"]["std"] == pytest.approx(math.sqrt(50))
    assert row["test"]["sentiment_auc"] == {"mean": pytest.approx(80.0), "std": 0.0, "n": 1}
    assert row["paper"]["sentiment_accuracy"] == 93.6 and row["minutes"]["mean"] == 25
    text = output.with_suffix(".md").read_text()
    assert "| BERT-pair-QA-M | 2 | 85.0 ± 7.1 (79.4) | 85.0 ± 7.1 (86.4) |" in text
    assert "semeval" not in summary["table"] and "25.0" in text
    saved = json.loads(output.with_suffix(".json").read_text())
    assert not Path(saved["runs_dir"]).is_absolute() and "`/" not in text
    assert not any(Path(run["run"]).is_absolute() for run in saved["runs"])
    assert "(97.0)" in text  # the paper's aspect AUC, printed as the paper does
    assert output.with_suffix(".png").stat().st_size > 0


def test_the_best_pair_setting_is_chosen_on_dev_and_compared_with_single(tmp_path,
                                                                       experiment_script):
    runs = tmp_path / "runs"
    keys = CONTRACT["semeval"]
    for seed, (single, qa_m, nli_m) in enumerate([(0.80, 0.84, 0.95), (0.82, 0.88, 0.95)]):
        fake_metrics(runs / f"semeval-single-seed{seed}", "semeval",
                     dict.fromkeys(keys, single), 10)
        fake_metrics(runs / f"semeval-qa_m-seed{seed}", "semeval", dict.fromkeys(keys, qa_m),
                     10, dev=0.9)
        # better on test, worse on dev: never the pick
        fake_metrics(runs / f"semeval-nli_m-seed{seed}", "semeval",
                     dict.fromkeys(keys, nli_m), 10, dev=0.7)
    output = tmp_path / "absa"
    found = experiment_script("summarize_absa").main(["--runs", str(runs), "--output",
                                               str(output)])["claims"]["semeval"]
    assert found["best_pair_on_dev"] == "qa_m"
    f1 = found["metrics"]["f1"]
    assert f1["gain_over_single"] == pytest.approx(5.0)  # 86 - 81
    assert f1["beats_single_by_more_than_std"] is True  # stds: 2.8 and 1.4
    assert f1["gap_to_paper"] == pytest.approx(86.0 - 92.18)
    assert f1["single_gap_to_paper"] == pytest.approx(81.0 - 90.89)  # the paper's single F1
    assert found["metrics"]["accuracy_4way"]["single_gap_to_paper"] == pytest.approx(81 - 83.7)
    assert "| semeval | BERT-pair-QA-M (2 seeds) | F1 | 86.00 ± 2.83 | 81.00 ± 1.41 | " \
        "+5.00 | yes | 92.18 | -6.18 | -9.89 (90.89) |" in output.with_suffix(".md").read_text()


def test_a_setting_with_fewer_seeds_is_ranked_on_the_seeds_it_shares(tmp_path, experiment_script):
    runs = tmp_path / "runs"
    keys = CONTRACT["sentihood"]
    for seed, dev in enumerate([0.90, 0.80, 0.80]):  # mean 83.33; seed 0 the best seed
        fake_metrics(runs / f"sentihood-qa_m-seed{seed}", "sentihood",
                     dict.fromkeys(keys, 0.85), 20, dev=dev)
    # one seed: above qa_m's 3-seed mean, below qa_m on the same seed
    fake_metrics(runs / "sentihood-nli_b-seed0", "sentihood", dict.fromkeys(keys, 0.87), 60,
                 dev=0.88)
    output = tmp_path / "absa"
    found = experiment_script("summarize_absa").main(["--runs", str(runs), "--output",
                                               str(output)])["claims"]["sentihood"]
    assert found["best_pair_on_dev"] == "qa_m" and found["seeds"] == [0, 1, 2]
    assert found["dev_seeds_compared"] == [0]
    assert found["dev_scores"] == {"qa_m": pytest.approx(90.0), "nli_b": pytest.approx(88.0)}
    assert "- sentihood, mean dev score on seed 0: BERT-pair-QA-M 90.00, BERT-pair-NLI-B " \
        "88.00" in output.with_suffix(".md").read_text()


def test_feature_based_runs_are_paired_with_the_fine_tuned_runs_of_their_seeds(
        tmp_path, experiment_script):
    runs = tmp_path / "runs"
    keys = CONTRACT["sentihood"]
    for seed, (tuned, frozen) in enumerate([(0.90, 0.80), (0.92, 0.86)]):
        fake_metrics(runs / f"sentihood-nli_m-seed{seed}", "sentihood",
                     dict.fromkeys(keys, tuned), 20)
        fake_metrics(runs / f"sentihood-nli_m-features-seed{seed}", "sentihood",
                     dict.fromkeys(keys, frozen), 3)
    fake_metrics(runs / "sentihood-nli_m-features-seed7", "sentihood",  # no fine-tuned twin
                 dict.fromkeys(keys, 0.1), 3)
    output = tmp_path / "absa"
    summary = experiment_script("summarize_absa").main(["--runs", str(runs), "--output",
                                                 str(output)])
    assert summary["table"]["sentihood"]["nli_m"]["seeds"] == [0, 1]  # fine-tuned only
    gap = summary["feature_gap"]["sentihood/nli_m"]
    assert gap["seeds"] == [0, 1, 7] and gap["paired_seeds"] == [0, 1]
    assert gap["metrics"]["sentiment_accuracy"]["gap"]["mean"] == pytest.approx(8.0)
    assert "| sentihood | BERT-pair-NLI-M | sent acc | 58.67 ± 42.25 (3) | 91.00 ± 1.41 (2) " \
        "| +8.00 ± 2.83 |" in output.with_suffix(".md").read_text()


@pytest.mark.skipif(not ABSA_DATA.is_dir(), reason="../shared/data/absa is absent")
@pytest.mark.usefixtures("one_torch_thread")
def test_feature_based_run_trains_a_head_on_frozen_features(tmp_path, experiment_script):
    """The packaged MiniLM's last four layers; cached features: a second seed encodes
    nothing and trains only its head."""
    module = experiment_script("absa_features")
    argv = ["--dataset", "semeval", "--setting", "nli_m", "--output-dir",
            str(tmp_path / "s0"), "--limit", "16",
            "--eval-limit", "12", "--epochs", "3", "--feature-cache", str(tmp_path / "cache")]
    first = module.main([*argv, "--seed", "0"])
    assert not first["timings"]["features_cached"] and 1 <= first["kept_epoch"] <= 3
    for key in CONTRACT["semeval"]:
        assert 0.0 <= first[key] <= 1.0
    argv[argv.index(str(tmp_path / "s0"))] = str(tmp_path / "s1")
    second = module.main([*argv, "--seed", "1"])
    assert second["timings"]["features_cached"] and second["settings"]["seed"] == 1
    saved = json.loads((tmp_path / "s1" / "metrics.json").read_text())
    assert saved["settings"]["mode"] == "feature-based" and len(saved["history"]) == 3


@pytest.mark.skipif(not ABSA_DATA.is_dir(), reason="../shared/data/absa is absent")
@pytest.mark.usefixtures("one_torch_thread")
def test_single_setting_on_a_post_trained_backbone(tiny_backbone, tmp_path, experiment_script):
    """One classifier per category, assembled per group; a rerun reads the finished parts
    (nothing is retrained) and scores the same."""
    out = tmp_path / "run"
    argv = ["--dataset", "semeval", "--setting", "single", "--seed", "1", "--output-dir",
            str(out), "--post-trained", tiny_backbone, "--limit", "12", "--epochs", "1",
            "--max-length", "48", "--eval-limit", "12", "--no-progress"]
    module = experiment_script("absa")
    first = module.main(argv)
    parts = sorted(p.name for p in (out / "single").iterdir())
    assert parts == ["ambience", "anecdotes_miscellaneous", "food", "price", "service"]
    for part in parts:
        assert (out / "single" / part / "predictions.json").is_file()
        assert not (out / "single" / part / "model").exists()  # dropped once scored
    backbone = first["settings"]["backbone"]  # relative to the project root
    assert not Path(backbone).is_absolute()
    assert (PROJECT_ROOT / backbone).resolve() == Path(tiny_backbone).resolve()
    assert first["parts"]["food"]["train_examples"] == 12
    again = module.main(argv)
    assert all(again[key] == first[key] for key in CONTRACT["semeval"])
    assert again["timings"]["train_seconds"] == first["timings"]["train_seconds"]


@pytest.mark.skipif(not ABSA_DATA.is_dir(), reason="../shared/data/absa is absent")
@pytest.mark.parametrize("dataset", ["semeval", "sentihood"])
def test_post_training_corpus_holds_no_dev_or_test_sentence(dataset, tmp_path, experiment_script):
    module = experiment_script("absa_corpus")
    lines = module.main(["--dataset", dataset, "--output", str(tmp_path / "corpus.txt")])
    absa = experiment_script("absa")
    train, dev, test = absa.load_splits(dataset, ABSA_DATA)
    assert len(lines) > 0.9 * len(train) and len(set(lines)) == len(lines)
    held_out = {e.text for e in build_examples([*dev, *test], "qa_m")}  # as the model reads
    assert not set(lines) & held_out
    assert (tmp_path / "corpus.txt").read_text().splitlines() == lines


def test_post_trained_runs_are_compared_with_plain_runs_seed_by_seed(tmp_path, experiment_script):
    runs = tmp_path / "runs"
    keys = CONTRACT["semeval"]
    for seed, (plain, post) in enumerate([(0.80, 0.82), (0.84, 0.835)]):
        fake_metrics(runs / f"semeval-qa_m-seed{seed}", "semeval", dict.fromkeys(keys, plain),
                     10)
        fake_metrics(runs / f"semeval-qa_m-post-seed{seed}", "semeval",
                     dict.fromkeys(keys, post), 10)
    output = tmp_path / "absa"
    summary = experiment_script("summarize_absa").main(["--runs", str(runs), "--output",
                                                 str(output)])
    assert summary["table"]["semeval"]["qa_m"]["seeds"] == [0, 1]  # plain runs only
    f1 = summary["post_training"]["semeval/qa_m"]["metrics"]["f1"]
    assert f1["gain"]["mean"] == pytest.approx(0.75)  # (+2.0 - 0.5) / 2
    assert f1["worst_seed_gain"] == pytest.approx(-0.5)
    assert f1["never_more_than_tolerance_below"] is False  # seed 1: 0.5 below
    assert "| semeval | BERT-pair-QA-M | F1 | 2 | 82.75 ± 1.06 | 82.00 ± 2.83 | " \
        "+0.75 ± 1.77 | +2.00 / -0.50 | no |" in output.with_suffix(".md").read_text()
    assert summary["placebo"] == {}
    assert "Placebo" not in output.with_suffix(".md").read_text()


def test_placebo_runs_measure_the_bar_apart_from_the_post_trained_ones(tmp_path, experiment_script):
    runs = tmp_path / "runs"
    keys = CONTRACT["semeval"]
    for seed, (plain, post, placebo) in enumerate([(0.80, 0.82, 0.79), (0.84, 0.835, 0.845)]):
        for name, value in (("", plain), ("-post", post), ("-placebo", placebo)):
            fake_metrics(runs / f"semeval-nli_m{name}-seed{seed}", "semeval",
                         dict.fromkeys(keys, value), 10)
    output = tmp_path / "absa"
    summary = experiment_script("summarize_absa").main(["--runs", str(runs), "--output",
                                                 str(output)])
    assert summary["table"]["semeval"]["nli_m"]["test"]["f1"]["mean"] == pytest.approx(82.0)
    post = summary["post_training"]["semeval/nli_m"]["metrics"]["f1"]
    placebo = summary["placebo"]["semeval/nli_m"]["metrics"]["f1"]
    assert post["seed_gains"] == pytest.approx([2.0, -0.5])
    assert placebo["seed_gains"] == pytest.approx([-1.0, 0.5])
    assert placebo["never_more_than_tolerance_below"] is False
    text = output.with_suffix(".md").read_text()
    placebo_table = text[text.index("## Placebo"):]
    assert "| semeval | BERT-pair-NLI-M | F1 | 2 | 81.75 ± 3.89 | 82.00 ± 2.83 | " \
        "-0.25 ± 1.06 | -1.00 / +0.50 | no |" in placebo_table
    assert "+2.00 / -0.50" in text[:text.index("## Placebo")]


def test_runs_recorded_in_the_last_summary_outlive_their_directories(tmp_path, experiment_script):
    runs = tmp_path / "runs"
    keys = CONTRACT["sentihood"]
    fake_metrics(runs / "sentihood-single-seed0", "sentihood", dict.fromkeys(keys, 0.70), 20)
    fake_metrics(runs / "sentihood-qa_m-seed0", "sentihood", dict.fromkeys(keys, 0.80), 20)
    output = tmp_path / "results" / "absa"
    summarize = experiment_script("summarize_absa").main
    summarize(["--runs", str(runs), "--output", str(output)])
    shutil.rmtree(runs / "sentihood-single-seed0")  # a new checkout: that directory is gone
    shutil.rmtree(runs / "sentihood-qa_m-seed0")
    fake_metrics(runs / "sentihood-qa_m-seed0", "sentihood", dict.fromkeys(keys, 0.90), 20)
    fake_metrics(runs / "sentihood-qa_m-seed1", "sentihood", dict.fromkeys(keys, 0.86), 20)
    summary = summarize(["--runs", str(runs), "--output", str(output)])
    table = summary["table"]["sentihood"]
    assert table["single"]["test"]["aspect_macro_f1"]["mean"] == pytest.approx(70.0)
    assert table["qa_m"]["test"]["aspect_macro_f1"]["mean"] == pytest.approx(88.0)  # rerun wins
    assert summary["recorded_only"] == ["sentihood-single-seed0"]
    assert "sentihood-single-seed0" in output.with_suffix(".md").read_text()
    fresh = summarize(["--runs", str(runs), "--output", str(output), "--fresh"])
    assert "single" not in fresh["table"]["sentihood"]


def test_the_driver_skips_runs_the_summary_records(tmp_path, experiment_script):
    """experiments/run_absa.sh with a run recorded in RESULTS.json but no directory:
    skipped, not trained again, and the summary still counts it."""
    runs = tmp_path / "runs"
    fake_metrics(runs / "semeval-single-seed3", "semeval",
                 dict.fromkeys(CONTRACT["semeval"], 0.5), 5)
    output = tmp_path / "absa"
    experiment_script("summarize_absa").main(["--runs", str(runs), "--output", str(output)])
    shutil.rmtree(runs)
    env = {**os.environ, "PYTHON": sys.executable, "SEEDS": "3", "SETTINGS": "single",
           "DATASETS": "semeval", "RUNS": str(runs), "RESULTS": str(output)}
    done = subprocess.run(["bash", str(PROJECT_ROOT / "experiments" / "run_absa.sh")],
                          env=env, capture_output=True, text=True, timeout=300, check=True)
    assert f"skip {runs}/semeval-single-seed3 (recorded in {output}.json)" in done.stdout
    assert not runs.exists()  # nothing was trained
    saved = json.loads(output.with_suffix(".json").read_text())
    assert saved["recorded_only"] == ["semeval-single-seed3"]


def test_post_training_probes_sit_beside_plain_runs_of_their_seed(tmp_path, experiment_script):
    keys = CONTRACT["semeval"]
    runs = tmp_path / "runs"
    fake_metrics(runs / "semeval-nli_m-seed0", "semeval", dict.fromkeys(keys, 0.80), 10,
                 dev=0.79)
    summary = tmp_path / "absa"
    experiment_script("summarize_absa").main(["--runs", str(runs), "--output", str(summary)])
    backbone = tmp_path / "post" / "semeval-backbone"
    backbone.mkdir(parents=True)
    (backbone / "pretraining_settings.json").write_text(json.dumps({
        "max_steps": 300, "batch_size": 32, "learning_rate": 2e-5,
        "head_learning_rate": 1e-3, "head_warmup_steps": 50, "seed": 0}))
    (backbone / "log.jsonl").write_text("".join(
        json.dumps({"step": s, "mlm_loss": 6.0 - s / 10}) + "\n" for s in range(1, 21)))
    probe = tmp_path / "probe" / "semeval-nli_m-post-seed0"
    probe.mkdir(parents=True)
    (probe / "metrics.json").write_text(json.dumps({
        **dict.fromkeys(keys, 0.75), "dev": {"absa_score": 0.7745},
        "settings": {"dataset": "semeval", "setting": "nli_m", "seed": 0,
                     "backbone": str(backbone)}}))
    output = tmp_path / "probes"
    probes = experiment_script("summarize_post_probes")
    found = probes.main(["--probe", str(probe), "--summary", str(summary.with_suffix(".json")),
                         "--output", str(output), "--note", "held the top layer"])
    assert found["probes"][0]["mlm_loss"] == pytest.approx({"first": 5.85, "last": 4.05})
    assert [r["mode"] for r in found["references"]] == ["fine-tuned"]
    table = output.with_suffix(".md").read_text()
    assert "| BERT-pair-NLI-M | 0 | plain | – | – | – | – | – | – | 79.00 | 80.00 |" in table
    assert ("post/semeval-backbone | 300 | 2e-05 | 50 | nothing | 1.0 | 5.85 -> 4.05 | "
            "77.45 | 75.00 |") in table  # recorded before the settings: nothing held
    again = probes.main(["--summary", str(summary.with_suffix(".json")),
                         "--output", str(output)])  # earlier probes are kept
    assert [p["run"] for p in again["probes"]] == [p["run"] for p in found["probes"]]
    assert again["notes"] == ["held the top layer"]  # and the notes
    assert "- held the top layer" in output.with_suffix(".md").read_text()
    (backbone / "pretraining_settings.json").unlink()
    with pytest.raises(SystemExit, match="not fine-tuned from a post-trained backbone"):
        probes.main(["--probe", str(probe), "--output", str(output)])


def test_a_new_default_recipe_keeps_the_earlier_default_beside_it(tmp_path, experiment_script):
    """The summary's post-trained run of the old default, then the summary rebuilt with
    the new default's run of the same name (now a probe): the old one stays in the
    probes table as "earlier default", as recorded; the new one is listed once."""
    keys = CONTRACT["semeval"]
    old_runs, new_runs = tmp_path / "runs", tmp_path / "runs_new"
    fake_metrics(old_runs / "semeval-nli_m-seed0", "semeval", dict.fromkeys(keys, 0.80), 10)
    fake_metrics(old_runs / "semeval-nli_m-post-seed0", "semeval", dict.fromkeys(keys, 0.70),
                 10, dev=0.74)
    summary, output = tmp_path / "absa", tmp_path / "probes"
    summarize = experiment_script("summarize_absa").main
    probes = experiment_script("summarize_post_probes")
    summarize(["--runs", str(old_runs), "--output", str(summary)])
    backbone = tmp_path / "post" / "semeval-backbone"
    backbone.mkdir(parents=True)
    (backbone / "pretraining_settings.json").write_text(json.dumps({
        "max_steps": 1000, "batch_size": 32, "learning_rate": 5e-5, "head_learning_rate": 1e-3,
        "head_warmup_steps": 50, "freeze_word_embeddings": True, "interpolation": 0.25}))
    new = new_runs / "semeval-nli_m-post-seed0"
    fake_metrics(new, "semeval", dict.fromkeys(keys, 0.79), 10, dev=0.785)
    metrics = json.loads((new / "metrics.json").read_text())
    metrics["settings"].update(setting="nli_m", seed=0, backbone=str(backbone))
    (new / "metrics.json").write_text(json.dumps(metrics))
    args = ["--summary", str(summary.with_suffix(".json")), "--output", str(output)]
    first = probes.main(["--probe", str(new), *args])  # before the summary is rebuilt
    shutil.rmtree(old_runs / "semeval-nli_m-post-seed0")
    summarize(["--runs", str(new_runs), "--output", str(summary)])  # the new default wins
    again = probes.main(args)
    for found in (first, again):
        assert sorted((Path(r["run"]).parent.name, r["mode"]) for r in found["references"]) \
            == [("runs", "fine-tuned"), ("runs", "post-trained")]
    table = output.with_suffix(".md").read_text()
    assert "| BERT-pair-NLI-M | 0 | earlier default | – |" in table
    assert table.count("semeval-backbone | 1000 | 5e-05 | 50 | word embeddings | 0.25 |") == 1
