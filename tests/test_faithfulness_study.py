"""The dataset-level faithfulness study: its scores on known answers, and one small run end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core import checkpoints
from core.faithfulness import deletion_curve, mask_iou, pointing_game
from core.baseline_maps import BASELINES, baseline_map, tolerant_hit
from core.faithfulness_study import StudyConfig, read_study, run_study, write_study
from core.roles import DISTILLED, TEACHER
from core.study_record import PAIRS, pair
from core.study_scores import METRICS
from tests.support import ship_seeded_head

ROOT = Path(__file__).resolve().parent.parent
# A small patch grid and one ROAD share: the tests check what is scored and recorded, not the numbers' precision.
QUICK = dict(patches=4, road_fractions=(0.5,))
pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_mask_itself_scores_a_hit_full_energy_and_iou_one():
    mask = np.zeros((32, 32), dtype=bool)
    mask[10:14, 20:26] = True
    m = mask.astype(float)
    assert pointing_game(m, mask) == {"hit": 1.0, "energy": 1.0}
    assert mask_iou(m, mask, top_percent=100 * mask.mean()) == pytest.approx(1.0)
    assert tolerant_hit(m, mask, tolerance=1) == 1.0


def test_pointing_tolerance_counts_a_near_miss_within_its_pixels_only():
    mask = np.zeros((32, 32), dtype=bool)
    mask[10:14, 10:14] = True
    m = np.zeros((32, 32))
    m[16, 12] = 1.0  # 3 px below the mask's last row
    assert tolerant_hit(m, mask, tolerance=3) == 1.0
    assert tolerant_hit(m, mask, tolerance=2) == 0.0
    assert pointing_game(m, mask)["hit"] == 0.0


class PixelScore(nn.Module):
    """Class 0's logit is a fixed positive weighting of the pixels; class 1's is 0: a known relevance."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights)

    def forward(self, x):
        score = (x * self.weights).sum((1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], 1)


def test_the_inverse_of_the_true_relevance_deletes_worse_than_random():
    gen = torch.Generator().manual_seed(0)
    weights = torch.rand(1, 3, 16, 16, generator=gen) ** 4 * 0.05
    model = PixelScore(weights).eval()
    x = torch.rand(6, 3, 16, 16, generator=gen)
    relevance = (x * weights).sum(1).numpy()
    targets = [0] * 6
    true = deletion_curve(model, x, relevance, targets, steps=16, score="logit").auc
    inverse = deletion_curve(model, x, -relevance, targets, steps=16, score="logit").auc
    random = deletion_curve(model, x, baseline_map("random", 6, 16, seed=1), targets, steps=16, score="logit").auc
    assert np.all(true < random) and np.all(inverse > random)


def test_baselines_are_seeded_and_shaped():
    prior = np.zeros((8, 8))
    prior[2:4, 2:4] = 1
    for kind in BASELINES:
        a = baseline_map(kind, 3, 16, seed=0, prior=prior)
        assert a.shape == (3, 16, 16) and a.flags.writeable and np.isfinite(a).all()
        assert np.array_equal(a, baseline_map(kind, 3, 16, seed=0, prior=prior))
    centre = baseline_map("centre", 1, 16, seed=0)[0]
    assert np.unravel_index(np.argmax(centre), centre.shape) in {(7, 7), (7, 8), (8, 7), (8, 8)}
    with pytest.raises(ValueError, match="mask prior"):
        baseline_map("mask_prior", 1, 16, seed=0)


