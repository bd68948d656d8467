"""Train the recommended 7-class recipe under a wall-clock budget and score it, internally and externally.

Reads a run configuration (default ``configs/recipe_cpu.yaml``: its ``parameters`` give the data and the
lesion-level split, its ``notebooks: 02-train`` section the training parameters), trains with
``time_budget_s`` = the budget and keeps the checkpoint that is best on VALIDATION. It then scores that
checkpoint exactly as notebook 04 does (:func:`helpers.evaluation.evaluate_checkpoint`: operating point
fitted on the validation partition, lesion-level 95% bootstrap intervals), single view and with flip TTA,
on the internal test partition and on the external ISIC 2018 test images when they are available. Writes
``bench/results/accuracy-<date>[-<variant>].json`` (numbered, never replacing an earlier record) and a row in
``Tracking.md``.

    uv run python bench/accuracy.py [--budget-minutes 60] [--data auto|demo|FOLDER] [--set NAME VALUE]
                                    [--name VARIANT]

``--release RUN.json`` trains the released model instead: the same recipe on EVERY partition of HAM10000 for
the number of epochs that validation run selected (no held-out internal images remain, so it is scored on
the external set only), with that run's validation-fitted operating point, saved to ``models/release/``; the
record of an ensemble recipe's run releases every member for its own selected epochs and saves their ensemble
with the ensemble's operating point, its weights in half precision (the 10 MiB limit).
``--score CKPT`` scores an existing checkpoint instead of training one (an ensemble made by ``skinlesion
ensemble``, a released model); ``--against BASE`` adds paired differences to BASE with 95% CIs (the same
lesions resampled for both), which decide whether a model beats another far more sharply than comparing
their own intervals. ``--figures DIR`` also writes the training curves and the confusion matrices as SVG
(no dataset images).

A recipe with ``members`` (``configs/recipe_cpu_ensemble.yaml``: the recipe at two input sizes and on a second
backbone) trains its members within the one budget (counted from the common start), saves their average as
one ensemble checkpoint (``skinlesion ensemble``) and scores that; each member's training record is kept under
``members``; ``--set`` applies to every member. The recipe's ``streams`` train groups of members at the same
time, each group in its own process and its members in turn; without them, every member in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from helpers.core import config
from helpers.core.atomic import atomic_write_text
from helpers.core.errors import DataError, SkinLesionError
from helpers.core.provenance import git_commit
from helpers.data import resolve_data_root, split_dataset
from helpers.data.source import DataSource
from helpers.evaluation import (
    evaluate_checkpoint,
    evaluation_set,
    paired_difference,
    per_class_table,
    recall_by_confirmation,
)
from helpers.evaluation.operating_point import (
    copy_operating_point,
    load_operating_point,
    operating_point_path,
)
from helpers.models import load_checkpoint
from helpers.models.checkpoints import read_metadata, sidecar_path, trained_partitions
from helpers.models.ensemble import save_ensemble
from helpers.plots import apply_style, save_figure
from helpers.plots.evaluation import confusion_matrix_figure
from helpers.plots.training import plot_training_curves
from helpers.runs import append_run, run_label
from helpers.runs.params import ConfigError, load_run_config, parse_literal
from helpers.training import TrainConfig, config_from_notebook
from helpers.training.settings import TRACKED_PARAMS, TRAINING_NAMES
from helpers.training.streams import MemberPlan, TrainedMember, train_members

DEFAULT_RECIPE = config.CONFIGS_DIR / "recipe_cpu.yaml"
EXTERNAL_SET = Path("data") / "ISIC2018_Task3_external_val"
"""The ISIC 2018 Task 3 test images (ISIC 2018 layout) under the shared folder."""
TRAINING_SECTION = "02-train"
HEADLINE = "internal_tta"
TARGETS = {
    "internal_tta": {"balanced_accuracy": 0.75},
    "external_tta": {"balanced_accuracy": 0.72, "roc_auc": 0.93},
}
"""Targets per scored set: balanced multiclass accuracy and malignant-vs-benign ROC-AUC."""
REPORTED = (
    "balanced_accuracy",
    "roc_auc",
    "macro_auc",
    "accuracy",
    "sensitivity",
    "specificity",
    "threshold",
)


def recipe_parameters(
    recipe: Path, overrides: list[tuple[str, str]]
) -> tuple[str, dict, list[dict], list[list[int]]]:
    """The recipe's name, its data/split parameters, the training parameters of each model it trains (one,
    or one per ensemble member), with ``overrides`` applied to every one (``config_from_notebook`` later
    expands ``$VARIABLES`` in a weights path, as for the notebooks), and its streams (member numbers)."""
    run_config = load_run_config(recipe)
    training = dict(run_config.notebooks.get(TRAINING_SECTION, {}))
    parsed = {name: parse_literal(value) for name, value in overrides}
    for where, names in [("--set", parsed), *((f"{recipe}: members", m) for m in run_config.members)]:
        if unknown := sorted(set(names) - TRAINING_NAMES):
            raise ConfigError(
                f"{where}: {unknown} are no training parameters (typo?); known: {sorted(TRAINING_NAMES)}"
            )
    members = [{**training, **member, **parsed} for member in run_config.members or [{}]]
    return run_config.name, dict(run_config.parameters), members, run_config.streams


def external_folder(given: Path | None) -> Path | None:
    """The external test folder: ``given``, else the shared copy when it exists, else None (not scored)."""
    if given is not None:
        return given
    shared = config.shared_dir()
    return shared / EXTERNAL_SET if shared is not None and (shared / EXTERNAL_SET).is_dir() else None


def scored(result: dict) -> dict:
    """The JSON-ready numbers of one evaluation: headline metrics (CI triples where computed), per-class
    recall and support, with HAM10000's dx_type the recall per diagnosis/confirmation ([recall, images]),
    the confusion matrix, and whether P(malignant) was summed after the class bias (a v1 operating point) or
    before it."""
    record = {key: result["summary"][key] for key in REPORTED if key in result["summary"]}
    table = per_class_table(result)
    record["recall"] = table["recall"].to_dict()
    record["support"] = table["support"].astype(int).to_dict()
    by_confirmation = recall_by_confirmation(result)
    if not by_confirmation.empty:
        record["recall_by_confirmation"] = {
            f"{diagnosis}/{confirmation}": [round(row.recall, 4), int(row.support)]
            for (diagnosis, confirmation), row in by_confirmation.iterrows()
        }
    record["confusion_matrix"] = result["multiclass"]["confusion_matrix"].tolist()
    record["images"] = len(result["frame"])
    record["p_malignant_after_bias"] = result["operating_point"]["malignant_after_bias"]
    return record


def evaluations(
    checkpoint: Path, data_root: Path, external: Path | None, n_bootstrap: int, save: bool = True
) -> dict:
    """evaluate_checkpoint's results on the internal test partition (when the checkpoint never trained on it)
    and the external set, single view and with flip TTA; with ``save``, the single-view operating point that
    ``skinlesion predict`` uses is saved beside it."""
    model, metadata = load_checkpoint(checkpoint)
    sets = {}
    if "test" not in trained_partitions(metadata):
        sets["internal"] = evaluation_set("internal", metadata=metadata, data_root=data_root)
    if external is not None:
        sets["external"] = evaluation_set("isic2018", metadata=metadata, data_root=data_root, path=external)
    results = {}
    for name, chosen in sets.items():
        for tta in (True, False):
            held_out_val = chosen.val is not None
            results[f"{name}{'_tta' if tta else ''}"] = evaluate_checkpoint(
                model,
                metadata,
                chosen,
                tta=tta,
                n_bootstrap=n_bootstrap,
                save=save and held_out_val and not tta,
            )
    return results


def evaluate(checkpoint: Path, data_root: Path, external: Path | None, n_bootstrap: int) -> dict:
    """The JSON-ready scores of :func:`evaluations`."""
    return {
        key: scored(result)
        for key, result in evaluations(checkpoint, data_root, external, n_bootstrap).items()
    }


def record_header(source: DataSource, external: Path | None) -> dict:
    """The fields every accuracy record starts with: what ran, when, on which data and code."""
    return {
        "benchmark": "accuracy",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": source.description,
        "is_demo": source.is_demo,
        "external_set": None if external is None else str(external),
        "git_commit": git_commit(),
    }


def score_existing(args: argparse.Namespace) -> dict:
    """--score: the record of an existing checkpoint's scores (no training), and with --against the paired
    differences to another checkpoint on the sets both are scored on."""
    source = resolve_data_root(args.data or "auto")
    external = None if source.is_demo else external_folder(args.external)
    started = time.perf_counter()
    results = evaluations(args.score, source.root, external, args.n_bootstrap)
    record = {
        **record_header(source, external),
        "checkpoint": str(args.score),
        "metrics": {key: scored(result) for key, result in results.items()},
    }
    if args.against is not None:
        baseline = evaluations(args.against, source.root, external, args.n_bootstrap, save=False)
        record["against"] = str(args.against)
        record["against_metrics"] = {key: scored(result) for key, result in baseline.items()}
        record["paired_difference"] = {
            key: dict(paired_difference(results[key], baseline[key], n_bootstrap=args.n_bootstrap))
            for key in results
            if key in baseline
        }
    record["eval_wall_time_s"] = round(time.perf_counter() - started, 1)
    return record


def read_validation_run(path: Path) -> dict:
    """The validation run a release is trained after, checked before any training: each trained model's
    selected epoch, head epochs and run name, and the operating point saved beside the scored checkpoint (the
    release takes it over)."""
    fix = "pass the JSON that bench/accuracy.py wrote for the validation run (after it scored the checkpoint)"
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        for model in validated_models(run):
            _ = (model["selected_epoch"], model["config"]["epochs"], model["config"]["run_name"])
        scored_checkpoint = run["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"Not a usable validation run record ({error!r}).", path, fix) from error
    if run.get("release_of"):
        raise DataError(
            "This record is of a release (trained on every partition), not a validation run.", path, fix
        )
    load_operating_point(operating_point_path(scored_checkpoint))
    return run


def validated_models(run: dict) -> list[dict]:
    """The records of the models a validation run trained: an ensemble's members, else the run itself."""
    return run.get("members") or [run]


