"""Region extractors: an image in, region boxes + features + labels out (see :mod:`shan.detect.base`)."""

from shan.detect.base import RegionExtractor, Regions

__all__ = ["RegionExtractor", "Regions"]
