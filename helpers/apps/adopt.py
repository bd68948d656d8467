"""``skinlesion adopt``: turn a classifier saved elsewhere into a project checkpoint (see
:mod:`helpers.models.adopt`), asking for exactly the facts the file cannot tell and printing the parity
check against the original run in its own runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from helpers.core.config import CLASS_NAMES
from helpers.core.errors import CheckpointError
from helpers.models.adopt import PREPROCESSING, adopt_checkpoint
from helpers.models.checkpoints import load_model_file


def adopt_command(args: argparse.Namespace) -> int:
    """Adopt the file, then print where the checkpoint is and how closely it reproduces the original."""
    if args.preprocessing is None:
        raise CheckpointError(
            f"--preprocessing is needed: {args.original} does not record what was done to images before it."
            f"\nFix: pass --preprocessing with one of {', '.join(PREPROCESSING)} (`skinlesion adopt --help` "
            "says what each did to the images)."
        )
    input_size = args.input_size or _fixed_input_size(args.original)
    if args.classes is None and args.task == "multiclass":
        print(f"Class order assumed: {' '.join(CLASS_NAMES)} (pass --classes if the model used another).")
    adoption = adopt_checkpoint(
        args.original,
        task=args.task,
        classes=args.classes,
        preprocessing=args.preprocessing,
        input_size=input_size,
        output=args.output,
    )
    print(
        f"Adopted {adoption.original} -> {adoption.checkpoint} (and its sidecar .json)"
        f"\nParity with the original run by {adoption.parity_runtime} on {adoption.parity_images} images: "
        f"max |difference in probability| {adoption.max_abs_diff:.1e}"
    )
    return 0


def _fixed_input_size(path: Path) -> tuple[int, int]:
    """The input size the model fixes itself; CheckpointError naming --input-size when it takes any size."""
    height, width = load_model_file(path).inputs[0].shape[1:3]
    if height is None or width is None:
        raise CheckpointError(
            f"{path} takes images of any size, so the size it was trained at is unknown.\n"
            "Fix: pass --input-size H W (the height and width the original project resized images to)."
        )
    return int(height), int(width)
