"""No result lost in silence (issue 21, case 3 and 4): ``snngen sample`` / ``snngen eval`` refuse
what a model cannot do before any work; ``metrics.json`` keeps every protocol's and sampler's
results; ``snngen eval`` measures the run's configured metrics; the shards of different
samplers live side by side; ``snngen sample`` never overwrites training's ``samples.png``.

The run folders are untrained tiny models (mnist5k at 8 px) written directly; sample metrics
use a cheap stand-in feature network (the protocols' Inception / classifier are not needed to
test where results go). Expected values come from the printed results of each command, from
the shard files written before, and from the file's documented layout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from pathlib import Path

import pytest
import torch
from fs_helpers import snapshot

import snngen
from snngen.cli import main
from snngen.config import build_run_config, save_config
from snngen.errors import SnngenError
from snngen.files import save_torch
from snngen.metrics.features import FeatureNet
from snngen.models import DataInfo, build_model
from snngen.runs import CONFIG_FILE, checkpoint_path

#: a stage-1 VQ-VAE (cannot sample) and a DDPM (cannot reconstruct), as small as they build
VQVAE = {"name": "vqvae", "time_steps": 2, "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1,
         "attn_resolutions": [], "z_channels": 8, "embed_dim": 4, "n_embed": 16,
         "num_groups": 4, "disc_ndf": 8, "disc_layers": 1, "disc_start": 1}
DDPM = {"name": "ddpm", "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn": [],
        "diffusion_steps": 8, "sample_steps": 2}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def untrained_run(root: Path, model: dict, **eval_section) -> Path:
    """A run folder of ``model`` with its initial weights (seed 0), mnist5k at 8 px."""
    cfg = build_run_config({"model": model, "data": {"name": "mnist5k", "image_size": 8},
                            "eval": {"batch_size": 8, "n_samples": 8, **eval_section}},
                           check_eval=False)
    info = DataInfo(channels=1, image_size=8)
    torch.manual_seed(0)
    net = build_model(cfg.model, info)
    save_torch({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "snngen": {"model_name": cfg.model.name, "batches_seen": 0, "config": {},
                           "data_info": dataclasses.asdict(info)}}, checkpoint_path(root))
    save_config(cfg, root / CONFIG_FILE)
    return root


class MeanStd(FeatureNet):
    """A cheap feature network ``[B, C, H, W] -> [B, 4]`` (mean, std, two half means)."""

    name = "mean-std"
    num_features = 4
    num_classes = 0

    def forward(self, x):
        x = x.float().mean(1, keepdim=True)
        h = x.shape[-1] // 2
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[..., :h, :].mean((1, 2, 3)),
                            x[..., :, :h].mean((1, 2, 3))], 1)

    def features_and_logits(self, x):
        return self(x), None


@pytest.fixture
def stand_in_features(tmp_path, monkeypatch):
    """Every protocol's feature network becomes :class:`MeanStd`; a private cache."""
    import snngen.metrics.protocols as protocols

    net = MeanStd()
    monkeypatch.setattr(protocols, "protocol_network", lambda *a, **k: net)
    monkeypatch.setattr(protocols, "FEATURE_DIMS", {"classifier": 4, "inception": 4})
    monkeypatch.setenv("SNNGEN_CACHE", str(tmp_path / "cache"))
    return net


def one_line_error(capsys, code: int) -> str:
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def latest(document: dict) -> dict:
    """The documented "latest view": the top level without the file's own keys."""
    return {k: v for k, v in document.items() if k not in ("format", "results")}


