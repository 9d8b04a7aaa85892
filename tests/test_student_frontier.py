"""The student-variant frontier: each variant trained from the shipped teacher, scored, timed, and the choice."""

import json

import pytest

from benchmarks import student_frontier
from core import checkpoints
from core.models import STUDENT_POOLED_BLOCKS
from core.recipe import Stage, stage_settings


def test_the_shipped_recipe_is_rebuilt_from_the_students_metadata():
    _, meta = checkpoints.load("checkpoints/phantom/student.pt")
    cfg = student_frontier.shipped_recipe(meta)
    recorded = meta.train
    assert cfg.input_size == meta.input_size and cfg.student_epochs == recorded["epochs"]
    assert cfg.loss_args == {"alpha": meta.kd["alpha"], "temperature": meta.kd["temperature"]}
    assert not cfg.label_only and cfg.smoothing_control == 0.0 and cfg.seeds == (meta.seed,)
    settings = stage_settings(cfg, Stage("s", "student", meta.seed, meta.kd["loss"], cfg.loss_args))
    for key in ("dataset", "lr", "batch_size", "augment", "views", "schedule", "depth", "weight_decay"):
        if key in recorded:  # older metadata records fewer settings
            assert settings[key] == recorded[key], key


def row(pooled, hit, deletion, speedup, val_acc=0.99):
    return {"pooled": pooled, "val_acc": val_acc,
            "methods": {m: {"hit": hit, "deletion_on_teacher": deletion, "speedup": speedup}
                        for m in student_frontier.METHODS}}


RANDOM = {"random_hit": 0.1, "random_deletion_on_teacher": 0.6}


def test_the_recommendation_is_the_most_faithful_variant_that_is_fast_enough():
    fast = student_frontier.TARGET + 1
    rows = [row(4, 0.2, 0.5, fast), row(3, 0.6, 0.3, fast), row(2, 0.9, 0.1, student_frontier.TARGET - 1)]
    assert student_frontier.recommend(rows, localised=True, baseline=RANDOM)["pooled"] == 3  # 2 localises best but is too slow
    assert student_frontier.recommend(rows, localised=False, baseline=RANDOM)["pooled"] == 3  # lowest deletion among the fast
    assert student_frontier.recommend([row(2, 0.9, 0.1, 1.0)], localised=True, baseline=RANDOM) is None


def test_a_more_faithful_variant_that_decides_worse_on_validation_is_not_recommended():
    fast, slack = student_frontier.TARGET + 1, student_frontier.ACCURACY_SLACK
    rows = [row(4, 0.2, 0.5, fast, val_acc=0.99), row(3, 0.6, 0.3, fast, val_acc=0.99 - 2 * slack),
            row(2, 0.5, 0.4, fast, val_acc=0.99 - slack / 2)]
    assert student_frontier.recommend(rows, localised=False, baseline=RANDOM)["pooled"] == 2  # 3 is the most faithful, but worse
    assert student_frontier.recommend(rows, localised=True, baseline=RANDOM)["pooled"] == 2


def test_a_quick_run_trains_scores_and_times_each_variant(tmp_path):
    out = tmp_path / "frontier.json"
    code = student_frontier.main(["--pooled", str(STUDENT_POOLED_BLOCKS), str(STUDENT_POOLED_BLOCKS - 1),
                                  "--runs", str(tmp_path / "runs"), "--images", "8", "--timing-images", "4",
                                  "--epochs", "1", "--max-per-class", "8", "--threads", "1", "--out", str(out),
                                  "--steps", "2", "--road-fractions", "0.5"])  # a lighter study: this reads neither
    assert code == 0
    result = json.loads(out.read_text())
    sides = [r["map_side"] for r in result["rows"]]
    assert sides[1] == 2 * sides[0]  # one pooling stage fewer: twice the side
    assert [r["default"] for r in result["rows"]] == [True, False]
    for r in result["rows"]:
        for v in r["methods"].values():
            assert v["ms"] > 0 and v["speedup"] > 0 and 0 <= v["deletion_on_teacher"] <= 1
            assert 0 <= v["hit"] <= 1  # the phantom has lesion masks
    table = out.with_suffix(".md").read_text()
    assert table.count("| CAM |") == 2 and "mask prior" in table and "(library default)" in table


def test_a_real_datasets_frontier_goes_to_its_own_file_and_names_its_command():
    # a run on brain_tumor must not replace the phantom's table (docs/benchmarks.md shows both)
    assert student_frontier.default_out("phantom") != student_frontier.default_out("brain_tumor")
    assert "brain_tumor" in student_frontier.default_out("brain_tumor").name
    phantom = json.loads(student_frontier.default_out("phantom").read_text())
    real = {**phantom, "dataset": "brain_tumor",
            "baseline": {**phantom["baseline"], "random_hit": None, "mask_prior_hit": None}}
    table = student_frontier.markdown(real)
    assert "`python benchmarks/student_frontier.py --dataset brain_tumor`" in table
    assert "pointing game" not in table.split("\n\n")[1]  # no lesion masks: no localisation columns


def test_no_variant_is_recommended_when_every_map_explains_the_teacher_worse_than_a_random_map():
    fast = student_frontier.TARGET + 1
    rows = [row(4, 0.2, 0.50, fast), row(3, 0.6, 0.43, fast)]  # deletion: lower is better
    assert student_frontier.recommend(rows, localised=False, baseline={**RANDOM, "random_deletion_on_teacher": 0.40}) \
        is None
    assert student_frontier.recommend(rows, localised=False, baseline={**RANDOM, "random_deletion_on_teacher": 0.45}) \
        ["pooled"] == 3
    assert student_frontier.recommend(rows, localised=True, baseline={**RANDOM, "random_hit": 0.7}) is None


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--road-fractions", "0.5", "1.0"]])
def test_a_study_setting_it_cannot_use_is_refused_before_training(tmp_path, bad):
    with pytest.raises(SystemExit) as stopped:
        student_frontier.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "f.json"), *bad])
    assert stopped.value.code == 2 and not (tmp_path / "runs").exists()
