"""Measure training and inference throughput (images/s) of the input pipeline and the models on this machine.

For each image size: (a) the tf.data pipeline alone, from the JPEG files and from the in-memory uint8 cache,
without augmentation and with each augmentation mode, plus the one-off decode into memory. For each
architecture and size: (b) the train step on in-memory float tensors, (c) the full training pipeline
(in-memory cache, each augmentation mode, train step) and (d) inference. Models train their whole backbone
with BatchNorm frozen, as the recommended recipe does; weights are random (throughput does not depend on
them). Prints the ratio (c)/(b) and writes ``bench/results/throughput-<date>.json``.

    uv run python bench/throughput.py --archs mobilenetv2 mobilenetv3small --sizes 150x200 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from helpers.core import config
from helpers.core.atomic import atomic_write_text
from helpers.data import pipeline
from helpers.data.ham10000 import load_ham10000
from helpers.data.source import resolve_data_root
from helpers.models.build import build_model, set_backbone_trainable

DEFAULT_ARCHS = ("mobilenetv2", "mobilenetv3small", "efficientnetb0", "resnet50")
DEFAULT_SIZES = ("150x200", "224x224")
WARMUP_STEPS = 2


def parse_size(text: str) -> tuple[int, int]:
    """``"150x200"`` -> (150, 200): height x width."""
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"size must be HEIGHTxWIDTH such as 150x200, got {text!r}"
        ) from error
    return height, width


def images_per_second(batches: Iterable, images_per_batch: int, count: int) -> float:
    """Images per second of consuming ``count`` batches of ``batches`` (after the caller's warm-up)."""
    start = time.perf_counter()
    consumed = sum(1 for _ in zip(range(count), batches, strict=False))
    return consumed * images_per_batch / (time.perf_counter() - start)


class _StepTimer(keras.callbacks.Callback):
    """Time from the end of the warm-up batches to the end of training."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch == WARMUP_STEPS - 1:
            self.started = time.perf_counter()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.seconds = time.perf_counter() - self.started


def timed_fit(model: keras.Model, dataset: tf.data.Dataset, steps: int, batch_size: int) -> float:
    """Images per second of ``model.fit`` over ``steps`` batches of the endless ``dataset``, after a few
    warm-up batches in the same call (so tracing and the pipeline's start-up are not counted)."""
    timer = _StepTimer()
    model.fit(dataset, steps_per_epoch=WARMUP_STEPS + steps, callbacks=[timer], shuffle=False, verbose=0)
    return steps * batch_size / timer.seconds


def pipeline_throughput(frame: pd.DataFrame, size: tuple[int, int], batch_size: int) -> dict[str, float]:
    """(a) The input pipeline alone over ``frame`` (one epoch each): files or memory, by augmentation."""
    start = time.perf_counter()
    images = pipeline.load_image_array(frame["image_path"], size, progress=False)
    results = {"decode_to_memory_once": len(frame) / (time.perf_counter() - start)}
    batches = len(frame) // batch_size
    for source, cache in (("files", None), ("memory", images)):
        for mode in ("none", *pipeline.AUGMENT_MODES):
            augmentation = {"augment": mode != "none", "augment_mode": "full" if mode == "none" else mode}
            dataset = pipeline.make_dataset(
                frame, image_size=size, batch_size=batch_size, training=True, images=cache, **augmentation
            )
            batch_iterator = iter(dataset)
            next(batch_iterator)  # warm-up: tracing and the first prefetch
            results[f"{source}_{mode}"] = images_per_second(batch_iterator, batch_size, batches - 1)
    return results


def model_throughput(
    arch: str, size: tuple[int, int], frame: pd.DataFrame, images: np.ndarray, args: argparse.Namespace
) -> dict[str, float | dict[str, float]]:
    """(b) train step on tensors, (c) full pipeline with each of ``args.augment_modes``, (d) inference, in
    images/s. (b) and (c) alternate ``args.repeats`` times and report medians: the ratio (c)/(b) compares
    measurements taken under the same background load."""
    keras.backend.clear_session()
    model = build_model(arch, input_size=size, weights=None)
    set_backbone_trainable(model, True)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    batch = (
        tf.constant(images[: args.batch_size], tf.float32),
        tf.constant(frame["label"][: args.batch_size]),
    )

    datasets = {"train_step": tf.data.Dataset.from_tensors(batch).repeat()}
    for mode in args.augment_modes:
        datasets[mode] = pipeline.make_dataset(
            frame,
            image_size=size,
            batch_size=args.batch_size,
            training=True,
            augment=True,
            augment_mode=mode,
            images=images,
        ).repeat()
    measured = {name: [] for name in datasets}
    for _ in range(args.repeats):
        for name, dataset in datasets.items():
            measured[name].append(timed_fit(model, dataset, args.steps, args.batch_size))
    train_step = float(np.median(measured.pop("train_step")))
    full = {mode: float(np.median(values)) for mode, values in measured.items()}
    predict = tf.function(lambda x: model(x, training=False))
    for _ in range(WARMUP_STEPS):
        predict(batch[0])
    inference = images_per_second((predict(batch[0]) for _ in range(args.steps)), args.batch_size, args.steps)
    return {
        "train_step_in_memory": train_step,
        "full_training_pipeline": full,
        "inference": inference,
        "full_over_train_step": {mode: value / train_step for mode, value in full.items()},
    }


def run(args: argparse.Namespace) -> dict:
    """Every measurement of ``args`` (see ``main``), as the JSON-ready result."""
    source = resolve_data_root(args.data)
    frame = load_ham10000(source.root, verify_images=False, include_masks=False)
    frame = frame.sample(n=min(args.images, len(frame)), random_state=0).reset_index(drop=True)
    results: dict = {"pipeline": {}, "models": []}
    for size in args.sizes:
        key = f"{size[0]}x{size[1]}"
        results["pipeline"][key] = _rounded(pipeline_throughput(frame, size, args.batch_size))
        print(f"pipeline {key}: {results['pipeline'][key]}", flush=True)
        images = pipeline.load_image_array(frame["image_path"], size, progress=False)
        for arch in tqdm(args.archs, desc=f"Models at {key}", unit="model"):
            measured = _rounded(model_throughput(arch, size, frame, images, args))
            results["models"].append({"arch": arch, "input_size": list(size), **measured})
            full = "  ".join(
                f"{mode} {value:.1f} ({measured['full_over_train_step'][mode]:.2f})"
                for mode, value in measured["full_training_pipeline"].items()
            )
            tqdm.write(
                f"{arch:>16} {key}: train step {measured['train_step_in_memory']:.1f}  "
                f"full pipeline by augmentation {full}  inference {measured['inference']:.1f} images/s"
            )
    return {
        "benchmark": "throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": source.description,
        "images": len(frame),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "augment_modes": args.augment_modes,
        **results,
        "machine": _machine(),
    }


def _rounded(values: dict) -> dict:
    """``values`` with every number, also in nested dicts, rounded to 2 decimals."""
    return {name: _rounded(v) if isinstance(v, dict) else round(v, 2) for name, v in values.items()}


def _machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "processor": platform.processor() or platform.machine(),
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options; sizes come back as (height, width) tuples."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS))
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES])
    parser.add_argument("--steps", type=int, default=20, help="timed batches per model measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=1024, help="images in the pipeline measurements")
    parser.add_argument(
        "--augment-modes", nargs="+", choices=pipeline.AUGMENT_MODES, default=list(pipeline.AUGMENT_MODES)
    )
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements per model (median)")
    parser.add_argument("--data", default="auto", help='"auto" (real data if found), "demo" or a folder')
    parser.add_argument(
        "--output", type=Path, default=None, help="default bench/results/throughput-DATE.json"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark, print the numbers and save them atomically as JSON; return the JSON path."""
    args = parse_args(argv)
    results = run(args)
    output = args.output or config.BENCH_RESULTS_DIR / f"throughput-{datetime.now(UTC):%Y-%m-%d}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, json.dumps(results, indent=2) + "\n")
    print(f"Saved {output}")
    return output


if __name__ == "__main__":
    main()
