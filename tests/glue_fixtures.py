"""Small synthetic GLUE files in each task's exact on-disk format, with the rows they must load as.

Texts carry the traps of the real files: literal quote characters (never a quoting
mechanism), trailing spaces (SST-2), MRPC's byte-order mark, CoLA's missing header and
its dev file's missing final newline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

Q = '"hello'  # an unbalanced quote: survives only if quoting is off
MNLI_PARSES = ["( A )", "( B )", "(ROOT A)", "(ROOT B)"]  # the four parse columns, ignored


@dataclass(frozen=True)
class SampleFile:
    """One file: where it goes, its lines (header included), and the rows it must load as."""

    task: str
    split: str
    relpath: str
    lines: tuple[tuple[str, ...], ...]
    expected: tuple[tuple[tuple[str, ...], int | float], ...]  # (texts, label) per row
    bom: bool = False
    final_newline: bool = True

    def content(self) -> bytes:
        text = "\n".join("\t".join(fields) for fields in self.lines) + ("\n" if self.final_newline else "")
        return ("\ufeff" if self.bom else "").encode() + text.encode()


def _pair_rows(header, rows, label_of):
    """Lines and expected rows of an index/text/text/label file, from (texts, label as written) pairs."""
    lines = (header, *((str(i), *texts, raw) for i, (texts, raw) in enumerate(rows)))
    return lines, tuple((texts, label_of[raw]) for texts, raw in rows)


_NLI = {"entailment": 0, "not_entailment": 1}
_rte_lines, _rte_expected = _pair_rows(
    ("index", "sentence1", "sentence2", "label"),
    [((f"{Q} world.", "It's \"quoted\"."), "not_entailment"), (("A man.", "A person."), "entailment")],
    _NLI,
)
_qnli_lines, _qnli_expected = _pair_rows(
    ("index", "question", "sentence", "label"),
    [(("Who?", f"{Q} said Bob."), "entailment"), (("Why?", "No reason."), "not_entailment")],
    _NLI,
)
_wnli_lines, _wnli_expected = _pair_rows(
    ("index", "sentence1", "sentence2", "label"),
    [(("The drain is clogged.", "It is clogged."), "1"), ((f"{Q} Jane.", "Susan did."), "0")],
    {"0": 0, "1": 1},
)


def _test_file(task, relpath, header, texts_per_row):
    """A GLUE test file: an index column, then the text columns, no labels."""
    lines = (header, *((str(i), *texts) for i, texts in enumerate(texts_per_row)))
    return SampleFile(task, "test", relpath, lines, tuple((texts, -1) for texts in texts_per_row))


def _mnli_file(split, relpath, n_annotator_labels, rows):
    header = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2",
              *(f"label{i}" for i in range(1, n_annotator_labels + 1)), "gold_label")
    # Annotator labels disagree with gold_label, so reading the wrong column shows.
    lines = (header, *((str(i), "31193", f"{i}n", "fiction", *MNLI_PARSES, p, h,
                        *["entailment" if gold == "neutral" else "neutral"] * n_annotator_labels, gold)
                       for i, ((p, h), gold) in enumerate(rows)))
    ids = {"entailment": 0, "neutral": 1, "contradiction": 2}
    return SampleFile("mnli", split, relpath, lines, tuple(((p, h), ids[gold]) for (p, h), gold in rows))


def _stsb_lines(header_extra, rows):
    header = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              *header_extra)
    return (header, *((str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", *fields)
                      for i, fields in enumerate(rows)))


SAMPLES: tuple[SampleFile, ...] = (
    SampleFile(
        "cola", "train", "CoLA/train.tsv",
        (("gj04", "1", "", "Our friends won't buy this."), ("gj04", "0", "*", f"{Q} they said it."),
         ("cj99", "1", "", "Bill left.")),
        ((("Our friends won't buy this.",), 1), ((f"{Q} they said it.",), 0), (("Bill left.",), 1)),
    ),
    SampleFile(
        "cola", "validation", "CoLA/dev.tsv",
        (("gj04", "1", "", "The sailors rode."), ("w_80", "0", "*", "John talked \"to Bill.")),
        ((("The sailors rode.",), 1), (("John talked \"to Bill.",), 0)),
        final_newline=False,
    ),
    _test_file("cola", "CoLA/test.tsv", ("index", "sentence"), [("Bill whistled.",), (f"{Q} there.",)]),
    SampleFile(
        "sst2", "train", "SST-2/train.tsv",
        (("sentence", "label"), ("hide new secretions ", "0"), (f"it 's {Q} charming . ", "1")),
        ((("hide new secretions ",), 0), ((f"it 's {Q} charming . ",), 1)),
    ),
    SampleFile(
        "sst2", "validation", "SST-2/dev.tsv",
        (("sentence", "label"), ("unflinchingly bleak ", "0")), ((("unflinchingly bleak ",), 0),),
    ),
    _test_file("sst2", "SST-2/test.tsv", ("index", "sentence"), [("uneasy mishmash . ",)]),
    SampleFile(
        "mrpc", "train", "MRPC/train.tsv",
        (("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
         ("1", "702876", "702977", 'He called "the witness".', f"{Q} witness."),
         ("0", "2108705", "2108831", "Yucaipa owned it.", "Yucaipa bought it.")),
        ((('He called "the witness".', f"{Q} witness."), 1), (("Yucaipa owned it.", "Yucaipa bought it."), 0)),
        bom=True,
    ),
    SampleFile(
        "mrpc", "validation", "MRPC/dev.tsv",
        (("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), ("0", "1", "2", "A.", "B.")),
        ((("A.", "B."), 0),),
        bom=True,
    ),
    SampleFile(
        "mrpc", "test", "MRPC/test.tsv",
        (("index", "#1 ID", "#2 ID", "#1 String", "#2 String"), ("0", "1089874", "1089925", "PCCW's.", f"{Q}.")),
        ((("PCCW's.", f"{Q}."), -1),),
    ),
    SampleFile(
        "stsb", "train", "STS-B/train.tsv",
        _stsb_lines(("score",), [("A plane.", "An air plane.", "5.000"), (f"{Q} man.", "A man.", "3.8"),
                                 ("A cat.", "A dog.", "0")]),
        ((("A plane.", "An air plane."), 5.0), ((f"{Q} man.", "A man."), 3.8), (("A cat.", "A dog."), 0.0)),
    ),
    SampleFile(
        "stsb", "validation", "STS-B/dev.tsv",
        _stsb_lines(("score",), [("A hat.", "A cap.", "4.750")]), ((("A hat.", "A cap."), 4.75),),
    ),
    SampleFile(
        "stsb", "test", "STS-B/test.tsv",
        _stsb_lines((), [("A girl.", "A boy.")]), ((("A girl.", "A boy."), -1),),
    ),
    SampleFile(
        "qqp", "train", "QQP/train.tsv",
        (("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
         ("0", "1", "2", "How do I learn?", f"{Q} learn?", "1"), ("1", "3", "4", "Why?", "Why not?", "0")),
        ((("How do I learn?", f"{Q} learn?"), 1), (("Why?", "Why not?"), 0)),
    ),
    SampleFile(
        "qqp", "validation", "QQP/dev.tsv",
        (("id", "qid1", "qid2", "question1", "question2", "is_duplicate"), ("5", "9", "10", "Q1?", "Q2?", "0")),
        ((("Q1?", "Q2?"), 0),),
    ),
    SampleFile(
        "qqp", "test", "QQP/test.tsv",
        (("id", "question1", "question2"), ("0", "Is it?", f"{Q} it?")), ((("Is it?", f"{Q} it?"), -1),),
    ),
    _mnli_file("train", "MNLI/train.tsv", 1,
               [((f"{Q} conceptually.", "Product and geography."), "neutral"),
                (("You know.", "You don't."), "contradiction"),
                (("One.", "Someone."), "entailment")]),
    _mnli_file("validation_matched", "MNLI/dev_matched.tsv", 5, [(("The new rights.", "Everyone."), "neutral")]),
    _mnli_file("validation_mismatched", "MNLI/dev_mismatched.tsv", 5,
               [(("Your gift.", "Hundreds."), "contradiction"), ((f"{Q} hi.", "Hello."), "entailment")]),
    SampleFile(
        "mnli", "test_matched", "MNLI/test_matched.tsv",
        (("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
          "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"),
         ("0", "31193", "0n", "fiction", *MNLI_PARSES, "Hey.", f"{Q} there.")),
        ((("Hey.", f"{Q} there."), -1),),
    ),
    SampleFile("qnli", "validation", "QNLI/dev.tsv", _qnli_lines, _qnli_expected),
    _test_file("qnli", "QNLI/test.tsv", ("index", "question", "sentence"), [("What?", "That.")]),
    SampleFile("rte", "train", "RTE/train.tsv", _rte_lines, _rte_expected),
    SampleFile("rte", "validation", "RTE/dev.tsv", _rte_lines[:2], _rte_expected[:1]),
    _test_file("rte", "RTE/test.tsv", ("index", "sentence1", "sentence2"), [("Mangla dam.", "Pakistan.")]),
    SampleFile("wnli", "validation", "WNLI/dev.tsv", _wnli_lines, _wnli_expected),
    _test_file("wnli", "WNLI/test.tsv", ("index", "sentence1", "sentence2"), [("Maude ate.", "She ate.")]),
)


def write_samples(root: Path) -> Path:
    """Write every sample file under ``root`` in the GLUE layout; returns ``root``."""
    for sample in SAMPLES:
        path = root / sample.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(sample.content())
    return root


def write_file(root: Path, relpath: str, content: str | bytes) -> Path:
    """Write one file under ``root`` (text is UTF-8); returns ``root`` for use as data_dir."""
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root
