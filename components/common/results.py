"""What the steps measure, as types that every producer writes and every reader reads (the steps, the command line,
the benchmark), so that no reader spells a JSON key of its own:

- `Evaluation`: a model's `Scores` on the test split and, for a student, its `Gate` (teacher_eval's and
  student_eval's metrics artifacts);
- `OnnxReport`: onnx_export's measurements of each of the `EXPORT_KINDS` against PyTorch (onnx_report.json);
- `RunSummary`: the run in one record (the report step's `summary`, the command line's summary.json, a published
  version's summary.json), marked with `SCHEMA_VERSION`.

Their JSON keeps the keys kdflow wrote before these types existed (flat keys such as `int8_accuracy` in the ONNX
report), so older files read and newer ones compare with them. Light on purpose (standard library only).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import KdflowInputError
from .training import PROVENANCE, Tracking

# The layout of RunSummary's JSON. A summary written before the field existed has this layout, so it reads as 1.
# Keys added with a default for older files (the gate's reasons, the pretrained baseline, the training rows) keep the
# version, since every reader tolerates their absence and ignores keys it does not know; a changed key bumps it.
SCHEMA_VERSION = 1
ONNX_REPORT = "onnx_report.json"  # the OnnxReport, in onnx_export's output folder


class JsonRecord:
    """to_json/from_json, write/read for a type with to_dict/from_dict."""

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    def write(self, path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(self.to_json())

    @classmethod
    def read(cls, path):
        return cls.from_json(Path(path).read_text())


@dataclass(frozen=True)
class Scores(JsonRecord):
    """A model on the test split: its classification scores, its size and its speed.

    For a multi-label model (metrics.multi_label_metrics) `accuracy` is the subset accuracy (every label of a row
    right), `confusion_matrix` counts the rows with true label i given label j, and the last three fields are set.
    """

    accuracy: float
    macro_f1: float | None  # None only in files of kdflow versions that did not measure it
    confusion_matrix: list[list[int]]  # rows: true label, columns: predicted
    rows: int
    parameters: int | None = None
    size_mb: float | None = None  # weight files on disk; None for a model without a folder (a hub id)
    latency_ms: dict[str, float] | None = None  # batch size (as text) -> median milliseconds per batch
    micro_f1: float | None = None
    per_label_f1: list[float] | None = None
    label_confusion: list[list[list[int]]] | None = None  # per label [[tn, fp], [fn, tp]]

    @property
    def multi_label(self) -> bool:
        return self.label_confusion is not None

    @property
    def gate_metric(self) -> str:
        """The score the gate compares: accuracy, or macro F1 for multi-label (where subset accuracy falls with every
        label added)."""
        return MACRO_F1 if self.multi_label else ACCURACY

    def to_dict(self) -> dict:
        multi_label = {"micro_f1": self.micro_f1, "per_label_f1": self.per_label_f1,
                       "label_confusion": self.label_confusion} if self.multi_label else {}
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "confusion_matrix": self.confusion_matrix,
                "rows": self.rows, "parameters": self.parameters, "size_mb": self.size_mb,
                "latency_ms": self.latency_ms, **multi_label}

    @classmethod
    def from_dict(cls, values: dict) -> "Scores":
        return cls(accuracy=values["accuracy"], macro_f1=values.get("macro_f1"),
                   confusion_matrix=values["confusion_matrix"], rows=values["rows"],
                   parameters=values.get("parameters"), size_mb=values.get("size_mb"),
                   latency_ms=values.get("latency_ms"), micro_f1=values.get("micro_f1"),
                   per_label_f1=values.get("per_label_f1"), label_confusion=values.get("label_confusion"))

    def every_label_f1(self) -> float:
        """A multi-label model's floor: the macro F1 of answering every label for every row (a label on a share p of
        the rows then scores F1 2p / (1 + p); answering none scores 0)."""
        positives = [(false_negatives + true_positives) / self.rows
                     for (_, _), (false_negatives, true_positives) in self.label_confusion]
        return sum(2 * share / (1 + share) for share in positives) / len(positives)


ACCURACY, MACRO_F1 = "accuracy", "macro_f1"  # what a Gate compares
METRIC_NAMES = {ACCURACY: "accuracy", MACRO_F1: "macro F1"}
# A model that gives one class for this share of the test rows or more is not classifying (unless the test split
# itself is that skewed, where the accuracy floor judges it): a teacher left at chance answers one class for all.
SINGLE_CLASS_SHARE = 0.98


@dataclass(frozen=True)
class Gate(JsonRecord):
    """Whether a student may be published: it keeps enough of the teacher's test score (`metric`: accuracy, macro F1
    for multi-label), and it and its teacher do better than a constant answer (always the test split's commonest
    class; for multi-label, every label) by `min_accuracy_margin`."""

    teacher_accuracy: float  # the teacher's score in `metric` (the key older files have)
    retention: float  # student score / teacher score
    min_retention: float
    passed: bool
    majority_rate: float | None = None  # what the constant answer scores on the test split; None in older files
    min_accuracy_margin: float | None = None
    reasons: tuple[str, ...] = ()  # why it failed, one sentence each
    metric: str = ACCURACY

    @property
    def metric_name(self) -> str:
        return METRIC_NAMES[self.metric]

    @classmethod
    def judge(cls, student: Scores, teacher: Scores, min_retention: float, min_accuracy_margin: float) -> "Gate":
        metric = student.gate_metric
        name, student_score, teacher_score = METRIC_NAMES[metric], getattr(student, metric), getattr(teacher, metric)
        retention = student_score / teacher_score if teacher_score else 0.0
        if student.multi_label:
            constant_score, constant_answer = student.every_label_f1(), "answering every label"
        else:
            constant_score = max(map(sum, student.confusion_matrix)) / student.rows
            constant_answer = "always answering the commonest class"
        reasons = []
        if retention < min_retention:
            reasons.append(f"The student keeps {retention:.4f} of the teacher's {name}, below min_retention="
                           f"{min_retention}.")
        for model, scores in (("teacher", teacher), ("student", student)):
            if getattr(scores, metric) < constant_score + min_accuracy_margin:
                reasons.append(
                    f"The {model}'s {name} {getattr(scores, metric):.4f} is not min_accuracy_margin="
                    f"{min_accuracy_margin} above {constant_score:.4f}, what {constant_answer} scores on the test "
                    "split.")
            if scores.multi_label:
                continue  # a set of labels per row: no one class to be stuck on
            single_class_share = max(map(sum, zip(*scores.confusion_matrix))) / scores.rows
            if single_class_share >= SINGLE_CLASS_SHARE > constant_score:
                reasons.append(f"The {model} answers one class for {single_class_share:.1%} of the test rows.")
        return cls(teacher_accuracy=teacher_score, retention=retention, min_retention=min_retention,
                   passed=not reasons, majority_rate=constant_score, min_accuracy_margin=min_accuracy_margin,
                   reasons=tuple(reasons), metric=metric)

    def to_dict(self) -> dict:
        return {"teacher_accuracy": self.teacher_accuracy, "retention": self.retention,
                "min_retention": self.min_retention, "passed": self.passed, "majority_rate": self.majority_rate,
                "min_accuracy_margin": self.min_accuracy_margin, "reasons": list(self.reasons), "metric": self.metric}

    @classmethod
    def from_dict(cls, values: dict) -> "Gate":
        return cls(teacher_accuracy=values["teacher_accuracy"], retention=values["retention"],
                   min_retention=values["min_retention"], passed=values["passed"],
                   majority_rate=values.get("majority_rate"), min_accuracy_margin=values.get("min_accuracy_margin"),
                   reasons=tuple(values.get("reasons", ())), metric=values.get("metric", ACCURACY))


@dataclass(frozen=True)
class Evaluation(JsonRecord):
    """A metrics artifact of teacher_eval or student_eval: the model's scores, the data's label names and, for a
    student, its gate. Its JSON is flat: the scores' keys, `label_names`, and the gate's keys."""

    scores: Scores
    label_names: list[str]
    gate: Gate | None = None

    def to_dict(self) -> dict:
        return {**self.scores.to_dict(), "label_names": self.label_names,
                **(self.gate.to_dict() if self.gate else {})}

    @classmethod
    def from_dict(cls, values: dict) -> "Evaluation":
        return cls(scores=Scores.from_dict(values), label_names=values["label_names"],
                   gate=Gate.from_dict(values) if "passed" in values else None)

    def confusion(self) -> dict:
        """The confusion matrix as a ClassificationMetrics artifact holds it (kdflow.components.common.component)."""
        return {"labels": self.label_names, "matrix": self.scores.confusion_matrix}

    def write_confusion(self, path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.confusion(), indent=2))


@dataclass(frozen=True)
class ExportKind:
    """One of the ONNX files onnx_export writes, and the runtime it is made for."""

    name: str  # its figures in the report's JSON: `{name}_accuracy`, ...
    file: str
    runtime: str
    title: str  # in the quality report
    label: str  # in score tables (`kdflow run`, the model card)

    @property
    def key(self) -> str:
        """Its key in the report's per-runtime maps (latency_ms, size_mb, confusion_matrix)."""
        return f"onnx_{self.name}"


