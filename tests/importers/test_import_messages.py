"""``snngen import`` names what is wrong with the user's file in the file's own terms.

* A weight the original file lacks is named by its key in the ORIGINAL's state dict
  (``encoder.0.bn.running_var``), not by snngen's (``encoder.1.running_var``): checked for every
  key of the golden fixtures' state dicts, which the original code itself wrote.
* Random bytes are "not a torch checkpoint"; a hostile pickle is refused with no torch warning
  shown first; a dict without tensors says so; a truncated checkpoint's message is one whole
  sentence at any cut.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
from fs_helpers import assert_one_line_exit2, snapshot, write_malicious_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
from golden import load_fixture  # noqa: E402

from snngen.cli import main  # noqa: E402
from snngen.config import build_run_config  # noqa: E402
from snngen.files import CheckpointError, load_checkpoint  # noqa: E402
from snngen.importers import ImportMismatch, find_weights, load_original  # noqa: E402
from snngen.models import DataInfo, build_model  # noqa: E402
from snngen.models.vqvae import VQVAE, VQVAEConfig  # noqa: E402


def _sae(fx: dict):
    h = fx["hyper"]
    cfg = build_run_config({"model": {
        "name": "sae", "channels": list(fx["widths"]), "latent_dim": h["latent_dim"],
        "num_steps": h["num_steps"], "beta": h["beta"], "v_threshold": float(h["thresh"])}})
    return build_model(cfg.model, DataInfo(channels=1, image_size=32)).double()


def _fsvae(fx: dict, name: str = "fsvae"):
    c = fx["config"]
    spec = {"name": name, "channels": c["widths"], "latent_dim": c["latent_dim"]}
    if name == "fsvae":
        spec.update(k=c["k"], num_steps=c["n_steps"])
    cfg = build_run_config({"model": spec})
    info = DataInfo(channels=c["in_channels"], image_size=c["image_size"])
    dtype = next(v.dtype for v in fx["state_dict"].values() if v.is_floating_point())
    return build_model(cfg.model, info).to(dtype)


def _vqvae(fx: dict):
    c = fx["config"]
    dd, disc = c["ddconfig"], c["disc"]
    cfg = VQVAEConfig(
        time_steps=c["time_steps"], n_embed=c["n_embed"], embed_dim=c["embed_dim"],
        ch=dd["ch"], ch_mult=dd["ch_mult"], num_res_blocks=dd["num_res_blocks"],
        attn_resolutions=dd["attn_resolutions"], z_channels=dd["z_channels"],
        dropout=dd["dropout"], num_groups=32, disc_layers=disc["disc_num_layers"],
        disc_ndf=disc["disc_ndf"], perceptual_weight=disc["perceptual_weight"])
    return VQVAE(cfg, DataInfo(dd["in_channels"], dd["resolution"]))


# family, fixture, model builder, original keys the importer drops by design (module docs)
CASES = {
    "sae": ("sae", "sae_tutorial_float64", _sae,
            r"\.(beta|threshold|graded_spikes_factor|reset_mechanism_val)$"),
    "fsvae": ("fsvae", "fsvae_small", _fsvae,
              r"^(posterior\.initial_input|prior\.initial_input|membrane_output_layer\.coef)$"),
    "ann-vae": ("ann-vae", "ann_vae", lambda fx: _fsvae(fx, "ann_vae"), r"^$"),
    "tts-vqvae": ("tts-vqvae", "vqvae_static_temporal", _vqvae,
                  r"\.(lif\d|q_lif|k_lif)\.(threshold|act_fun\.alpha)$|^loss\.perceptual_loss\."),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    family, name, build, dropped = CASES[request.param]
    fx = load_fixture(name)
    original = {k: v for k, v in fx["state_dict"].items()}
    model = build(fx)
    load_original(model, original, family)  # the whole file imports
    return family, original, model, re.compile(dropped)


def test_every_missing_weight_is_named_as_the_original_names_it(case):
    """Delete each key of the original's state dict in turn: the one line names that key."""
    family, original, model, dropped = case
    named = 0
    for key in original:
        broken = {k: v for k, v in original.items() if k != key}
        if dropped.search(key):
            load_original(model, broken, family)  # not a weight of snngen's model: not needed
            continue
        with pytest.raises(ImportMismatch) as err:
            load_original(model, broken, family)
        assert f"missing weight {key!r}" in str(err.value), (key, str(err.value))
        named += 1
    # the weights of each file (the rest are neuron constants, buffers snngen computes, and
    # LPIPS weights of a model without a perceptual term): a dropped-key pattern too wide
    # would silently skip them
    assert named == {"sae": 41, "fsvae": 114, "ann-vae": 64, "tts-vqvae": 167}[family]


