"""The leaderboard: one budget and one protocol per table, resumable jobs, pictures, the budget
split of every row. (The whole board end to end: tests/test_board_quick.py, slow marker.)"""

import copy
import json
import struct
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from snngen.board import BoardSettings, plan_jobs, stage_budget, train_overrides
from snngen.board import measure as board_measure
from snngen.board.entries import ENTRIES, SNAPSHOTS, entry, training_stages
from snngen.board.report import check_rows, markdown_table, write_board
from snngen.board.settings import Board
from snngen.errors import SnngenError

SETTINGS = BoardSettings(budget_minutes=5.0)


def row(key, fid, *, spiking=True, settings=SETTINGS, protocol=None, **extra):
    rec = {
        "row": key, "label": key.upper(), "family": "x", "spiking": spiking,
        "budget_minutes": settings.budget_minutes, "settings": settings.record(),
        "protocol": protocol or {"name": "leaderboard", "version": 1, "n_samples": 5000,
                                 "reference_split": "train", "reference": {"n": 4500}},
        "training": {"cpu_minutes": 5.0, "stages": [{"stage": key, "steps": 100}]},
        "sampler": None, "fid": fid, "kid": 0.5, "kid_std": 0.01, "precision": 0.5,
        "recall": 0.4, "sample_cpu_ms": 1.0, "notes": "",
        "cost": {"sops": 1e6, "macs": 2e5, "energy_uj": 1.82, "firing_rate": 0.1},
        "curve": [{"cpu_minutes": 1.25, "fid": fid * 2}, {"cpu_minutes": 5.0, "fid": fid}],
    }
    rec.update(extra)
    return rec


def test_rows_of_one_budget_and_protocol_make_a_table_ranked_by_fid():
    rows = [row("a", 50.0), row("b", 20.0, sampler={"solver": "ddim", "steps": 10}),
            row("c", 80.0, spiking=False)]
    check_rows(rows)
    table = markdown_table(rows)
    body = [ln for ln in table.splitlines() if ln.startswith("| ") and "FID ↓" not in ln]
    assert [ln.split(" | ")[1] for ln in body] == ["B", "A", "C"]  # rank order
    assert body[0].startswith("| 1 | B | yes | 20.0 |") and "ddim 10" in body[0]
    assert "| C | no | 80.0 |" in body[2]
    assert "**5 CPU-minutes**" in table and "**`leaderboard` v1**" in table


@pytest.mark.parametrize("change, what", [
    ({"budget_minutes": 10.0, "settings": BoardSettings(budget_minutes=10.0).record()},
     "another budget"),
    ({"settings": BoardSettings(budget_minutes=5.0, n_samples=1000).record()},
     "another settings"),
    ({"protocol": {"name": "snngen", "version": 1}}, "another protocol"),
    ({"inception_fid": 99.0, "inception_protocol": {"name": "snngen"}}, "Inception FID"),
])
def test_a_table_refuses_to_mix_budgets_settings_or_protocols(change, what):
    rows = [row("a", 50.0), row("b", 20.0)]
    rows[1].update(change)
    with pytest.raises(SnngenError, match=what):
        check_rows(rows)
    with pytest.raises(SnngenError, match=what):
        markdown_table(rows)


def test_a_board_folder_refuses_other_settings(tmp_path):
    Board(tmp_path / "b", SETTINGS).open()
    Board(tmp_path / "b", SETTINGS).open()  # the same settings: resumes
    with pytest.raises(SnngenError, match="budget_minutes differ.*never mixes budgets"):
        Board(tmp_path / "b", BoardSettings(budget_minutes=6.0)).open()


@pytest.mark.parametrize("budget", [0, -1.0, float("nan"), float("inf"), True, "5"])
def test_bad_budgets_are_refused(budget):
    with pytest.raises(SnngenError, match="--budget-minutes: must be a number > 0"):
        BoardSettings(budget_minutes=budget)


def test_every_row_gets_the_same_budget_split_as_documented():
    stages = {s.key: s for s in training_stages()}
    b = SETTINGS
    shares = {k: stage_budget(b, s) for k, s in stages.items()}
    assert shares["sae"] == shares["fsvae"] == shares["sddpm"] == shares["ddpm"] == 5.0
    assert shares["vqvae_temporal"] + shares["vq_prior_temporal"] == pytest.approx(5.0)
    assert shares["vqvae_temporal"] == pytest.approx(3.0)
    # SDM: the SDDPM snapshot at 3/4 of its budget, then TSM for the last quarter
    sdm = entry("sdm").final_stage
    assert sdm.from_snapshot == f"cpu_3_of_{SNAPSHOTS}.ckpt" and sdm.after == ("sddpm",)
    assert sdm.start_share + sdm.share == pytest.approx(1.0) and shares["sdm_tsm"] == 1.25
    for e in ENTRIES:  # every row's stages add up to one budget
        last = e.final_stage
        assert last.start_share + last.share == pytest.approx(1.0), e.key