ONNX_RUNTIME, OPENVINO = "ONNX Runtime", "OpenVINO"
EXPORT_KINDS = (
    ExportKind("fp32", "model.onnx", ONNX_RUNTIME, "ONNX fp32", "onnx fp32"),
    ExportKind("int8", "model.int8.onnx", ONNX_RUNTIME, "ONNX int8", "onnx int8"),
    ExportKind("int8_qdq", "model.int8.qdq.onnx", OPENVINO, "ONNX int8 QDQ, OpenVINO", "onnx int8 qdq (openvino)"),
)
EXPORTS = {kind.name: kind for kind in EXPORT_KINDS}
PARITY_KIND = "fp32"  # the export whose difference from PyTorch is checked against the parity tolerance
PYTORCH_KEY = "pytorch_fp32"  # PyTorch's key in the report's latency_ms


@dataclass(frozen=True)
class ExportScores:
    """One ONNX file on its runtime: scores on the test rows, its difference from PyTorch, speed and size."""

    accuracy: float
    macro_f1: float | None
    confusion_matrix: list[list[int]] | None
    max_abs_diff: float | None  # largest |logit difference| from PyTorch on the parity rows
    latency_ms: dict[str, float] | None
    size_mb: float | None


@dataclass(frozen=True)
class TextModelCheck:
    """The text model (tokenizer in the graph, over the static int8 student) against what it replaces on the test
    rows: the Hugging Face tokenizer's ids, and the int8 student's decisions on those ids."""

    file: str
    rows: int
    token_ids_equal: float  # share of rows whose ids equal Hugging Face's
    differing_rows: list[int]  # test-row indices where they differ
    decisions_equal: float  # share of rows whose decision equals the token-id model's
    accuracy: float
    macro_f1: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TextModelCheck":
        return cls(**values)


