"""Tests for helpers.apps.demo: a real server on 127.0.0.1 answers a real HAM10000 image through
gradio_client, rejects bad uploads with a clear message, and renders a page (headless Chromium screenshot)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import gradio_client
import numpy as np
import pytest
from builders import damage_jpeg_middle, write_noise_image

from helpers.apps.cli import ERROR_EXIT_CODE, main
from helpers.core.errors import CheckpointError
from helpers.core.extras import MissingExtraError, import_extra
from helpers.data.ham10000 import load_ham10000
from helpers.evaluation.operating_point import operating_point_path, save_operating_point
from helpers.models.build import build_model
from helpers.models.checkpoints import save_checkpoint

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

SIZE = (96, 128)
THRESHOLD = 0.3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small from-scratch CNN checkpoint with a saved operating point (threshold 0.3)."""
    path = tmp_path_factory.mktemp("models") / "light_cnn_v1_01_0.500.h5"
    save_checkpoint(build_model("light_cnn", weights=None, input_size=SIZE), path, {"split_file": None})
    save_operating_point(
        operating_point_path(path),
        threshold=THRESHOLD,
        target_sensitivity=0.9,
        temperature=1.5,
        val_metrics={},
        checkpoint=path,
    )
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(checkpoint: Path):
    """The demo served on a free 127.0.0.1 port for the module; yields its URL."""
    from helpers.apps.demo import build_app, launch

    app = build_app(checkpoint)
    url = launch(app, _free_port(), block=False)
    yield url
    app.close()


@pytest.fixture(scope="module")
def client(server: str):
    return gradio_client.Client(server, verbose=False)


@pytest.fixture(scope="module")
def lesion_images(ham_root: Path) -> list[Path]:
    """Three real HAM10000 images of different diagnoses."""
    frame = load_ham10000(ham_root, verify_images=False)
    return [Path(path) for path in frame.groupby("dx").head(1)["image_path"][:3]]


def test_server_binds_loopback_only(server: str):
    assert server.startswith("http://127.0.0.1:")


def test_real_image_gets_probabilities_decision_and_overlay(client, lesion_images):
    for image in lesion_images:
        label, p_malignant, decision, overlay = client.predict(
            gradio_client.handle_file(str(image)), api_name="/predict"
        )
        confidences = {item["label"]: item["confidence"] for item in label["confidences"]}
        assert len(confidences) == 7 and "mel (melanoma)" in confidences
        assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-4)
        malignant = sum(p for name, p in confidences.items() if name.split()[0] in {"akiec", "bcc", "mel"})
        assert p_malignant == pytest.approx(malignant, abs=1e-3)
        expected = "MALIGNANT" if p_malignant >= THRESHOLD else "BENIGN"
        assert decision.startswith(f"{expected}: P(malignant) ")
        assert f"threshold {THRESHOLD:.3f} (tuned on validation data)" in decision
        assert _image_shape(overlay) == (*SIZE, 3)


def _image_shape(path: str) -> tuple[int, ...]:
    from helpers.data.images import read_image_rgb

    return read_image_rgb(path).shape


def test_non_image_upload_gets_a_clear_message(client, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(gradio_client.exceptions.AppError, match="Invalid file type"):
        client.predict(gradio_client.handle_file(str(notes)), api_name="/predict")


def _truncated(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[:2000])
    return target


def _text(source: Path, target: Path) -> Path:
    target.write_bytes(b"just text")
    return target


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_text, "not an image"),
        (_truncated, "truncated JPEG"),
        (damage_jpeg_middle, r"damaged JPEG data \(Corrupt JPEG data"),
    ],
)
def test_corrupt_image_gets_a_clear_message_and_the_server_keeps_serving(
    client, lesion_images, tmp_path, make, problem
):
    corrupt = make(lesion_images[0], tmp_path / "lesion.jpg")
    with pytest.raises(
        gradio_client.exceptions.AppError, match=f"Unusable image: {problem}.*JPEG or PNG"
    ) as caught:
        client.predict(gradio_client.handle_file(str(corrupt)), api_name="/predict")
    assert "File:" not in str(caught.value), "the server-side upload path should not be shown"
    label, *_ = client.predict(gradio_client.handle_file(str(lesion_images[0])), api_name="/predict")
    assert len(label["confidences"]) == 7


def test_tiny_image_is_answered_with_a_warning(client, tmp_path):
    tiny = write_noise_image(tmp_path / "tiny.png", 0, (1, 1))
    _, _, decision, _ = client.predict(gradio_client.handle_file(str(tiny)), api_name="/predict")
    assert "\nWarning: image of 1x1 pixels is far smaller than the model input of 128x96" in decision
    assert "(almost) one flat colour" in decision  # one pixel enlarged: blank, as the predict command says


def test_corrupt_checkpoint_fails_at_startup(tmp_path):
    from helpers.apps.demo import build_app

    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not an HDF5 file"):
        build_app(broken)


def test_cli_reports_a_corrupt_checkpoint_without_traceback(tmp_path, capsys):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not a model")
    assert main(["demo", "--model", str(broken), "--port", "7861"]) == ERROR_EXIT_CODE
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "not an HDF5 file" in error and "Traceback" not in error


def test_missing_extra_names_the_install_command():
    with pytest.raises(MissingExtraError, match=r"uv sync --extra demo"):
        import_extra("gradio_that_does_not_exist", "demo")


def test_page_shows_the_research_use_disclaimer(server: str):
    import httpx

    config = httpx.get(f"{server}config", timeout=30).text
    assert "Research use only. Not a medical device." in config


def test_page_screenshot_shows_a_rendered_page(server: str, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed here: apt-get install -y chromium")
    screenshot = tmp_path / "demo.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1280,1000",
            "--virtual-time-budget=15000",
            server,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    from helpers.data.images import read_image_rgb

    pixels = read_image_rgb(screenshot)
    assert pixels.shape == (1000, 1280, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "the page rendered blank"
