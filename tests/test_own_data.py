"""The user's own data: train, eval and predict from CSV, TSV, JSON lines and parquet files, the
task read off the training file, a dev split carved the same way for every seed, and errors
that name the file, the line and the fix."""

import csv
import json
import random
import re
from pathlib import Path

import numpy
import pyarrow
import pyarrow.parquet
import pytest
import scipy.stats

from glue_run_fixtures import write_rte, write_tiny_model
from glue_tasks.cli import main
from glue_tasks.own_data import OwnData, read_labels
from glue_tasks.tasks import own_task
from glue_tasks.train import TrainConfig

HINT = {"pos": "great", "neg": "awful", "meh": "fine"}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


def write_reviews_csv(path: Path, n: int = 60, seed: int = 0) -> Path:
    """Three string classes, each given away by one word; a comma and quotes inside a text."""
    rng = random.Random(seed)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "review", "stars"])
        for i in range(n):
            label = rng.choice(list(HINT))
            writer.writerow([i, f'item {i}, "quoted", was {HINT[label]}', label])
    return path


def write_scores_jsonl(path: Path, n: int = 40) -> Path:
    """A sentence pair and a float target: regression read off the labels."""
    rng = random.Random(1)
    with path.open("w") as file:
        for i in range(n):
            y = rng.uniform(0, 3)
            file.write(json.dumps({"a": f"{'high' if y > 1.5 else 'low'} {i}", "b": "the other side",
                                   "y": round(y, 3)}) + "\n")
    return path


def own_args(model, train_file, out, *extra):
    return ["train", "--train-file", str(train_file), "--model", str(model), "--output-dir", str(out),
            "--epochs", "1", "--batch-size", "8", "--size", "8", *extra]