def release_members(members: list[dict], validation_run: dict, record_path: Path) -> list[dict]:
    """Each member's release settings, paired with its own record in the validation run."""
    recorded = validated_models(validation_run)
    if len(recorded) != len(members):
        raise ConfigError(
            f"The validation run {record_path} trained {len(recorded)} model(s), the recipe has "
            f"{len(members)}.\nFix: pass the --config that validation run was trained with."
        )
    return [release_settings(member, record) for member, record in zip(members, recorded, strict=True)]


def release_settings(training: dict, validation_run: dict) -> dict:
    """The recipe's training parameters for the released model: every partition, and as many fine-tuning
    epochs as the validation run's selected epoch had (its cosine schedule shortened to end there)."""
    head_epochs = int(validation_run["config"]["epochs"])
    selected = int(validation_run["selected_epoch"])
    return {
        **training,
        "train_partitions": ["train", "val", "test"],
        "fine_tune_epochs": max(1, selected - head_epochs),
        "run_name": f"{validation_run['config']['run_name']}_release",
    }


RELEASE_OWN_SETTINGS = frozenset(
    {"train_partitions", "fine_tune_epochs", "run_name", "version", "time_budget_s", "resume", "tensorboard"}
    | {"models_dir", "runs_dir", "cache_dir"}
)
"""The settings a release sets itself (or that only place its files); all others are its validation run's."""