def test_a_misshaped_weight_is_named_as_the_original_names_it(case):
    family, original, model, dropped = case
    for key in [k for k in original if not dropped.search(k)][::7]:
        broken = {**original, key: torch.zeros(*original[key].shape, 2)}
        with pytest.raises(ImportMismatch, match=re.escape(f"weight {key!r}")):
            load_original(model, broken, family)


def _lpips_name(snngen_key: str) -> str:
    """The name a tts_vqvae checkpoint gives an LPIPS weight, worked out from the lpips package
    (``pretrained_networks.vgg16``: slice1 = features[0:4], slice2 = [4:9], slice3 = [9:16],
    slice4 = [16:23], slice5 = [23:30]; ``NetLinLayer.model = Sequential(Dropout, Conv2d)``;
    ``ScalingLayer`` buffers ``shift`` / ``scale``), under the original's
    ``loss.perceptual_loss``."""
    parts = snngen_key.split(".")
    if parts[1] == "features":
        n = int(parts[2])
        k = 1 if n < 4 else 2 if n < 9 else 3 if n < 16 else 4 if n < 23 else 5
        return f"loss.perceptual_loss.net.slice{k}.{n}.{parts[3]}"
    if parts[1] == "lins":
        return f"loss.perceptual_loss.lin{parts[2]}.model.1.weight"
    return f"loss.perceptual_loss.scaling_layer.{parts[1]}"


def test_missing_lpips_weight_is_named_as_the_original_names_it():
    """A stage-1 model with a perceptual term takes the original's LPIPS weights: each one
    missing is named by its key in the original's checkpoint."""
    from snngen.models.discriminator import LPIPS

    fx = load_fixture("vqvae_static_temporal")
    model = _vqvae(fx)
    model.perceptual = LPIPS()  # untrained: only its keys and shapes matter here
    lpips = {_lpips_name(k): v for k, v in model.state_dict().items()
             if k.startswith("perceptual.")}
    original = {**fx["state_dict"], **lpips}
    load_original(model, original, "tts-vqvae")
    assert len(lpips) == 33  # 13 convs x (weight, bias), 5 heads, shift, scale
    for key in lpips:
        broken = {k: v for k, v in original.items() if k != key}
        with pytest.raises(ImportMismatch, match=re.escape(f"missing weight {key!r}")):
            load_original(model, broken, "tts-vqvae")


def test_an_extra_weight_is_named_as_the_file_names_it():
    """An FSVAE file with a fifth encoder level for a four-level config names its own key."""
    fx = load_fixture("fsvae_small")
    extra = {**fx["state_dict"], "encoder.4.weight": torch.zeros(1)}
    with pytest.raises(ImportMismatch, match=r"weight 'encoder\.4\.weight' \(snngen "
                                             r"'encoder\.12\.weight'\) has no place"):
        load_original(_fsvae(fx), extra, "fsvae")


@pytest.fixture(scope="module")
def fsvae_files(tmp_path_factory):
    """The golden FSVAE's original state dict as a file, and a config of its model."""
    folder = tmp_path_factory.mktemp("fsvae")
    fx = load_fixture("fsvae_small")
    c = fx["config"]
    (folder / "fs.yaml").write_text(
        f"model: {{name: fsvae, channels: {c['widths']}, latent_dim: {c['latent_dim']}, "
        f"k: {c['k']}, num_steps: {c['n_steps']}}}\n"
        f"data: {{name: mnist5k, image_size: {c['image_size']}}}\n")
    return folder, dict(fx["state_dict"])