@dataclass(frozen=True)
class Int8Bound:
    """How the static int8 file was held within `max_drop` of the fp32 model (onnx_export.int8): validation accuracy
    on OpenVINO, the worst over the inference precisions this CPU offers, and the layers left in float for it."""

    max_drop: float
    rows: int  # validation rows
    precisions: list[str]  # OpenVINO inference precisions measured: f32, and bf16 or f16 where the CPU has them
    fp32_accuracy: float
    int8_accuracy: float
    int8_layers: int  # embedding tables and linear layers in int8
    float_layers: list[str]  # those kept in float (ONNX node names)
    test_accuracy: dict[str, float] | None = None  # the int8 file on the test rows, by precision

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Int8Bound":
        return cls(**values)


@dataclass(frozen=True)
class OnnxReport(JsonRecord):
    """onnx_export's report: each export (by kind name, in EXPORT_KINDS' order) against PyTorch on the test rows."""

    exports: dict[str, ExportScores]
    pytorch_accuracy: float
    pytorch_latency_ms: dict[str, float] | None
    parity_tolerance: float
    parity_rows: int
    rows: int
    calibration_rows: int | None
    threads: int | None
    opset_version: int | None
    text_model: TextModelCheck | None = None  # None where the tokenizer could not be converted
    text_model_error: str | None = None  # why not
    int8_bound: Int8Bound | None = None  # None in reports of kdflow versions that did not bound it

    @property
    def max_abs_diff(self) -> float:
        """The parity check's figure: the fp32 export's largest logit difference from PyTorch."""
        return self.exports[PARITY_KIND].max_abs_diff

    def latency_ms(self) -> dict[str, dict[str, float]]:
        """Runtime key (PyTorch's, then each export's) -> batch size -> median milliseconds."""
        return {PYTORCH_KEY: self.pytorch_latency_ms,
                **{EXPORTS[name].key: export.latency_ms for name, export in self.exports.items()}}

    def to_dict(self) -> dict:
        exports = self.exports
        return {
            "max_abs_diff": self.max_abs_diff,
            "parity_tolerance": self.parity_tolerance,
            "parity_rows": self.parity_rows,
            **{difference_key(name): export.max_abs_diff for name, export in exports.items() if name != PARITY_KIND},
            "pytorch_accuracy": self.pytorch_accuracy,
            **{f"{name}_{score}": getattr(export, score)
               for score in ("accuracy", "macro_f1") for name, export in exports.items()},
            "confusion_matrix": {EXPORTS[name].key: export.confusion_matrix for name, export in exports.items()},
            "rows": self.rows,
            "calibration_rows": self.calibration_rows,
            "latency_ms": self.latency_ms(),
            "size_mb": {EXPORTS[name].key: export.size_mb for name, export in exports.items()},
            "threads": self.threads,
            "opset_version": self.opset_version,
            "text_model": self.text_model.to_dict() if self.text_model else None,
            "text_model_error": self.text_model_error,
            "int8_bound": self.int8_bound.to_dict() if self.int8_bound else None,
        }

    @classmethod
    def from_dict(cls, values: dict) -> "OnnxReport":
        """The report; an export a file has no figures for (from an older kdflow) is left out."""
        def per_runtime(name: str, kind: ExportKind):
            return (values.get(name) or {}).get(kind.key)

        exports = {
            kind.name: ExportScores(
                accuracy=values[f"{kind.name}_accuracy"], macro_f1=values.get(f"{kind.name}_macro_f1"),
                confusion_matrix=per_runtime("confusion_matrix", kind),
                max_abs_diff=values.get(difference_key(kind.name)), latency_ms=per_runtime("latency_ms", kind),
                size_mb=per_runtime("size_mb", kind))
            for kind in EXPORT_KINDS if f"{kind.name}_accuracy" in values
        }
        return cls(exports=exports, pytorch_accuracy=values.get("pytorch_accuracy"),
                   pytorch_latency_ms=(values.get("latency_ms") or {}).get(PYTORCH_KEY),
                   parity_tolerance=values.get("parity_tolerance"), parity_rows=values.get("parity_rows"),
                   rows=values.get("rows"), calibration_rows=values.get("calibration_rows"),
                   threads=values.get("threads"), opset_version=values.get("opset_version"),
                   text_model=TextModelCheck.from_dict(values["text_model"]) if values.get("text_model") else None,
                   text_model_error=values.get("text_model_error"),
                   int8_bound=Int8Bound.from_dict(values["int8_bound"]) if values.get("int8_bound") else None)

    @classmethod
    def read_folder(cls, folder) -> "OnnxReport":
        """The report in an onnx_export output folder."""
        return cls.read(Path(folder, ONNX_REPORT))


