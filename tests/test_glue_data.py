"""GLUE task table and split loading: synthetic files in every task's format, real files, bad input."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import datasets
import pyarrow
import pyarrow.parquet
import pytest

from glue_tasks import (
    TASKS,
    DataError,
    available_splits,
    get_task,
    task_features,
    load_split,
    load_split_with_report,
)
from glue_fixtures import SAMPLES, write_file, write_samples

REAL_GLUE = Path("/work/shared/data/glue")
RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory) -> Path:
    return write_samples(tmp_path_factory.mktemp("glue"))


# --- task table ---


def test_label_conventions_match_the_hub():
    expected = {
        "cola": ("unacceptable", "acceptable"),
        "sst2": ("negative", "positive"),
        "mrpc": ("not_equivalent", "equivalent"),
        "stsb": None,
        "qqp": ("not_duplicate", "duplicate"),
        "mnli": ("entailment", "neutral", "contradiction"),
        "qnli": ("entailment", "not_entailment"),
        "rte": ("entailment", "not_entailment"),
        "wnli": ("not_entailment", "entailment"),
    }
    assert {name: task.label_names for name, task in TASKS.items()} == expected
    assert [t.num_labels for t in TASKS.values()] == [2, 2, 2, 1, 2, 3, 2, 2, 2]
    assert [name for name, t in TASKS.items() if t.is_regression] == ["stsb"]


def test_splits_and_dir_names():
    mnli = TASKS["mnli"]
    assert mnli.splits == ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched")
    assert TASKS["rte"].splits == ("train", "validation", "test")
    dir_names = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]
    assert [t.dir_name for t in TASKS.values()] == dir_names


@pytest.mark.parametrize("alias, name", [("RTE", "rte"), ("sst-2", "sst2"), ("STS-B", "stsb"), (" CoLA ", "cola")])
def test_get_task_accepts_aliases(alias, name):
    assert get_task(alias) is TASKS[name]
    assert get_task(TASKS[name]) is TASKS[name]


def test_get_task_unknown_lists_valid_names():
    with pytest.raises(ValueError, match="unknown GLUE task 'squad'; valid tasks: cola, sst2, mrpc, stsb, qqp, mnli"):
        get_task("squad")


# --- every task's format, synthetic ---


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.relpath)
def test_loads_each_task_format(samples_dir, sample):
    task = TASKS[sample.task]
    dataset = load_split(task, sample.split, samples_dir)
    assert dataset.features == task_features(task)
    assert dataset.column_names == [*task.text_fields, "label", "idx"]
    texts, labels = zip(*sample.expected)
    assert [tuple(row[f] for f in task.text_fields) for row in dataset] == list(texts)
    assert dataset["label"] == pytest.approx(list(labels))
    assert dataset["idx"] == list(range(len(sample.expected)))


def test_label_ids_decode_to_hub_names(samples_dir):
    wnli = load_split("wnli", "validation", samples_dir)
    assert wnli.features["label"].int2str(wnli["label"]) == ["entailment", "not_entailment"]
    mnli = load_split("mnli", "train", samples_dir)
    assert mnli.features["label"].int2str(mnli["label"]) == ["neutral", "contradiction", "entailment"]


def test_available_splits(samples_dir):
    assert available_splits("rte", samples_dir) == ["train", "validation", "test"]
    assert available_splits("qnli", samples_dir) == ["validation", "test"]
    assert available_splits("mnli", samples_dir) == [
        "train", "validation_matched", "validation_mismatched", "test_matched"
    ]
    assert available_splits("mnli", None) == list(TASKS["mnli"].splits)


def test_crlf_line_endings_are_accepted(tmp_path):
    write_file(tmp_path, "RTE/dev.tsv", RTE_HEADER.replace("\n", "\r\n") + "0\ta\tb\tentailment\r\n")
    assert load_split("rte", "validation", tmp_path)[0] == {"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0}


# --- parquet ---


def _write_parquet(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pyarrow.parquet.write_table(pyarrow.table(columns), path)


def test_parquet_takes_precedence_over_tsv(samples_dir, tmp_path):
    write_file(tmp_path, "RTE/dev.tsv", (samples_dir / "RTE/dev.tsv").read_bytes())
    _write_parquet(
        tmp_path / "RTE/validation.parquet",
        {"sentence1": ['"p1', "p2"], "sentence2": ["h1", "h2"], "label": [1, 0], "idx": [10, 11]},
    )
    report = load_split_with_report("rte", "validation", tmp_path)
    assert report.source.endswith("validation.parquet")
    assert report.dataset.to_dict() == {
        "sentence1": ['"p1', "p2"], "sentence2": ["h1", "h2"], "label": [1, 0], "idx": [10, 11]
    }


def test_parquet_dev_stem_and_unlabelled_test(tmp_path):
    _write_parquet(tmp_path / "STS-B/dev.parquet", {"sentence1": ["a"], "sentence2": ["b"], "label": [2.5]})
    _write_parquet(tmp_path / "STS-B/test.parquet", {"sentence1": ["c"], "sentence2": ["d"]})
    assert available_splits("stsb", tmp_path) == ["validation", "test"]
    assert load_split("stsb", "validation", tmp_path)[0] == {"sentence1": "a", "sentence2": "b", "label": 2.5, "idx": 0}
    assert load_split("stsb", "test", tmp_path)["label"] == [-1.0]


def test_parquet_missing_column_and_bad_label(tmp_path):
    _write_parquet(tmp_path / "RTE/train.parquet", {"sentence1": ["a"], "label": [0]})
    with pytest.raises(DataError, match=r"RTE/train.parquet row 1: missing column 'sentence2'"):
        load_split("rte", "train", tmp_path)
    _write_parquet(tmp_path / "RTE/train.parquet", {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [0, 2]})
    with pytest.raises(DataError, match=r"RTE/train.parquet row 2: label '2' is not one of 0, 1"):
        load_split("rte", "train", tmp_path)


# --- the real GLUE files ---

OFFICIAL_SIZES = [
    ("rte", "train", 2490), ("rte", "validation", 277),
    ("mrpc", "train", 3668), ("mrpc", "validation", 408),
    ("stsb", "train", 5749), ("stsb", "validation", 1500),
    ("cola", "train", 8551), ("cola", "validation", 1043),
    ("sst2", "train", 67349), ("sst2", "validation", 872),
    ("wnli", "validation", 71), ("qnli", "validation", 5463),
]


@pytest.mark.skipif(not REAL_GLUE.is_dir(), reason=f"real GLUE files not found at {REAL_GLUE}")
@pytest.mark.parametrize("task, split, size", OFFICIAL_SIZES)
def test_real_files_have_official_sizes(task, split, size):
    dataset = load_split(task, split, REAL_GLUE)
    assert len(dataset) == size
    assert dataset["idx"][-1] == size - 1


@pytest.mark.skipif(not REAL_GLUE.is_dir(), reason=f"real GLUE files not found at {REAL_GLUE}")
def test_real_files_spot_values():
    mrpc = load_split("mrpc", "validation", REAL_GLUE)[0]
    assert mrpc["sentence2"] == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert mrpc["label"] == 1
    cola = load_split("cola", "validation", REAL_GLUE)[-1]  # last line has no newline
    assert cola == {"sentence": "John talked to Bill about himself.", "label": 1, "idx": 1042}
    rte = load_split("rte", "train", REAL_GLUE)[0]
    assert rte["label"] == 1  # not_entailment
    assert load_split("stsb", "train", REAL_GLUE)[1]["label"] == pytest.approx(3.8)


# --- bad input ---


def test_unknown_split_lists_valid_ones(samples_dir):
    with pytest.raises(DataError, match="unknown split 'validation' for mnli; valid splits: train, validation_m"):
        load_split("mnli", "validation", samples_dir)


def test_missing_file_names_path_and_data_dir(tmp_path):
    with pytest.raises(DataError) as error:
        load_split("rte", "train", tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "RTE" / "train.tsv") in message
    assert "--data-dir" in message and "RTE/" in message


STSB_HEADER = "sentence1\tsentence2\tscore\n"


@pytest.mark.parametrize(
    "task, split, relpath, content, message",
    [
        pytest.param("rte", "train", "RTE/train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\tmaybe\n",
                     "RTE/train.tsv line 3: label 'maybe' is not one of entailment, not_entailment", id="rte-label"),
        pytest.param("rte", "train", "RTE/train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tentailment\n",
                     "RTE/train.tsv line 3: expected 4 tab-separated fields (index, sentence1, sentence2, label), "
                     "found 3",
                     id="rte-fields"),
        pytest.param("rte", "train", "RTE/train.tsv", "index\tsentence1\tsentence2\n0\ta\tb\n",
                     "RTE/train.tsv line 1: missing column 'label'; the header has index, sentence1, sentence2",
                     id="rte-column"),
        pytest.param("rte", "train", "RTE/train.tsv", "",
                     "RTE/train.tsv line 1: the file is empty, expected a header line", id="rte-empty"),
        pytest.param("rte", "train", "RTE/train.tsv", RTE_HEADER,
                     "RTE/train.tsv line 2: no data rows after the header", id="rte-header-only"),
        pytest.param("rte", "train", "RTE/train.tsv",
                     RTE_HEADER.encode() + b"0\ta\tb\tentailment\n1\t\xffa\tb\tentailment\n",
                     "RTE/train.tsv line 3: invalid UTF-8 (byte 0xff at byte 3)", id="rte-utf8"),
        pytest.param("cola", "train", "CoLA/train.tsv", "",
                     "CoLA/train.tsv line 1: the file is empty, expected rows of 4 tab-separated fields",
                     id="cola-empty"),
        pytest.param("cola", "validation", "CoLA/dev.tsv", "gj04\t1\t\tok\ngj04\t2\t\tno",
                     "CoLA/dev.tsv line 2: label '2' is not one of 0, 1", id="cola-label"),
        pytest.param("sst2", "train", "SST-2/train.tsv", "sentence\tlabel\nfine \t7\n",
                     "SST-2/train.tsv line 2: label '7' is not one of 0, 1", id="sst2-label"),
        pytest.param("wnli", "validation", "WNLI/dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\n",
                     "WNLI/dev.tsv line 2: label 'entailment' is not one of 0, 1", id="wnli-label-name"),
        pytest.param("mnli", "validation_matched", "MNLI/dev_matched.tsv",
                     "sentence1\tsentence2\tgold_label\na\tb\t-\n",
                     "MNLI/dev_matched.tsv line 2: label '-' is not one of entailment, neutral, contradiction",
                     id="mnli-label"),
        pytest.param("mnli", "test_matched", "MNLI/test_matched.tsv", "index\tsentence1\n0\ta\n",
                     "MNLI/test_matched.tsv line 1: missing column 'sentence2'", id="mnli-test-column"),
        pytest.param("stsb", "train", "STS-B/train.tsv", STSB_HEADER + "a\tb\tfive\n",
                     "STS-B/train.tsv line 2: score 'five' is not a number in [0, 5]", id="stsb-text"),
        pytest.param("stsb", "train", "STS-B/train.tsv", STSB_HEADER + "a\tb\t1\na\tb\t5.5\n",
                     "STS-B/train.tsv line 3: score '5.5' is not", id="stsb-range"),
        pytest.param("stsb", "train", "STS-B/train.tsv", STSB_HEADER + "a\tb\t-1\n",
                     "STS-B/train.tsv line 2: score '-1' is not", id="stsb-missing-in-train"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, task, split, relpath, content, message):
    write_file(tmp_path, relpath, content)
    with pytest.raises(DataError, match=re.escape(message)):
        load_split(task, split, tmp_path)


def test_skip_bad_rows_skips_and_reports(tmp_path, caplog):
    write_file(
        tmp_path,
        "RTE/train.tsv",
        RTE_HEADER.encode()
        + b"0\tgood\tone\tentailment\n1\tbad\tmaybe\n2\t\xff\tx\tentailment\n"
        + b"3\tgood\ttwo\tnot_entailment\n4\tx\ty\tz\n",
    )
    with caplog.at_level(logging.WARNING, logger="glue_tasks.data"):
        report = load_split_with_report("rte", "train", tmp_path, skip_bad_rows=True)
    assert report.n_skipped == 3
    assert [s.split(":")[0] for s in report.skipped] == ["line 3", "line 4", "line 6"]
    assert report.dataset["sentence2"] == ["one", "two"]
    assert report.dataset["idx"] == [0, 3]  # the row's position in the file, skipped rows included
    assert f"skipped 3 bad rows in {tmp_path / 'RTE' / 'train.tsv'}" in caplog.text
    assert len(load_split("rte", "train", tmp_path, skip_bad_rows=True)) == 2


def test_qqp_question_broken_across_lines_is_skipped(tmp_path):
    """The malformed QQP rows found in the wild: a newline inside a question splits one row in two."""
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    write_file(tmp_path, "QQP/train.tsv", header + "0\t1\t2\tHow do\nI?\tWhy?\t0\n1\t3\t4\tA?\tB?\t1\n")
    with pytest.raises(DataError, match="QQP/train.tsv line 2: expected 6 tab-separated fields"):
        load_split("qqp", "train", tmp_path)
    report = load_split_with_report("qqp", "train", tmp_path, skip_bad_rows=True)
    assert report.n_skipped == 2
    assert report.dataset.to_dict() == {"question1": ["A?"], "question2": ["B?"], "label": [1], "idx": [2]}


@pytest.mark.parametrize(
    "content, message",
    [
        (RTE_HEADER, "line 2: no data rows after the header"),
        (RTE_HEADER + "0\ta\tb\tmaybe\n", "no usable rows, all 1 are bad (first: line 2: label 'maybe'"),
        (b"index\tsentence1\xff\n0\ta\tb\tentailment\n", "line 1: invalid UTF-8"),
    ],
)
def test_skip_bad_rows_still_rejects_unusable_files(tmp_path, content, message):
    write_file(tmp_path, "RTE/train.tsv", content)
    with pytest.raises(DataError, match=re.escape(message)):
        load_split("rte", "train", tmp_path, skip_bad_rows=True)


# --- the Hub path, without the network ---


def test_hub_unreachable_suggests_data_dir(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="Hub is unreachable.*pass --data-dir DIR .*RTE/train.tsv"):
        load_split("rte", "train")


def test_hub_dataset_gets_the_local_features(monkeypatch):
    calls = []
    hub = datasets.Dataset.from_dict(
        {"sentence": ["a"], "label": [1], "idx": [0]},
        features=datasets.Features(
            {
                "sentence": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["negative", "positive"]),
                "idx": datasets.Value("int32"),
            }
        ),
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or hub)
    report = load_split_with_report("SST-2", "validation")
    assert calls == [(("nyu-mll/glue", "sst2"), {"split": "validation"})]
    assert report.source == "nyu-mll/glue"
    assert report.dataset.features == task_features("sst2")
