"""``skinlesion ensemble``: save several checkpoints as one model, the mean of their probabilities, or one
checkpoint read at a larger size (see :mod:`helpers.models.ensemble`), with the operating point it should use
when its members trained on every partition."""

from __future__ import annotations

import argparse

from helpers.evaluation.operating_point import (
    copy_operating_point,
    load_operating_point,
    operating_point_path,
)
from helpers.models.checkpoints import read_metadata
from helpers.models.ensemble import save_ensemble


def ensemble_command(args: argparse.Namespace) -> int:
    """Save the ensemble; with --operating-point-of, copy that checkpoint's operating point to it."""
    if args.operating_point_of is not None:  # a missing or bad one fails before anything is written
        load_operating_point(operating_point_path(args.operating_point_of))
    target = save_ensemble(
        args.members, args.output, half_precision=args.half_precision, input_size=args.input_size
    )
    precision = " in half precision" if args.half_precision else ""
    size = "" if args.input_size is None else f", read at {args.input_size[0]}x{args.input_size[1]}"
    members = len(read_metadata(target)["members"])
    count = f"{members} member{'s' if members > 1 else ''}"
    print(f"Saved the ensemble of {count}{size}{precision} to {target} (sidecar: .json)")
    if args.operating_point_of is not None:
        copied = copy_operating_point(args.operating_point_of, target)
        print(f"Operating point of {args.operating_point_of}: {copied}")
    else:
        print(
            "Its operating point is fitted on validation the first time it is evaluated (04, bench/accuracy)."
        )
    return 0