def check_release_matches(settings: TrainConfig, validation_run: dict, record_path: Path) -> None:
    """ConfigError, before training, when the release would train with other settings than its validation
    run (e.g. a --set of the validation run not repeated): its epochs and operating point would not fit."""
    recorded = {**TrainConfig().to_params(), **validation_run["config"]}
    current = settings.to_params()
    compared = [name for name in current if name not in RELEASE_OWN_SETTINGS]
    differ = [
        f"{name} {current[name]!r} (validation run: {recorded[name]!r})"
        for name in compared
        if _setting(name, current[name]) != _setting(name, recorded[name])
    ]
    if differ:
        raise ConfigError(
            f"The release would train with other settings than its validation run {record_path}: "
            f"{'; '.join(differ)}.\nFix: repeat the validation run's --set options for these settings."
        )


def _setting(name: str, value: object) -> object:
    """A setting as compared across machines: a weights file by its name (the shared folder may move)."""
    return Path(value).name if name == "weights" and isinstance(value, str) and "/" in value else value


def release_path(name: str, archs: list[str], synthetic: bool) -> Path:
    """Where --release publishes: ``models/release/<name>_<arch>.h5``, an ensemble ``<name>_all_data.h5``; a
    release of the synthetic demo data goes to the git-ignored ``models/release-synthetic/`` instead, so it is
    never committed nor taken for the released model."""
    folder = config.RELEASE_DIR.with_name("release-synthetic") if synthetic else config.RELEASE_DIR
    return folder / f"{name}_{archs[0] if len(archs) == 1 else 'all_data'}.h5"


