"""Figure style and saving: one seaborn look, titled SVG files written atomically to ``figures/``."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure

from helpers.core import config
from helpers.core.atomic import atomic_path

SYNTHETIC_TEXT = "SYNTHETIC DEMO DATA"
CLASS_PALETTE: dict[str, tuple[float, float, float]] = dict(
    zip(config.CLASS_NAMES, sns.color_palette("colorblind", len(config.CLASS_NAMES)), strict=True)
)
"""One colour per diagnosis, the same in every figure."""

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def apply_style() -> None:
    """Set the project's seaborn theme and reproducible SVG output (stable ids, no timestamp)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"svg.hashsalt": "skinlesion", "figure.dpi": 100, "axes.titleweight": "bold"})


def save_figure(fig: Figure, name: str, *, figures_dir: Path | None = None) -> Path:
    """Save ``fig`` as ``figures/{name}.svg`` atomically, close it and return the path.

    Refuses a figure without any title (suptitle or axes title) so that no unlabelled figure is published.
    """
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"figure name {name!r} must be a plain file name (letters, digits, '_', '-', '.')")
    if not has_title(fig):
        raise ValueError(f"figure {name!r} has no title: call fig.suptitle(...) or ax.set_title(...) first")
    target = Path(figures_dir if figures_dir is not None else config.FIGURES_DIR) / f"{name}.svg"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return target


def show_and_save(
    fig: Figure, name: str, *, synthetic: bool = False, figures_dir: Path | None = None
) -> Path:
    """Notebook helper: stamp the synthetic note if needed, display ``fig`` inline, then save it."""
    if synthetic:
        synthetic_note(fig)
    from IPython.display import display  # only needed inside notebooks

    display(fig)
    return save_figure(fig, name, figures_dir=figures_dir)


def synthetic_note(fig: Figure) -> Figure:
    """Stamp a large diagonal "SYNTHETIC DEMO DATA" watermark on a figure made from the demo data."""
    fig.text(
        0.5,
        0.5,
        SYNTHETIC_TEXT,
        transform=fig.transFigure,
        ha="center",
        va="center",
        rotation=25,
        fontsize=36,
        fontweight="bold",
        color="red",
        alpha=0.3,
        zorder=1000,
    )
    return fig


def has_title(fig: Figure) -> bool:
    """Whether the figure has a non-empty suptitle or at least one axes title."""
    return bool(fig.get_suptitle().strip()) or any(
        ax.get_title(loc).strip() for ax in fig.axes for loc in ("center", "left", "right")
    )
