"""Region extractors: an image in, region boxes + features + labels out.

The interface is :mod:`shan.detect.base`; build one by name with :mod:`shan.detect.factory`.
"""

from shan.detect.base import RegionExtractor, Regions

__all__ = ["RegionExtractor", "Regions"]
