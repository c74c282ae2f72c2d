"""A small-data practitioner's first day (issue 36): defaults that learn from a few hundred rows,
runs that say when they learned nothing, honest compare summaries, threads, Ctrl-C, and using the
trained model from files, adapter folders and Python."""

import json
import math
import os
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest
import torch

from glue_run_fixtures import write_tiny_model
from glue_tasks.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


def write_reviews(path: Path, n: int = 40, positive_every: int = 2, label: str = "{}") -> Path:
    """A CSV whose label is given away by one word; ``positive_every`` 4 makes it unbalanced (1 in 4)."""
    rows = [(f"a {'great' if i % positive_every == 0 else 'awful'} film {i}", int(i % positive_every == 0))
            for i in range(n)]
    path.write_text("review,stars\n" + "".join(f"{text},{label.format(y)}\n" for text, y in rows))
    return path


def train_args(model, data, out, *flags):
    return ["train", "--train-file", str(data), "--text-columns", "review", "--label-column", "stars",
            "--model", str(model), "--output-dir", str(out), "--size", "8", *flags]


# 1. Defaults that learn, and a run that says when it learned nothing

def test_the_default_schedule_is_set_by_optimizer_steps():
    from glue_tasks.schedule import MIN_STEPS, schedule
    small = schedule(300, None, None)
    assert small.batch_size == 8 and small.steps >= MIN_STEPS and small.automatic == ("batch", "epochs")
    large = schedule(20_000, None, None)
    assert large.batch_size == 32 and large.epochs == 3  # plenty of steps: the usual 3 epochs
    given = schedule(300, 32, 3)
    assert (given.batch_size, given.epochs, given.steps, given.automatic) == (32, 3, 30, ())
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert f"{MIN_STEPS} optimizer steps" in " ".join(help_text.split())


def test_eval_lines_and_results_carry_the_majority_score_and_a_one_class_run_says_so(tiny_model_dir, tmp_path,
                                                                                      capsys):
    data = write_reviews(tmp_path / "reviews.csv", positive_every=4)
    out = tmp_path / "run"
    # A learning rate too small to move anything: the new head predicts one class.
    assert main(train_args(tiny_model_dir, data, out, "--epochs", "2", "--lr", "1e-12")) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["majority_score"] == pytest.approx(0.75)  # 3 in 4 dev rows are the majority class
    assert all(record["majority_score"] == results["majority_score"] for record in results["history"])
    assert printed.count("(majority class 75.00)") == 3  # both epoch lines and the final one
    assert results["one_class"]["share"] >= 0.95
    warning = next(line for line in printed.splitlines() if line.startswith("warning:"))
    assert "has learned little or nothing" in warning and "--class-weights balanced" in warning
    assert results["schedule"]["automatic"] == ["batch"] and results["batch_size"] == 8


# 2. compare tells the truth

def _cell_runs(predictions_per_seed, labels, counts):
    return [{"score": sum(p == y for p, y in zip(pred, labels)) / len(labels), "seed": seed, "task": "t",
             "dev_predictions": {"validation": {"prediction": pred, "label": labels}},
             "train_label_counts": counts, "parameters": {"trainable": 10, "total": 100}, "seconds": 1.0}
            for seed, pred in enumerate(predictions_per_seed, 1)]


def test_compare_names_no_winner_when_nothing_beats_the_majority_class_and_marks_one_class_cells():
    from glue_tasks.compare_report import grid_cell, leader_verdict, verdict_text
    labels = [0] * 60 + [1] * 40
    counts = {"no": 150, "yes": 100}
    one_class = grid_cell("top-0", "ce", 1e-2, _cell_runs([[0] * 100, [0] * 100], labels, counts))
    near = grid_cell("scratch-small", "ce", 1e-3, _cell_runs([[0] * 98 + [1] * 2] * 2, labels, counts))
    assert one_class["one_class_seeds"] == 2 and near["one_class_seeds"] == 2
    verdict = leader_verdict(sorted([one_class, near], key=lambda c: -c["mean"]), "accuracy")
    assert verdict["verdict"] == "nothing learned"
    assert "**Nothing learned**" in verdict_text(verdict) and "Winner" not in verdict_text(verdict)
    good = grid_cell("full", "ce", 5e-5, _cell_runs([labels, labels], labels, counts))
    verdict = leader_verdict([good, near], "accuracy")
    assert verdict["verdict"] == "winner" and verdict_text(verdict).startswith("**Winner: full**")
    twin = grid_cell("lora", "ce", 5e-5, _cell_runs([labels[:-1] + [0]] * 2, labels, counts))
    assert leader_verdict([good, twin], "accuracy")["verdict"] == "not distinguishable"


