"""Key map of SDM's TSM U-Net (AndyCao1125/SDM ``SDM/TSM.py`` ``Spk_UNet_TSM``).

SDM's network is SDDPM's with every conv wrapped as ``TSMConv2d`` (``X.tsmconv.*`` and a
per-step scale ``X.tsmp``); one key map serves both, see :mod:`snngen.importers.sddpm`. The
released SDM checkpoints hold ``net_model`` and ``ema_model``; :data:`WEIGHT_KEYS` prefers the
EMA copy (SDM's own ``sample.py`` loads ``net_model`` unless told otherwise).
"""

from __future__ import annotations

from snngen.importers.sddpm import WEIGHT_KEYS, convert

__all__ = ["WEIGHT_KEYS", "convert"]