def test_a_small_study_on_the_phantom_writes_every_part(tmp_path):
    folder = tmp_path / "phantom"
    shutil.copytree(ROOT / "checkpoints" / "phantom", folder, ignore=shutil.ignore_patterns("timing"))
    before = json.loads((folder / "results.json").read_text())
    cfg = StudyConfig("phantom", checkpoints=str(tmp_path), images=4, slow_images=2, sanity_images=1,
                      methods=("cam", "occlusion"), steps=2, **QUICK)
    study = run_study(cfg)
    assert study.images == 4 and len(study.slow_subset) == 2
    assert len(study.test_index) == 4 and len(set(study.test_index)) == 4
    # the indices name the images the app shows: their labels are the study's true classes
    from core.data import load_dataset
    full = load_dataset("phantom", "test")
    assert tuple(full.targets[i] for i in study.test_index) == study.true_class
    assert study.checkpoints[TEACHER] == checkpoints.file_sha256(folder / "teacher.pt")
    cam = study.methods["cam"]
    assert list(cam.curves) == list(PAIRS)  # every pair: each model's map on its own and on the other's score
    for scores in cam.curves.values():
        assert scores.deletion_auc.n == 4 and set(scores.vs_random) == set(scores.scores) == set(METRICS)
    # each model's CAM is compared with noise drawn at its own map's side (the teacher's 4 x 4, the student's 16 x 16)
    assert cam.map_side == {TEACHER: 4, DISTILLED: 16}
    assert cam.versus == {TEACHER: "random_4", DISTILLED: "random_16"}
    assert study.methods["occlusion"].versus[TEACHER] == f"random_{study.methods['occlusion'].map_side[TEACHER]}"
    for name in ("random_4", "random_16"):
        assert study.methods[name].baseline and not study.methods[name].curves[pair(TEACHER, TEACHER)].vs_random
    rand = study.score("random_4", TEACHER, TEACHER).scores["road_morf"].values
    own = study.score("cam", TEACHER, TEACHER)
    differences = [a - b for a, b in zip(own.scores["road_morf"].values, rand)]
    assert own.vs_random["road_morf"].mean == pytest.approx(sum(differences) / 4, abs=1e-3)
    # the cascade counts the maps that turned constant; unrelated pairs show what "far apart" scores
    assert all(step.constant is not None and step.ssim is not None for step in study.cascade("cam", TEACHER))
    assert len(study.unrelated["cam"][DISTILLED].spearman.values) == 4  # each image's map with the next one's
    assert cam.agreement.spearman.n == 4
    hits = cam.localisation[TEACHER].hit.values
    assert len(hits) == 4 and [v is None for v in hits] == [c == 0 for c in study.true_class]  # 0: no lesion
    assert study.methods["occlusion"].images == 2
    assert study.score("occlusion", TEACHER, TEACHER).deletion_auc.n == 2
    for b in BASELINES:  # one map whichever model: no cross scores, no agreement
        assert study.methods[b].baseline and not any(p.cross for p in study.methods[b].curves)
        assert study.methods[b].agreement is None
        # said to explain the student, it is scored on the teacher as the teacher's own map is
        assert study.score(b, DISTILLED, TEACHER) == study.score(b, TEACHER, TEACHER)
    cascade = study.cascade("cam", DISTILLED)
    assert cascade[0].layer == "classifier" and len(cascade) == 6  # head + five blocks
    assert study.cascade_end("cam", DISTILLED) == cascade[-1]
    assert "occlusion" not in study.sanity and study.cascade_end("occlusion", TEACHER) is None
    path = write_study(study, tmp_path, "phantom")
    written = json.loads(path.read_text())
    assert written["faithfulness"]["version"] == 2
    assert written["faithfulness"]["methods"]["cam"]["teacher"]["deletion_auc"]["n"] == 4
    assert written["faithfulness"]["methods"]["cam"]["student_on_teacher"]["deletion_auc"]["values"] == \
        list(study.score("cam", DISTILLED, TEACHER).deletion_auc.values)
    assert {k: v for k, v in written.items() if k != "faithfulness"} == \
        {k: v for k, v in before.items() if k != "faithfulness"}
    assert read_study(tmp_path, "phantom") == study  # what is written reads back as the same record