def test_csv_classification_trains_evaluates_and_predicts(tiny_model_dir, tmp_path, capsys):
    train_file = write_reviews_csv(tmp_path / "reviews.csv")
    out = tmp_path / "run"
    assert main(own_args(tiny_model_dir, train_file, out, "--text-columns", "review", "--label-column", "stars")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "reviews" and results["labels"] == ["meh", "neg", "pos"]
    assert results["train_examples"] + results["dev_examples"]["validation"] == 60
    assert set(results["dev"]["validation"]) == {"accuracy"}
    config = json.loads((out / "run_config.json").read_text())
    assert config["labels"] == ["meh", "neg", "pos"] and config["regression"] is False
    capsys.readouterr()

    train_file.rename(tmp_path / "moved.csv")  # eval of a carved dev split needs the training file...
    assert main(["eval", "--run-dir", str(out)]) == 2
    assert "reviews.csv not found" in capsys.readouterr().err
    (tmp_path / "moved.csv").rename(train_file)
    assert main(["eval", "--run-dir", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["dev"] == results["dev"]

    new = tmp_path / "new.csv"
    new.write_text('review\n"it was great, really"\nit was awful\n')  # no label column needed
    assert main(["predict", "--run-dir", str(out), "--input", str(new), "--output", str(tmp_path / "pred")]) == 0
    lines = (tmp_path / "pred" / "new-predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction\tp_meh\tp_neg\tp_pos" and [line.split("\t")[0] for line in lines[1:]] == ["0", "1"]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"meh", "neg", "pos"}


def test_jsonl_regression_with_a_text_pair(tiny_model_dir, tmp_path, capsys):
    train_file = write_scores_jsonl(tmp_path / "scores.jsonl")
    dev_file = write_scores_jsonl(tmp_path / "scores_dev.jsonl", n=12)
    out = tmp_path / "run"
    assert main(own_args(tiny_model_dir, train_file, out, "--text-columns", "a", "b", "--label-column", "y",
                         "--dev-file", str(dev_file))) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] is None and set(results["dev"]["validation"]) == {"pearson", "spearmanr"}
    assert results["train_examples"] == 40 and results["dev_examples"] == {"validation": 12}
    capsys.readouterr()
    assert main(["eval", "--run-dir", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["dev"] == results["dev"]
    assert main(["predict", "--run-dir", str(out), "--output", str(tmp_path / "pred")]) == 0
    assert "predicting the dev split" in capsys.readouterr().err
    rows = (tmp_path / "pred" / "scores-validation-predictions.tsv").read_text().splitlines()[1:]
    predicted = [float(row.split("\t")[1]) for row in rows]
    targets = [json.loads(line)["y"] for line in dev_file.read_text().splitlines()]
    assert len(predicted) == 12  # the predictions the recorded dev score was computed from, at full precision
    assert scipy.stats.pearsonr(predicted, targets)[0] == pytest.approx(results["dev"]["validation"]["pearson"],
                                                                      abs=1e-6)


def test_integer_labels_are_classes_unless_regression(tiny_model_dir, tmp_path):
    path = tmp_path / "ints.jsonl"
    path.write_text("".join(json.dumps({"text": f"t {i}", "label": i % 3 * 5}) + "\n" for i in range(30)))
    assert read_labels(path, "label") == ("0", "5", "10")
    path.write_text("".join(json.dumps({"text": f"t {i}", "label": [2, 10, 2.0][i % 3]}) + "\n" for i in range(30)))
    assert read_labels(path, "label") == ("2", "10")  # 2 and 2.0 are one class, in numeric order
    path.write_text("".join(json.dumps({"text": f"t {i}", "label": i / 7}) + "\n" for i in range(30)))
    assert read_labels(path, "label") is None  # non-integer numbers: regression
    assert main(own_args(tiny_model_dir, path, tmp_path / "run", "--regression")) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["labels"] is None


@pytest.mark.parametrize("suffix", ["tsv", "parquet", "jsonl"])
def test_every_format_gives_the_same_rows(tmp_path, suffix):
    rows = [{"text": f'say "hi", {i}', "label": ["b", "a"][i % 2]} for i in range(10)]
    path = tmp_path / f"data.{suffix}"
    if suffix == "tsv":
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, ["text", "label"], delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == "parquet":
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = own_task("data", ("text",), ("a", "b"))
    source = OwnData(task, str(path), "label", dev_file=str(path))
    loaded = source.load("validation").dataset
    assert loaded["text"] == [row["text"] for row in rows]
    assert loaded["label"] == [1, 0] * 5 and loaded["idx"] == list(range(10))


def test_carved_dev_split_is_stratified_disjoint_and_the_same_for_every_seed(tiny_model_dir, tmp_path):
    train_file = write_reviews_csv(tmp_path / "reviews.csv", n=100)
    configs = [TrainConfig(output_dir=str(tmp_path / f"r{seed}"), train_file=str(train_file), seed=seed,
                           text_columns=["review"], label_column="stars", dev_fraction=0.2,
                           model=str(tiny_model_dir)) for seed in (1, 2)]
    sources = [config.data_source() for config in configs]
    dev = [source.load("validation").dataset for source in sources]
    train = sources[0].load("train").dataset
    assert dev[0]["idx"] == dev[1]["idx"] and len(dev[0]) == 20
    assert not set(dev[0]["idx"]) & set(train["idx"]) and len(train) == 80
    per_class = {c: train["label"].count(c) + dev[0]["label"].count(c) for c in range(3)}
    for c, total in per_class.items():
        assert dev[0]["label"].count(c) == round(0.2 * total)
    assert TrainConfig.canonical_identity(configs[0].identity()) == configs[0].identity()


@pytest.mark.parametrize("content, extra, message", [
    ("review,stars\ngood,pos\nbad,neg\n", ["--dev-file", "DEV"], "DEV line 3: label 'meh' is not one of neg, pos: "
                                                                 "the classes are the labels of the training file"),
    ("review,stars\ngood,pos\nbad\nworse,neg\n", [], "line 3: expected 2 comma-separated fields (review, stars), found 1"),
    ("text,stars\ngood,pos\nbad,neg\n", [], "line 1: missing column 'review'; the header has text, stars"),
    ("review,stars\ngood,pos\nbad,pos\n", [], "every row has the label 'pos'; classification needs at least two"),
    ("review,stars\ngood,pos\nbad,neg\n", ["--regression"], "train.csv line 2: score 'pos' is not a finite number"),
    ("review,stars\ngood,pos\nbad,neg\nso,meh\n", ["--metric", "f1_accuracy"], "--metric f1_accuracy is the F1 "
                                                                            "of class 'pos' against the other"),
    ("review,stars\ngood,pos\nbad,neg\n", ["--metric", "f1_accuracy", "--dev-file", "DEV"], None),
    ("review,stars\ngood,pos\nbad,neg\n", ["--task", "rte"], "--task/--data-dir name a GLUE task; with --train-file"),
    ("review,stars\ngood,pos\nbad,neg\n", ["--dev-fraction", "1.5"], "--dev-fraction must be between 0 and 1"),
    ("review,stars\ngood,pos\nbad,neg\n", ["--text-columns", "a", "b", "c"], "--text-columns takes one or two"),
])
def test_bad_own_data_is_named_with_file_line_and_fix(tiny_model_dir, tmp_path, capsys, content, extra, message):
    train_file = tmp_path / "train.csv"
    train_file.write_text(content)
    dev_file = tmp_path / "dev.csv"
    dev_file.write_text("review,stars\nok,pos\nmeh,meh\n")
    extra = [str(dev_file) if arg == "DEV" else arg for arg in extra]
    args = ["train", "--train-file", str(train_file), "--output-dir", str(tmp_path / "run"),
            "--model", str(tiny_model_dir), "--epochs", "1", *extra]
    if "--text-columns" not in extra:
        args += ["--text-columns", "review"]
    args += ["--label-column", "stars"]
    if message is None:  # f1 of two classes is fine, but the dev file has a third class
        assert main(args) == 2 and "label 'meh' is not one of neg, pos" in capsys.readouterr().err
        return
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and re.search(re.escape(message.replace("DEV", str(dev_file))), err), err
    assert not (tmp_path / "run").exists()


def test_skip_bad_rows_in_own_data(tiny_model_dir, tmp_path):
    train_file = write_reviews_csv(tmp_path / "reviews.csv", n=30)
    with train_file.open("ab") as file:
        file.write(b'99,"bad \xff byte",pos\n100,missing label\n')
    args = own_args(tiny_model_dir, train_file, tmp_path / "run", "--text-columns", "review", "--label-column",
                    "stars")
    assert main(args) == 2
    assert main([*args, "--skip-bad-rows"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["skipped_rows"] == 2 and results["train_examples"] + 3 == 30


def test_own_data_run_looks_like_a_glue_run(tiny_model_dir, tmp_path):
    own = tmp_path / "own"
    assert main(own_args(tiny_model_dir, write_reviews_csv(tmp_path / "r.csv"), own, "--text-columns", "review",
                         "--label-column", "stars")) == 0
    glue = tmp_path / "glue"
    assert main(["train", "--task", "rte", "--data-dir", str(write_rte(tmp_path / "data")), "--model",
                 str(tiny_model_dir), "--output-dir", str(glue), "--epochs", "1", "--batch-size", "8",
                 "--size", "8"]) == 0
    files = [sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) for run in (own, glue)]
    assert files[0] == files[1]
    keys = [set(json.loads((run / "results.json").read_text())) for run in (own, glue)]
    assert keys[0] == keys[1]


def test_glue_flags_and_own_data_flags_do_not_mix(tmp_path, capsys):
    assert main(["train", "--task", "rte", "--regression", "--output-dir", str(tmp_path / "x")]) == 2
    assert "--regression applies to your own data" in capsys.readouterr().err
    assert main(["train", "--output-dir", str(tmp_path / "x")]) == 2
    assert "--task (a GLUE task) or --train-file (your own data)" in capsys.readouterr().err
    assert main(["train", "--train-file", str(tmp_path / "data.xlsx"), "--output-dir", str(tmp_path / "x")]) == 2
    assert "unknown file type '.xlsx'" in capsys.readouterr().err


def test_missing_labels_are_never_a_class(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("text,label\na,1\nb,0\nc,\nd,NaN\ne,1\n")
    assert read_labels(path, "label") == ("0", "1")
    source = OwnData(own_task("gaps", ("text",), ("0", "1")), str(path), "label", dev_file=str(path))
    with pytest.raises(ValueError, match="gaps.csv line 4: no label"):
        source.load("validation")
    assert OwnData(source.task, str(path), "label", dev_file=str(path), skip_bad_rows=True).load(
        "validation").n_skipped == 2
    parquet = tmp_path / "gaps.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"text": list("abcd"), "label": [0.0, 1.0, float("nan"), 1.0]}), parquet)
    assert read_labels(parquet, "label") == ("0", "1")


def test_an_infinite_target_is_a_bad_row_not_a_switch_to_classification(tmp_path):
    path = tmp_path / "targets.csv"
    path.write_text("text,y\na,0.5\nb,1.2\nc,inf\nd,2.5\n")
    assert read_labels(path, "y") is None
    task = own_task("targets", ("text",), None)
    with pytest.raises(ValueError, match="line 4: score 'inf' is not a finite number"):
        OwnData(task, str(path), "y", dev_file=str(path)).load("validation")


def test_an_unclosed_quote_is_refused_even_when_skipping(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text('text,label\na,1\nb,0\n"hi there,1\n' + "".join(f"r{i},1\n" for i in range(30)))
    for skip in (False, True):
        with pytest.raises(ValueError, match=r"quote.csv line 4: a quoted field opened here runs to line 34"):
            OwnData(own_task("quote", ("text",), ("0", "1")), str(path), "label", dev_file=str(path),
                    skip_bad_rows=skip).load("validation")


def test_byte_order_marks_bad_bytes_and_wrong_column_names_are_explained(tmp_path):
    task = own_task("x", ("text",), ("0", "1"))
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes('\ufeff{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n'.encode())
    assert OwnData(task, str(jsonl), "label", dev_file=str(jsonl)).load("validation").dataset["text"] == ["a", "b"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"text,label\ncaf\xe9,1\nb,0\n")
    with pytest.raises(ValueError, match=r"line 2: invalid UTF-8 \(byte 0xe9\); save the file as UTF-8"):
        OwnData(task, str(latin), "label", dev_file=str(latin)).load("validation")
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"sentence": "a", "label": 1}\n')
    with pytest.raises(ValueError, match=r"line 1: no 'text' value \(this row has 'sentence', 'label'; --text-columns"):
        OwnData(task, str(keys), "label", dev_file=str(keys)).load("validation")


def test_every_class_with_two_rows_reaches_a_small_carved_split(tmp_path):
    path = tmp_path / "rare.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{'rare' if i < 4 else 'common'}\n" for i in range(45)))
    task = own_task("rare", ("text",), ("common", "rare"))
    dev = OwnData(task, str(path), "label", dev_fraction=0.1).load("validation").dataset
    assert dev["label"].count(1) == 1 and dev["label"].count(0) == 4


def test_eval_with_model_moved_elsewhere(tiny_model_dir, tmp_path, capsys):
    import shutil
    model = shutil.copytree(tiny_model_dir, tmp_path / "model-a")
    out = tmp_path / "run"
    assert main(own_args(model, write_reviews_csv(tmp_path / "r.csv"), out, "--text-columns", "review",
                         "--label-column", "stars")) == 0
    moved = model.rename(tmp_path / "model-b")
    capsys.readouterr()
    assert main(["eval", "--run-dir", str(out)]) == 2
    assert "no model at that path" in capsys.readouterr().err
    assert main(["eval", "--run-dir", str(out), "--model", str(moved)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["dev"] == evaluated["recorded_dev"]


def test_the_training_file_is_parsed_once_for_both_splits(tmp_path, monkeypatch):
    path = tmp_path / "once.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(40)))
    source = OwnData(own_task("once", ("text",), ("0", "1")), str(path), "label", dev_fraction=0.1)
    parsed = []
    real = OwnData.load_file
    monkeypatch.setattr(OwnData, "load_file", lambda self, *a, **k: parsed.append(a) or real(self, *a, **k))
    train, dev = source.load("train").dataset, source.load("validation").dataset
    assert len(parsed) == 1 and len(train) == 36 and len(dev) == 4
    assert not set(train["text"]) & set(dev["text"])


def test_regression_predictions_keep_their_precision_except_on_the_glue_server_format():
    from glue_tasks.inference import _submission
    from glue_tasks.tasks import get_task

    predictions = numpy.array([0.000123456, 5.4321, -0.25], dtype=numpy.float32)
    own = _submission(own_task("tiny", ("text",), None), [0, 1, 2], predictions[:, None], True).splitlines()[1:]
    parsed = numpy.array([float(row.split("\t")[1]) for row in own], dtype=numpy.float32)
    assert numpy.array_equal(parsed, predictions)  # read back as float32: the very values
    glue = _submission(get_task("stsb"), [0, 1, 2], predictions[:, None], False).splitlines()[1:]
    assert [row.split("\t")[1] for row in glue] == ["0.000", "5.000", "0.000"]  # STS-B's 0-5, 3 decimals
