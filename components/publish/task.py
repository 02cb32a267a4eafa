"""The publish step: uploads a student that passed its gate and promotes it if it is at least as good as the champion.

Run as a KFP component (component.py) or directly, with every setting of settings.py given (`--help` lists them;
their defaults are the pipeline's parameters):

    python -m kdflow.components.publish.task --data DATA_DIR --student STUDENT_DIR --onnx-model ONNX_DIR \
        --teacher-metrics teacher_metrics.json --student-metrics student_metrics.json --publish-report report.md \
        --publish-uri gs://bucket/models --model-name imdb-sentiment --model-version 2026-11-28 \
        --promotion-tolerance 0.0 --run-id RUN_ID

What a destination holds (`gs://...`, `s3://...` or a local folder):

    MODEL/VERSION/            pytorch/ (the save_pretrained student and tokenizer), model.onnx, model.int8.onnx,
                              model.int8.qdq.onnx, the tokenizer, config.json, onnx_report.json, summary.json
                              (a RunSummary of kdflow.components.common.results, with the decision under
                              "publish"), README.md (model card), manifest.json (every file with its size and MD5,
                              written after all were verified)
    MODEL/latest.json         the champion: {"version", "uri", "accuracy"}; rewritten only once a new version
                              is complete, so its reader never sees a partial model
    MODEL/decisions/VERSION.json   every decision, promoted or not, with both sets of figures

The challenger and the champion are compared on the same test rows: the champion's recorded figures where it was
scored on this run's test rows (the decision records their count and digest), else the champion's published model
scored here on them. A champion that cannot be scored on them (another label set, missing files) is not replaced:
the decision says why, and a person decides.
"""

import hashlib
import json
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from kdflow.components.common import step, storage
from kdflow.components.common.data import load_prepared
from kdflow.components.common.errors import KdflowInputError, first_line
from kdflow.components.common.inference import evaluate_on_test
from kdflow.components.common.models import THRESHOLDS
from kdflow.components.common.results import (
    ACCURACY, RunSummary, TrainingRows, read_run_summary, score_rows, training_settings,
)

from .settings import Files, Result, Settings, check_name

LATEST = "latest.json"
MANIFEST = "manifest.json"


def run(settings: Settings, files: Files) -> Result:
    """Publishes the student as `model_name/version` under `publish_uri` unless the champion is better, and writes
    the decision (promoted or not, the version's URI, the challenger's and champion's figures) to publish_report.
    """
    check_destination(settings)
    summary = read_run_summary(teacher_metrics=files.teacher_metrics, student_metrics=files.student_metrics,
                               onnx_model=files.onnx_model, student=files.student)
    decision = decide_and_publish(settings, summary, files.student, files.onnx_model, load_prepared(files.data))
    Path(files.publish_report).parent.mkdir(parents=True, exist_ok=True)
    Path(files.publish_report).write_text(decision_markdown(decision))
    return Result(promoted=decision["promoted"], version_uri=decision["version_uri"])