def test_train_overrides_set_budget_snapshots_and_parents(tmp_path):
    board = Board(tmp_path, SETTINGS)
    o = train_overrides(board, entry("sdm").final_stage)
    assert "trainer.max_cpu_minutes=1.25" in o and f"trainer.cpu_snapshots={SNAPSHOTS}" in o
    assert "trainer.max_steps=null" in o and "trainer.max_epochs=null" in o
    runs = tmp_path.resolve() / "runs"
    assert f"model.init_from={runs}/sddpm/checkpoints/cpu_3_of_4.ckpt" in o
    o = train_overrides(board, entry("vq_vanilla").final_stage)
    assert f"model.stage1_run={runs}/vqvae_vanilla" in o
    assert "trainer.max_cpu_minutes=2.0" in o
    assert "data.options.fit=resize" in train_overrides(board, entry("sae").final_stage)


def fake_meta(done: dict[str, float]):
    def meta(run_dir, name="last.ckpt"):
        return {"cpu_seconds": done[run_dir.name], "batches_seen": 1}
    return meta


def make_ckpts(board, keys):
    for k in keys:
        (board.run_dir(k) / "checkpoints").mkdir(parents=True)
        (board.run_dir(k) / "checkpoints" / "last.ckpt").write_bytes(b"")


def test_resume_trains_only_what_is_unfinished_and_remeasures_its_rows(tmp_path, monkeypatch):
    board = Board(tmp_path, SETTINGS)
    board.open()
    make_ckpts(board, ["sddpm", "ddpm"])
    # sddpm reached its 300 CPU-s, ddpm stopped at 100 s; sdm_tsm never started
    monkeypatch.setattr(board_measure, "checkpoint_meta", fake_meta({"sddpm": 300.0,
                                                                     "ddpm": 100.0}))
    for k in ("sddpm", "ddpm", "sdm"):
        board.row_file(k).write_text("{}")
    rows = [entry("sddpm"), entry("sdm"), entry("ddpm"), entry("ddpm_converted")]
    jobs = {j.name: j for j in plan_jobs(board, rows)}
    assert set(jobs) == {"train:ddpm", "train:sdm_tsm", "measure:sdm", "measure:ddpm",
                         "measure:ddpm_converted"}
    assert "--resume" in jobs["train:ddpm"].argv
    assert str(board.run_dir("ddpm")) == jobs["train:ddpm"].argv[-1]
    assert "--resume" not in jobs["train:sdm_tsm"].argv
    assert jobs["train:sdm_tsm"].after == ()  # its parent is finished
    assert jobs["measure:ddpm_converted"].after == ("train:ddpm",)
    assert not board.row_file("ddpm").exists()  # stale: its stage trains again
    assert board.row_file("sddpm").exists()  # measured and unchanged: kept


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_write_board_writes_doc_json_and_three_small_pictures(tmp_path):
    board = Board(tmp_path / "board", SETTINGS)
    board.open()
    entries = [entry("sae"), entry("sddpm")]
    for e, fid in zip(entries, (120.0, 30.0), strict=True):
        board.row_file(e.key).write_text(json.dumps(row(e.key, fid)))
        np.save(board.row_samples(e.key), np.random.default_rng(0).random((8, 1, 16, 16),
                                                                          dtype=np.float32))
    doc = tmp_path / "docs" / "leaderboard.md"
    rec = write_board(board, entries, wall_seconds=125.0, doc=doc, img_dir=tmp_path / "docs" /
                      "img", echo=lambda s: None)
    assert [r["row"] for r in rec["rows"]] == ["sddpm", "sae"]
    text = doc.read_text()
    assert "snngen leaderboard --budget-minutes 5" in text and "![samples](img/" in text
    assert json.loads(doc.with_suffix(".json").read_text())["wall_seconds"] == 125.0
    for name in ("leaderboard_samples.png", "fid_vs_budget.png", "fid_vs_energy.png"):
        path = tmp_path / "docs" / "img" / name
        w, h = png_size(path)
        assert path.stat().st_size < 300_000 and w > 600 and h > 120
    # the hand-written analysis below the marker survives a rewrite
    from snngen.board.report import ANALYSIS_MARKER

    doc.write_text(text + "\n" + ANALYSIS_MARKER + "\nSDM is slow here because ...\n")
    write_board(board, entries, wall_seconds=0.0, doc=doc, img_dir=None, echo=lambda s: None)
    assert doc.read_text().endswith(ANALYSIS_MARKER + "\nSDM is slow here because ...\n")
    assert doc.read_text().count(ANALYSIS_MARKER) == 1
    # a second run of the same board adds its wall time
    rec = write_board(board, entries, wall_seconds=5.0, doc=None, img_dir=None,
                      echo=lambda s: None)
    assert rec["wall_seconds"] == 130.0  # 125 + 0 + 5


