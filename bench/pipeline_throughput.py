"""Measure the tf.data input pipeline's throughput (images/s) on the real HAM10000.

Times one training epoch (shuffled, batch 32, 150x200) read (a) from the JPEG files and (b) from the
in-memory array of :func:`helpers.pipeline.load_image_array`, each with and without augmentation, plus
the one-off decode into memory. Prints a table and writes ``bench/results/pipeline-throughput.json``.

    uv run python bench/pipeline_throughput.py [--images 2000] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tensorflow as tf

from helpers import config, pipeline
from helpers.atomic import atomic_write_text
from helpers.errors import DataError
from helpers.ham10000 import load_ham10000

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "pipeline-throughput.json"
WARMUP_BATCHES = 3


def _images_per_second(make: Callable[[], tf.data.Dataset], count: int) -> float:
    """Images per second over one full epoch, after a few warm-up batches on a separate pass."""
    for _ in make().take(WARMUP_BATCHES):
        pass
    dataset = make()
    start = time.perf_counter()
    seen = sum(int(images.shape[0]) for images, _ in dataset)
    seconds = time.perf_counter() - start
    assert seen == count, f"an epoch yielded {seen} images, expected {count}"
    return count / seconds


def run(image_count: int, batch_size: int, image_size: tuple[int, int]) -> dict:
    """Run every measurement on the first ``image_count`` images (0: all) and return the results."""
    root = config.ham10000_root()
    if root is None:
        raise DataError(
            "real HAM10000 not found", fix="set SKINLESION_SHARED (or SKINLESION_DATA) to where it lives"
        )
    frame = load_ham10000(root, verify_images=False)
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    if image_count:
        frame = frame.iloc[:image_count]
    count = len(frame)

    start = time.perf_counter()
    images = pipeline.load_image_array(frame["image_path"], image_size)
    decode_seconds = time.perf_counter() - start
    settings = {"image_size": image_size, "batch_size": batch_size, "training": True}

    def from_files(augment: bool) -> float:
        return _images_per_second(lambda: pipeline.make_dataset(frame, augment=augment, **settings), count)

    def from_memory(augment: bool) -> float:
        return _images_per_second(
            lambda: pipeline.make_dataset(frame, augment=augment, images=images, **settings), count
        )

    throughput = {
        "files_augment": from_files(True),
        "memory_augment": from_memory(True),
        "files_no_augment": from_files(False),
        "memory_no_augment": from_memory(False),
        "decode_to_memory_once": count / decode_seconds,
    }
    return {
        "benchmark": "pipeline-throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "images": count,
        "batch_size": batch_size,
        "image_size_hw": list(image_size),
        "cache_megabytes": round(images.nbytes / 2**20, 1),
        "images_per_second": {name: round(value, 1) for name, value in throughput.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "processor": platform.processor() or platform.machine(),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
    }


def main() -> None:
    """Parse the arguments, run the benchmark, print the numbers and save them atomically as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images per epoch (0: all 10,015)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=pipeline.DEFAULT_IMAGE_SIZE, metavar=("H", "W")
    )
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    args = parser.parse_args()
    results = run(args.images, args.batch_size, tuple(args.image_size))
    for name, value in results["images_per_second"].items():
        print(f"{name:>24}: {value:8.1f} images/s")
    atomic_write_text(args.output, json.dumps(results, indent=2) + "\n")
    print(f"Saved {args.output}")


if __name__ == "__main__":
    main()
