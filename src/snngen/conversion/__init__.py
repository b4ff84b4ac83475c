"""ANN-to-SNN conversion: IF neurons, threshold balancing, error reports (see ``convert``)."""

from snngen.conversion.convert import (
    ConversionReport,
    ConvertedIF,
    ConvertedUNet,
    calibrate_thresholds,
    conversion_report,
    convert_unet,
)
from snngen.conversion.model import convert_model, noisy_inputs

__all__ = [
    "ConversionReport",
    "ConvertedIF",
    "ConvertedUNet",
    "calibrate_thresholds",
    "conversion_report",
    "convert_model",
    "convert_unet",
    "noisy_inputs",
]
