"""The rows of the leaderboard: which config trains each model, and how its budget is split.

Every row gets the same training CPU time, ``budget`` (process CPU time of one single-threaded
training process, counted by ``trainer.max_cpu_minutes``). A row is trained in one or two
**stages**; a stage takes a ``share`` of the budget:

* one-stage rows (SAE, FSVAE, ANN VAE, SDDPM, ANN DDPM): the whole budget;
* VQ-VAE + prior rows: the stage-1 VQ-VAE 60 %, the spiking GPT prior over its codes 40 %;
* SDM (TSM): the SDDPM row's snapshot at 75 % of its budget (shared, not trained twice), then TSM
  fine-tuning by weight inheritance for the remaining 25 %;
* the ANN-to-SNN converted DDPM: no training of its own: the ANN DDPM row's weights, converted
  (its conversion's calibration CPU time is reported beside the budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: snapshots kept during every stage: at 1/4, 2/4 and 3/4 of its CPU budget (plus the end)
SNAPSHOTS = 4
#: the SDDPM snapshot SDM inherits from (3 of 4: 75 % of the budget), and TSM's share
SDM_PARENT_SNAPSHOT = 3
#: IF time steps of the converted DDPM's spiking U-Net
CONVERSION_TIMESTEPS = 8


@dataclass(frozen=True)
class Stage:
    """One training run of a row: ``config`` with ``overrides``, for ``share`` of the budget.

    ``key`` names its run folder (``BOARD/runs/<key>``); ``after``: stage keys whose run must be
    finished first (their folders are filled into the overrides as ``{runs}/<key>``);
    ``start_share``: CPU budget already spent on this row before the stage (its own x axis
    starts there: an inherited snapshot, a stage-1 model); ``from_snapshot``: the checkpoint of
    the (one) ``after`` run whose weights the stage inherits (``model.init_from``), else the run
    is used whole.
    """

    key: str
    config: str
    share: float = 1.0
    overrides: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    start_share: float = 0.0
    from_snapshot: str | None = None

    def resolved_overrides(self, runs: Path) -> list[str]:
        """The overrides with ``{runs}`` filled in, plus ``model.init_from`` for a snapshot."""
        out = [o.replace("{runs}", str(runs)) for o in self.overrides]
        if self.from_snapshot:
            parent = runs / self.after[0] / "checkpoints" / self.from_snapshot
            out.append(f"model.init_from={parent}")
        return out


@dataclass(frozen=True)
class Entry:
    """One leaderboard row: the model evaluated is the last stage's (or, with ``convert``, the
    ANN DDPM stage's, converted to an SNN)."""

    key: str
    label: str
    family: str
    spiking: bool
    stages: tuple[Stage, ...]
    diffusion: bool = False
    convert: bool = False
    notes: str = ""

    @property
    def final_stage(self) -> Stage:
        return self.stages[-1]


def _vq(codebook: str) -> tuple[Stage, Stage]:
    stage1 = Stage(f"vqvae_{codebook}", f"configs/vqvae_{codebook}_mnist5k_small.yaml", 0.6)
    prior = Stage(
        f"vq_prior_{codebook}", f"configs/vq_prior_{codebook}_mnist5k_small.yaml", 0.4,
        overrides=(f"model.stage1_run={{runs}}/vqvae_{codebook}",),
        after=(f"vqvae_{codebook}",), start_share=0.6,
    )
    return stage1, prior


#: 28 -> 32 px by resizing, as the originals and the board's reference images (the mnist5k
#: configs pad by default)
RESIZE = ("data.options.fit=resize",)
SDDPM = Stage("sddpm", "configs/sddpm_mnist5k_small.yaml")
DDPM = Stage("ddpm", "configs/ddpm_mnist5k_small.yaml")
SDM_SHARE = 1 - SDM_PARENT_SNAPSHOT / SNAPSHOTS

ENTRIES: tuple[Entry, ...] = (
    Entry("sae", "spiking autoencoder (SAE)", "sae", True,
          (Stage("sae", "configs/sae_mnist5k.yaml", overrides=RESIZE),),
          notes="no generative prior: samples decode Gaussian latents"),
    Entry("fsvae", "FSVAE", "fsvae", True,
          (Stage("fsvae", "configs/fsvae_mnist5k.yaml", overrides=RESIZE),)),
    Entry("ann_vae", "ANN VAE (FSVAE's twin)", "fsvae", False,
          (Stage("ann_vae", "configs/ann_vae_mnist5k.yaml", overrides=RESIZE),)),
    Entry("vq_temporal", "temporal-codebook VQ-VAE + spiking prior", "vqvae", True,
          _vq("temporal")),
    Entry("vq_vanilla", "vanilla-codebook VQ-VAE + spiking prior", "vqvae", True,
          _vq("vanilla")),
    Entry("sddpm", "SDDPM (spiking U-Net)", "diffusion", True, (SDDPM,), diffusion=True),
    Entry("sdm", "SDM (TSM, inherited from SDDPM)", "diffusion", True, (
        Stage("sdm_tsm", "configs/sdm_tsm_mnist5k_small.yaml", SDM_SHARE, after=("sddpm",),
              start_share=1 - SDM_SHARE,
              from_snapshot=f"cpu_{SDM_PARENT_SNAPSHOT}_of_{SNAPSHOTS}.ckpt"),
    ), diffusion=True),
    Entry("ddpm", "ANN DDPM (same U-Net, ReLU)", "diffusion", False, (DDPM,), diffusion=True),
    Entry("ddpm_converted", f"ANN-to-SNN converted DDPM (IF, T={CONVERSION_TIMESTEPS})",
          "diffusion", True, (DDPM,), diffusion=True, convert=True),
)


def entry(key: str) -> Entry:
    """The row called ``key``, or a row of one's own model when ``key`` is a config file
    (``.yaml``, :func:`custom_entry`); ``KeyError`` listing the rows otherwise."""
    for e in ENTRIES:
        if e.key == key:
            return e
    if key.endswith((".yaml", ".yml")):
        return custom_entry(key)
    raise KeyError(f"no leaderboard row {key!r}; rows: {', '.join(e.key for e in ENTRIES)} "
                   "or the path of a config file (a row of your own model)")


def custom_entry(config: str) -> Entry:
    """A row for any model snngen can train (a plug-in included): one stage that trains
    ``config`` for the whole budget; the row and its run folder are named after the file."""
    path = Path(config)
    if not path.is_file():
        raise KeyError(f"no config file {config} for a leaderboard row")
    if path.stem in {e.key for e in ENTRIES}:
        raise KeyError(f"{config}: rename the file, {path.stem!r} is one of the board's rows")
    return Entry(path.stem, f"{path.stem} ({path.name})", "custom", True,
                 (Stage(path.stem, str(path)),), notes="a row of your own")


def training_stages() -> list[Stage]:
    """Every distinct stage to train, parents before children."""
    seen: dict[str, Stage] = {}
    for e in ENTRIES:
        for s in e.stages:
            seen.setdefault(s.key, s)
    return list(seen.values())
