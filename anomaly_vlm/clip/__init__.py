"""CLIP backbones: loading (tag, file, hub, tiny test config), dense taps and V-V surgery."""

from .backbone import TINY_MODEL, BackboneConfig, ClipBackbone, load_backbone, resolve_device
from .text import encode_text_prompted
from .vision import VisualFeatures, default_taps, encode_image_dense

__all__ = [
    "TINY_MODEL",
    "BackboneConfig",
    "ClipBackbone",
    "VisualFeatures",
    "default_taps",
    "encode_image_dense",
    "encode_text_prompted",
    "load_backbone",
    "resolve_device",
]
