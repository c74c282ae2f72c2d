"""compare: learning rates chosen on held-out training rows, the grid, the paired bootstrap and the
report, end to end in-process on a tiny model and tiny data; and resuming skips every finished run."""

import csv
import json
import random

import numpy
import pytest
import torch

from glue_run_fixtures import write_rte, write_tiny_model
from glue_tasks.cli import main
from glue_tasks.ledger import read_lines
from glue_tasks.significance import paired_bootstrap


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


def write_reviews(path, n=60):
    rng = random.Random(0)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = rng.choice(["good", "bad"])
            writer.writerow([f"item {i} was {'great' if label == 'good' else 'awful'}", label])
    return path


def test_compare_end_to_end_and_resume(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--train-file", str(write_reviews(tmp_path / "reviews.csv")), "--model", str(tiny_model_dir),
            "--output-dir", str(out), "--methods", "scratch-small", "top-0", "adapter-houlsby-8",
            "--losses", "ce", "cosine", "--seeds", "2", "--epochs", "1", "--max-length", "32"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "# compare: reviews" in printed and "trained on 54 rows (bad 30, good 24)" in printed
    lines = read_lines(out / "results.jsonl")
    tune = [line for line in lines if line["phase"] == "tune"]
    grid = [line for line in lines if line["phase"] == "grid"]
    assert len(tune) == 6 and len(grid) == 12
    assert all(set(line["dev_predictions"]) == {"held_out"} for line in tune)  # rates never see the dev set
    assert all(set(line["dev_predictions"]) == {"validation"} for line in grid)
    assert all(sum(line["train_label_counts"].values()) == line["train_examples"] for line in grid)
    assert {line["threads"] for line in lines} == {torch.get_num_threads()}  # the order of sums on a CPU
    assert f"torch threads per run: {torch.get_num_threads()} (18 runs)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["model"] == str(tiny_model_dir)  # the resolved model, also when it is the default
    for method, entry in summary["learning_rates"].items():
        tried = {float(lr): score for lr, score in entry["tried"].items()}
        assert tried[entry["chosen"]] == max(tried.values())
        assert {line["lr"] for line in grid if line["method"] == method} == {entry["chosen"]}
    cells = {cell["name"]: cell for cell in summary["cells"]}
    assert set(cells) == {f"{m}{s}" for m in ("scratch-small", "top-0", "adapter-houlsby-8")
                          for s in ("", " + cosine")}
    for name, cell in cells.items():
        assert len(cell["scores"]) == 2 and cell["mean"] == pytest.approx(numpy.mean(cell["scores"]))
        versus = cell["versus_scratch"]
        if name.startswith("scratch-small"):
            assert versus is None and cell["transfer"] == "baseline"
        else:  # against scratch-small with the same loss, judged by the interval
            baseline = cells["scratch-small" + name[len(cell["method"]):]]
            assert versus["difference"] == pytest.approx(cell["mean"] - baseline["mean"])
            assert cell["transfer"] == ("negative" if versus["high"] < 0 else "positive" if versus["low"] > 0
                                        else "within the spread")
    assert all(line["best_epoch"] == 1 for line in grid)  # the last epoch is kept: no choice on dev
    verdict = summary["winner_vs_runner_up"]
    ranked = sorted(cells.values(), key=lambda c: -c["mean"])
    assert verdict["winner"] == ranked[0]["name"] and verdict["runner_up"] == ranked[1]["name"]
    assert verdict["low"] <= verdict["difference"] <= verdict["high"] and verdict["resamples"] == 10_000
    named = verdict["low"] > 0 and verdict["versus_majority"]["low"] > 0  # ahead of both beyond the interval
    assert (verdict["verdict"] == "winner") == named and ("**Winner:" in printed) == named
    assert (out / "summary.md").is_file() and (out / "score_vs_params.png").stat().st_size > 1000
    moved = tmp_path / "elsewhere.csv"  # the ledger follows the data's content, not its path
    (tmp_path / "reviews.csv").rename(moved)
    args[args.index(str(tmp_path / "reviews.csv"))] = str(moved)

    assert main(args) == 0  # everything is in the ledger: nothing runs again
    assert len(read_lines(out / "results.jsonl")) == 18
    assert "tune: learning-rate choice (held-out 10% of train): 6 runs, 6 already done" in capsys.readouterr().err


def test_compare_refuses_bad_plans_before_any_run(tiny_model_dir, tmp_path, capsys):
    base = ["compare", "--train-file", str(write_reviews(tmp_path / "r.csv")), "--model", str(tiny_model_dir),
            "--output-dir", str(tmp_path / "cmp")]
    assert main([*base, "--methods", "top-0", "adapter-houlsby-8"]) == 2
    assert "against scratch-small: keep it in --methods" in capsys.readouterr().err
    assert main([*base, "--methods", "scratch-small", "bert-magic"]) == 2
    assert "unknown method bert-magic for compare" in capsys.readouterr().err
    assert not (tmp_path / "cmp" / "results.jsonl").exists()


def test_tune_fraction_scores_held_out_training_rows_and_never_reads_dev(tiny_model_dir, tmp_path):
    data = write_rte(tmp_path / "glue", n_train=40)
    (data / "RTE" / "dev.tsv").unlink()
    out = tmp_path / "run"
    assert main(["train", "--task", "rte", "--data-dir", str(data), "--model", str(tiny_model_dir), "--output-dir",
                 str(out), "--epochs", "1", "--size", "8", "--tune-fraction", "0.25"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["dev"]) == {"held_out"} and results["train_examples"] == 30
    assert len(results["dev_predictions"]["held_out"]["label"]) == 10


def test_scratch_small_is_a_small_model_of_the_same_type(tiny_model_dir, tmp_path):
    data = write_rte(tmp_path / "glue")
    out = tmp_path / "run"
    assert main(["train", "--task", "rte", "--data-dir", str(data), "--model", str(tiny_model_dir), "--output-dir",
                 str(out), "--epochs", "1", "--method", "scratch-small", "--save-full"]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("bert", 128, 2)
    assert main(["eval", "--run-dir", str(out)]) == 0


def test_paired_bootstrap_sees_a_real_difference_and_not_a_null_one():
    rng = numpy.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    good = numpy.where(rng.random((3, 400)) < 0.9, labels, 1 - labels)
    coin = rng.integers(0, 2, (3, 400))
    better = paired_bootstrap(good, coin, labels, "accuracy")
    assert better.beyond_spread and better.low > 0.2 and better.p_value == pytest.approx(2 / 10_001)
    same = paired_bootstrap(good, good, labels, "accuracy")
    assert (same.difference, same.low, same.high, same.beyond_spread) == (0.0, 0.0, 0.0, False)
    # Two coin-flip methods, 40 times: the 95% interval holds 0 about 95% of the time, and is as wide as
    # the spread of a difference of two 3-seed accuracies on 400 examples (sd sqrt(2 * 0.25 / 3 / 400)).
    nulls = [paired_bootstrap(rng.integers(0, 2, (3, 400)), rng.integers(0, 2, (3, 400)), labels, "accuracy",
                              resamples=2000) for _ in range(40)]
    assert 34 <= sum(null.low <= 0 <= null.high for null in nulls) <= 40
    expected_width = 2 * 1.96 * (2 * 0.25 / 3 / 400) ** 0.5
    assert numpy.mean([null.high - null.low for null in nulls]) == pytest.approx(expected_width, rel=0.15)
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(good, good[:, :10], labels, "accuracy")


@pytest.mark.parametrize("task_name, metric, classes", [
    ("rte", "accuracy", 2), ("mrpc", "f1_accuracy", 2), ("cola", "matthews", 2), ("stsb", "correlation", None),
    (None, "macro_f1", 3), (None, "matthews", 3)])
def test_bootstrap_difference_is_the_tables_difference_of_task_scores(task_name, metric, classes):
    """The test statistic is the report's: the task's own metric per seed, averaged over seeds."""
    from glue_tasks.metrics import compute_metrics, task_score
    from glue_tasks.tasks import TASKS, own_task
    task = TASKS[task_name] if task_name else own_task("x", ("t",), ("a", "b", "c"), metric)
    rng = numpy.random.default_rng(1)
    if classes is None:
        labels = rng.uniform(0, 5, 200)
        a, b = labels + rng.normal(0, 1, (3, 200)), labels + rng.normal(0, 2, (3, 200))
    else:
        labels = rng.integers(0, classes, 200)
        a = numpy.where(rng.random((3, 200)) < 0.8, labels, (labels + 1) % classes)
        b = numpy.where(rng.random((3, 200)) < 0.6, labels, (labels + 1) % classes)
    table = [numpy.mean([task_score(task, compute_metrics(task, p, labels)) for p in side]) for side in (a, b)]
    result = paired_bootstrap(a, b, labels, task.metric, resamples=500)
    assert result.difference == pytest.approx(table[0] - table[1], abs=1e-9)
    assert result.low < result.difference < result.high


def test_permuted_vocabulary_is_a_fixed_bijection_that_eval_reapplies(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from glue_tasks.train import vocabulary_permutation
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    mapping = vocabulary_permutation(tokenizer, 7)
    assert sorted(mapping.tolist()) == list(range(len(tokenizer)))
    assert all(mapping[i] == i for i in tokenizer.all_special_ids)
    moved = numpy.setdiff1d(numpy.arange(len(tokenizer)), tokenizer.all_special_ids)
    assert (mapping[moved] != moved).mean() > 0.99
    assert (vocabulary_permutation(tokenizer, 7) == mapping).all() and (vocabulary_permutation(tokenizer, 8) != mapping).any()

    data = write_rte(tmp_path / "glue")
    out = tmp_path / "run"
    assert main(["train", "--task", "rte", "--data-dir", str(data), "--model", str(tiny_model_dir), "--output-dir",
                 str(out), "--epochs", "1", "--size", "8", "--permute-vocabulary", "7"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run-dir", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["dev"] == evaluated["recorded_dev"]
    assert json.loads((out / "run_config.json").read_text())["permute_vocabulary"] == 7


def test_learning_rates_reused_from_an_earlier_compare(tiny_model_dir, tmp_path, capsys):
    data = write_reviews(tmp_path / "reviews.csv")
    first = tmp_path / "first"
    common = ["--train-file", str(data), "--model", str(tiny_model_dir), "--methods", "scratch-small", "top-0",
              "--losses", "ce", "--seeds", "1", "--epochs", "1", "--max-length", "32"]
    assert main(["compare", *common, "--output-dir", str(first)]) == 0
    chosen = {m: e["chosen"] for m, e in json.loads((first / "summary.json").read_text())["learning_rates"].items()}
    early = json.loads((first / "learning_rates.json").read_text())["learning_rates"]
    assert early == json.loads((first / "summary.json").read_text())["learning_rates"], \
        "the rates written before the grid are the ones the summary reports"
    for source, second in ((first / "summary.json", tmp_path / "second"),
                           (first / "learning_rates.json", tmp_path / "third")):
        assert main(["compare", *common, "--output-dir", str(second), "--lrs-from", str(source)]) == 0
        lines = read_lines(second / "results.jsonl")
        assert {line["phase"] for line in lines} == {"grid"}
        assert {line["method"]: line["lr"] for line in lines} == chosen
    assert main(["compare", *common, "--output-dir", str(second), "--lrs-from", str(data)]) == 2
    assert "not the learning_rates.json or summary.json of a compare run" in capsys.readouterr().err
    assert main(["compare", *common, "--output-dir", str(second), "--lrs-from", str(tmp_path / "nope.json")]) == 2
    assert "once its learning-rate runs are done" in capsys.readouterr().err
