"""Exploratory figures and tables for a dataset frame (used by ``notebooks/01-eda.ipynb``).

Every figure function takes the shared frame, returns a titled matplotlib Figure with labelled axes and
leaves saving to :func:`helpers.plots.style.save_figure`.
"""

from __future__ import annotations

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from helpers.core import config
from helpers.core.errors import DataError
from helpers.data.images import image_size, read_image_rgb
from helpers.data.splits import PARTITIONS, split_summary
from helpers.plots.style import CLASS_PALETTE

PARTITION_COLOURS = dict(zip(PARTITIONS, sns.color_palette("Set2", len(PARTITIONS)), strict=True))


def class_order(frame: pd.DataFrame) -> list[str]:
    """The diagnoses present in ``frame``: known classes in CLASS_NAMES order, then any others sorted."""
    present = set(_require(frame, "dx")["dx"])
    return [c for c in config.CLASS_NAMES if c in present] + sorted(present - set(config.CLASS_NAMES))


def class_distribution(frame: pd.DataFrame) -> Figure:
    """Bar chart of images per class, annotated with counts and percentages."""
    order = class_order(frame)
    counts = frame["dx"].value_counts().reindex(order)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bars = ax.bar(order, counts.to_numpy(), color=[CLASS_PALETTE.get(c, "grey") for c in order])
    labels = [f"{n:,}\n{100 * n / len(frame):.1f}%" for n in counts]
    ax.bar_label(bars, labels=labels, padding=2, fontsize=9)
    ax.set_ylim(0, counts.max() * 1.2)
    ax.set(title=f"Images per class ({len(frame):,} images)", xlabel="diagnosis (dx)", ylabel="images")
    return fig


def images_per_lesion(frame: pd.DataFrame) -> Figure:
    """Histogram of images per lesion, one colour per class (share of each class's lesions)."""
    lesions = (
        _require(frame, "lesion_id").groupby("lesion_id").agg(dx=("dx", "first"), images=("image_id", "size"))
    )
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sns.histplot(
        data=lesions,
        x="images",
        hue="dx",
        hue_order=class_order(frame),
        palette=CLASS_PALETTE,
        multiple="dodge",
        stat="percent",
        common_norm=False,
        discrete=True,
        shrink=0.85,
        ax=ax,
    )
    ax.set_xticks(range(1, int(lesions["images"].max()) + 1))
    title = f"Images per lesion ({len(lesions):,} lesions, {(lesions['images'] > 1).sum():,} with >1 image)"
    ax.set(title=title, xlabel="images of the same lesion", ylabel="% of the class's lesions")
    return fig


def dx_type_by_class(frame: pd.DataFrame) -> Figure:
    """Stacked shares of how each class's diagnosis was confirmed (histopathology, follow-up, ...)."""
    return _stacked_shares(frame, "dx_type", "How the diagnosis was confirmed (dx_type), per class")


def sex_by_class(frame: pd.DataFrame) -> Figure:
    """Stacked shares of patient sex per class."""
    return _stacked_shares(frame, "sex", "Patient sex per class")


def age_by_class(frame: pd.DataFrame) -> Figure:
    """Box plots of patient age per class; the label counts missing ages and the implausible age 0."""
    order = class_order(_require(frame, "age"))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sns.boxplot(
        data=frame, x="dx", y="age", order=order, hue="dx", palette=CLASS_PALETTE, legend=False, ax=ax
    )
    missing, zero = int(frame["age"].isna().sum()), int((frame["age"] == 0).sum())
    ax.set(
        title="Patient age per class",
        ylabel="age (years)",
        xlabel=f"diagnosis ({missing} images without age, {zero} with age 0)",
    )
    return fig


def localization_by_class(frame: pd.DataFrame) -> Figure:
    """Heatmap of body sites: % of each class's images per localization."""
    order = class_order(_require(frame, "localization"))
    shares = pd.crosstab(frame["localization"], frame["dx"], normalize="columns").reindex(columns=order) * 100
    shares = shares.loc[shares.mean(axis=1).sort_values(ascending=False).index]
    labels = shares.map(lambda v: "" if v == 0 else "<1" if v < 0.5 else f"{v:.0f}")
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(shares) + 1.8))
    sns.heatmap(
        shares, annot=labels, fmt="", cmap="rocket_r", cbar_kws={"label": "% of the class's images"}, ax=ax
    )
    ax.set(
        title="Body site per class (% of the class's images; blank = none)",
        xlabel="diagnosis",
        ylabel="localization",
    )
    return fig


def sample_grid(frame: pd.DataFrame, per_class: int = 4, seed: int = 0, max_width: int = 200) -> Figure:
    """A grid of randomly chosen images: one row per class, ``per_class`` columns.

    Images wider than ``max_width`` pixels are shrunk first: SVGs embed them, and 600x450 originals would
    make the file ten times larger without a visible gain at this size.
    """
    order = class_order(_require(frame, "image_path"))
    samples = _sample_per_class(frame, per_class, seed)
    fig, axes = plt.subplots(
        len(order), per_class, figsize=(2.2 * per_class, 1.9 * len(order)), squeeze=False
    )
    for row, dx in zip(axes, order, strict=True):
        paths = samples.loc[samples["dx"] == dx, "image_path"].tolist()
        for column, ax in enumerate(row):
            if column < len(paths):
                ax.imshow(thumbnail(read_image_rgb(paths[column]), max_width))
            ax.set(xticks=[], yticks=[])
            ax.grid(False)
        row[0].set_ylabel(dx, fontsize=12, fontweight="bold")
    fig.suptitle(f"Random sample of {per_class} images per class (seed {seed})")
    fig.tight_layout()
    return fig


