"""A local Gradio demo of a checkpoint (``skinlesion demo``): upload a dermoscopic image and see the class
probabilities, P(malignant) against the validation-tuned threshold with its decision, and a Grad-CAM overlay.

Research use only. Gradio comes with the optional ``demo`` extra. The server binds 127.0.0.1 only; an
unusable upload (damaged JPEG data included) gets a message in the page, never a server error, and an image
far smaller than the model input, or blank, gets its result with a warning.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from helpers.core.config import BINARY_CLASS_NAMES, CLASS_DESCRIPTIONS
from helpers.core.errors import SkinLesionError
from helpers.core.extras import import_extra
from helpers.evaluation.inference import image_warning, read_for_model
from helpers.evaluation.operating_point import (
    operating_point_path,
    reported_probabilities,
    saved_operating_point,
)
from helpers.explain.heatmaps import gradcam, overlay
from helpers.models.checkpoints import checked_class_names, load_checkpoint, resolve_checkpoint
from helpers.models.predict import class_probabilities

if TYPE_CHECKING:
    import gradio

HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DISCLAIMER = (
    "**Research use only. Not a medical device.** This model was trained on HAM10000 dermoscopy images "
    "for research; it has not been clinically validated and must not be used to diagnose, treat or rule "
    "out skin cancer. Anyone worried about a skin lesion should see a doctor or dermatologist."
)


@dataclass(frozen=True)
class Classifier:
    """A loaded checkpoint with what its predictions need: classes, input size and operating point."""

    model: keras.Model
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    operating_point: dict[str, Any]
    tuned: bool
    name: str


@dataclass(frozen=True)
class Diagnosis:
    """One image's result: class probabilities and P(malignant) as the operating point reports them
    (:func:`helpers.evaluation.operating_point.reported_probabilities`), decision, Grad-CAM overlay and a
    warning ("" unless the image is far smaller than the model input or blank)."""

    probabilities: dict[str, float]
    p_malignant: float
    decision: str
    overlay: np.ndarray
    warning: str


def load_classifier(checkpoint: str | Path) -> Classifier:
    """Load a checkpoint and its saved operating point; CheckpointError if either is missing or broken."""
    model, metadata = load_checkpoint(checkpoint)
    return Classifier(
        model=model,
        class_names=checked_class_names(metadata),
        input_size=tuple(metadata["input_size"]),
        operating_point=saved_operating_point(checkpoint),
        tuned=operating_point_path(checkpoint).is_file(),
        name=Path(checkpoint).name,
    )


def diagnose(classifier: Classifier, image_path: str | Path) -> Diagnosis:
    """Classify one image file as in training (decode, resize) and explain the top class with Grad-CAM;
    DataError if the file is not a usable image."""
    image = read_for_model(image_path, classifier.input_size)
    heatmap, _, outputs = gradcam(classifier.model, image)
    probs, p_malignant = reported_probabilities(
        class_probabilities(outputs[np.newaxis]), classifier.operating_point, classifier.class_names
    )
    malignant = float(p_malignant[0])
    return Diagnosis(
        probabilities={
            _label(name): float(p) for name, p in zip(classifier.class_names, probs[0], strict=True)
        },
        p_malignant=malignant,
        decision=BINARY_CLASS_NAMES[int(malignant >= classifier.operating_point["threshold"])],
        overlay=overlay(image, heatmap),
        warning=image_warning(image_path, image, classifier.input_size),
    )


def _label(class_name: str) -> str:
    description = CLASS_DESCRIPTIONS.get(class_name)
    return f"{class_name} ({description})" if description else class_name


def decision_text(classifier: Classifier, diagnosis: Diagnosis) -> str:
    """The decision with the rule behind it, e.g. "MALIGNANT: P(malignant) 0.730 >= threshold 0.412 (...)",
    and the image's warning on a line of its own."""
    relation = ">=" if diagnosis.decision == BINARY_CLASS_NAMES[1] else "<"
    source = "tuned on validation data" if classifier.tuned else "default: no operating point saved"
    warning = f"\nWarning: {diagnosis.warning}." if diagnosis.warning else ""
    return (
        f"{diagnosis.decision.upper()}: P(malignant) {diagnosis.p_malignant:.3f} {relation} threshold "
        f"{classifier.operating_point['threshold']:.3f} ({source}){warning}"
    )


def user_message(error: SkinLesionError) -> str:
    """An error's message for the page: every line but the server-side file path."""
    return " ".join(line for line in str(error).splitlines() if not line.startswith("File: "))


def build_app(checkpoint: str | Path) -> gradio.Blocks:
    """The demo page for ``checkpoint``: disclaimer, image upload, and the four results. The model loads
    here, so a missing or corrupt checkpoint fails at startup with a CheckpointError."""
    gr = import_extra("gradio", "demo")
    classifier = load_classifier(checkpoint)

    def predict(path: str | None) -> tuple[dict[str, float], float, str, np.ndarray]:
        if path is None:
            raise gr.Error("Upload an image first (JPEG or PNG).")
        try:
            diagnosis = diagnose(classifier, path)
        except SkinLesionError as error:
            raise gr.Error(f"{user_message(error)} Please upload a dermoscopic JPEG or PNG image.") from error
        text = decision_text(classifier, diagnosis)
        return diagnosis.probabilities, round(diagnosis.p_malignant, 4), text, diagnosis.overlay

    with gr.Blocks(title="Skin-lesion classifier (research demo)", analytics_enabled=False) as app:
        gr.Markdown(f"# Skin-lesion classifier: research demo\n\n{DISCLAIMER}\n\nModel: `{classifier.name}`")
        with gr.Row():
            with gr.Column():
                upload = gr.File(
                    label="Dermoscopic image (JPEG or PNG)", file_types=["image"], type="filepath"
                )
            with gr.Column():
                probabilities = gr.Label(
                    label="Class probabilities", num_top_classes=len(classifier.class_names)
                )
                p_malignant = gr.Number(value=None, label="P(malignant)", precision=4)
                decision = gr.Textbox(label="Decision at the operating point")
                heatmap = gr.Image(label="Grad-CAM: regions behind the top class", type="numpy", format="png")
        upload.upload(
            predict,
            inputs=upload,
            outputs=[probabilities, p_malignant, decision, heatmap],
            api_name="predict",
        )
    return app


def launch(app: gradio.Blocks, port: int = DEFAULT_PORT, *, block: bool = True) -> str:
    """Serve ``app`` on 127.0.0.1:``port`` only (never shared publicly); returns the local URL."""
    _, url, _ = app.launch(
        server_name=HOST, server_port=port, share=False, prevent_thread_lock=not block, quiet=not block
    )
    return url


def demo_command(args: argparse.Namespace) -> int:
    """``skinlesion demo``: serve the page for ``--model`` (default: the best checkpoint trained here, else
    the released one) on 127.0.0.1 until interrupted."""
    checkpoint = args.model or resolve_checkpoint()
    print(f"Loading {checkpoint} ... (research use only, not for diagnosis)")
    launch(build_app(checkpoint), args.port)
    return 0
