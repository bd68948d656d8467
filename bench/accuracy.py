"""Train the recommended 7-class recipe from scratch under a wall-clock budget and score it on the test set.

Reads a run configuration (default ``configs/recipe_cpu.yaml``: its ``parameters`` give the data and the
lesion-level split, its ``notebooks: 02-train`` section the training parameters), trains with
``time_budget_s`` = the budget, keeps the checkpoint that is best on VALIDATION, then evaluates it on the
internal test partition with and without flip TTA: balanced accuracy, per-class recall and the
malignant-vs-benign ROC-AUC of P(akiec) + P(bcc) + P(mel). The headline (``test_tta_corrected``) adds the
temperature and prior correction that ``evaluation.tune_operating_point`` fits on the validation partition
only. Writes ``bench/results/accuracy-<date>.json`` and a row in ``Tracking.md``.

    uv run python bench/accuracy.py [--budget-minutes 60] [--data auto|demo|FOLDER] [--set NAME VALUE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config
from helpers.atomic import atomic_write_text
from helpers.checkpoints import git_commit
from helpers.data_source import resolve_data_root
from helpers.evaluation import tune_operating_point
from helpers.inference import predict_probabilities
from helpers.metrics import malignant_labels, malignant_probability, multiclass_metrics, rank_auc
from helpers.notebook_params import load_run_config, parse_literal
from helpers.prior_correction import corrected_probabilities
from helpers.tracking import append_run
from helpers.train_notebook import split_frame, train_config
from helpers.training import TrainResult, train

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_RECIPE = config.CONFIGS_DIR / "recipe_cpu.yaml"
TRAINING_SECTION = "02-train"
TARGETS = {"balanced_accuracy": 0.75, "malignant_roc_auc": 0.92}


def scores(frame: pd.DataFrame, probabilities: np.ndarray) -> dict:
    """Balanced accuracy, accuracy, per-class recall and the malignant ROC-AUC of 7-class probabilities."""
    labels = frame["label"].to_numpy()
    multiclass = multiclass_metrics(labels, probabilities)
    p_malignant = malignant_probability(probabilities)
    return {
        "balanced_accuracy": multiclass["balanced_accuracy"],
        "accuracy": multiclass["accuracy"],
        "macro_auc": multiclass["macro_auc"],
        "malignant_roc_auc": rank_auc(malignant_labels(labels), p_malignant),
        "recall": {name: values["recall"] for name, values in multiclass["per_class"].items()},
        "support": {name: values["support"] for name, values in multiclass["per_class"].items()},
        "confusion_matrix": multiclass["confusion_matrix"].tolist(),
    }


def evaluate(result: TrainResult, frame: pd.DataFrame, batch_size: int) -> tuple[dict, dict]:
    """Scores of the best checkpoint on the val and test partitions without and with flip TTA, and with TTA
    plus the operating point (temperature, prior correction) fitted on the validation TTA probabilities."""
    evaluation, tta_probabilities = {}, {}
    for partition in ("val", "test"):
        part = frame[frame["partition"] == partition]
        for tta in (False, True):
            probabilities = predict_probabilities(result.model, part, batch_size=batch_size, tta=tta)
            evaluation[f"{partition}{'_tta' if tta else ''}"] = scores(part, probabilities)
            if tta:
                tta_probabilities[partition] = probabilities
    val = frame[frame["partition"] == "val"]
    point = tune_operating_point(val, tta_probabilities["val"], config.CLASS_NAMES)
    for partition, probabilities in tta_probabilities.items():
        corrected = corrected_probabilities(probabilities, point["temperature"], point["class_bias"])
        evaluation[f"{partition}_tta_corrected"] = scores(frame[frame["partition"] == partition], corrected)
    return evaluation, point


def recipe_parameters(recipe: Path, overrides: list[tuple[str, str]]) -> tuple[str, dict, dict]:
    """The recipe's name, its data/split parameters and its training parameters with ``overrides`` applied
    (``train_config`` later expands ``$VARIABLES`` in a weights path, as for the notebooks)."""
    run_config = load_run_config(recipe)
    training = dict(run_config.notebooks.get(TRAINING_SECTION, {}))
    training.update({name: parse_literal(value) for name, value in overrides})
    return run_config.name, dict(run_config.parameters), training


def run(args: argparse.Namespace) -> dict:
    """Train the recipe within the budget, evaluate its best checkpoint and return the JSON-ready record."""
    name, data_params, training = recipe_parameters(args.config, args.set)
    source = resolve_data_root(args.data or data_params.get("data_root", "auto"))
    frame, split_file = split_frame(
        source,
        data_params.get("split_name", "lesion_seed42"),
        seed=data_params.get("split_seed", 42),
        val_fraction=data_params.get("val_fraction", 0.15),
        test_fraction=data_params.get("test_fraction", 0.15),
    )
    training["time_budget_s"] = args.budget_minutes * 60
    train_cfg = train_config(training, config_name=name, source=source)
    result = train(train_cfg, frame, split_file=split_file, data_description=source.description)
    started = time.perf_counter()
    evaluation, operating_point = evaluate(result, frame, train_cfg.batch_size)
    test = evaluation["test_tta_corrected"]
    return {
        "benchmark": "accuracy",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": source.description,
        "is_demo": source.is_demo,
        "split_file": str(split_file),
        "partition_images": frame["partition"].value_counts().to_dict(),
        "budget_minutes": args.budget_minutes,
        "train_wall_time_s": round(result.wall_time_s, 1),
        "eval_wall_time_s": round(time.perf_counter() - started, 1),
        "train_images_per_s": round(result.images_per_s, 2),
        "epochs_run": len(result.history.get("epoch", [])),
        "best_val_metric": {result.monitored: result.best_metric},
        "checkpoint": str(result.checkpoint_path),
        "git_commit": git_commit(),
        "recipe_file": str(args.config),
        "config": train_cfg.to_params(),
        "history": result.history,
        "metrics": evaluation,
        "headline": "test_tta_corrected",
        "operating_point_from_val": operating_point,
        "targets_met_on_test": {key: test[key] >= value for key, value in TARGETS.items()},
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_RECIPE, help="the recipe (run configuration)")
    parser.add_argument("--budget-minutes", type=float, default=60.0, help="wall-clock training budget")
    parser.add_argument("--data", default=None, help='"auto", "demo" or a folder (default: the recipe\'s)')
    parser.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a training parameter, e.g. --set fine_tune_epochs 8 (YAML literal)",
    )
    parser.add_argument("--output", type=Path, default=None, help="default bench/results/accuracy-DATE.json")
    parser.add_argument("--tracking", type=Path, default=None, help="default Tracking.md (one row per run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark, print the headline numbers and save the record atomically as JSON."""
    args = parse_args(argv)
    record = run(args)
    for key in record["metrics"]:
        metrics = record["metrics"][key]
        print(
            f"{key:>19}: balanced accuracy {metrics['balanced_accuracy']:.4f}  "
            f"malignant ROC-AUC {metrics['malignant_roc_auc']:.4f}  recall {metrics['recall']}"
        )
    print(f"training {record['train_wall_time_s']:.0f} s, {record['train_images_per_s']:.1f} images/s")
    output = args.output or RESULTS_DIR / f"accuracy-{datetime.now(UTC):%Y-%m-%d}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, json.dumps(record, indent=2, default=_json_value) + "\n")
    track(record, output, args.tracking)
    print(f"Saved {output}")
    return output


def track(record: dict, output: Path, tracking: Path | None) -> None:
    """One ``Tracking.md`` row for the run (as the notebooks add): recipe, key settings, headline metrics."""
    settings = ("arch", "input_size", "fine_tune_epochs", "augment_mode", "ema_momentum", "time_budget_s")
    headline, val = record["metrics"][record["headline"]], record["metrics"]["val_tta_corrected"]
    append_run(
        config=Path(record["recipe_file"]).stem,
        notebook="bench/accuracy",
        params={name: record["config"].get(name) for name in settings},
        metrics={
            "test_balanced_accuracy": headline["balanced_accuracy"],
            "test_malignant_roc_auc": headline["malignant_roc_auc"],
            "val_balanced_accuracy": val["balanced_accuracy"],
            "train_minutes": record["train_wall_time_s"] / 60,
        },
        outputs=[record["checkpoint"], output],
        synthetic=record["is_demo"],
        path=tracking,
    )


def _json_value(value: object) -> object:
    """numpy scalars as Python numbers (for json.dumps)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    main()