def image_size_table(frame: pd.DataFrame, sample: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Count of images per (height, width), read from file headers; ``sample`` limits how many are read."""
    paths = _require(frame, "image_path")["image_path"]
    if sample is not None and sample < len(paths):
        paths = paths.sample(sample, random_state=seed)
    sizes = [image_size(p) for p in tqdm(paths, desc="image sizes", leave=False)]
    table = pd.DataFrame(sizes, columns=["height", "width"]).value_counts().rename("images").reset_index()
    return table.sort_values("images", ascending=False, ignore_index=True)


def colour_statistics(frame: pd.DataFrame, per_class: int = 50, seed: int = 0) -> pd.DataFrame:
    """Per-image mean red, green, blue and brightness (0-255) of up to ``per_class`` images per class."""
    samples = _sample_per_class(_require(frame, "image_path"), per_class, seed)
    means = [
        read_image_rgb(p).reshape(-1, 3).mean(axis=0) for p in tqdm(samples["image_path"], desc="colours")
    ]
    stats = pd.DataFrame(
        np.array(means).reshape(-1, 3), columns=["red", "green", "blue"], index=samples.index
    )
    stats["brightness"] = stats @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma
    return pd.concat([samples[["image_id", "dx"]], stats], axis=1).reset_index(drop=True)


def colour_figure(stats: pd.DataFrame) -> Figure:
    """Per-class mean red/green/blue (left) and the distribution of image brightness (right)."""
    order = class_order(stats)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    channels = stats.groupby("dx")[["red", "green", "blue"]].mean().reindex(order)
    channels.plot.bar(ax=left, color=["#d62728", "#2ca02c", "#1f77b4"], rot=0, width=0.8)
    left.set(title="Mean colour channel per class", xlabel="diagnosis", ylabel="mean pixel value (0-255)")
    left.set_ylim(0, 255)
    left.legend(title="channel", loc="upper center", ncols=3, fontsize=9)
    sns.boxplot(
        data=stats,
        x="dx",
        y="brightness",
        order=order,
        hue="dx",
        palette=CLASS_PALETTE,
        legend=False,
        ax=right,
    )
    right.set(title="Image brightness per class", xlabel="diagnosis", ylabel="mean luma (0-255)")
    fig.suptitle(f"Colour statistics on up to {stats['dx'].value_counts().max()} random images per class")
    fig.tight_layout()
    return fig


def split_figure(frame: pd.DataFrame) -> Figure:
    """Each class's share of images per partition (counts annotated); the title gives the lesion overlap."""
    summary = split_summary(_require(frame, "partition"))
    order = [*class_order(frame), "total"]
    shares = summary.loc[order, [f"{p}_pct" for p in PARTITIONS]].set_axis(list(PARTITIONS), axis=1)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    shares.plot.barh(stacked=True, ax=ax, color=[PARTITION_COLOURS[p] for p in PARTITIONS], width=0.75)
    for container, partition in zip(ax.containers, PARTITIONS, strict=True):
        ax.bar_label(container, labels=[f"{n:,}" for n in summary.loc[order, partition]], label_type="center")
    overlap = int(summary.loc["total", "leaked_lesions"])
    ax.invert_yaxis()
    ax.legend(title="partition", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set(
        title=f"Lesion-level split: images per class and partition (lesions in >1 partition: {overlap})",
        xlabel="% of the class's images (labels: image counts)",
        ylabel="diagnosis",
        xlim=(0, 100),
    )
    return fig


def _stacked_shares(frame: pd.DataFrame, column: str, title: str) -> Figure:
    """Horizontal 100% stacked bars of ``column`` values per class; class labels carry the image count."""
    order = class_order(_require(frame, column))
    shares = pd.crosstab(frame["dx"], frame[column].fillna("missing"), normalize="index").reindex(order) * 100
    shares = shares[shares.sum().sort_values(ascending=False).index]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    shares.plot.barh(stacked=True, ax=ax, width=0.75, colormap="tab10")
    counts = frame["dx"].value_counts()
    ax.set_yticks(range(len(order)), [f"{dx} (n={counts[dx]:,})" for dx in order])
    ax.invert_yaxis()
    ax.legend(title=column, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set(title=title, xlabel="% of the class's images", ylabel="diagnosis", xlim=(0, 100))
    return fig


def thumbnail(image: np.ndarray, max_width: int) -> np.ndarray:
    """Shrink ``image`` to at most ``max_width`` pixels wide (aspect kept) to keep SVGs small."""
    height, width = image.shape[:2]
    if width <= max_width:
        return image
    return cv2.resize(image, (max_width, round(height * max_width / width)), interpolation=cv2.INTER_AREA)


def _sample_per_class(frame: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """Up to ``per_class`` random rows of each class, in class order."""
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return (
        shuffled.groupby("dx", sort=False).head(per_class).sort_values("dx", key=_class_rank, kind="stable")
    )


def _class_rank(dx: pd.Series) -> pd.Series:
    order = class_order(dx.to_frame())
    return dx.map({c: i for i, c in enumerate(order)})


def _require(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """``frame`` itself, or a DataError naming the missing columns."""
    missing = [c for c in ("dx", *columns) if c not in frame.columns]
    if missing:
        raise DataError(
            f"the frame lacks the column(s) {missing} needed for this EDA figure",
            fix="build it with a dataset loader (helpers.data.ham10000) and, for 'partition', split it first",
        )
    return frame
