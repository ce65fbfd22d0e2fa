"""The dataset layer: patch paths and labels -> a checked index, case-level splits, demo data."""

from tuner.data._check import DatasetCheck, check_dataset, split_dataset
from tuner.data._demo import DEMO_PRESETS, DemoSpec, write_demo_dataset
from tuner.data._images import check_images, image_size, load_rgb, to_rgb
from tuner.data._index import (
    DEFAULT_PATTERN,
    DatasetIndex,
    Patch,
    Problem,
    build_index,
    compile_pattern,
    group_ids,
    natural_key,
    scan_patches,
)
from tuner.data._labels import Labels, read_labels
from tuner.data._splits import Split, Splits, load_splits, make_splits, min_cases_per_class
from tuner.data._summary import class_problems, summary_table

__all__ = [
    "DEFAULT_PATTERN",
    "DEMO_PRESETS",
    "DatasetCheck",
    "DatasetIndex",
    "DemoSpec",
    "Labels",
    "Patch",
    "Problem",
    "Split",
    "Splits",
    "build_index",
    "check_dataset",
    "check_images",
    "class_problems",
    "compile_pattern",
    "group_ids",
    "image_size",
    "load_rgb",
    "load_splits",
    "make_splits",
    "min_cases_per_class",
    "natural_key",
    "read_labels",
    "scan_patches",
    "split_dataset",
    "summary_table",
    "to_rgb",
    "write_demo_dataset",
]