def test_a_study_of_the_students_maps_alone_scores_them_on_both_models_as_the_full_study_does(tmp_path):
    folder = tmp_path / "phantom"
    shutil.copytree(ROOT / "checkpoints" / "phantom", folder, ignore=shutil.ignore_patterns("timing"))
    settings = dict(checkpoints=str(tmp_path), images=4, slow_images=2, sanity_images=1, methods=("cam",), steps=2,
                    **QUICK)
    full = run_study(StudyConfig("phantom", **settings))
    alone = run_study(StudyConfig("phantom", explained=("student",), **settings))
    cam, cam_full = alone.methods["cam"], full.methods["cam"]
    assert set(cam.curves) == {pair(DISTILLED, DISTILLED), pair(DISTILLED, TEACHER)} and cam.agreement is None
    for scored in cam.curves:  # the same maps scored by the same models
        assert cam.curves[scored].deletion_auc.values == cam_full.curves[scored].deletion_auc.values
        assert cam.curves[scored].vs_random == cam_full.curves[scored].vs_random
    assert set(cam.localisation) == {DISTILLED} and set(alone.sanity["cam"]) == {DISTILLED}
    assert alone.score("random", TEACHER, TEACHER) == full.score("random", TEACHER, TEACHER)  # baselines on both
    with pytest.raises(ValueError, match="explained"):
        run_study(StudyConfig("phantom", explained=("nobody",), **settings))


def test_a_study_after_a_student_retrain_takes_the_unchanged_teachers_scores_from_the_earlier_one(tmp_path,
                                                                                                 monkeypatch):
    folder = tmp_path / "phantom"
    shutil.copytree(ROOT / "checkpoints" / "phantom", folder, ignore=shutil.ignore_patterns("timing"))
    settings = dict(checkpoints=str(tmp_path), images=4, slow_images=2, sanity_images=1, methods=("cam",), steps=2,
                    **QUICK)
    first = run_study(StudyConfig("phantom", **settings))
    for suffix in (".pt", ".json"):  # another student, the same teacher
        shutil.copyfile(folder / f"student_label_only{suffix}", folder / f"student{suffix}")
    fresh = run_study(StudyConfig("phantom", **settings))
    import core.study_scoring as scoring_module
    scored = []

    def counting(model, *args, **kwargs):
        scored.append(model)
        return deletion_curve(model, *args, **kwargs)

    monkeypatch.setattr(scoring_module, "deletion_curve", counting)
    second = run_study(StudyConfig("phantom", **settings), earlier=first)
    assert second.scores_from_earlier_study == (TEACHER,)
    baselines = [b for b, out in second.methods.items() if out.baseline]
    # the CAM: the student's on both models and the teacher's on the new student; the baselines on the student
    assert len(scored) == 3 + len(baselines)
    for name in ["cam", *baselines]:
        for which, entry in second.methods[name].curves.items():
            again = fresh.methods[name].curves[which]
            # taken over rounded to 4 decimals, else recomputed
            assert entry.deletion_auc.values == pytest.approx(again.deletion_auc.values, abs=1e-4), (name, which.key)
            assert entry.insertion_auc.values == pytest.approx(again.insertion_auc.values, abs=1e-4), (name, which.key)
    assert second.cascade("cam", TEACHER) == first.cascade("cam", TEACHER)
    other = run_study(StudyConfig("phantom", **{**settings, "steps": 3}), earlier=first)
    assert other.scores_from_earlier_study == ()  # other settings: nothing taken over


def test_the_command_refuses_to_build_on_a_study_it_cannot_read(tmp_path, capsys):
    from core.faithfulness_study import main

    (tmp_path / "phantom").mkdir()
    block = {**json.loads((ROOT / "checkpoints" / "phantom" / "results.json").read_text())["faithfulness"],
             "version": 3}
    (tmp_path / "phantom" / "results.json").write_text(json.dumps({"faithfulness": block}))
    with pytest.raises(SystemExit) as refused:  # before any model is loaded
        main(["phantom", "--checkpoints", str(tmp_path)])
    assert refused.value.code == 2
    message = capsys.readouterr().err
    assert "results.json: faithfulness: version 3" in message and "--fresh" in message


