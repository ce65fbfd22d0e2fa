"""The feature store: a frozen encoder run once over every patch, read by every trial."""

from tuner.features._backbone import (
    FEATURE_DIM,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    WeightsSpec,
    build_backbone,
)
from tuner.features._encoders import PRESET_NAMES, Encoder, presets, resolve_encoder
from tuner.features._extract import ExtractOptions, PatchImages, extract_features, store_rows
from tuner.features._import import import_embeddings
from tuner.features._store import FeatureStore, StoreCase, StoreWriter

__all__ = [
    "FEATURE_DIM",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESET_NAMES",
    "Backbone",
    "Encoder",
    "ExtractOptions",
    "FeatureStore",
    "PatchImages",
    "StoreCase",
    "StoreWriter",
    "WeightsSpec",
    "build_backbone",
    "extract_features",
    "import_embeddings",
    "presets",
    "resolve_encoder",
    "store_rows",
]
