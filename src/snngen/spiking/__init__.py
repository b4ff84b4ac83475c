"""The spiking core: neurons, surrogate gradients, time-folded layers, coding and monitoring.

It knows nothing about generative models. Tensors are time-first: ``[T, B, ...]``.
"""

from snngen.spiking.checkpointing import (
    CheckpointedBlock,
    StagedSequential,
    enable_activation_checkpointing,
)
from snngen.spiking.coding import (
    direct_encode,
    last_decode,
    mean_decode,
    poisson_encode,
    repeat,
    weighted_decode,
)
from snngen.spiking.layers import (
    BRAINCOG_LIF,
    Conv2d,
    ConvTranspose2d,
    LIFNonlinearity,
    Linear,
    SpikingSelfAttention,
    TdBatchNorm1d,
    TdBatchNorm2d,
    TimeBatchNorm1d,
    TimeBatchNorm2d,
    TimeFolded,
    TimeGroupNorm,
    fold_time,
    neuron_from_config,
    unfold_time,
)
from snngen.spiking.monitor import Monitor
from snngen.spiking.neurons import IF, LIF, MultiStepNeuron, ParametricLIF
from snngen.spiking.surrogate import (
    ATan,
    FastSigmoid,
    Rectangular,
    Sigmoid,
    Surrogate,
    Triangle,
    get_surrogate,
)

__all__ = [
    "IF",
    "LIF",
    "MultiStepNeuron",
    "ParametricLIF",
    "ATan",
    "FastSigmoid",
    "Rectangular",
    "Sigmoid",
    "Surrogate",
    "Triangle",
    "get_surrogate",
    # layers
    "BRAINCOG_LIF",
    "Conv2d",
    "ConvTranspose2d",
    "LIFNonlinearity",
    "Linear",
    "SpikingSelfAttention",
    "TdBatchNorm1d",
    "TdBatchNorm2d",
    "TimeBatchNorm1d",
    "TimeBatchNorm2d",
    "TimeFolded",
    "TimeGroupNorm",
    "fold_time",
    "neuron_from_config",
    "unfold_time",
    # coding
    "direct_encode",
    "last_decode",
    "mean_decode",
    "poisson_encode",
    "repeat",
    "weighted_decode",
    # monitor
    "Monitor",
    # activation checkpointing
    "CheckpointedBlock",
    "StagedSequential",
    "enable_activation_checkpointing",
]