def test_the_command_line_takes_every_default_from_the_study_config():
    import dataclasses

    from core.faithfulness_study import StudyConfig, build_parser

    # a config with other defaults than the shipped one: the parser must follow it, not literals of its own
    @dataclasses.dataclass
    class Other(StudyConfig):
        slow_images: int = 7
        sanity_images: int = 3
        steps: int = 5
        seed: int = 11

    monkeypatch_target = "core.faithfulness_study.StudyConfig"
    import unittest.mock

    with unittest.mock.patch(monkeypatch_target, Other):
        args = vars(build_parser().parse_args(["phantom"]))
    compared = 0
    for field in dataclasses.fields(Other):
        if field.name in args and field.name not in ("dataset", "methods"):  # methods: see default_methods
            want = getattr(Other("phantom"), field.name)
            assert args[field.name] == (list(want) if isinstance(want, tuple) else want), field.name
            compared += 1
    assert compared >= 7 and args["methods"] is None
    assert (args["slow_images"], args["sanity_images"], args["steps"], args["seed"]) == (7, 3, 5, 11)


def test_the_teacher_evidence_is_studied_as_the_students_map_where_its_head_is_shipped(tmp_path):
    from core.explainers import ExplainError
    from core.faithfulness_study import default_methods

    folder = tmp_path / "phantom"  # the shipped models without their evidence head, to begin with
    shutil.copytree(ROOT / "checkpoints" / "phantom", folder,
                    ignore=shutil.ignore_patterns("timing", "earlier", "student_evidence.*"))
    settings = dict(checkpoints=str(tmp_path), images=4, slow_images=2, sanity_images=1,
                    methods=("cam", "grad_cam", "teacher_evidence"), steps=2, **QUICK)
    assert "teacher_evidence" not in default_methods(tmp_path, "phantom")
    with pytest.raises(ExplainError, match=r"python -m core\.teacher_evidence"):  # asked for, with no head
        run_study(StudyConfig("phantom", **settings))
    ship_seeded_head(folder, 0)
    assert default_methods(tmp_path, "phantom") == StudyConfig("phantom").methods + ("teacher_evidence",)
    study = run_study(StudyConfig("phantom", **settings))
    evidence, cam = study.methods["teacher_evidence"], study.methods["cam"]
    # the student's maps only, scored on its own probability and on the teacher's, against noise at its grid
    assert set(evidence.curves) == {pair(DISTILLED, DISTILLED), pair(DISTILLED, TEACHER)}
    assert set(evidence.localisation) == {DISTILLED}
    # its agreement is with the map it learnt to give, the teacher's Grad-CAM of the same image
    from core.explain import explain
    from core.faithfulness import agreement
    from core.faithfulness_study import load_subject

    subject = load_subject(StudyConfig("phantom", **settings))
    first = {role: explain(subject.models[role], subject.xs[role][:1], method, int(subject.preds[role][0]),
                           predict=False).heatmap for role, method in ((TEACHER, "grad_cam"),
                                                                       (DISTILLED, "teacher_evidence"))}
    expected = agreement(first[TEACHER], first[DISTILLED])
    assert evidence.agreement.spearman.values[0] == pytest.approx(expected["spearman"], abs=1e-4)
    assert evidence.map_side == {DISTILLED: cam.map_side[DISTILLED]}
    assert evidence.versus == {DISTILLED: cam.versus[DISTILLED]}
    assert set(evidence.curves[pair(DISTILLED, TEACHER)].vs_random) == set(METRICS)
    assert set(study.sanity["teacher_evidence"]) == {DISTILLED} and set(study.unrelated["teacher_evidence"]) == {
        DISTILLED}
    # the docs' tables give it its row: the student's columns filled, the teacher's empty
    from core.study_report import faithfulness_lines
    rows = [line for line in faithfulness_lines(study, folder) if line.startswith("| The teacher's evidence")]
    assert len(rows) == 3 and rows[-1].split(" | ")[1:4] == ["–", "–", "–"]  # lesion table: no teacher map
    # a head retrained beside the unchanged student is scored afresh; the unchanged CAM's scores are taken over
    from core.metadata import file_sha256
    first_head = file_sha256(folder / "student_evidence.pt")
    assert study.evidence_head == first_head
    ship_seeded_head(folder, 1)
    assert study.is_stale(dict(study.checkpoints), head_digest=file_sha256(folder / "student_evidence.pt"))
    assert any("computed for earlier checkpoints" in line for line in faithfulness_lines(study, folder))
    again = run_study(StudyConfig("phantom", **settings), earlier=study)
    assert again.evidence_head == file_sha256(folder / "student_evidence.pt") != first_head
    assert set(again.scores_from_earlier_study) == {TEACHER, DISTILLED}
    assert again.score("cam", DISTILLED, TEACHER).scores["road_morf"].values == pytest.approx(
        study.score("cam", DISTILLED, TEACHER).scores["road_morf"].values, abs=1e-4)  # taken over, 4 decimals
    assert again.score("teacher_evidence", DISTILLED, TEACHER).scores["road_morf"].values != \
        study.score("teacher_evidence", DISTILLED, TEACHER).scores["road_morf"].values