def difference_key(kind_name: str) -> str:
    return "max_abs_diff" if kind_name == PARITY_KIND else f"{kind_name}_max_abs_diff"


@dataclass(frozen=True)
class Baseline:
    """The same student trained on the hard labels alone: its scores and its retention of the teacher's accuracy.
    JSON: the scores' keys and `retention`."""

    scores: Scores
    retention: float

    @classmethod
    def of(cls, evaluation: Evaluation) -> "Baseline":
        """The baseline as student_eval scored it, with a gate."""
        return cls(evaluation.scores, evaluation.gate.retention)

    def to_dict(self) -> dict:
        return {**self.scores.to_dict(), "retention": self.retention}

    @classmethod
    def from_dict(cls, values: dict) -> "Baseline":
        return cls(Scores.from_dict(values), values["retention"])


@dataclass(frozen=True)
class BaselineKind:
    """A hard-label baseline the pipeline may train beside the distilled student: where its layers come from."""

    name: str  # its key in RunSummary's JSON
    title: str  # in the quality report
    label: str  # in score tables (`kdflow run`, the model card)


# What compare_baseline trains: the student made from the fine-tuned teacher's layers (so it inherits what the teacher
# learned) and, when pretrained_teacher is set, from the pretrained checkpoint's: what one would train instead of
# distilling.
BASELINE_KINDS = (
    BaselineKind("baseline", "baseline from the fine-tuned teacher's layers, hard labels only",
                 "baseline, fine-tuned teacher's layers (labels only)"),
    BaselineKind("pretrained_baseline", "baseline from the pretrained checkpoint's layers, hard labels only",
                 "baseline, pretrained checkpoint's layers (labels only)"),
)