def test_write_board_refuses_a_row_of_another_budget(tmp_path):
    board = Board(tmp_path / "board", SETTINGS)
    board.open()
    other = copy.deepcopy(row("sddpm", 30.0))
    other["budget_minutes"] = 7.0
    board.row_file("sae").write_text(json.dumps(row("sae", 120.0)))
    board.row_file("sddpm").write_text(json.dumps(other))
    with pytest.raises(SnngenError, match="another budget"):
        write_board(board, [entry("sae"), entry("sddpm")], wall_seconds=1.0, doc=None,
                    img_dir=None, echo=lambda s: None)


def test_every_plan_of_a_row_reads_the_leaderboard_reference(monkeypatch):
    """The board asks the protocol which images its reference reads (the digits as published,
    with the run's root), for every plan, the Inception one included: a row's config that pads
    or resizes changes nothing."""
    import snngen.metrics.measure as measure
    import snngen.metrics.protocols as protocols
    import snngen.metrics.reference as reference
    from snngen.config import load_config

    asked = []
    monkeypatch.setattr(measure, "prepare_measurement",
                        lambda plan, source, **_: asked.append((plan.protocol.name, source)))
    config = Path(__file__).resolve().parents[1] / "configs" / "fsvae_mnist5k.yaml"
    for overrides in ([], list(entry("fsvae").final_stage.overrides)):  # pads; resizes
        cfg = load_config(config, [*overrides, "data.root=/data/here"])
        assert cfg.data.options and cfg.data.image_size == 32
        asked.clear()
        ready = board_measure.plans(cfg, SETTINGS)
        assert set(ready) == {"full", "sweep", "curve", "inception"}
        want = reference.DataSource("mnist5k", "/data/here")
        assert want == reference.reference_source(protocols.get_protocol("leaderboard"),
                                                  cfg.data)
        assert asked == [("leaderboard", want)] * 3 + [("snngen", want)]


def test_a_row_reads_each_checkpoint_once(tmp_path, monkeypatch):
    """SDM's row: its parent's snapshot, its own last checkpoint and snapshots are each read
    once (metadata and weights together), and its CPU minutes add up as before."""
    import snngen.metrics.measure as measure

    board = Board(tmp_path, SETTINGS)
    board.open()
    cpu = {("sddpm", "cpu_3_of_4.ckpt"): 225.0, ("sdm_tsm", "last.ckpt"): 75.0,
           ("sdm_tsm", "cpu_1_of_4.ckpt"): 21.0, ("sdm_tsm", "cpu_2_of_4.ckpt"): 39.0}
    ckpts = board.run_dir("sdm_tsm") / "checkpoints"
    ckpts.mkdir(parents=True)
    for name in ("last.ckpt", "cpu_1_of_4.ckpt", "cpu_2_of_4.ckpt"):  # no 3 of 4: ended early
        (ckpts / name).write_bytes(b"")
    reads = Counter()

    def meta(key, name):
        return {"cpu_seconds": cpu[(key, name)], "batches_seen": 7}

    def checkpoint_meta(run_dir, name="last.ckpt"):
        reads[(run_dir.name, name)] += 1
        return meta(run_dir.name, name)

    def open_model(board_, e_, checkpoint=None):  # load_run: weights and metadata at once
        key, name = e_.final_stage.key, checkpoint or "last.ckpt"
        reads[(key, name)] += 1
        return SimpleNamespace(can_reconstruct=False), SimpleNamespace(cfg=None,
                                                                       meta=meta(key, name)), None

    score = SimpleNamespace(value=1.0, std=0.1)
    monkeypatch.setattr(board_measure, "checkpoint_meta", checkpoint_meta)
    monkeypatch.setattr(board_measure, "open_model", open_model)
    monkeypatch.setattr(board_measure, "plans", lambda cfg, settings: {
        k: SimpleNamespace(record={"name": k}) for k in ("full", "sweep", "curve", "inception")})
    monkeypatch.setattr(board_measure, "choose_sampler",
                        lambda *a: ({"solver": "ddim", "steps": 10}, []))
    monkeypatch.setattr(board_measure, "draw", lambda model, n, *a: (torch.zeros(n, 1, 4, 4), 1))
    monkeypatch.setattr(board_measure, "fid_only", lambda *a: 2.0)
    monkeypatch.setattr(board_measure, "sample_cost", lambda *a: {})
    monkeypatch.setattr(board_measure, "row_floor", lambda board_, cfg, size, ready: {
        "output_px": size, "resolution_floor_fid": 1.0 if ready.record["name"] == "curve" else 0})
    monkeypatch.setattr(measure, "measure", lambda *a, **k: {
        m: score for m in ("fid", "kid", "precision", "recall")})
    rec = board_measure.measure_row(board, "sdm")
    assert set(reads) == set(cpu) and set(reads.values()) == {1}, reads
    assert rec["training"] == {"cpu_minutes": 5.0, "stages": [
        {"stage": "sddpm", "checkpoint": "cpu_3_of_4.ckpt", "cpu_seconds": 225.0, "steps": 7},
        {"stage": "sdm_tsm", "cpu_seconds": 75.0, "steps": 7}]}
    assert rec["curve"] == [{"cpu_minutes": 4.1, "fid": 2.0}, {"cpu_minutes": 4.4, "fid": 2.0},
                            {"cpu_minutes": 5.0, "fid": 2.0}]
    assert json.loads(board.row_file("sdm").read_text())["training"] == rec["training"]
    # the floor at the samples' size (4 px here), on the board's FID measurement
    assert (rec["output_px"], rec["resolution_floor_fid"]) == (4, 1.0)