def check_release_is_new(target: Path) -> None:
    """ConfigError, before training, when ``target`` exists: a release is never replaced silently."""
    if target.exists():
        raise ConfigError(
            f"{target} exists; a release is replaced only on purpose (it may be the model that predict, "
            "04, 05 and the demo use).\nFix: choose another --name, or move the old release away first."
        )


def publish_release(checkpoints: list[Path], validation_checkpoint: Path, target: Path) -> Path:
    """Put the all-data model at ``target`` (one checkpoint moved with its sidecar; several saved as their
    ensemble in half precision, for the size limit) with the validation run's operating point (fitted on
    validation images the released model has since trained on)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(checkpoints) > 1:
        save_ensemble(checkpoints, target, half_precision=True)
    else:
        sidecar_path(checkpoints[0]).replace(sidecar_path(target))
        checkpoints[0].replace(target)
    copy_operating_point(validation_checkpoint, target)
    return target


def run(args: argparse.Namespace) -> dict:
    """Train the recipe (each of its members) within the budget, evaluate its best checkpoint (the members'
    ensemble) and return the JSON-ready record."""
    name, data_params, members, streams = recipe_parameters(args.config, args.set)
    name = args.name or name
    validation_run = read_validation_run(args.release) if args.release else None
    if validation_run is not None:
        members = release_members(members, validation_run, args.release)
    source = resolve_data_root(args.data or data_params.get("data_root", "auto"))
    if validation_run is not None:
        releases = [config_from_notebook(member, label=name, source=source) for member in members]
        for release, record in zip(releases, validated_models(validation_run), strict=True):
            check_release_matches(release, record, args.release)
        check_release_is_new(release_path(name, [release.arch for release in releases], source.is_demo))
    frame, split_file = split_dataset(
        source,
        data_params.get("split_name"),
        seed=data_params.get("split_seed", config.DEFAULT_SPLIT_SEED),
        val_fraction=data_params.get("val_fraction", config.DEFAULT_HOLDOUT_FRACTION),
        test_fraction=data_params.get("test_fraction", config.DEFAULT_HOLDOUT_FRACTION),
    )
    plans = [
        MemberPlan(
            training, run_label(name if len(members) == 1 else f"{name}_member{number}", source.is_demo)
        )
        for number, training in enumerate(members, start=1)
    ]
    trained = train_members(plans, streams, args.budget_minutes * 60, source, frame, split_file)
    trainings = [training_record(member, ensemble=len(trained) > 1) for member in trained]
    if validation_run is not None:
        warn_if_cut_short(trainings, args.budget_minutes)
    started = time.perf_counter()
    external = None if source.is_demo else external_folder(args.external)
    checkpoints = [member.result.checkpoint_path for member in trained]
    if validation_run is not None:
        target = release_path(name, [member.settings.arch for member in trained], source.is_demo)
        checkpoint = publish_release(checkpoints, Path(validation_run["checkpoint"]), target)
    elif len(trained) > 1:
        checkpoint = save_ensemble(checkpoints, free_path(trained[0].settings.path("models") / f"{name}.h5"))
    else:
        checkpoint = checkpoints[0]
    metrics = evaluate(checkpoint, source.root, external, args.n_bootstrap)
    return {
        **record_header(source, external),
        "split_file": str(split_file),
        "partition_images": frame["partition"].value_counts().to_dict(),
        "budget_minutes": args.budget_minutes,
        # an ensemble's: from the common start to the end of its last member (one model's: its own, below)
        "train_wall_time_s": max(member.ended_after_s for member in trained),
        **({"streams": streams} if streams else {}),
        "eval_wall_time_s": round(time.perf_counter() - started, 1),
        **(trainings[0] if len(trainings) == 1 else {"members": trainings}),
        "checkpoint": str(checkpoint),
        "release_of": None if validation_run is None else str(args.release),
        "recipe_file": str(args.config),
        "name": name,
        "metrics": metrics,
        "headline": HEADLINE,
        "targets_met": {  # a release (trained on every partition) is scored externally only
            key: {metric: _point(metrics[key][metric]) >= value for metric, value in targets.items()}
            for key, targets in TARGETS.items()
            if key in metrics
        },
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def warn_if_cut_short(trainings: list[dict], budget_minutes: float) -> None:
    """Say which released models the budget stopped before the epochs their validation run selected: such a
    release is not the validated recipe (its record keeps ``stopped_by_budget``)."""
    for index, training in enumerate(trainings, start=1):
        if training["stopped_by_budget"]:
            model = "{arch} {input_size}".format(**training["config"])
            print(
                f"Warning: model {index} of {len(trainings)} ({model}) was "
                f"stopped by the {budget_minutes:.0f}-minute budget after epoch {training['epochs_run']}, "
                "before the epoch its validation run selected.\nFix: raise --budget-minutes to "
                "release the validated recipe (and say that it took longer)."
            )


def training_record(member: TrainedMember, ensemble: bool) -> dict:
    """What one trained model's record holds: speed, epochs, selected checkpoint, settings and history; an
    ensemble member's also in which stream it trained, and when it started and ended (seconds from the
    common start)."""
    settings, result = member.settings, member.result
    timing = ("stream", "started_after_s", "ended_after_s")
    return {
        **({name: getattr(member, name) for name in timing} if ensemble else {}),
        "train_wall_time_s": round(result.wall_time_s, 1),
        "train_images_per_s": round(result.images_per_s, 2),
        "epochs_run": len(result.history.get("epoch", [])),
        "stopped_by_budget": result.stopped_by_budget,
        "best_val_metric": {result.monitored: result.best_metric},
        "checkpoint": str(result.checkpoint_path),
        "selected_epoch": read_metadata(result.checkpoint_path)["epoch"],
        "config": settings.to_params(),
        "history": result.history,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_RECIPE, help="the recipe (run configuration)")
    parser.add_argument(
        "--name", default=None, help="name of a --set variant (default: the recipe's); names the release"
    )
    parser.add_argument("--budget-minutes", type=float, default=60.0, help="wall-clock training budget")
    parser.add_argument("--data", default=None, help='"auto", "demo" or a folder (default: the recipe\'s)')
    parser.add_argument(
        "--external",
        type=Path,
        default=None,
        help=f"ISIC 2018 test folder to score on (default: $SKINLESION_SHARED/{EXTERNAL_SET} if present)",
    )
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    parser.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a training parameter, e.g. --set fine_tune_epochs 8 (YAML literal)",
    )
    parser.add_argument(
        "--release", type=Path, default=None, metavar="RUN.json", help="train the released model (see above)"
    )
    parser.add_argument(
        "--score", type=Path, default=None, metavar="CKPT", help="score an existing checkpoint (no training)"
    )
    parser.add_argument(
        "--against", type=Path, default=None, metavar="CKPT", help="with --score: paired differences to CKPT"
    )
    parser.add_argument("--figures", type=Path, default=None, metavar="DIR", help="also write SVG figures")
    parser.add_argument(
        "--output", type=Path, default=None, help="default: accuracy-DATE[-NAME].json in bench/results"
    )
    parser.add_argument("--tracking", type=Path, default=None, help="default Tracking.md (one row per run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark, print the headline numbers and save the record atomically as JSON."""
    args = parse_args(argv)
    record = run(args) if args.score is None else score_existing(args)
    for key, metrics in record["metrics"].items():
        print(
            f"{key:>13}: balanced accuracy {_text(metrics['balanced_accuracy'])}  "
            f"malignant ROC-AUC {_text(metrics['roc_auc'])}"
        )
    for key, differences in record.get("paired_difference", {}).items():
        print(
            f"{key:>13}: minus {record['against']}: "
            + "  ".join(f"{metric} {_text(value)}" for metric, value in differences.items())
        )
    for training in trained_models(record):
        print(
            f"training {training['train_wall_time_s']:.0f} s, {training['train_images_per_s']:.1f} images/s"
        )
    output = args.output or default_output(args)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, json.dumps(record, indent=2, default=_json_value) + "\n")
    track(record, output, args.tracking)
    if args.figures is not None:
        for path in write_figures(record, args.figures):
            print(f"Saved {path}")
    print(f"Saved {output}")
    return output