def test_compare_summary_states_rows_trained_on_ties_and_transforms(tiny_model_dir, tmp_path, capsys):
    data = write_reviews(tmp_path / "small.csv", n=40)
    out = tmp_path / "cmp"
    assert main(["compare", "--train-file", str(data), "--text-columns", "review", "--label-column", "stars",
                 "--model", str(tiny_model_dir), "--output-dir", str(out), "--max-train-samples", "1000",
                 "--methods", "scratch-small", "top-0", "--losses", "ce", "--seeds", "1", "--epochs", "1",
                 "--permute-vocabulary", "3"]) == 0
    summary = (out / "summary.md").read_text()
    title, _, header = summary.splitlines()[:3]
    assert title == "# compare: small, vocabulary permuted (seed 3)"
    assert header.startswith("trained on 36 rows (0 18, 1 18)") and "1000 training" not in summary
    assert "on a tie, the first candidate listed" in header
    tied = [line for line in summary.splitlines() if line.startswith("- ")]
    for line in tied:  # a tie is said where it happened
        scores = [part.split(": ")[1].strip("*") for part in line.split(": ", 1)[1].split(", ")]
        assert ("(a tie" in line) == (len(set(s.split(" ")[0] for s in scores)) < len(scores))


def test_committed_summaries_say_so():
    results = ROOT / "benchmarks" / "results"
    for piece in ("claim3-sst2-500", "claim3-sst2-1000", "claim3-sst2-5000"):
        assert (results / "seed-claims" / piece / "summary.md").read_text().startswith(
            "# compare: sst2, vocabulary permuted (seed 1)")
    quick = (results / "compare-sst2-quick" / "summary.md").read_text()
    assert "trained on 1,000 rows (negative" in quick and "**Winner" not in quick  # top two within the interval


# 3. Threads

def test_threads_are_recorded_and_a_busy_machine_is_named(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from glue_tasks import machine
    before = torch.get_num_threads()
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (8.0, 8.0, 8.0))
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    try:
        assert main(train_args(tiny_model_dir, write_reviews(tmp_path / "r.csv"), tmp_path / "run", "--epochs", "1",
                               "--threads", "1")) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["threads"] == 1
    err = capsys.readouterr().err
    assert "the machine is busy: load average 8.0 on 2 cores" in err
    assert machine.busy_warning(1) is not None
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert machine.busy_warning(2) is None
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "default: torch's, one per core" in help_text and "the same threads give the same bits" in help_text


# 4. Ctrl-C

