"""Errors a user can act on. Each message names the file or model and the fix."""

from __future__ import annotations


class AnomalyVLMError(Exception):
    """Base class: the CLI prints these as one clear message, never a traceback."""


class WeightsNotFoundError(AnomalyVLMError):
    """Model weights could not be found locally and could not be downloaded."""


class UnsupportedModelError(AnomalyVLMError):
    """The model architecture is not one the localizer can tap."""


class ImageLoadError(AnomalyVLMError):
    """An image file is missing, corrupt, too large or not an image."""


class DatasetError(AnomalyVLMError):
    """A dataset folder does not follow a layout we can read."""


class CheckpointError(AnomalyVLMError):
    """A checkpoint is unreadable, unsafe, or made for another backbone."""


class ProductError(AnomalyVLMError):
    """A product profile is unknown, misnamed, already present, or lacks what was asked of it."""