def _refused(tmp_path, config, file, capsys, *fragments) -> str:
    before = snapshot(tmp_path)
    code = main(["import", "fsvae", str(file), "--config", str(config),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert_one_line_exit2(code, err, *fragments)
    assert snapshot(tmp_path) == before
    return err.strip()


def test_cli_names_the_originals_missing_key(fsvae_files, tmp_path, capsys):
    folder, sd = fsvae_files
    del sd["encoder.0.bn.running_var"]
    torch.save(sd, tmp_path / "best.pth")
    _refused(tmp_path, folder / "fs.yaml", tmp_path / "best.pth", capsys,
             "missing weight 'encoder.0.bn.running_var'")


def test_random_bytes_are_not_a_torch_checkpoint(fsvae_files, tmp_path, capsys):
    (tmp_path / "best.pth").write_bytes(bytes(range(256)) * 20)
    line = _refused(tmp_path, fsvae_files[0] / "fs.yaml", tmp_path / "best.pth", capsys,
                    "not a torch checkpoint")
    assert "run code" not in line


def _zip_of_text(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not weights")


NOT_CHECKPOINTS = {  # what the file is: how it is written, the reason the line gives
    "random bytes": (lambda p: p.write_bytes(bytes(range(7, 256)) * 9),
                     "it is not a torch checkpoint: neither the zip archive torch.save writes "
                     "nor its older pickle format"),
    "text": (lambda p: p.write_text("model: sae\n" * 20), "it is not a torch checkpoint: "
             "neither"),
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "zip of text": (_zip_of_text, "it is not a torch checkpoint: a zip archive without the "
                    "data.pkl that torch.save writes"),
    "pickle of data": (lambda p: p.write_bytes(pickle.dumps({"w": [1.0, 2.0]})),
                       "it is not a torch checkpoint: a Python pickle that torch.save did not "
                       "write"),
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_what_a_file_that_is_no_checkpoint_is(kind, tmp_path):
    write, reason = NOT_CHECKPOINTS[kind]
    path = tmp_path / "best.pth"
    write(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path} is not a valid checkpoint ({reason}")
    assert "run code" not in str(err.value)


@pytest.mark.parametrize("content, fragment", [
    ({"epoch": 3, "note": "x"}, "holds no tensors at all, so no weights (its keys: 'epoch', "
                                "'note')"),
    ({}, "holds an empty dict, no weights"),
    ({"net": {"w": [torch.zeros(1)]}}, "no weights found under 'state_dict' or 'model'"),
], ids=["no_tensors", "empty", "tensors_elsewhere"])
def test_a_dict_without_weights_says_so(content, fragment, fsvae_files, tmp_path, capsys):
    torch.save(content, tmp_path / "best.pth")
    line = _refused(tmp_path, fsvae_files[0] / "fs.yaml", tmp_path / "best.pth", capsys,
                    fragment)
    assert "keys ," not in line


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["plain pickle", "torch", "legacy"])
def test_hostile_pickle_refused_without_a_torch_warning(fmt, fsvae_files, tmp_path, capsys):
    """A plain ``pickle.dumps`` payload (protocol 4+) made torch warn "Detected pickle
    protocol" before snngen's refusal; no warning reaches the user now, and nothing runs."""
    marker, bad = tmp_path / "PWNED", tmp_path / "best.pth"
    if fmt == "plain pickle":
        bad.write_bytes(pickle.dumps({"state_dict": _Exploit(marker)}))
    else:
        write_malicious_checkpoint(bad, marker, fmt)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        line = _refused(tmp_path, fsvae_files[0] / "fs.yaml", bad, capsys,
                        "asks to run code", "system")
    assert [str(w.message) for w in shown] == [] and "Warning" not in line
    assert not marker.exists()


REASON = re.compile(r"^(?P<file>.+) is not a valid checkpoint \((?P<why>.+)\)$")
WHOLE = re.compile(r"^(the file is empty"
                   r"|it is truncated: a torch zip archive without its closing directory"
                   r"|it is truncated: \d+ bytes of torch's older format"
                   r"|it is truncated or damaged: it names '[^']*', which does not exist"
                   r"|it is damaged: torch says (?P<q>['\"]).{1,120}(?P=q))$")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_truncated_checkpoint_message_is_whole_at_every_cut(fmt, tmp_path):
    """Cut a real checkpoint at 40 places: each message is one whole sentence (torch's own
    text, where quoted, is cut inside its quotes with an ellipsis), never "asks to run code"."""
    fx = load_fixture("fsvae_small")
    full = tmp_path / "full.pt"
    torch.save(fx["state_dict"], full, _use_new_zipfile_serialization=fmt == "zip")
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    for n in range(0, len(data), len(data) // 40):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(cut)
        line = str(err.value)
        assert "\n" not in line and len(line) < 200 + len(str(cut)), line
        m = REASON.match(line)
        assert m and m["file"] == str(cut) and WHOLE.match(m["why"]), (n, line)
        if fmt == "zip" and n > 0:
            assert "truncated" in m["why"], (n, line)


def test_find_weights_lists_only_keys_it_looked_for():
    with pytest.raises(ImportMismatch) as err:
        find_weights({"a": [torch.zeros(1)]}, ())
    assert "under 'state_dict' or 'model'" in str(err.value)
    assert " , " not in str(err.value) and "keys ," not in str(err.value)
