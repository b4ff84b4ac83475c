"""ANN-to-SNN conversion: IF neurons, threshold balancing, error reports (see ``convert``)."""

from snngen.conversion.convert import (
    ConversionReport,
    ConvertedIF,
    ConvertedUNet,
    calibrate_thresholds,
    conversion_report,
    convert_unet,
)

__all__ = [
    "ConversionReport",
    "ConvertedIF",
    "ConvertedUNet",
    "calibrate_thresholds",
    "conversion_report",
    "convert_unet",
]