def test_ctrl_c_saves_loadable_epochs_and_says_how_to_resume(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import adaptkit
    from glue_tasks import train as train_module
    from transformers import AutoModelForSequenceClassification
    data = write_reviews(tmp_path / "r.csv")
    args = train_args(tiny_model_dir, data, tmp_path / "run", "--epochs", "3")
    real_epoch, calls = train_module.TrainingLoop.run_epoch, []

    def interrupted_in_epoch_2(self, loader, progress, epoch):
        calls.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, loader, progress, epoch)

    monkeypatch.setattr(train_module.TrainingLoop, "run_epoch", interrupted_in_epoch_2)
    assert main(args) == 130
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "interrupted" in line]
    assert len(said) == 1 and "Traceback" not in err
    assert said[0].endswith("resume with: adaptkit-glue " + " ".join(args) + " --resume")
    run = tmp_path / "run"
    for which in ("best", "last"):
        base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
        assert adaptkit.load_adapter(base, run / which / "adapter")
    monkeypatch.setattr(train_module.TrainingLoop, "run_epoch", real_epoch)
    assert main(args) == 2
    refused = capsys.readouterr().err
    assert "holds an interrupted run" in refused and "add --resume to continue it" in refused
    assert main([*args, "--resume"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert [record["epoch"] for record in results["history"]] == [1, 2, 3]
    assert not (run / "best").exists() and not (run / "last").exists()


def test_rerun_into_an_interrupted_run_points_to_resume(tmp_path):
    from glue_tasks.runs import RunError, check_output_dir
    (tmp_path / "train_state.safetensors").write_bytes(b"")
    with pytest.raises(RunError, match="add --resume to continue it"):
        check_output_dir(tmp_path, overwrite=False)


# 5. Using the model

@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    assert main(train_args(tiny_model_dir, write_reviews(folder / "reviews.csv"), folder / "run", "--epochs", "2",
                           "--lr", "3e-3")) == 0
    return folder / "run"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_eval_scores_a_labelled_file_in_any_format(trained_run, tmp_path, capsys, suffix):
    rows = [(f"a great film {i}", 1) if i % 2 else (f"an awful film {i}", 0) for i in range(10)]
    path = tmp_path / f"labelled{suffix}"
    if suffix == ".csv":
        path.write_text("review,stars\n" + "".join(f"{t},{y}\n" for t, y in rows))
    else:
        path.write_text("".join(json.dumps({"review": t, "stars": y}) + "\n" for t, y in rows))
    capsys.readouterr()
    assert main(["eval", "--run-dir", str(trained_run), "--input", str(path)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["rows"] == 10 and 0 <= scored["score"] <= 1 and scored["majority_class_score"] == 0.5


def test_predict_writes_probabilities_and_python_predicts_strings(trained_run, tmp_path, capfd):
    from glue_tasks import load_trained
    new = tmp_path / "new.csv"
    new.write_text("review\na great film\nan awful film\n")
    assert main(["predict", "--run-dir", str(trained_run), "--input", str(new), "--output", str(tmp_path / "p")]) == 0
    lines = (tmp_path / "p" / "new-predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction\tp_0\tp_1"
    for line in lines[1:]:
        _, label, *probabilities = line.split("\t")
        assert math.isclose(sum(map(float, probabilities)), 1, abs_tol=1e-5)
        assert label == ("0", "1")[max(range(2), key=lambda i: float(probabilities[i]))]
    capfd.readouterr()
    run = load_trained(trained_run)
    predicted = run.predict(["a great film", "an awful film"])
    assert [p["label"] for p in predicted] == [line.split("\t")[1] for line in lines[1:]]
    assert "MISSING" not in "".join(capfd.readouterr())  # no transformers load report for restored tensors
    from transformers import pipeline
    classify = pipeline("text-classification", model=run.model, tokenizer=run.tokenizer)
    assert [out["label"] for out in classify(["a great film", "an awful film"])] == [p["label"] for p in predicted]


def test_eval_and_predict_any_adapter_folder_without_a_train_run(trained_run, tmp_path, capsys):
    new = tmp_path / "new.csv"
    new.write_text("text,label\na great film,yes\nan awful film,no\n")
    assert main(["eval", "--adapter", str(trained_run / "adapter"), "--input", str(new), "--labels", "no", "yes"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 2
    assert main(["predict", "--adapter", str(trained_run / "adapter"), "--input", str(new), "--output",
                 str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "new-predictions.tsv").read_text().startswith("index\tprediction\tp_0\tp_1\n")


def test_predict_with_an_adapterhub_folder(tmp_path, capsys):
    from test_adapterhub import FIXTURES, base_of
    from transformers import BertTokenizer
    folder = FIXTURES / "adapterhub_bert_seq_bn"
    base = tmp_path / "base"
    base_of(folder).save_pretrained(base)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "great", "awful", "film"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(base)
    new = tmp_path / "new.jsonl"
    new.write_text('{"text": "a great film"}\n{"text": "an awful film"}\n')
    assert main(["predict", "--adapter", str(folder), "--model", str(base), "--input", str(new),
                 "--output", str(tmp_path / "p")]) == 0
    lines = (tmp_path / "p" / "new-predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction\tp_LABEL_0\tp_LABEL_1" and len(lines) == 3


def test_the_converter_and_unsafe_pickles_fail_in_one_whole_line(tmp_path, capsys):
    import pickle

    from adaptkit.adapterhub import _load_tensors
    from adaptkit.errors import CheckpointError

    class RunsCode:
        def __reduce__(self):
            return (os.getcwd, ())

    with open(tmp_path / "pytorch_adapter.bin", "wb") as handle:
        pickle.dump({"weight": RunsCode()}, handle, protocol=2)
    with pytest.raises(CheckpointError) as refused:
        _load_tensors(tmp_path, "adapter.safetensors", "pytorch_adapter.bin")
    assert "arbitrary code execution" in str(refused.value) and "\n" not in str(refused.value)
    from adaptkit.convert import main as convert
    assert convert([str(tmp_path / "missing"), str(tmp_path / "out"), "--base", str(tmp_path / "no-base")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("adaptkit-from-adapterhub: error:")


# 6. Data policies, task kind, early stopping, class weights

@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_an_empty_text_is_a_bad_row_in_every_format(tiny_model_dir, tmp_path, capsys, fmt):
    rows = [{"review": f"a great film {i}", "stars": i % 2} for i in range(20)]
    rows[3]["review"] = None if fmt != "csv" else ""
    path = tmp_path / f"r.{fmt}"
    if fmt == "csv":
        path.write_text("review,stars\n" + "".join(f"{r['review']},{r['stars']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    args = train_args(tiny_model_dir, path, tmp_path / "run", "--epochs", "1")
    assert main(args) == 2
    err = capsys.readouterr().err
    where = {"csv": "line 5", "jsonl": "line 4", "parquet": "row 4"}[fmt]
    assert f"{path} {where}: the 'review' text is empty" in err
    assert main([*args, "--skip-bad-rows"]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["skipped_rows"] == 1


def test_task_kind_and_classes_are_said_at_the_start(tiny_model_dir, tmp_path, capsys):
    data = write_reviews(tmp_path / "r.csv", label="{}.0")  # float labels 0.0 / 1.0 are classes
    assert main(train_args(tiny_model_dir, data, tmp_path / "run", "--epochs", "1")) == 0
    assert "· classification, 2 classes (0, 1) ·" in capsys.readouterr().out


def test_patience_stops_early_and_class_weights_balance_the_loss(tiny_model_dir, tmp_path):
    from glue_tasks.losses import TaskLoss, balanced_weights
    data = write_reviews(tmp_path / "r.csv", positive_every=4)
    out = tmp_path / "run"
    # A learning rate too small to change the score: no epoch improves on the first.
    assert main(train_args(tiny_model_dir, data, out, "--epochs", "6", "--lr", "1e-12", "--patience", "2",
                           "--class-weights", "balanced")) == 0
    results = json.loads((out / "results.json").read_text())
    config = json.loads((out / "run_config.json").read_text())
    assert results["stopped_early"] == 3 and len(results["history"]) == 3 and results["best_epoch"] == 1
    assert config["patience"] == 2 and config["class_weights"] == "balanced"
    counts = list(results["train_label_counts"].values())
    assert results["class_weights"] == pytest.approx(dict(zip(results["labels"], balanced_weights(counts))))
    weights = balanced_weights([30, 10])
    assert weights == pytest.approx([40 / 60, 40 / 20])
    logits, labels = torch.randn(8, 2), torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor(weights))
    assert TaskLoss("ce", 2, False, class_weights=weights)(logits, labels) == pytest.approx(expected.item())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--output-dir", "x", "--class-weights", "inverse"])
    assert main(train_args(tiny_model_dir, data, tmp_path / "r2", "--loss", "cosine", "--class-weights",
                           "balanced")) == 2