def eval_cli(capsys, run: Path, *flags: str) -> dict:
    """``snngen eval RUN FLAGS`` on the CPU; returns the printed result."""
    capsys.readouterr()
    code = main(["eval", str(run), "--device", "cpu", *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


# ----------------------------------------------------------------------------- refusals


def test_sample_and_eval_of_a_stage1_vqvae_are_refused_before_any_work(tmp_path, capsys):
    """Today: ~40 lines of traceback ending in NotImplementedError, exit 1, and eval leaves
    samples/snngen/manifest.json. Now: one line naming the model, exit 2, nothing written."""
    run = untrained_run(tmp_path / "vq", VQVAE)
    before = snapshot(tmp_path)
    err = one_line_error(capsys, main(["sample", str(run)]))
    assert f"{run}: model 'vqvae' cannot sample" in err and "vq_prior" in err
    err = one_line_error(capsys, main(["sample", str(run), "--n", "4", "--out",
                                       str(tmp_path / "s.png")]))
    assert "cannot sample" in err
    err = one_line_error(capsys, main(["eval", str(run), "--metrics", "mse,fid,kid",
                                       "--device", "cpu"]))
    assert "['fid', 'kid'] compare samples" in err and "'vqvae' cannot sample" in err
    assert "keep only mse" in err
    assert snapshot(tmp_path) == before
    with pytest.raises(SnngenError, match="model 'vqvae' cannot sample"):
        snngen.sample(run, 2)
    with pytest.raises(SnngenError, match=r"\['kid'\] compare samples"):
        snngen.evaluate(run, "kid")
    assert snapshot(tmp_path) == before


def test_mse_of_a_diffusion_run_is_refused_and_metrics_json_kept(tmp_path, capsys):
    """Today: exit 0, no mse in the output, metrics.json overwritten (earlier FID lost)."""
    run = untrained_run(tmp_path / "ddpm", DDPM)
    earlier = {"model": "ddpm", "fid": {"name": "fid", "value": 12.5}}
    (run / "metrics.json").write_text(json.dumps(earlier))
    before = snapshot(tmp_path)
    err = one_line_error(capsys, main(["eval", str(run), "--metrics", "mse", "--device",
                                       "cpu"]))
    assert "['mse'] compares reconstructions" in err and "model 'ddpm'" in err
    err = one_line_error(capsys, main(["eval", str(run), "--metrics", "fid,mse", "--out",
                                       str(tmp_path / "x.json")]))
    assert "mse" in err and "'ddpm' has no reconstruction" in err
    with pytest.raises(SnngenError, match=r"\['mse'\] compares reconstructions.*'ddpm'"):
        snngen.evaluate(run, ["mse"])
    assert snapshot(tmp_path) == before


def test_a_config_asking_mse_of_a_diffusion_model_is_refused_before_training(tmp_path,
                                                                            capsys,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(f"model: {json.dumps(DDPM)}\n"
                              "data: {name: mnist5k, image_size: 8, batch_size: 4}\n"
                              "trainer: {max_steps: 1, accelerator: cpu}\n"
                              "eval: {metrics: [mse, kid], n_samples: 8}\n")
    err = one_line_error(capsys, main(["train", "c.yaml"]))
    assert "eval.metrics: ['mse'] compares reconstructions" in err and "'ddpm'" in err
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]


def test_an_unreadable_metrics_json_is_refused_before_sampling(tmp_path, capsys):
    run = untrained_run(tmp_path / "ddpm", DDPM, metrics=["kid"])
    (run / "metrics.json").write_text("{not json")
    before = snapshot(tmp_path)
    err = one_line_error(capsys, main(["eval", str(run), "--device", "cpu"]))
    assert f"{run / 'metrics.json'}: cannot read the earlier results" in err
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- defaults


def test_eval_measures_the_runs_configured_metrics(tmp_path, capsys, stand_in_features):
    """The config asks for precision/recall (as the quick start): ``snngen eval RUN`` measures
    those, not mse,fid,kid."""
    run = untrained_run(tmp_path / "ddpm", DDPM, metrics=["pr"])
    got = eval_cli(capsys, run)
    assert {"precision", "recall"} <= set(got)
    assert not {"mse", "fid", "kid"} & set(got)
    assert got["precision"]["n_fake"] == 8  # the config's eval.n_samples


def test_eval_metrics_null_takes_what_applies_to_the_model(tmp_path):
    from snngen.evaluation import configured_metrics
    from snngen.runs import load_run

    ddpm = load_run(untrained_run(tmp_path / "ddpm", DDPM))
    vq = load_run(untrained_run(tmp_path / "vq", VQVAE))
    assert ddpm.cfg.eval.metrics is None
    assert configured_metrics(ddpm.cfg, ddpm.model) == ["fid", "kid"]
    assert configured_metrics(vq.cfg, vq.model) == ["mse"]
    listed = load_run(untrained_run(tmp_path / "pr", DDPM, metrics=["pr", "kid"]))
    assert configured_metrics(listed.cfg, listed.model) == ["pr", "kid"]


# ----------------------------------------------------------------------------- metrics.json


def test_every_solver_keeps_its_results_and_its_shards(tmp_path, capsys, stand_in_features):
    """Default sampler, then DDIM 2 steps, then DDIM again --fresh: metrics.json keeps both
    keys; the DDIM shards live beside the default ones, which no request (not even --fresh of
    another sampler) touches."""
    run = untrained_run(tmp_path / "ddpm", DDPM, metrics=["kid"])
    first = eval_cli(capsys, run)
    default_dir = run / "samples" / "snngen"
    first_shards = {p.name: p.read_bytes() for p in default_dir.glob("shard_*.npy")}
    assert list(first_shards) == ["shard_00000.npy"]
    stamp = (default_dir / "shard_00000.npy").stat().st_mtime_ns

    second = eval_cli(capsys, run, "--solver", "ddim", "--steps", "2")  # no --fresh needed
    ddim_dir = run / "samples" / "snngen" / "ddim-2"
    assert (ddim_dir / "shard_00000.npy").is_file()
    assert json.loads((ddim_dir / "manifest.json").read_text())["options"] == {
        "solver": "ddim", "steps": 2}
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["format"] == 2 and set(doc["results"]) == {"snngen", "snngen/ddim-2"}
    assert latest(doc) == second  # the top level is the newest evaluation
    kept = doc["results"]["snngen"]["kid"]
    assert {k: kept[k] for k in first["kid"]} == first["kid"]
    assert kept["measured_at"] == first["measured_at"] and ISO_UTC.match(kept["measured_at"])
    assert kept["how"] == {"protocol": "snngen", "protocol_version": 1, "n_samples": 8,
                           "seed": 0, "sample_options": {}, "weights": first["weights"],
                           "provenance": first["provenance"]}
    new = doc["results"]["snngen/ddim-2"]["kid"]
    assert new["value"] == second["kid"]["value"]
    assert new["how"]["sample_options"] == {"solver": "ddim", "steps": 2}

    eval_cli(capsys, run, "--solver", "ddim", "--steps", "2", "--fresh")
    assert {p.name: p.read_bytes() for p in default_dir.glob("shard_*.npy")} == first_shards
    assert (default_dir / "shard_00000.npy").stat().st_mtime_ns == stamp
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["results"]["snngen"]["kid"] == kept  # another key: untouched
    assert set(doc["results"]) == {"snngen", "snngen/ddim-2"}
    ddim_stamp = (ddim_dir / "shard_00000.npy").stat().st_mtime_ns
    eval_cli(capsys, run, "--fresh")  # the default sampler's folder holds ddim-2/: kept
    assert (ddim_dir / "shard_00000.npy").stat().st_mtime_ns == ddim_stamp


def test_mse_and_sample_metrics_of_one_run_accumulate(tmp_path, capsys, stand_in_features):
    """``--metrics mse`` after ``--metrics kid`` keeps the kid (the issue: FID/KID lost)."""
    tiny = {"name": "tiny", "hidden": 8}
    run = untrained_run(tmp_path / "tiny", tiny, metrics=["kid"])
    kid = eval_cli(capsys, run)["kid"]
    mse = eval_cli(capsys, run, "--metrics", "mse", "--n", "6")["mse"]
    doc = json.loads((run / "metrics.json").read_text())
    assert set(doc["results"]) == {"snngen"}
    entries = doc["results"]["snngen"]
    assert entries["kid"]["value"] == kid["value"] and entries["mse"]["value"] == mse["value"]
    assert entries["mse"]["n"] == 6 and entries["kid"]["n_fake"] == 8
    assert "kid" not in latest(doc) and latest(doc)["mse"] == mse


def test_an_older_flat_metrics_json_is_migrated(tmp_path):
    """A file as snngen wrote it before: its metrics become entries under their key, dated by
    the file's modification time."""
    from snngen.results import record_evaluation

    path = tmp_path / "metrics.json"
    old = {"model": "ddpm", "dataset": "mnist5k",
           "protocol": {"name": "sddpm", "version": 1, "n_samples": 64},
           "sample_options": {"solver": "ddim", "steps": 50},
           "fid": {"name": "fid", "value": 31.5, "n_fake": 64}, "seconds": 3.0}
    path.write_text(json.dumps(old))
    os.utime(path, (1_700_000_000, 1_700_000_000))  # 2023-11-14T22:13:20Z
    new = {"model": "ddpm", "dataset": "mnist5k",
           "protocol": {"name": "snngen", "version": 1, "n_samples": 8},
           "kid": {"name": "kid", "value": 0.25}, "seed": 0, "weights": "ab",
           "measured_at": "2030-01-01T00:00:00Z", "seconds": 1.0}
    doc = record_evaluation(new, path)
    assert json.loads(path.read_text()) == doc and latest(doc) == new
    migrated = doc["results"]["sddpm/ddim-50"]["fid"]
    assert migrated["value"] == 31.5 and migrated["measured_at"] == "2023-11-14T22:13:20Z"
    assert migrated["how"]["migrated"] is True
    assert migrated["how"]["sample_options"] == {"solver": "ddim", "steps": 50}
    assert doc["results"]["snngen"]["kid"]["measured_at"] == "2030-01-01T00:00:00Z"
    again = record_evaluation({**new, "kid": {"name": "kid", "value": 0.5}}, path)
    assert again["results"]["sddpm/ddim-50"] == doc["results"]["sddpm/ddim-50"]
    assert again["results"]["snngen"]["kid"]["value"] == 0.5  # same key re-measured: newest


def test_two_evaluations_finishing_together_both_keep_their_results(tmp_path):
    """The read-modify-write waits for the folder's lock: while another process holds it,
    nothing is written; once released, the waiting write lands on top of the other's."""
    fcntl = pytest.importorskip("fcntl")
    from snngen.results import record_evaluation

    path = tmp_path / "metrics.json"
    fid = {"protocol": {"name": "snngen"}, "fid": {"name": "fid", "value": 1.0}}
    kid = {"protocol": {"name": "snngen"}, "kid": {"name": "kid", "value": 2.0}}
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the other evaluation, in the middle of its write
    writer = threading.Thread(target=record_evaluation, args=(fid, path))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and not path.exists()  # waiting for the lock
    other = {"format": 2, **kid, "results": {"snngen": {"kid": {"value": 2.0}}}}
    path.write_text(json.dumps(other))
    os.close(fd)  # released
    writer.join(10)
    doc = json.loads(path.read_text())
    assert doc["results"]["snngen"]["kid"] == {"value": 2.0}
    assert doc["results"]["snngen"]["fid"]["value"] == 1.0 and latest(doc)["fid"] == fid["fid"]


@pytest.mark.parametrize(("options", "metric", "key"), [
    ({}, "fid", "snngen"),
    ({"solver": "dpm-solver", "steps": 20}, "fid", "snngen/dpm-solver-20"),
    ({"steps": 20, "solver": "ddim"}, "kid", "snngen/ddim-20"),
    ({"steps": 5}, "fid", "snngen/steps-5"),
    ({"top_k": 10, "temperature": 0.5}, "is", "snngen/temperature-0.5-top_k-10"),
    ({"solver": "ddim", "steps": 50}, "mse", "snngen"),  # reconstruction: no sampler
])
def test_result_keys(options, metric, key):
    from snngen.results import result_key

    assert result_key("snngen", options, metric) == key


def test_a_metrics_file_that_is_not_an_object_is_refused(tmp_path):
    from snngen.results import read_metrics_file

    path = tmp_path / "m.json"
    path.write_text("[1, 2]")
    with pytest.raises(SnngenError, match="not a snngen metrics file"):
        read_metrics_file(path)
    assert read_metrics_file(tmp_path / "absent.json") is None


# ----------------------------------------------------------------------------- snngen sample


def test_sample_without_out_keeps_trainings_samples_png(tmp_path, capsys):
    """Today ``snngen sample RUN`` overwrites RUN/samples.png; now it writes a grid named by
    the request under RUN/samples/ and prints where."""
    run = untrained_run(tmp_path / "ddpm", DDPM)
    (run / "samples.png").write_bytes(b"training's grid")
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "4", "--solver", "ddim", "--steps", "2"]) == 0
    assert (run / "samples.png").read_bytes() == b"training's grid"
    expected = run / "samples" / "sample-ddim-2-n4-seed0.png"
    assert capsys.readouterr().out.split() == [str(expected)]
    assert expected.stat().st_size > 0
    assert main(["sample", str(run), "--n", "3", "--seed", "1"]) == 0
    assert (run / "samples" / "sample-default-n3-seed1.png").is_file()
    assert (run / "samples.png").read_bytes() == b"training's grid"
