"""Datasets as uint8 tensors held in memory; see ``base.ImageSet`` and ``load``."""

from aebench.data.base import ImageSet, data_root, load

__all__ = ["ImageSet", "data_root", "load"]