@dataclass(frozen=True)
class TrainingRows:
    """The training rows a student learned from: labeled ones, and unlabeled transfer rows that teach through the
    teacher's logits alone. JSON: {"labeled", "unlabeled"}, as distill records them under `rows` in its PROVENANCE."""

    labeled: int
    unlabeled: int

    def to_dict(self) -> dict:
        return {"labeled": self.labeled, "unlabeled": self.unlabeled}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingRows":
        return cls(labeled=values["labeled"], unlabeled=values["unlabeled"])


@dataclass(frozen=True)
class RunSummary(JsonRecord):
    """A run in one record: the teacher's and student's scores, the gate, the ONNX report, the seed the student was
    trained with, the hard-label baselines that were trained (BASELINE_KINDS), the training rows the student learned
    from and, when it was logged, where the student's training went (its experiment tracking).

    JSON: {"schema_version", "teacher": Scores, "student": Scores, "retention", "gate": {"passed",
    "min_retention", "majority_rate", "min_accuracy_margin", "reasons"}, "onnx": OnnxReport, "seed", "baseline" and
    "pretrained_baseline": Baseline (each when trained), "training_rows": TrainingRows (when the student recorded
    them), "tracking": common.training.Tracking (when logged)}; a reader keeps any other keys (the command line's
    settings, a publish decision) out of the type and refuses another schema_version.
    """

    teacher: Scores
    student: Scores
    gate: Gate
    onnx: OnnxReport
    seed: int | None  # with the same data and settings, the same seed gives the same student
    baseline: Baseline | None = None  # from the fine-tuned teacher's layers
    pretrained_baseline: Baseline | None = None  # from the pretrained checkpoint's layers
    training_rows: TrainingRows | None = None  # None for a student of a kdflow that did not record them
    tracking: Tracking | None = None

    @property
    def retention(self) -> float:
        return self.gate.retention

    def baselines(self) -> list[tuple[BaselineKind, Baseline]]:
        """The baselines that were trained, in BASELINE_KINDS' order."""
        return [(kind, baseline) for kind, baseline in zip(BASELINE_KINDS, (self.baseline, self.pretrained_baseline))
                if baseline]

    @classmethod
    def of(cls, *, teacher: Evaluation, student: Evaluation, onnx: OnnxReport, seed: int | None,
           baseline: Evaluation | None = None, pretrained_baseline: Evaluation | None = None,
           training_rows: TrainingRows | None = None, tracking: Tracking | None = None) -> "RunSummary":
        """The summary of the steps' results; `student` and the baselines as student_eval wrote them (with a gate)."""
        return cls(teacher=teacher.scores, student=student.scores, gate=student.gate, onnx=onnx, seed=seed,
                   baseline=Baseline.of(baseline) if baseline else None,
                   pretrained_baseline=Baseline.of(pretrained_baseline) if pretrained_baseline else None,
                   training_rows=training_rows, tracking=tracking)

    def to_dict(self) -> dict:
        values = {
            "schema_version": SCHEMA_VERSION,
            "teacher": self.teacher.to_dict(),
            "student": self.student.to_dict(),
            "retention": self.gate.retention,
            "gate": {"passed": self.gate.passed, "min_retention": self.gate.min_retention,
                     "majority_rate": self.gate.majority_rate, "min_accuracy_margin": self.gate.min_accuracy_margin,
                     "reasons": list(self.gate.reasons), "metric": self.gate.metric},
            "onnx": self.onnx.to_dict(),
            "seed": self.seed,
        }
        for kind, baseline in self.baselines():
            values[kind.name] = baseline.to_dict()
        if self.training_rows:
            values["training_rows"] = self.training_rows.to_dict()
        if self.tracking:
            values["tracking"] = self.tracking.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "RunSummary":
        version = values.get("schema_version", 1)
        if version != SCHEMA_VERSION:
            raise KdflowInputError(
                f"This run summary has schema_version {version} and this kdflow reads schema_version "
                f"{SCHEMA_VERSION}: read it with the kdflow release that wrote it.")
        teacher = Scores.from_dict(values["teacher"])
        baseline, pretrained_baseline = values.get("baseline"), values.get("pretrained_baseline")
        return cls(
            teacher=teacher, student=Scores.from_dict(values["student"]),
            gate=Gate.from_dict({"teacher_accuracy": getattr(teacher, values["gate"].get("metric", ACCURACY)),
                                 **values["gate"], "retention": values["retention"]}),
            onnx=OnnxReport.from_dict(values["onnx"]), seed=values.get("seed"),
            baseline=Baseline.from_dict(baseline) if baseline else None,
            pretrained_baseline=Baseline.from_dict(pretrained_baseline) if pretrained_baseline else None,
            training_rows=TrainingRows.from_dict(values["training_rows"]) if "training_rows" in values else None,
            tracking=Tracking.from_dict(values["tracking"]) if "tracking" in values else None,
        )