def default_output(args: argparse.Namespace) -> Path:
    """``bench/results/accuracy-DATE[-score-CKPT | -VARIANT][-release].json`` (VARIANT: --name, else a recipe
    other than the default), numbered ``-2``, ``-3``... when taken: a second run of the day must not replace
    the first one's record (an explicit --output does)."""
    if args.score is not None:
        suffix = f"-score-{args.score.stem}"
    else:
        variant = args.name or (None if args.config == DEFAULT_RECIPE else args.config.stem)
        suffix = (f"-{variant}" if variant else "") + ("-release" if args.release else "")
    return free_path(config.BENCH_RESULTS_DIR / f"accuracy-{datetime.now(UTC):%Y-%m-%d}{suffix}.json")


def free_path(path: Path) -> Path:
    """``path``, or the first of ``STEM-2``, ``STEM-3``... that does not exist yet (nothing is replaced)."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def trained_models(record: dict) -> list[dict]:
    """The training records in an accuracy record: its members', its own, or none (--score)."""
    return record.get("members") or ([record] if "history" in record else [])


def write_figures(record: dict, folder: Path) -> list[Path]:
    """The training curves of each trained model and a confusion matrix per TTA-scored set, as SVG in
    ``folder``."""
    apply_style()
    if "train_wall_time_s" in record:
        stem = f"{record['name']}{'_release' if record['release_of'] else ''}"
    else:  # --score: no training
        stem = Path(record["checkpoint"]).stem
    trainings = trained_models(record)
    paths = []
    for index, training in enumerate(trainings, start=1):
        curves_stem = stem if len(trainings) == 1 else f"{stem}_member{index}"
        monitored = next(iter(training["best_val_metric"]))
        curves = plot_training_curves(
            training["history"], title=f"{curves_stem}: training curves", monitored=monitored
        )
        paths.append(save_figure(curves, f"{curves_stem}_curves", figures_dir=folder))
    for key in ("internal_tta", "external_tta"):
        if key in record["metrics"]:
            matrix = np.asarray(record["metrics"][key]["confusion_matrix"])
            title = f"{stem}: {key.replace('_tta', '')} test images, flip TTA + operating point"
            figure = confusion_matrix_figure(matrix, list(config.CLASS_NAMES), title=title)
            paths.append(save_figure(figure, f"{stem}_{key}_confusion_matrix", figures_dir=folder))
    return paths