def test_a_row_is_measured_right_after_the_training_it_needs(tmp_path):
    """The runner starts the first ready job in list order, so the order is the schedule: with
    every stage untrained, each row's measurement comes straight after its own training, not
    after every training of the board (the converted DDPM's measurement, the longest job, starts
    as soon as the DDPM is trained)."""
    board = Board(tmp_path, SETTINGS)
    board.open()
    rows = [entry("ddpm"), entry("ddpm_converted"), entry("sddpm"), entry("sdm"),
            entry("fsvae")]
    names = [j.name for j in plan_jobs(board, rows)]
    assert names == ["train:ddpm", "measure:ddpm", "measure:ddpm_converted", "train:sddpm",
                     "measure:sddpm", "train:sdm_tsm", "measure:sdm", "train:fsvae",
                     "measure:fsvae"]


@pytest.mark.parametrize("n", [1, -1, 5001, True, 2.5])
def test_inception_samples_outside_0_or_2_to_n_samples_are_refused(n):
    with pytest.raises(SnngenError, match=r"--inception-samples: .* got"):
        BoardSettings(inception_n=n)


def test_the_reproduce_command_names_inception_samples_and_a_subset_of_rows(tmp_path):
    from snngen.board.report import command_text

    full = Board(tmp_path, BoardSettings(budget_minutes=20.0))
    assert command_text(full, list(ENTRIES)) == "snngen leaderboard --budget-minutes 20"
    lean = Board(tmp_path, BoardSettings(budget_minutes=20.0, inception_n=0))
    assert command_text(lean, [entry("sddpm"), entry("fsvae")]) == (
        "snngen leaderboard --budget-minutes 20 --inception-samples 0 --rows sddpm,fsvae")
    assert command_text(lean, list(reversed(ENTRIES))) == (
        "snngen leaderboard --budget-minutes 20 --inception-samples 0")


def test_the_command_line_passes_inception_samples_to_the_board(monkeypatch):
    import snngen.board as board_mod
    from snngen.cli import main

    seen = {}
    monkeypatch.setattr(board_mod, "run_leaderboard",
                        lambda *a, **kw: seen.update(kw, budget=a[0]))
    assert main(["leaderboard", "--budget-minutes", "20", "--inception-samples", "0",
                 "--rows", "fsvae,ddpm"]) == 0
    assert seen["inception_samples"] == 0 and seen["budget"] == 20.0
    assert seen["rows"] == ["fsvae", "ddpm"]


def test_a_page_of_some_rows_says_how_many_and_the_budget(tmp_path):
    from snngen.board.report import markdown_doc

    def record(keys):
        return {"date": "2026-12-07", "machine": "m", "wall_seconds": 60.0,
                "invocations_wall_seconds": [60.0], "command": "snngen leaderboard",
                "settings": BoardSettings(budget_minutes=20.0).record(),
                "rows": [row(k, 10.0 + i, settings=BoardSettings(budget_minutes=20.0))
                         for i, k in enumerate(keys)]}

    some = markdown_doc(record(["fsvae", "ddpm"]), {}, None)
    assert some.splitlines()[0] == "# Leaderboard: 2 snngen models at 20 CPU-minutes"
    every = markdown_doc(record([e.key for e in ENTRIES]), {}, None)
    assert every.splitlines()[0] == "# Leaderboard: every snngen model at 20 CPU-minutes"
