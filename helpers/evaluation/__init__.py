"""Evaluation: predicting new images with a checkpoint (``inference``), the metrics and their bootstrap
intervals (``metrics``), calibration and the validation-fitted operating point (``calibration``,
``operating_point``), the sets a checkpoint is tested on (``sets``), and the one scoring path that
notebook 04, ``skinlesion predict`` and the benchmarks share (``evaluate``). Imports ``core``, ``data``
and ``models``."""

from helpers.evaluation.evaluate import (
    describe_checkpoints,
    evaluate_checkpoint,
    load_for_evaluation,
    paired_difference,
    per_class_table,
    prediction_table,
    recall_by_confirmation,
)
from helpers.evaluation.inference import predict_images
from helpers.evaluation.metrics import compare_table
from helpers.evaluation.sets import (
    EvaluationSet,
    checkpoint_partitions,
    diagnosis_labels,
    evaluation_set,
    partition,
)
from helpers.models.predict import predict_probabilities

__all__ = [
    "EvaluationSet",
    "checkpoint_partitions",
    "compare_table",
    "describe_checkpoints",
    "diagnosis_labels",
    "evaluate_checkpoint",
    "paired_difference",
    "evaluation_set",
    "load_for_evaluation",
    "partition",
    "per_class_table",
    "predict_images",
    "predict_probabilities",
    "prediction_table",
    "recall_by_confirmation",
]
