"""The ``skinlesion`` command: one small handler per subcommand, registered in :data:`SUBCOMMANDS`.

To add a subcommand, write ``_configure_x(parser)`` and ``_x(args) -> int`` (or put them in their own module)
and append a :class:`Subcommand` to the table. Heavy modules (TensorFlow, papermill, pandas) are imported
inside the handlers so that ``skinlesion --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.core import config
from helpers.core.errors import SkinLesionError

ERROR_EXIT_CODE = 2
"""Exit status for an expected, explained failure (a :class:`SkinLesionError`), like argparse usage errors."""


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: its name, one-line help, how it adds its arguments, and its handler."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


def _number_type(
    convert: Callable[[str], float], minimum: float, maximum: float, what: str
) -> Callable[[str], float]:
    """An argparse ``type`` that converts the text and checks ``minimum <= value <= maximum``, so a bad value
    is a usage error (exit 2) before any work starts."""

    def checked(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not minimum <= value <= maximum:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {what}")
        return value

    return checked


POSITIVE_INT = _number_type(int, 1, float("inf"), "a whole number of at least 1")
SEED = _number_type(int, 0, 2**32 - 1, "a whole number from 0 to 4294967295")
FRACTION = _number_type(float, 0.0, 0.99, "a fraction from 0 to 0.99")
PORT = _number_type(int, 1, 65535, "a port number from 1 to 65535")


def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "notebooks", nargs="*", metavar="NOTEBOOK", help="e.g. 01, 01-eda or a path (default: all)"
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a notebook parameter; VALUE is a YAML literal: 3, 0.5, true, '[0.001, 0.01]'",
    )
    parser.add_argument(
        "-f",
        "--config",
        type=Path,
        default=None,
        metavar="CONFIG.yaml",
        help="run configuration (default: configs/ham10000.yaml with real data, else configs/demo.yaml)",
    )


def _run(args: argparse.Namespace) -> int:
    from helpers.runs.params import parse_literal
    from helpers.runs.runner import run_notebooks

    overrides = {name: parse_literal(value) for name, value in args.parameter}
    run_dir = run_notebooks(args.notebooks, config_file=args.config, overrides=overrides)
    print(f"Executed notebooks are in {run_dir}")
    return 0


def _configure_download(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", type=Path, default=config.DATA_DIR / "HAM10000", help="target folder")
    parser.add_argument("--server", default=None, metavar="URL", help="Dataverse server (default: Harvard)")


def _download(args: argparse.Namespace) -> int:
    from helpers.data.download import download_ham10000

    options = {"server": args.server} if args.server else {}
    print(f"HAM10000 is ready in {download_ham10000(args.dest, **options)}")
    return 0


def _configure_demo_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", type=Path, default=config.DEMO_DIR, help="target folder")


def _demo_data(args: argparse.Namespace) -> int:
    from helpers.data.demo import make_demo_dataset

    print(f"SYNTHETIC demo dataset ready in {make_demo_dataset(args.dest)}")
    return 0


def _configure_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root", default="auto", help="'auto' (real data, else demo), 'demo', or a folder"
    )
    parser.add_argument(
        "--name", default=None, help="split name (default: lesion_seed<SEED>; demo_ is prefixed on demo data)"
    )
    parser.add_argument("--seed", type=SEED, default=config.DEFAULT_SPLIT_SEED)
    parser.add_argument("--val-fraction", type=FRACTION, default=config.DEFAULT_HOLDOUT_FRACTION)
    parser.add_argument("--test-fraction", type=FRACTION, default=config.DEFAULT_HOLDOUT_FRACTION)


def _split(args: argparse.Namespace) -> int:
    from helpers.data.ham10000 import load_duplicate_pairs
    from helpers.data.source import resolve_data_root, split_dataset
    from helpers.data.splits import check_no_lesion_leak, split_summary

    if args.val_fraction + args.test_fraction >= 1:
        raise SkinLesionError(
            f"--val-fraction {args.val_fraction} and --test-fraction {args.test_fraction} leave no training "
            "images.\nFix: choose fractions whose sum is below 1, e.g. the defaults 0.15 and 0.15."
        )
    source = resolve_data_root(args.data_root)
    split, split_file = split_dataset(
        source,
        args.name,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
    )
    pairs = load_duplicate_pairs(source.root)
    check_no_lesion_leak(split, pairs)
    print(f"{source.description}\nSplit {split_file} ({len(pairs)} duplicate pairs kept together):")
    print(split_summary(split).to_string())
    return 0


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    """--model: a checkpoint (.h5 or .keras); by default the best trained here, else the released one."""
    parser.add_argument(
        "--model", type=Path, metavar="CKPT", help="checkpoint (default: best trained here, else the release)"
    )


def _configure_adopt(parser: argparse.ArgumentParser) -> None:
    """The options of ``skinlesion adopt`` (their names are relied on by scripts); checked when it runs."""
    parser.add_argument("original", type=Path, metavar="OLD.h5", help="the model file (.h5 or .keras)")
    parser.add_argument(
        "--task", choices=config.TASKS, required=True, help="7 diagnoses, or malignant vs benign"
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        metavar="NAME",
        help=f"the model's outputs in its own order (default {' '.join(config.CLASS_NAMES)})",
    )
    parser.add_argument(
        "--preprocessing",
        metavar="NAME",
        help="what the original project did to RGB 0-255 images before the model: rescale (x / 255), "
        "mobilenet_v2 or inception (x / 127.5 - 1), resnet50 or vgg (caffe), densenet (ImageNet mean/std), "
        "efficientnet or none (nothing)",
    )
    parser.add_argument(
        "--input-size", nargs=2, type=POSITIVE_INT, metavar=("H", "W"), help="the model's input size"
    )
    parser.add_argument("--output", type=Path, metavar="NEW.h5", help="default: models/<stem>_adopted.h5")


def _adopt(args: argparse.Namespace) -> int:
    from helpers.apps.adopt import adopt_command

    return adopt_command(args)


def _configure_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files to classify")
    parser.add_argument("--image-dir", type=Path, metavar="DIR", help="classify every image file under DIR")
    _add_model_option(parser)
    parser.add_argument("--output", type=Path, default=Path("predictions.csv"), help="CSV to write")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="images per batch (default: 32)")


def _predict(args: argparse.Namespace) -> int:
    from helpers.apps.predict import predict_command

    return predict_command(args)


def _configure_export(parser: argparse.ArgumentParser) -> None:
    _add_model_option(parser)
    parser.add_argument(
        "--format", default="savedmodel", help="savedmodel (TF Serving, default), keras, onnx, tflite"
    )
    parser.add_argument("--quantize", default=None, help="TFLite only: float16 or int8 (full integer)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="default: exported/ beside it")


def _export(args: argparse.Namespace) -> int:
    from helpers.apps.export import export_command

    return export_command(args)


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    _add_model_option(parser)
    parser.add_argument("--port", type=PORT, default=7860, help="port on 127.0.0.1 (default: 7860)")


def _demo(args: argparse.Namespace) -> int:
    from helpers.apps.demo import demo_command

    return demo_command(args)


def _configure_ensemble(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "members",
        nargs="+",
        type=Path,
        metavar="CKPT",
        help="two or more checkpoints (one with --input-size); a saved ensemble gives its members",
    )
    parser.add_argument("--output", type=Path, required=True, metavar="ENSEMBLE.h5", help="where to save it")
    parser.add_argument(
        "--operating-point-of",
        type=Path,
        metavar="CKPT",
        help="use this checkpoint's operating point (members trained on every partition: give the ensemble "
        "of their train-only counterparts, evaluated once)",
    )
    parser.add_argument(
        "--input-size",
        type=POSITIVE_INT,
        nargs=2,
        metavar=("H", "W"),
        help="read images at this size (default: the largest member's) and resize them down inside the model "
        "for each smaller member (at most 2x a member's side: bilinear without antialiasing skips pixels "
        "beyond that, so more is refused); one checkpoint read larger than its own is a test-time smoothing "
        "of it",
    )
    parser.add_argument(
        "--half-precision",
        action="store_true",
        help="store the weights as float16: half the file; probabilities move by about 1e-3 (size limits)",
    )


def _ensemble(args: argparse.Namespace) -> int:
    from helpers.apps.ensemble import ensemble_command

    return ensemble_command(args)


SUBCOMMANDS: list[Subcommand] = [
    Subcommand("run", "execute notebooks with papermill into runs/", _configure_run, _run),
    Subcommand("download", "download HAM10000 from Harvard Dataverse", _configure_download, _download),
    Subcommand("demo-data", "generate the small SYNTHETIC demo dataset", _configure_demo_data, _demo_data),
    Subcommand(
        "split", "create (once) and show the lesion-level train/val/test split", _configure_split, _split
    ),
    Subcommand("predict", "classify images with a checkpoint and write a CSV", _configure_predict, _predict),
    Subcommand("export", "export a checkpoint for deployment and check parity", _configure_export, _export),
    Subcommand("demo", "serve a local Gradio demo of a checkpoint (research only)", _configure_demo, _demo),
    Subcommand(
        "adopt",
        "make a checkpoint of a .h5/.keras model from elsewhere (Keras 2 too)",
        _configure_adopt,
        _adopt,
    ),
    Subcommand(
        "ensemble",
        "save checkpoints as one model (their mean), or one read larger",
        _configure_ensemble,
        _ensemble,
    ),
]


def build_parser(subcommands: Sequence[Subcommand] = SUBCOMMANDS) -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="skinlesion", description="Skin-lesion classification research tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for subcommand in subcommands:
        sub = commands.add_parser(subcommand.name, help=subcommand.help, description=subcommand.help)
        subcommand.configure(sub)
        sub.set_defaults(handler=subcommand.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; a SkinLesionError prints its message (no traceback), exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SkinLesionError as error:
        print(f"error: {error}", file=sys.stderr)
        return ERROR_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