def decide_and_publish(settings: Settings, summary: RunSummary, student_dir: str, onnx_dir: str, data) -> dict:
    """Uploads the version and moves latest.json to it when the challenger is at least as good as the champion on
    the same test rows (those of `data`, the prepared data); records the decision at the destination and returns
    it."""
    model_name, version, promotion_tolerance = settings.model_name, settings.version, settings.promotion_tolerance
    model_uri = storage.join(settings.publish_uri, model_name)
    version_uri = storage.join(model_uri, version)
    rows = test_rows(data)
    champion = read_champion(model_uri, data, rows)
    challenger = {"version": version, **decision_figures(summary)}
    metric = summary.gate.metric  # accuracy; macro F1 for multi-label, as the gate
    if champion is None or champion["version"] == version:
        promoted = True
    else:
        promoted = champion["comparable"] and challenger[metric] >= champion[metric] - promotion_tolerance
    decision = {
        "promoted": promoted, "model": model_name, "version": version, "version_uri": version_uri, "metric": metric,
        "promotion_tolerance": promotion_tolerance, "test_rows": rows, "challenger": challenger, "champion": champion,
        "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        if promoted:
            upload_version(student_dir, onnx_dir, summary, decision, version_uri, model_name)
            # Only now, with every file verified, does the pointer move.
            storage.write_text(storage.join(model_uri, LATEST), json.dumps(
                {"version": version, "uri": version_uri, "accuracy": challenger["accuracy"]}, indent=2))
        storage.write_text(storage.join(model_uri, "decisions", f"{version}.json"), json.dumps(decision, indent=2))
    except KdflowInputError:
        raise
    except Exception as error:  # storage errors of any kind, after the client's own retries
        raise RuntimeError(
            f"Publishing {model_name}/{version} to {settings.publish_uri} failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); {LATEST} still points at the previous version: "
            "re-run the step to finish."
        ) from error
    return decision


def decision_figures(summary: RunSummary) -> dict:
    """What a decision compares of a version: the student's test accuracy and macro F1, and its retention."""
    return {"accuracy": summary.student.accuracy, "macro_f1": summary.student.macro_f1,
            "retention": summary.retention}


def check_destination(settings: Settings) -> None:
    """What the settings' own checks leave to the step: a destination, the version's name, the bucket."""
    if not settings.publish_uri:
        raise KdflowInputError("publish_uri is empty: give a gs://bucket/prefix, an s3://bucket/prefix or a local "
                               "folder to publish to.")
    check_name("model_version", settings.version)
    storage.check_bucket(settings.publish_uri)  # a missing or unusable bucket fails here, before any upload


def test_rows(data) -> dict:
    """What identifies the test rows a version is scored on: their count and a digest of their labels and texts."""
    test = data.splits["test"]
    digest = hashlib.sha256()
    for label, text in zip(test["label"], test["text"]):
        digest.update(f"{label}\t{text}\n".encode())
    return {"count": len(test), "sha256": digest.hexdigest()}


def read_champion(model_uri: str, data, rows: dict) -> dict | None:
    """The published model latest.json points at, with its figures on the test rows `rows` of `data`: as recorded
    when it was scored on them, else scored here. None when there is no champion yet."""
    pointer = storage.read_text(storage.join(model_uri, LATEST))
    if pointer is None:
        return None
    latest = json.loads(pointer)
    published = json.loads(storage.read_text(storage.join(latest["uri"], "summary.json")))
    figures = {"version": latest["version"], **decision_figures(RunSummary.from_dict(published))}
    if published.get("publish", {}).get("test_rows") == rows:
        return {**figures, "comparable": True, "scored": "as recorded, on the same test rows"}
    try:
        scores = score_published(latest["uri"], data)
    except Exception as error:  # any reason the model cannot run on these rows is reported, not raised
        return {**figures, "comparable": False,
                "scored": f"not comparable: it was scored on other test rows, and scoring it on this run's failed "
                          f"({type(error).__name__}: {first_line(error)})"}
    return {**figures, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "comparable": True,
            "scored": f"here, on this run's test rows (it recorded accuracy {figures['accuracy']:.4f} on its own)"}


def score_published(version_uri: str, data) -> dict:
    """A published version's PyTorch model, with its own tokenizer, scored on the test split of `data`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = storage.local_copy(storage.join(version_uri, "pytorch"))
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    if model.config.num_labels != data.num_labels:
        raise KdflowInputError(f"it has {model.config.num_labels} labels, this run's data {data.num_labels}")
    return evaluate_on_test(model, AutoTokenizer.from_pretrained(folder), data)


def upload_version(student_dir: str, onnx_dir: str, summary: RunSummary, decision: dict, version_uri: str,
                   model_name: str) -> None:
    """Stages the version's files, uploads and verifies them, then writes the manifest that marks it complete."""
    with tempfile.TemporaryDirectory(prefix="kdflow-publish-") as staging:
        shutil.copytree(onnx_dir, staging, dirs_exist_ok=True)
        shutil.copytree(student_dir, Path(staging, "pytorch"))
        Path(staging, "summary.json").write_text(json.dumps({**summary.to_dict(), "publish": decision}, indent=2))
        Path(staging, "README.md").write_text(model_card(model_name, summary, student_dir))
        files = storage.upload_folder(staging, version_uri)
    storage.write_text(storage.join(version_uri, MANIFEST), json.dumps({"files": files}, indent=2))


def model_card(model_name: str, summary: RunSummary, student_dir: str) -> str:
    provenance = training_settings(student_dir)
    data = provenance.pop("data", {})
    seed = provenance.pop("seed", "?")
    provenance.pop("rows", None)  # the summary's training_rows
    table = "\n".join(f"| {name} | {accuracy:.4f} | {'' if f1 is None else f'{f1:.4f}'} |"
                      for name, accuracy, f1 in score_rows(summary))
    settings = "\n".join(f"| {key} | {value} |" for key, value in provenance.items())
    return f"""# {model_name}

A text classifier distilled by kdflow from the teacher `{provenance.get('teacher', '?')}`.
Files: `model.onnx` (fp32) and `model.int8.onnx` (dynamic int8) for ONNX Runtime, `model.int8.qdq.onnx` (static
int8 in standard operators) for OpenVINO, the tokenizer, and `pytorch/` (Hugging Face `save_pretrained` folder).

## Test metrics ({summary.student.rows} rows)

| model | accuracy | macro F1 |
|---|---|---|
{table}

Retention (student / teacher {summary.gate.metric_name}): {summary.retention:.4f}; largest |PyTorch - ONNX fp32|
logit difference: {summary.onnx.max_abs_diff:.2e}.{thresholds_line(summary)}

## Data

Source `{data.get('source', '?')}`, rows {data.get('rows', '?')}, max_length {data.get('max_length', '?')},
labels {data.get('label_names', '?')}.

## Training

Seed: {seed} (the same seed, data and settings give the same student).

{training_rows_line(summary.training_rows)}

| setting | value |
|---|---|
{settings}
"""


def thresholds_line(summary: RunSummary) -> str:
    if not summary.student.multi_label:
        return ""
    return ("\n\nMulti-label: accuracy is the share of rows with every label right; a label is predicted where its "
            f"sigmoid probability is above its threshold, `{THRESHOLDS}` in `config.json`.")


def training_rows_line(rows: TrainingRows | None) -> str:
    if rows is None:
        return "Training rows: not recorded (a student of an older kdflow)."
    return (f"Training rows: {rows.labeled} labeled and {rows.unlabeled} unlabeled (those learn from the teacher's "
            "logits alone).")


def decision_markdown(decision: dict) -> str:
    champion = decision["champion"]
    metric = decision.get("metric", ACCURACY)  # decisions of older kdflows compared accuracy
    verdict = "promoted: latest.json now points at it" if decision["promoted"] else "not promoted: the champion stays"
    lines = [
        f"# Publish decision for {decision['model']}/{decision['version']}", "", f"**{verdict}**", "",
        f"Rule: promote when challenger {metric} >= champion {metric} - {decision['promotion_tolerance']}.", "",
        "| model | version | accuracy | macro F1 | retention |", "|---|---|---|---|---|",
    ]
    for role, figures in (("challenger", decision["challenger"]), ("champion", champion)):
        if figures:
            lines.append(f"| {role} | {figures['version']} | {figures['accuracy']:.4f} | {figures['macro_f1']:.4f} | "
                         f"{figures['retention']:.4f} |")
    if champion is None:
        lines.append("| champion | none yet | | | |")
    else:
        lines += ["", f"The champion was scored {champion['scored']}."]
    rows = decision["test_rows"]
    return "\n".join(lines) + (f"\n\nTest rows: {rows['count']} (sha256 {rows['sha256'][:12]}). "
                               f"Destination: {decision['version_uri']}\n")


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