def read_run_summary(*, teacher_metrics: str, student_metrics: str, onnx_model: str, student: str,
                     baseline_metrics: str = "", pretrained_baseline_metrics: str = "") -> RunSummary:
    """The summary of a run from its artifacts: the metrics files of teacher_eval and student_eval (the student's
    and, when given, the baselines'), onnx_export's folder and the student's folder (for its seed, training rows and
    tracking)."""
    provenance = training_settings(student)
    return RunSummary.of(
        teacher=Evaluation.read(teacher_metrics), student=Evaluation.read(student_metrics),
        onnx=OnnxReport.read_folder(onnx_model), seed=provenance.get("seed"),
        baseline=Evaluation.read(baseline_metrics) if baseline_metrics else None,
        pretrained_baseline=Evaluation.read(pretrained_baseline_metrics) if pretrained_baseline_metrics else None,
        training_rows=TrainingRows.from_dict(provenance["rows"]) if "rows" in provenance else None,
        tracking=Tracking.read(student),
    )


def training_settings(student_dir: str) -> dict:
    """The settings a student was distilled with; empty for a student kdflow did not train."""
    path = Path(student_dir, PROVENANCE)
    return json.loads(path.read_text()) if path.exists() else {}


def score_rows(summary: RunSummary) -> list[tuple[str, float, float | None]]:
    """(model, accuracy, macro F1 or None) for the teacher, the student, its ONNX exports, and the baselines."""
    rows = [("teacher", summary.teacher.accuracy, summary.teacher.macro_f1),
            ("student", summary.student.accuracy, summary.student.macro_f1)]
    rows += [(f"student {EXPORTS[name].label}", export.accuracy, export.macro_f1)
             for name, export in summary.onnx.exports.items()]
    rows += [(kind.label, baseline.scores.accuracy, baseline.scores.macro_f1) for kind, baseline in summary.baselines()]
    return rows
