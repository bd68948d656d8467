"""Explainability orchestration: example choice, heatmaps at original size, figures, mask scoring, summary."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.core import config
from helpers.core.errors import DataError  # noqa: E402
from helpers.data.demo import make_demo_dataset  # noqa: E402
from helpers.data.ham10000 import load_ham10000  # noqa: E402
from helpers.data.images import read_image_rgb  # noqa: E402
from helpers.explain import examples as explain
from helpers.explain.heatmaps import ExplainError  # noqa: E402
from helpers.explain.localization import load_mask  # noqa: E402
from helpers.models.build import build_model  # noqa: E402
from helpers.plots.explanations import plot_examples
from helpers.plots.style import has_title  # noqa: E402

SUMMARY_COLUMNS = [
    "n",
    "mask_area",
    "energy_gaussian",
    "energy_gradcam",
    "energy_saliency",
    "pointing_gaussian",
    "pointing_gradcam",
    "pointing_saliency",
    "empty_gradcam",
    "empty_saliency",
]


@pytest.fixture(scope="module")
def demo_frame(tmp_path_factory) -> pd.DataFrame:
    """Synthetic HAM-layout data with masks: two single-image lesions per class, 150x200 images."""
    root = make_demo_dataset(
        tmp_path_factory.mktemp("demo") / "demo", lesions_per_class=2, images_per_lesion=(1, 1)
    )
    return load_ham10000(root)


@pytest.fixture(scope="module")
def tiny_model():
    """A random 7-class CNN with a 32x48 input: heatmaps must still come back at the image size."""
    return build_model("simple_cnn", weights=None, input_size=(32, 48))


def _labelled_frame(labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(len(labels))],
            "label": labels,
            "dx": [config.CLASS_NAMES[label] for label in labels],
            "malignant": [int(config.CLASS_NAMES[label] in config.MALIGNANT_CLASSES) for label in labels],
        }
    )


def _one_hot_probs(predicted: list[int], confidence: list[float]) -> np.ndarray:
    probs = np.zeros((len(predicted), len(config.CLASS_NAMES)))
    for row, (index, p) in enumerate(zip(predicted, confidence, strict=True)):
        probs[row] = (1.0 - p) / (len(config.CLASS_NAMES) - 1)
        probs[row, index] = p
    return probs


# ---------------------------------------------------------------- predictions and example choice


def test_with_predictions_marks_correct_and_wrong():
    frame = _labelled_frame([4, 4, 5])
    result = explain.with_predictions(frame, _one_hot_probs([4, 5, 5], [0.9, 0.6, 0.7]), config.CLASS_NAMES)
    assert result["true_class"].tolist() == ["mel", "mel", "nv"]
    assert result["predicted_class"].tolist() == ["mel", "nv", "nv"]
    assert result["outcome"].tolist() == ["correct", "wrong", "correct"]
    np.testing.assert_allclose(result["confidence"], [0.9, 0.6, 0.7])


def test_sigmoid_probabilities_are_read_as_malignant_vs_benign():
    frame = _labelled_frame([4, 5])  # mel (malignant), nv (benign)
    result = explain.with_predictions(frame, np.array([[0.8], [0.7]]), config.BINARY_CLASS_NAMES)
    assert result["true_class"].tolist() == ["malignant", "benign"]
    assert result["predicted_class"].tolist() == ["malignant", "malignant"]
    np.testing.assert_allclose(result["confidence"], [0.8, 0.7])


def test_benign_and_malignant_columns_are_read_like_a_sigmoid():
    frame, names = _labelled_frame([4, 5]), config.BINARY_CLASS_NAMES
    two_columns = explain.with_predictions(frame, np.array([[0.2, 0.8], [0.6, 0.4]]), names)
    one_column = explain.with_predictions(frame, np.array([[0.8], [0.4]]), names)
    pd.testing.assert_frame_equal(two_columns, one_column)
    assert two_columns["outcome"].tolist() == ["correct", "correct"]


def test_probability_width_must_fit_the_classes():
    with pytest.raises(ExplainError, match="do not fit"):
        explain.with_predictions(_labelled_frame([0, 1]), np.full((2, 3), 1 / 3), config.CLASS_NAMES)
    with pytest.raises(ExplainError, match="beyond the model's classes"):
        explain.with_predictions(_labelled_frame([5]), np.full((1, 3), 1 / 3), ("a", "b", "c"))


def test_select_examples_takes_the_most_confident_correct_and_wrong_per_class():
    labels = [4, 4, 4, 4, 5, 5]
    predicted = [4, 4, 4, 5, 5, 4]
    confidence = [0.5, 0.9, 0.7, 0.8, 0.6, 0.95]
    frame = _labelled_frame(labels)
    chosen = explain.select_examples(frame, _one_hot_probs(predicted, confidence), per_class=2)
    assert chosen["image_id"].tolist() == ["img1", "img2", "img3", "img4", "img5"]
    assert chosen["outcome"].tolist() == ["correct", "correct", "wrong", "correct", "wrong"]


def test_select_examples_by_image_id_keeps_the_order_and_rejects_unknown_ids():
    frame = _labelled_frame([0, 1, 2])
    probs = _one_hot_probs([0, 1, 2], [0.9, 0.9, 0.9])
    chosen = explain.select_examples(frame, probs, image_ids=["img2", "img0"])
    assert chosen["image_id"].tolist() == ["img2", "img0"]
    with pytest.raises(DataError, match="img9"):
        explain.select_examples(frame, probs, image_ids=["img9"])


def test_target_index():
    assert explain.target_index("", config.CLASS_NAMES) is None
    assert explain.target_index("mel", config.CLASS_NAMES) == 4
    with pytest.raises(ExplainError, match="melanoma"):
        explain.target_index("melanoma", config.CLASS_NAMES)


# ---------------------------------------------------------------- heatmaps and figures


@pytest.mark.parametrize("method", explain.METHODS)
def test_heatmaps_come_back_at_the_original_image_size(tiny_model, demo_frame, method):
    rows = demo_frame.head(2)
    heatmaps = explain.explain_examples(tiny_model, rows, method=method, class_index=3)
    assert len(heatmaps) == 2
    for heatmap in heatmaps:
        assert heatmap.shape == (150, 200)
        assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def test_unknown_method_is_rejected(tiny_model, demo_frame):
    with pytest.raises(ExplainError, match="lime"):
        explain.explain_examples(tiny_model, demo_frame.head(1), method="lime")


def test_plot_examples_shows_methods_side_by_side(demo_frame):
    rows = explain.with_predictions(
        demo_frame.head(2), _one_hot_probs([0, 1], [0.5, 0.5]), config.CLASS_NAMES
    )
    heatmaps = {method: [np.random.default_rng(0).random((150, 200))] * 2 for method in explain.METHODS}
    fig = plot_examples(rows, heatmaps, title="Example explanations")
    image_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert has_title(fig) and len(image_axes) == 2 * (1 + len(explain.METHODS))
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in image_axes)
    assert [ax.get_title() for ax in image_axes[1:3]] == ["Grad-CAM", "Saliency"]
    plt.close(fig)
    with pytest.raises(ExplainError, match="one heatmap per image"):
        plot_examples(rows, {"gradcam": heatmaps["gradcam"][:1]}, title="x")


# ---------------------------------------------------------------- scoring against masks


def test_localization_sample_is_class_balanced(demo_frame):
    sample = explain.localization_sample(demo_frame, 7)
    assert sorted(sample["dx"]) == sorted(config.CLASS_NAMES)
    assert len(explain.localization_sample(demo_frame, None)) == len(demo_frame)
    assert len(explain.localization_sample(demo_frame, 0)) == len(demo_frame)


def test_score_against_masks_and_summary(tiny_model, demo_frame):
    records = explain.score_against_masks(tiny_model, demo_frame, limit=7)
    assert len(records) == 14 and sorted(set(records["method"])) == sorted(explain.METHODS)
    summary = explain.localization_summary(records)
    assert summary.columns.tolist() == SUMMARY_COLUMNS
    assert summary.index.tolist() == [*config.CLASS_NAMES, "all"]
    assert summary.loc["all", "n"] == 7
    scores = summary.drop(columns=["n", "empty_gradcam", "empty_saliency"])
    assert ((scores >= 0) & (scores <= 1)).all().all()


def test_scoring_compares_each_heatmap_with_its_own_mask(tiny_model, demo_frame, monkeypatch):
    rows = demo_frame.head(4)
    masks = {}
    for row in rows.itertuples():
        image = read_image_rgb(row.image_path)
        masks[image.tobytes()] = load_mask(row.mask_path, image.shape[:2]).astype(np.float32)

    def mask_as_heatmap(model, images, layer_name):  # Grad-CAM stand-in: the image's own mask, class nv
        return [(masks[image.tobytes()], 5, np.full(7, 1 / 7)) for image in images]

    monkeypatch.setattr(explain, "_gradcams", mask_as_heatmap)
    records = explain.score_against_masks(tiny_model, rows, saliency=False)
    np.testing.assert_allclose(records["energy_inside"], 1.0)
    assert records["pointing_hit"].eq(1.0).all()
    assert records["correct"].tolist() == (rows["label"] == 5).tolist()


def test_images_without_masks_are_counted_not_silently_dropped(tiny_model, demo_frame):
    rows = demo_frame.head(3).copy()
    rows.loc[rows.index[0], "mask_path"] = None
    with pytest.warns(UserWarning, match="1 of 3 images have no lesion mask"):
        records = explain.score_against_masks(tiny_model, rows, saliency=False)
    assert len(records) == 2
    with pytest.raises(DataError, match="lesion mask"):
        explain.score_against_masks(tiny_model, rows.assign(mask_path=None))


def test_summary_needs_scoring_records():
    with pytest.raises(ExplainError, match="score_against_masks"):
        explain.localization_summary(pd.DataFrame({"dx": ["mel"]}))


def test_save_table_round_trips(tmp_path):
    table = pd.DataFrame({"n": [3], "energy_gradcam": [0.5]}, index=pd.Index(["mel"], name="dx"))
    path = explain.save_table(table, tmp_path / "figures" / "t.csv")
    pd.testing.assert_frame_equal(pd.read_csv(path, index_col="dx"), table)


# ---------------------------------------------------------------- real masks


@pytest.mark.real_data
def test_real_masks_score_at_the_original_size(ham_root: Path, tiny_model):
    frame = load_ham10000(ham_root, verify_images=False)
    rows = explain.localization_sample(frame, 7, seed=3)
    records = explain.score_against_masks(tiny_model, rows, saliency=False)
    assert len(records) == 7 and set(records["dx"]) == set(config.CLASS_NAMES)
    assert records["mask_area"].between(0.0, 1.0, inclusive="neither").all()
    # HAM10000 lesions are photographed centred: the centred Gaussian beats chance (the mask area).
    assert records["baseline_energy_inside"].mean() > records["mask_area"].mean()
    summary = explain.localization_summary(records)
    assert summary.loc["all", "n"] == 7
