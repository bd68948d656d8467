"""Data: the datasets (HAM10000, ISIC 2018 test layout, folder-per-class sets, the synthetic demo set and
its download), image files, lesion-level splits, and the tf.data pipeline with its augmentation. Every
loader returns the same frame (:data:`helpers.data.validation.FRAME_COLUMNS`). Imports only ``core``."""

from helpers.data.folders import drop_ham10000_overlap, load_folder_dataset
from helpers.data.ham10000 import load_duplicate_pairs, load_ham10000
from helpers.data.images import read_image_rgb
from helpers.data.isic2018 import load_isic2018_test
from helpers.data.pipeline import load_image_array, make_dataset
from helpers.data.source import DataSource, resolve_data_root, split_dataset
from helpers.data.splits import check_no_lesion_leak, load_or_create_split, split_summary
from helpers.data.validation import skip_report

__all__ = [
    "DataSource",
    "check_no_lesion_leak",
    "drop_ham10000_overlap",
    "load_duplicate_pairs",
    "load_folder_dataset",
    "load_ham10000",
    "load_image_array",
    "load_isic2018_test",
    "load_or_create_split",
    "make_dataset",
    "read_image_rgb",
    "resolve_data_root",
    "skip_report",
    "split_dataset",
    "split_summary",
]
