"""The onnx_export step's interface: its settings (checked on construction), the files it reads and writes.

Light (standard library only), so that the command line checks a run's settings before the pipeline starts.
"""

from dataclasses import dataclass

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import CheckedSettings, artifact, check_row_count, setting


@dataclass(frozen=True)
class Settings(CheckedSettings):
    parity_tolerance: float = setting("Largest logit difference allowed between ONNX Runtime fp32 and PyTorch; more "
                                      "fails the step.")
    max_eval_samples: int = setting("Test rows to measure accuracy on; 0 takes them all.")
    max_int8_drop: float = setting("Largest drop in validation accuracy allowed for the static int8 model against "
                                   "fp32, at every OpenVINO inference precision of the CPU (0.01 is 1 point); NNCF "
                                   "keeps layers in float until it holds.")

    def check(self):
        if not self.parity_tolerance > 0:
            raise KdflowInputError(f"parity_tolerance={self.parity_tolerance} must be above 0: it is the largest "
                                   "logit difference allowed, e.g. 1e-4.")
        check_row_count("max_eval_samples", self.max_eval_samples)
        if not 0 <= self.max_int8_drop < 1:
            raise KdflowInputError(f"max_int8_drop={self.max_int8_drop} must lie in [0, 1): it is the largest drop in "
                                   "validation accuracy allowed for the int8 model, e.g. 0.01 for 1 point.")


@dataclass(frozen=True)
class Files:
    data: str = artifact("Tokenized splits from data_prep; the test split is what the checks run on, the first "
                         "training rows calibrate the static int8 model.")
    student: str = artifact("The distilled student from distill, with its tokenizer.")
    onnx_model: str = artifact("model.onnx (fp32) and model.int8.onnx (dynamic int8) for ONNX Runtime, "
                               "model.int8.qdq.onnx (static int8, standard operators) for OpenVINO, tokenizer, "
                               "config.json and onnx_report.json (kdflow.components.common.results.OnnxReport).",
                               output=True)
    onnx_metrics: str = artifact("The report of onnx_model: parity, accuracy and median latency of PyTorch and of "
                                 "each ONNX file on its runtime, file sizes.", output=True)


Result = None
