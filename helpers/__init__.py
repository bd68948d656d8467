"""The skin-lesion-lab package: everything the numbered notebooks, the ``skinlesion`` command and the
benchmarks do, one subpackage per stage, lowest first. A stage imports only from the stages before it
(``tests/test_layering.py`` enforces this):

- ``core``: paths, class vocabulary, errors, atomic writes, provenance;
- ``data``: datasets, image files, lesion-level splits, the tf.data pipeline and augmentation;
- ``models``: building classifiers and reading / writing checkpoints (Keras 2 files included);
- ``training``: training runs, their settings, losses, callbacks and cached features;
- ``evaluation``: inference, metrics, operating points and evaluation sets;
- ``explain``: Grad-CAM, saliency and their localization against lesion masks;
- ``plots``: every figure, in one style;
- ``runs``: running notebooks headless, their parameters and the Tracking.md log;
- ``apps``: the command line, batch prediction, export and the demo app.
"""

import os
from pathlib import Path


def _quiet_tensorflow_startup() -> None:
    """On a machine without an NVIDIA GPU, keep TensorFlow's C++ start-up probes (``failed call to cuInit``,
    CPU feature notes) off the terminal: they read like failures on a CPU machine. With a GPU only INFO
    lines are hidden. Python errors and warnings are unaffected; an explicit TF_CPP_MIN_LOG_LEVEL wins."""
    has_gpu = Path("/dev/nvidiactl").exists()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if has_gpu else "3")


_quiet_tensorflow_startup()
