"""EDA figures and tables on a small synthetic frame, the 01-eda notebook source, and a demo-data run."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from builders import write_image_rgb
from matplotlib.figure import Figure

from helpers.core import config
from helpers.core.errors import DataError
from helpers.data.splits import make_lesion_split
from helpers.plots import eda
from helpers.plots.style import has_title

EDA_NOTEBOOK = config.NOTEBOOKS_DIR / "01-eda.ipynb"


def _row(folder: Path, rng: np.random.Generator, label: int, lesion: int, image: int) -> dict:
    """One image of a flat colour (pure red for mel) with random metadata; the first image lacks an age."""
    dx = config.CLASS_NAMES[label]
    colour = (255, 0, 0) if dx == "mel" else (40 * label, 100, 200)
    image_id = f"ISIC_{label}{lesion}{image}"
    path = write_image_rgb(folder / f"{image_id}.png", np.full((12, 16, 3), colour, dtype=np.uint8))
    return {
        "image_id": image_id,
        "image_path": str(path),
        "lesion_id": f"HAM_{label}{lesion}",
        "dx": dx,
        "label": label,
        "dx_type": rng.choice(["histo", "follow_up"]),
        "age": float(rng.integers(20, 80)) if image else np.nan,
        "sex": rng.choice(["male", "female"]),
        "localization": rng.choice(["back", "face", "trunk"]),
    }


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> pd.DataFrame:
    """Seven classes, three lesions each with 1-3 images of 12x16 pixels."""
    folder = tmp_path_factory.mktemp("eda_images")
    rng = np.random.default_rng(0)
    rows = [
        _row(folder, rng, label, lesion, image)
        for label in range(len(config.CLASS_NAMES))
        for lesion in range(3)
        for image in range(1 + (lesion + label) % 3)
    ]
    return pd.DataFrame(rows)


def _check_figure(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    assert has_title(fig)
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>":
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    plt.close(fig)


@pytest.mark.parametrize(
    "function",
    [
        eda.class_distribution,
        eda.images_per_lesion,
        eda.dx_type_by_class,
        eda.age_by_class,
        eda.sex_by_class,
        eda.localization_by_class,
    ],
)
def test_metadata_figures_are_titled_and_labelled(frame, function):
    _check_figure(function(frame))


def test_split_figure_reports_zero_lesion_overlap(frame):
    fig = eda.split_figure(make_lesion_split(frame, val_fraction=0.3, test_fraction=0.3))
    assert "lesions in >1 partition: 0" in fig.axes[0].get_title()
    _check_figure(fig)


def test_split_figure_reports_a_leak(frame):
    leaky = frame.assign(partition=np.resize(["train", "val", "test"], len(frame)))
    fig = eda.split_figure(leaky)
    assert "lesions in >1 partition: 0" not in fig.axes[0].get_title()
    plt.close(fig)


def test_sample_grid_has_one_row_per_class(frame):
    fig = eda.sample_grid(frame, per_class=2)
    assert len(fig.axes) == 2 * len(config.CLASS_NAMES)
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == list(config.CLASS_NAMES)
    assert has_title(fig)
    plt.close(fig)


def test_sample_grid_shrinks_wide_images(frame):
    fig = eda.sample_grid(frame, per_class=1, max_width=8)
    assert fig.axes[0].images[0].get_array().shape == (6, 8, 3)
    plt.close(fig)


def test_colour_statistics_measure_pixels(frame):
    stats = eda.colour_statistics(frame, per_class=2)
    assert stats.groupby("dx").size().to_dict() == dict.fromkeys(config.CLASS_NAMES, 2)
    mel = stats[stats["dx"] == "mel"].iloc[0]
    assert (mel["red"], mel["green"], mel["blue"]) == (255, 0, 0)
    assert mel["brightness"] == pytest.approx(0.299 * 255)
    _check_figure(eda.colour_figure(stats))


def test_image_size_table_counts_sizes(frame):
    table = eda.image_size_table(frame)
    assert table.to_dict("records") == [{"height": 12, "width": 16, "images": len(frame)}]
    assert eda.image_size_table(frame, sample=5)["images"].sum() == 5


def test_class_order_follows_class_names(frame):
    assert eda.class_order(frame.iloc[::-1]) == list(config.CLASS_NAMES)


def test_missing_column_is_a_clear_error(frame):
    with pytest.raises(DataError, match="partition"):
        eda.split_figure(frame)


def test_eda_notebook_source_is_clean():
    notebook = json.loads(EDA_NOTEBOOK.read_text(encoding="utf-8"))
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert code_cells[0]["metadata"]["tags"] == ["parameters"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code_cells)


@pytest.mark.slow
def test_eda_notebook_runs_on_demo_data(tmp_path, monkeypatch):
    from helpers.runs.runner import run_notebooks

    monkeypatch.setenv(
        "SKINLESION_ROOT", str(tmp_path)
    )  # the kernel writes figures/, data/, Tracking.md here
    source_before = EDA_NOTEBOOK.read_bytes()
    run_dir = run_notebooks(
        ["01"], config_file=config.CONFIGS_DIR / "demo.yaml", overrides={}, runs_dir=tmp_path / "runs"
    )
    assert (run_dir / "01-eda.ipynb").is_file()
    assert EDA_NOTEBOOK.read_bytes() == source_before
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.svg"))
    assert len(figures) == 9 and all(name.startswith("demo_01_") for name in figures)
    assert not (tmp_path / "Tracking.md").exists()  # synthetic runs never touch the committed log
    tracking_text = (tmp_path / "runs" / "Tracking-synthetic.md").read_text(encoding="utf-8")
    assert "| demo |" in tracking_text and "SYNTHETIC" in tracking_text
    assert (tmp_path / "data" / "splits" / "demo_lesion_seed42.csv").is_file()


@pytest.mark.real_data
def test_real_images_are_200_by_150(ham_root: Path):
    from helpers.data.ham10000 import load_ham10000

    table = eda.image_size_table(load_ham10000(ham_root, verify_images=False), sample=50)
    assert table.to_dict("records") == [{"height": 150, "width": 200, "images": 50}]
