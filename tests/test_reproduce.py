"""`core.reproduce` end to end on the smoke budget with the phantom: files, choice by validation, resume."""

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import core.data
import core.stage_setup
import core.train
from core import checkpoints, ood
import core.reproduce
import core.results
from core import shipping
from core.data import data_fingerprint, load_dataset
from core.recipe import Stage
from core.reproduce import ALPHAS, BUDGETS, SEEDS, TEMPERATURES, fixed_kd, kept_stage, recipe, reproduce
from core.results_record import ShippedResults
from core.shipping import ShippingRefused

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke reproduction of the phantom, recording every split the training stages asked for; its finished
    stages are kept in ``runs/kept`` as on a machine whose run folder does not last."""
    runs, out = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("checkpoints")
    splits = []
    real_load = core.data.load_dataset

    def spying_load(name, split, *args, **kwargs):
        splits.append(split)
        return real_load(name, split, *args, **kwargs)

    core.stage_setup._split.cache_clear()  # splits decoded by earlier tests of this process would hide the reads
    core.stage_setup.load_dataset = spying_load
    try:
        result = reproduce("phantom", BUDGETS["smoke"], runs, out, threads=1, timing=False, kept=runs / "kept")
    finally:
        core.stage_setup.load_dataset = real_load
    return runs, out, result, splits


def test_writes_checkpoints_metadata_and_results(smoke_run):
    runs, out, result, _ = smoke_run
    folder = out / "phantom"
    for role in ("teacher", "student", "student_label_only"):
        model, meta = checkpoints.load(folder / f"{role}.pt")
        assert meta.dataset == "phantom" and meta.weights_dtype == "float16" and meta.input_size == 32
        assert "test" in meta.metrics and 0 <= meta.metrics["test"]["accuracy"] <= 1
        assert "root" not in meta.train and "teacher_logits" not in meta.train
    written = json.loads((folder / "results.json").read_text())
    assert written["version"] == 1 and written["chosen"] == {"alpha": result.chosen.alpha,
                                                             "temperature": result.chosen.temperature}
    as_json = json.loads(json.dumps(result.to_json()))  # what the returned record writes
    assert json.loads(json.dumps(ShippedResults.read(folder / "results.json").to_json())) == as_json == written
    assert set(written["test"]["models"]) == {"teacher"} | {f"{arm}_s{s}" for arm in ("student", "label_only",
                                                                                      "smoothing") for s in SEEDS}
    for arm in ("label_only", "smoothing"):
        diff = written["paired"][f"student_minus_{arm}"]["accuracy"]
        per_seed = [written["test"]["models"][f"student_s{s}"]["accuracy"]
                    - written["test"]["models"][f"{arm}_s{s}"]["accuracy"] for s in SEEDS]
        assert diff["differences"] == pytest.approx(per_seed) and diff["n"] == len(SEEDS)
        assert diff["ci"][0] <= diff["mean"] <= diff["ci"][1] and 0 <= diff["p_value"] <= 1
    assert len(written["test_fingerprint"]) == 64 and written["teacher_sha256"] == checkpoints.file_sha256(
        folder / "teacher.pt")
    student = checkpoints.load_meta(folder / "student.pt")
    kept = runs / "kept" / "phantom" / "official"  # the students learnt from the kept (float16) teacher
    assert student.train["teacher_sha256"] == checkpoints.file_sha256(kept / "teacher.pt")
    assert len(written["grid"]) == len(ALPHAS) * len(TEMPERATURES)
    assert written["summary"]["student"]["accuracy"]["n"] == len(SEEDS)
    check = ood.load(folder, checkpoints.file_sha256(folder / "teacher.pt"), 1024)
    assert check is not None and check[0].model == "teacher" and check[0].val_images > 0
    # the student's evidence head, trained from the shipped teacher for the shipped student (seed 0)
    from core.teacher_evidence import HEAD_FILE, load_head
    load_head(folder / HEAD_FILE, checkpoints.load(folder / "student.pt")[0])  # refuses a head of another pair
    head = json.loads((folder / HEAD_FILE).with_suffix(".json").read_text())
    assert head["seed"] == 0 and head["teacher_sha256"] == checkpoints.file_sha256(folder / "teacher.pt")


def test_kd_setting_is_chosen_on_validation_only(smoke_run):
    runs, out, result, splits = smoke_run
    assert set(splits) == {"train", "val"}  # the training stages never read test
    for row in result.grid:  # each grid row is its run's validation accuracy at its best-val-loss epoch
        meta = checkpoints.load_meta(runs / "phantom" / "official" / f"grid_a{row.alpha}_t{row.temperature:g}"
                                     / "best.pt")
        best = min(meta.train["history"], key=lambda r: r["val_loss"])
        assert row.val_acc == best["val_acc"]
    best_row = max(result.grid, key=lambda r: (r.val_acc, -r.val_loss))
    assert (result.chosen.alpha, result.chosen.temperature) == (best_row.alpha, best_row.temperature)
    student = checkpoints.load_meta(out / "phantom" / "student.pt")
    assert {k: student.kd[k] for k in ("alpha", "temperature")} == result.chosen.loss_args()


def test_a_second_run_resumes_without_retraining(smoke_run, monkeypatch, tmp_path):
    runs, out, result, _ = smoke_run
    trained = []
    monkeypatch.setattr(core.train, "train_stage", lambda *a, **k: trained.append(a[1].name))
    again = reproduce("phantom", BUDGETS["smoke"], runs, tmp_path, threads=1, timing=False, kept=runs / "kept")
    assert trained == []
    accuracy = {name: report["accuracy"] for name, report in result.test.models.items()}
    assert again.chosen == result.chosen
    assert {name: report["accuracy"] for name, report in again.test.models.items()} == accuracy


def test_a_fixed_kd_setting_skips_the_grid_and_pooled_takes_the_official_one(smoke_run, tmp_path):
    runs, out, result, _ = smoke_run
    fixed = reproduce("phantom", BUDGETS["smoke"], tmp_path / "runs", tmp_path, threads=1, timing=False,
                      kd={"alpha": 0.3, "temperature": 8.0})
    assert (fixed.chosen.alpha, fixed.chosen.temperature) == (0.3, 8.0) and fixed.grid == ()
    assert fixed_kd(out, "phantom", "pooled", None) == result.chosen.loss_args()  # the official split's choice
    assert fixed_kd(out, "phantom", "official", None) is None  # the official split runs its grid
    assert fixed_kd(tmp_path / "empty", "phantom", "pooled", None) is None


def test_kept_stages_continue_the_run_on_a_fresh_machine(smoke_run, monkeypatch, tmp_path):
    runs, out, result, _ = smoke_run
    kept = runs / "kept" / "phantom" / "official"
    assert (kept / "teacher.pt").is_file() and (kept / "student_s0.pt").is_file()
    assert checkpoints.load_meta(kept / "teacher.pt").weights_dtype == "float16"
    grid = sorted(kept.glob("grid_*.json"))  # the grid's choice needs its curves only
    assert len(grid) == len(ALPHAS) * len(TEMPERATURES) and not list(kept.glob("grid_*.pt"))
    trained = []
    monkeypatch.setattr(core.train, "train_stage", lambda *a, **k: trained.append(a[1].name))
    again = reproduce("phantom", BUDGETS["smoke"], tmp_path / "fresh_runs", tmp_path, threads=1, timing=False,
                      kept=runs / "kept")
    assert trained == [], "a kept stage was trained again"
    assert again.chosen == result.chosen
    accuracy = {name: report["accuracy"] for name, report in result.test.models.items()}
    assert {name: report["accuracy"] for name, report in again.test.models.items()} == accuracy


def test_training_time_counts_every_stage_kept_or_not_and_a_study_survives_a_rerun(smoke_run, tmp_path):
    runs, out, result, _ = smoke_run
    kept = runs / "kept" / "phantom" / "official"
    stage_seconds = [checkpoints.load_meta(path).train["history"][-1]["seconds"]
                     for path in sorted(kept.glob("*.json"))]
    assert len(stage_seconds) == 1 + len(ALPHAS) * len(TEMPERATURES) + 3 * len(SEEDS)
    assert result.training_seconds == pytest.approx(sum(stage_seconds))
    study = {"checkpoints": {"teacher": "0" * 64}, "images": 3}
    (tmp_path / "phantom").mkdir()
    (tmp_path / "phantom" / "results.json").write_text(json.dumps({"faithfulness": study}))
    again = reproduce("phantom", BUDGETS["smoke"], tmp_path / "fresh_runs", tmp_path, threads=1, timing=False,
                      kept=runs / "kept")
    assert again.training_seconds == pytest.approx(sum(stage_seconds))  # kept stages trained elsewhere
    assert json.loads((tmp_path / "phantom" / "results.json").read_text())["faithfulness"] == study


def _kept(runs):
    return runs / "kept" / "phantom" / "official"


def _fingerprint(cfg):
    return data_fingerprint(load_dataset("phantom", "train", input_size=cfg.input_size, seed=cfg.data_seed,
                                         val_fraction=cfg.val_fraction))


@pytest.mark.parametrize("change, named", [({"lr": 1e-2}, "lr"), ({"input_size": 48}, "input_size"),
                                           ({"teacher_epochs": 3}, "epochs")])
def test_a_kept_teacher_of_another_recipe_is_refused(smoke_run, tmp_path, change, named):
    runs, _, _, _ = smoke_run
    cfg = recipe("phantom", replace(BUDGETS["smoke"], **change), tmp_path)
    with pytest.raises(ValueError, match=named):
        kept_stage(cfg, Stage("teacher", "teacher"), _kept(runs), _fingerprint(cfg))


def test_a_stage_kept_before_a_setting_was_recorded_counts_as_made_with_its_old_value(smoke_run, tmp_path):
    runs, _, result, _ = smoke_run
    old = tmp_path / "kept"
    old.mkdir()
    meta = json.loads((_kept(runs) / "student_s0.json").read_text())
    del meta["train"]["pooled_blocks"]
    (old / "student_s0.json").write_text(json.dumps(meta))
    (old / "student_s0.pt").write_bytes((_kept(runs) / "student_s0.pt").read_bytes())
    cfg = recipe("phantom", BUDGETS["smoke"], tmp_path)
    stage = Stage("student_s0", "student", 0, "kd", result.chosen.loss_args())
    assert kept_stage(cfg, stage, old, _fingerprint(cfg)) is not None
    with pytest.raises(ValueError, match="pooled_blocks"):
        kept_stage(replace(cfg, pooled_blocks=2), stage, old, _fingerprint(cfg))


def test_a_kept_teacher_serves_a_recipe_that_differs_only_in_its_student(smoke_run, tmp_path):
    runs, _, result, _ = smoke_run
    cfg = recipe("phantom", replace(BUDGETS["smoke"], student_pooled_blocks=2), tmp_path)
    assert cfg.pooled_blocks == 2
    for other in (cfg, replace(cfg, depth=4), replace(cfg, attention_beta=10.0)):
        assert kept_stage(other, Stage("teacher", "teacher"), _kept(runs), _fingerprint(cfg)) is not None
    student = Stage("student_s0", "student", 0, "kd", result.chosen.loss_args())
    with pytest.raises(ValueError, match="pooled_blocks"):
        kept_stage(cfg, student, _kept(runs), _fingerprint(cfg))


def test_a_kept_stage_of_other_data_role_or_teacher_is_refused(smoke_run, tmp_path):
    runs, out, result, _ = smoke_run
    cfg = recipe("phantom", BUDGETS["smoke"], tmp_path)
    with pytest.raises(ValueError, match="fingerprint"):
        kept_stage(cfg, Stage("teacher", "teacher"), _kept(runs), "0" * 64)
    fake = tmp_path / "kept"
    fake.mkdir()
    for suffix in (".pt", ".json"):  # a student saved under the teacher's name
        (fake / f"teacher{suffix}").write_bytes((_kept(runs) / f"student_s0{suffix}").read_bytes())
    with pytest.raises(ValueError, match="role"):
        kept_stage(cfg, Stage("teacher", "teacher"), fake, _fingerprint(cfg))
    other = checkpoints.file_sha256(out / "phantom" / "student.pt")  # any file but the teacher
    stage = Stage("student_s0", "student", 0, "kd", result.chosen.loss_args())
    assert kept_stage(cfg, stage, _kept(runs), _fingerprint(cfg)).model is not None
    with pytest.raises(ValueError, match=r"the teacher \(sha256\)"):
        kept_stage(cfg, stage, _kept(runs), _fingerprint(cfg), other)
    assert kept_stage(cfg, Stage("teacher", "teacher"), tmp_path / "nothing", _fingerprint(cfg)) is None


# --------------------------------------------------------------------------- shipped work is never replaced by less

def _shipped_phantom(tmp_path):
    """A copy of the shipped phantom folder (its timing table aside), and each file's bytes' digest by path."""
    out = tmp_path / "checkpoints"
    shutil.copytree(ROOT / "checkpoints" / "phantom", out / "phantom", ignore=shutil.ignore_patterns("timing"))
    return out, _digests(out / "phantom")


def _digests(folder):
    return {p.relative_to(folder).as_posix(): checkpoints.file_sha256(p) for p in folder.rglob("*") if p.is_file()}


def _no_training(*args, **kwargs):
    raise AssertionError("a stage was trained")


def test_a_smoke_run_over_shipped_checkpoints_replaces_nothing_and_says_where(smoke_run, tmp_path, monkeypatch,
                                                                              capsys):
    runs, _, _, _ = smoke_run
    out, before = _shipped_phantom(tmp_path)
    monkeypatch.setattr(core.train, "train_stage", _no_training)  # every stage is kept from the smoke run
    core.reproduce.main(["phantom", "--budget", "smoke", "--no-timing", "--threads", "1", "--out", str(out),
                         "--runs", str(tmp_path / "runs"), "--kept", str(runs / "kept")])
    assert _digests(out / "phantom") == before  # not one shipped file changed, none added
    written = tmp_path / "runs" / "phantom" / "official" / "unshipped" / "phantom"
    for name in ("teacher.pt", "student.pt", "student_label_only.pt", "results.json", "predictions.npz", "ood.json"):
        assert (written / name).is_file(), name
    said = capsys.readouterr()
    assert str(written) in said.out and "--force" in said.out


def test_a_forced_smoke_run_replaces_the_shipped_files_and_keeps_every_one_under_earlier(smoke_run, tmp_path,
                                                                                          monkeypatch):
    runs, _, _, _ = smoke_run
    out, before = _shipped_phantom(tmp_path)
    shipped_kept = set((out / "phantom" / "earlier").glob("replaced-*"))  # what earlier forced runs kept
    rendered = core.results.render(out)
    monkeypatch.setattr(core.train, "train_stage", _no_training)
    core.reproduce.main(["phantom", "--budget", "smoke", "--no-timing", "--threads", "1", "--out", str(out),
                         "--runs", str(tmp_path / "runs"), "--kept", str(runs / "kept"), "--force"])
    folder = out / "phantom"
    assert checkpoints.load_meta(folder / "teacher.pt").input_size == 32  # the smoke run's
    [kept] = set((folder / "earlier").glob("replaced-*")) - shipped_kept
    replaced = {name: digest for name, digest in before.items() if not name.startswith("earlier/")}
    assert _digests(kept) == replaced  # every file the run replaced, byte for byte
    study = json.loads((folder / "results.json").read_text())["faithfulness"]
    assert study == json.loads((kept / "results.json").read_text())["faithfulness"]  # the study carried over
    # the replaced results are not read as one of the earlier runs kept for the record
    assert rendered.count("(earlier run)") == core.results.render(out).count("(earlier run)") == 1


@pytest.mark.parametrize("change, named", [({"teacher_epochs": 3}, "teacher epochs 3 (shipped: 15)"),
                                           ({"input_size": 64}, "input size 64 (shipped: 128)"),
                                           ({"student_epochs": 2}, "student epochs 2 (shipped: 15)")])
def test_a_lesser_run_is_refused_before_it_trains(tmp_path, monkeypatch, change, named):
    out, before = _shipped_phantom(tmp_path)
    monkeypatch.setattr(core.train, "train_stage", _no_training)
    with pytest.raises(ShippingRefused, match=re.escape(named)) as refused:
        reproduce("phantom", replace(BUDGETS["phantom"], **change), tmp_path / "runs", out, threads=1, timing=False)
    assert "--force" in str(refused.value) and "\n" not in str(refused.value)
    assert _digests(out / "phantom") == before


def test_a_run_on_other_training_data_or_without_the_grid_is_refused(tmp_path):
    out, _ = _shipped_phantom(tmp_path)
    folder = out / "phantom"
    fingerprint = core.reproduce.train_fingerprint(recipe("phantom", BUDGETS["phantom"], tmp_path / "runs"))
    assert shipping.checkpoint_shortfalls(folder, BUDGETS["phantom"], True, fingerprint) == []  # the shipped recipe
    assert shipping.checkpoint_shortfalls(folder, BUDGETS["phantom"], False, fingerprint) == \
        ["the alpha/T grid: none (shipped: 9 settings)"]
    meta = json.loads((folder / "teacher.json").read_text())
    (folder / "teacher.json").write_text(json.dumps({**meta, "data_fingerprint": "0" * 64}))
    assert shipping.checkpoint_shortfalls(folder, BUDGETS["phantom"], True, fingerprint) == \
        ["other training data (its fingerprint differs from the shipped teacher's)"]


def test_the_command_refuses_a_lesser_run_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    out, before = _shipped_phantom(tmp_path)
    monkeypatch.setattr(core.train, "train_stage", _no_training)
    with pytest.raises(SystemExit) as exit_info:
        core.reproduce.main(["phantom", "--teacher-epochs", "3", "--no-timing", "--out", str(out),
                             "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "--force" in err and "teacher epochs" in err
    assert _digests(out / "phantom") == before