def track(record: dict, output: Path, tracking: Path | None) -> None:
    """One Tracking.md row for the run (as the notebooks add): recipe, the settings a notebook row shows (a
    --set variant's among them) and the budget, headline metrics."""
    trained = "train_wall_time_s" in record  # else --score
    if not trained:
        params = {"against": record.get("against")}
    elif "members" in record:  # an ensemble: what tells its members apart
        params = {
            f"member{index}": "{arch} {input_size} seed {seed}".format(**member["config"])
            for index, member in enumerate(record["members"], start=1)
        }
        # the common budget (each member's own is what was left of it when it started)
        params["time_budget_s"] = record["budget_minutes"] * 60
        if "streams" in record:
            params["streams"] = record["streams"]
    else:
        params = {name: record["config"].get(name) for name in (*TRACKED_PARAMS, "time_budget_s")}
    cut = [
        str(index)
        for index, model in enumerate(trained_models(record), start=1)
        if model.get("stopped_by_budget")
    ]
    if cut:
        params["stopped_by_budget"] = "model " + ", ".join(cut)
    metrics = {"train_minutes": record["train_wall_time_s"] / 60} if trained else {}
    for key in ("internal_tta", "external_tta"):
        if key in record["metrics"]:
            scores = record["metrics"][key]
            metrics[f"{key}_balanced_accuracy"] = _point(scores["balanced_accuracy"])
            metrics[f"{key}_malignant_roc_auc"] = _point(scores["roc_auc"])
    append_run(
        config=record["name"] if trained else "score",
        notebook="bench/accuracy",
        params=params,
        metrics=metrics,
        outputs=[record["checkpoint"], output],
        synthetic=record["is_demo"],
        path=tracking,
    )


def _point(value: float | list[float]) -> float:
    """The point estimate of a metric stored as a number or as a (point, low, high) triple."""
    return float(value[0]) if isinstance(value, list | tuple) else float(value)


def _text(value: float | list[float]) -> str:
    if isinstance(value, list | tuple):
        return f"{value[0]:.4f} (95% CI {value[1]:.3f} to {value[2]:.3f})"
    return f"{value:.4f}"


def _json_value(value: object) -> object:
    """numpy scalars and arrays as Python numbers and lists (for json.dumps)."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    try:
        main()
    except SkinLesionError as error:  # the message names the file and the fix: no traceback
        raise SystemExit(f"error: {error}") from None
