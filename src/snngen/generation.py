"""Sample generation: on the model's device, in shards, resumable, spread over processes.

The samples of a request are a pure function of ``(weights, seed, shard size, batch size,
sampler options)``:

* ``n`` samples are cut into shards of ``shard_size`` (default 1,000): shard ``i`` holds samples
  ``i * shard_size`` up to ``min(n, (i + 1) * shard_size)``;
* shard ``i`` is drawn in batches of ``batch_size`` with **its own** generator, seeded from
  ``(seed, i)`` alone (:func:`shard_seed`) and made on the model's device
  (:func:`make_generator`), so which process draws a shard, and in which order, changes no sample.
  ``n`` only says how many shards there are (a longer request repeats a shorter one's shards,
  except a partial last shard). CPU and CUDA generators give different streams: the same seed on
  another device type gives other (equally valid) samples.

:class:`ShardStore` keeps the shards of one request in its own folder
(:func:`snngen.evaluation.samples_folder`: ``RUN/samples/<protocol>/``, or
``RUN/samples/<protocol>/<sampler>/`` with sampler options such as ``ddim-50``):
``shard_<index>.npy`` files written atomically as they finish and a ``manifest.json`` saying what
they are samples of (seed, n, shard size, batch size, sampler options, a fingerprint of the
weights, the generator's device type). A killed evaluation run again finds the finished shards
and draws only the missing ones; a request with other options (or other weights) is refused in
one line unless asked to start afresh. Shards are **float16** images ``[b, C, H, W]`` in [0, 1]
(event samples as the count images of :func:`snngen.report.events_to_images`): 2 bytes a
value, an error below ``2**-12`` (well under the ``1/255`` step of 8-bit images, so a protocol's
own quantisation and resizing still decide), read back as float32. Iterating a store yields one
shard at a time, so features are extracted per shard.

:func:`run_samples` makes the missing shards of a store in this process, or with ``devices > 1``
in that many processes launched through Lightning Fabric (gloo on CPU, NCCL on GPUs), each
drawing the shards ``rank, rank + world, ...``; the end of a DDP training run calls
:func:`generate_shards` on every rank of its process group. A tqdm bar (rank 0) shows the images
done, images/s and the time left.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from snngen.devices import model_device, resolve_device  # noqa: F401  (resolve_device: its old home)
from snngen.errors import SnngenError
from snngen.files import weights_fingerprint
from snngen.report import as_images

#: images per shard unless the caller says otherwise
SHARD_SIZE = 1000
MANIFEST = "manifest.json"
#: version of the shard folder layout (a manifest of another version is not reused)
SHARD_FORMAT = 1
SHARD_DTYPE = np.float16


# ----------------------------------------------------------------------------- devices






def make_generator(device: torch.device | str, seed: int) -> torch.Generator | None:
    """A generator on ``device`` seeded ``seed``; ``None`` on the ``meta`` device (no values to
    draw there, the global generator's shapes are enough)."""
    device = torch.device(device)
    if device.type == "meta":
        return None
    return torch.Generator(device=device).manual_seed(seed)


def shard_seed(seed: int, index: int) -> int:
    """The generator seed of shard ``index`` of a request seeded ``seed``: the first 8 bytes
    (little-endian) of ``sha256("snngen-shard:{seed}:{index}")``, shifted right by one bit
    (a seed in [0, 2**63)). Depends on ``(seed, index)`` only."""
    digest = hashlib.sha256(f"snngen-shard:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ShardPlan:
    """What to draw: ``n`` samples in shards of ``shard_size``, batches of ``batch_size``,
    seeded ``seed``; ``options`` go to ``model.sample`` (solver, steps, temperature, ...)."""

    n: int
    seed: int = 0
    shard_size: int = SHARD_SIZE
    batch_size: int = 64
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("n", "shard_size", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise SnngenError(f"{key} must be >= 1, got {getattr(self, key)}")

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def bounds(self, index: int) -> tuple[int, int]:
        """``(start, stop)`` of shard ``index`` in the request's sample order."""
        start = index * self.shard_size
        return start, min(self.n, start + self.shard_size)

    def length(self, index: int) -> int:
        start, stop = self.bounds(index)
        return stop - start

    def shards_of(self, rank: int, world: int) -> range:
        """The shards process ``rank`` of ``world`` draws: ``rank, rank + world, ...``."""
        return range(rank, self.num_shards, world)


def shard_batches(model, plan: ShardPlan, index: int) -> Iterator[Tensor]:
    """Yield the samples of shard ``index`` in batches of at most ``plan.batch_size`` (images
    ``[b, C, H, W]``, events ``[T, b, 2, H, W]``), on the model's device, all drawn from one
    generator on that device seeded :func:`shard_seed` ``(plan.seed, index)``."""
    gen = make_generator(model_device(model), shard_seed(plan.seed, index))
    left = plan.length(index)
    with torch.no_grad():
        while left > 0:
            b = min(plan.batch_size, left)
            yield model.sample(b, generator=gen, **plan.options)
            left -= b


def sample_stream(model, plan: ShardPlan, progress: bool = True) -> Iterator[Tensor]:
    """Yield all ``plan.n`` samples in order, batch by batch (CPU tensors), shard after shard;
    memory holds one batch."""
    bar = ImageBar(plan.n, 0, progress)
    for index in range(plan.num_shards):
        for batch in shard_batches(model, plan, index):
            bar.update(_batch_len(batch))
            yield batch.cpu()
    bar.close()


def _batch_len(x: Tensor) -> int:
    from snngen.report import is_event_batch

    return x.shape[1] if is_event_batch(x) else x.shape[0]


class ImageBar:
    """The ``sample`` bar over images (done, images/s, time left): a
    :func:`snngen.console.progress_bar`; silent when ``enabled`` is false."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str = "sample"):
        from snngen.console import progress_bar

        self.bar = progress_bar(desc=desc, total=total, initial=initial, unit="img",
                                enabled=enabled)

    def update(self, k: int) -> None:
        self.bar.update(k)

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------- the store




class ShardStore:
    """The shard folder of one request (see module docstring). Iterating yields the images of
    each shard in order, float32 ``[b, C, H, W]`` on the CPU (every shard must exist)."""

    def __init__(self, folder: str | Path, plan: ShardPlan, model, protocol: str = "") -> None:
        self.folder, self.plan, self.protocol = Path(folder), plan, protocol
        self.manifest = {
            "format": SHARD_FORMAT,
            "protocol": protocol,
            "n": plan.n,
            "seed": plan.seed,
            "shard_size": plan.shard_size,
            "batch_size": plan.batch_size,
            "options": json.loads(json.dumps(plan.options, default=str, sort_keys=True)),
            "weights": weights_fingerprint(model),
            "rng_device": model_device(model).type,
            "dtype": "float16",
            "layout": "images [b, C, H, W] in [0, 1]",
        }

    def path(self, index: int) -> Path:
        return self.folder / f"shard_{index:05d}.npy"

    def done(self, index: int) -> bool:
        """Whether shard ``index`` is on disk with this plan's number of samples."""
        path = self.path(index)
        if not path.is_file():
            return False
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError):
            return False
        return len(shape) == 4 and shape[0] == self.plan.length(index)

    def missing(self) -> list[int]:
        return [i for i in range(self.plan.num_shards) if not self.done(i)]

    def prepare(self, fresh: bool = False, replace_stale: bool = False) -> None:
        """Check the folder's manifest against this request and write ours. ``fresh`` deletes
        every shard; shards of another request are refused (one line) unless
        ``replace_stale``, which deletes them. A different ``n`` is the same request (shards
        do not depend on it)."""
        old = self._read_manifest()
        if old is not None and not fresh:
            keys = [k for k in self.manifest if k != "n" and old.get(k) != self.manifest[k]]
            fresh = bool(keys) and replace_stale
            if keys and not fresh:
                k = keys[0]
                raise SnngenError(
                    f"{self.folder} holds samples of another request ({k} {old.get(k)!r}, now "
                    f"{self.manifest[k]!r}); pass --fresh to delete them, or the same options"
                )
        if fresh or old is None:
            for path in self.folder.glob("shard_*.npy"):
                path.unlink()
        from snngen.files import write_text

        self.folder.mkdir(parents=True, exist_ok=True)
        write_text(self.folder / MANIFEST, json.dumps(self.manifest, indent=2))

    def _read_manifest(self) -> dict | None:
        path = self.folder / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def write(self, index: int, images: Tensor) -> Path:
        """Write shard ``index`` (images ``[b, C, H, W]`` in [0, 1]) atomically as float16."""
        from snngen.files import atomic_output

        array = images.detach().float().clamp(0, 1).cpu().numpy().astype(SHARD_DTYPE)
        with atomic_output(self.path(index)) as f:
            np.save(f, array, allow_pickle=False)
        return self.path(index)

    def read(self, index: int) -> Tensor:
        """The images of shard ``index``, float32 ``[b, C, H, W]``."""
        return torch.from_numpy(np.load(self.path(index), allow_pickle=False).astype(np.float32))

    def __iter__(self) -> Iterator[Tensor]:
        for index in range(self.plan.num_shards):
            yield self.read(index)

    def __len__(self) -> int:
        """The number of items iteration yields: shards (feature extraction's progress total)."""
        return self.plan.num_shards


def generate_shards(model, store: ShardStore, rank: int = 0, world: int = 1,
                    progress: bool = True) -> int:
    """Draw and write the missing shards of ``store`` that process ``rank`` of ``world`` owns
    (``rank, rank + world, ...``); returns the number of images drawn."""
    mine = list(store.plan.shards_of(rank, world))
    todo = [i for i in mine if not store.done(i)]
    total = sum(store.plan.length(i) for i in mine)
    desc = "sample" if world == 1 else f"sample (rank {rank} of {world})"
    bar = ImageBar(total, total - sum(store.plan.length(i) for i in todo),
                   progress and rank == 0, desc)
    made = 0
    for index in todo:
        parts = []
        for batch in shard_batches(model, store.plan, index):
            parts.append(as_images(batch).cpu())
            bar.update(parts[-1].shape[0])
        store.write(index, torch.cat(parts))
        made += store.plan.length(index)
    bar.close()
    return made


# ----------------------------------------------------------------------------- several processes


def draw_in_group(model, store: ShardStore, rank: int, world: int, *,
                  replace_stale: bool = False, progress: bool = True) -> None:
    """Draw ``store``'s shards with every rank of the initialised ``torch.distributed`` group
    (the end of a DDP training run): all ranks take rank 0's weights and buffers (DDP leaves
    each rank's last batch-norm statistics its own), rank 0 prepares the folder, each rank draws
    its shards, and all return once every shard is written."""
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)
    if rank == 0:
        store.prepare(replace_stale=replace_stale)
    dist.barrier()
    generate_shards(model, store, rank, world, progress)
    dist.barrier()


def run_samples(
    model,
    store: ShardStore,
    *,
    devices: int = 1,
    run_dir: str | Path | None = None,
    fresh: bool = False,
    replace_stale: bool = False,
    progress: bool = True,
) -> ShardStore:
    """Make every shard of ``store`` (after :meth:`ShardStore.prepare`) and return it.

    ``devices == 1``: here, with ``model`` where it is. ``devices > 1``: in ``devices``
    processes started through Lightning Fabric (``python -m snngen.generation SPEC``), each
    loading the run folder ``run_dir`` (whose weights must be ``model``'s) onto its own device:
    GPU ``k`` when ``model`` is on a GPU, else the CPU (gloo). ``fresh``, ``replace_stale``:
    see :meth:`ShardStore.prepare`.
    """
    store.prepare(fresh, replace_stale)
    if not store.missing():
        return store
    if devices == 1:
        generate_shards(model, store, progress=progress)
    else:
        if run_dir is None:
            raise SnngenError("--devices > 1 needs a run folder to load the model from")
        accelerator = "cuda" if model_device(model).type == "cuda" else "cpu"
        _launch_workers(store, Path(run_dir), devices, accelerator, progress)
    if store.missing():
        raise SnngenError(f"shards {store.missing()[:5]} of {store.folder} were not written")
    return store


def _launch_workers(store: ShardStore, run_dir: Path, devices: int, accelerator: str,
                    progress: bool) -> None:
    spec = {"run": str(run_dir), "folder": str(store.folder), "protocol": store.protocol,
            "plan": asdict(store.plan), "devices": devices, "accelerator": accelerator,
            "progress": progress}
    spec_path = store.folder / "spawn.json"
    from snngen.files import write_text

    write_text(spec_path, json.dumps(spec, default=str))
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE")}
    proc = subprocess.run([sys.executable, "-m", "snngen.generation", str(spec_path)], env=env)
    spec_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise SnngenError(f"sampling in {devices} processes failed (exit {proc.returncode}); "
                          f"the shards written so far are kept in {store.folder}")


def _worker(spec_file: str) -> None:
    """One process of :func:`run_samples` with ``devices > 1`` (Fabric starts the others)."""
    import lightning as L

    from snngen.console import configure_lightning
    from snngen.runs import attach_training_set, load_run

    configure_lightning()  # Fabric's banners only with SNNGEN_VERBOSE (set by --verbose)
    spec = json.loads(Path(spec_file).read_text())
    strategy: Any = "ddp"
    if spec["accelerator"] == "cpu":
        from lightning.fabric.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo")
    fabric = L.Fabric(accelerator=spec["accelerator"], devices=spec["devices"],
                      strategy=strategy)
    fabric.launch()
    run = load_run(spec["run"])
    attach_training_set(run)
    model = run.model.to(fabric.device).eval()
    plan = ShardPlan(**spec["plan"])
    store = ShardStore(spec["folder"], plan, model, protocol=spec["protocol"])
    if store._read_manifest() != store.manifest:
        raise SnngenError(f"{spec['run']}: the checkpoint's weights are not the model's")
    generate_shards(model, store, fabric.global_rank, fabric.world_size, spec["progress"])
    fabric.barrier()


if __name__ == "__main__":
    _worker(sys.argv[1])