# --------------------------------------------------------------------------- the shipped study is replaced only by more

def _shipped_study(tmp_path):
    """A copy of the shipped phantom folder, without what earlier forced runs kept (a test counts what it adds)."""
    folder = tmp_path / "phantom"
    shutil.copytree(ROOT / "checkpoints" / "phantom", folder, ignore=shutil.ignore_patterns("timing", "replaced-*"))
    return folder, (folder / "results.json").read_bytes()


@pytest.mark.parametrize("args, named", [(["--images", "8", "--methods", "cam"], "images 8 (shipped: "),
                                         (["--steps", "5"], "steps 5 (shipped: 10)"),
                                         (["--methods", "cam", "grad_cam"], "methods without feature_maps"),
                                         (["--slow-images", "4"], "slow-method images 4 (shipped: 40)")])
def test_a_study_with_less_does_not_replace_the_shipped_one(tmp_path, monkeypatch, capsys, args, named):
    import core.faithfulness_study as study_module

    folder, before = _shipped_study(tmp_path)
    monkeypatch.setattr(study_module, "run_study", lambda *a, **k: pytest.fail("the study ran"))
    with pytest.raises(SystemExit) as refused:
        study_module.main(["phantom", "--checkpoints", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and len(err.splitlines()) == 1 and named in err and "--force" in err
    assert (folder / "results.json").read_bytes() == before and not list((folder / "earlier").glob("replaced-*"))


def test_a_forced_smaller_study_replaces_the_shipped_one_and_keeps_it_under_earlier(tmp_path):
    from core.faithfulness_study import main

    folder, before = _shipped_study(tmp_path)
    main(["phantom", "--checkpoints", str(tmp_path), "--images", "8", "--methods", "cam", "--slow-images", "2",
          "--sanity-images", "1", "--steps", "2", "--patches", "4", "--force"])
    assert read_study(tmp_path, "phantom").images == 8
    [kept] = (folder / "earlier").glob("replaced-*")
    assert (kept / "results.json").read_bytes() == before  # the shipped study, byte for byte
    assert sorted(p.name for p in kept.iterdir()) == ["results.json"]


def test_a_study_with_as_much_replaces_the_shipped_one_without_force(tmp_path):
    from core import shipping
    from core.faithfulness_study import StudyConfig, default_methods, requested_images

    shipped = read_study(ROOT / "checkpoints", "phantom")
    # the methods the command runs by default: every method, and the teacher's evidence where its head is shipped
    methods = default_methods(str(ROOT / "checkpoints"), "phantom")
    same = StudyConfig("phantom", methods=methods).settings()
    assert shipping.study_shortfalls(same, requested_images("phantom", None), shipped,
                                     requested_images("phantom", shipped.config.images)) == []
    # asking for more images than the phantom's test split has is the whole split, as the shipped study was
    more = StudyConfig("phantom", images=1000, methods=methods).settings()
    assert shipping.study_shortfalls(more, requested_images("phantom", 1000), shipped,
                                     requested_images("phantom", None)) == []


def test_a_study_with_a_coarser_patch_grid_or_fewer_road_shares_is_lesser_than_a_version_2_study():
    import dataclasses

    from core import shipping
    from core.faithfulness_study import StudyConfig, default_methods, requested_images

    study = read_study(ROOT / "checkpoints", "phantom")
    shipped = dataclasses.replace(study, config=dataclasses.replace(study.config, patches=16,
                                                                    road_fractions=(0.1, 0.3, 0.5, 0.7, 0.9)))
    v1 = dataclasses.replace(study, config=dataclasses.replace(study.config, patches=None, road_fractions=None))
    less = StudyConfig("phantom", patches=8, road_fractions=(0.5,),
                       methods=default_methods(str(ROOT / "checkpoints"), "phantom")).settings()
    whole = requested_images("phantom", None)
    found = shipping.study_shortfalls(less, whole, shipped, whole)
    assert found == ["patches per side 8 (shipped: 16)", "ROAD shares 1 (shipped: 5)"]
    # a version 1 study has neither: any version 2 study has at least as much of both
    assert shipping.study_shortfalls(less, whole, v1, whole) == []


def test_a_random_map_as_coarse_as_a_slow_methods_map_is_scored_on_that_methods_images_only(tmp_path):
    """Occlusion runs on the slow subset: its matched random map is scored there, and compared image by image."""
    folder = tmp_path / "phantom"
    shutil.copytree(ROOT / "checkpoints" / "phantom", folder, ignore=shutil.ignore_patterns("timing"))
    study = run_study(StudyConfig("phantom", checkpoints=str(tmp_path), images=4, slow_images=2, sanity_images=1,
                                  methods=("occlusion",), steps=2, explained=("student",), **QUICK))
    side = study.methods["occlusion"].map_side[DISTILLED]
    matched = study.methods[f"random_{side}"]
    assert matched.images == 2 and matched.score(TEACHER, TEACHER).deletion_auc.n == 2
    own = study.score("occlusion", DISTILLED, DISTILLED)
    rand = matched.score(DISTILLED, DISTILLED)
    metric = "patch_deletion_mean"
    differences = [a - b for a, b in zip(own.scores[metric].values, rand.scores[metric].values)]
    assert own.vs_random[metric].mean == pytest.approx(sum(differences) / 2, abs=1e-3)
    assert study.methods["random"].images == 4  # the per-pixel one, for the baselines themselves: every image


def test_the_command_studies_the_teachers_evidence_and_prints_its_scores(tmp_path, capsys):
    from core.faithfulness_study import main

    folder = tmp_path / "phantom"
    shutil.copytree(ROOT / "checkpoints" / "phantom", folder,
                    ignore=shutil.ignore_patterns("timing", "earlier", "student_evidence.*"))
    ship_seeded_head(folder, 0)
    main(["phantom", "--checkpoints", str(tmp_path), "--images", "4", "--slow-images", "2", "--sanity-images", "1",
          "--steps", "2", "--patches", "4", "--methods", "cam", "teacher_evidence", "--force"])
    printed = capsys.readouterr().out
    line = next(row for row in printed.splitlines() if row.startswith("teacher_evidence"))
    assert "teacher –" in line and "student map on the teacher" in line  # no teacher map of its own
    assert read_study(tmp_path, "phantom").methods["teacher_evidence"].images == 4
