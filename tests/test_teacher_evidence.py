"""The teacher's evidence read off the student: the head's shapes, one forward for logits and maps, what it learns
from the teacher (and only from it), attaching, saving and loading, and the explainer's refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import checkpoints
from core.cam import all_class_maps, class_activation_maps
from core.explain import explain
from core.explainers import ExplainError, registered_methods
from core.faithfulness import spearman
from core.metadata import file_sha256
from core.models import build_model, build_student
from core.teacher_evidence import HEAD_FILE, load_head, main, save_head, train_head
from core.evidence_model import EvidenceHead, attach_head, evidence_head, evidence_loss, evidence_maps, evidence_targets
from tests.conftest import TinyCNN, seeded

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES = 4


def pooled_student(seed: int = 0):
    """build_student(4, depth=3) with two pooled blocks: a 4 x 4 grid at 32 px, 16 cells to rank."""
    return seeded(lambda: build_student(CLASSES, depth=3, pooled=2), seed)


def tiny_teacher(seed: int):
    """A `TinyCNN` of 4 classes: its pooled layer is a 16 x 16 grid at 32 px (shrunk to the student's 4 x 4)."""
    return seeded(lambda: TinyCNN(CLASSES), seed)


def blobs(n: int, seed: int) -> torch.Tensor:
    """Smooth random images: structure at a quarter of the side, which a 4 x 4 grid can show."""
    coarse = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return 2 * F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)


def median_spearman(a: torch.Tensor, b: torch.Tensor, absolute: bool = False) -> float:
    """Median over images and classes of the rank correlation of two (N, K, h, w) sets of maps."""
    values = np.array([spearman(a[i, c].numpy(), b[i, c].numpy()) for i in range(len(a)) for c in range(a.shape[1])])
    values = values[np.isfinite(values)]  # a map with no evidence at all has no ranking
    return float(np.median(np.abs(values) if absolute else values))


def with_head(student, seed: int = 0):
    return attach_head(student, seeded(lambda: EvidenceHead(96, CLASSES), seed))


def test_the_head_gives_one_map_per_class_at_the_pooled_layers_grid():
    head = EvidenceHead(96, CLASSES, hidden=8)
    assert head(torch.randn(2, 96, 4, 4)).shape == (2, CLASSES, 4, 4)
    student = with_head(pooled_student())
    x = blobs(3, 1)
    out = evidence_maps(student, x)
    assert out["maps"].shape == (3, CLASSES, 4, 4) and out["layer"] == "block3"
    assert torch.allclose(out["maps"].sum((2, 3)), torch.ones(3, CLASSES), atol=1e-5) and bool((out["maps"] > 0).all())
    with torch.no_grad():
        assert torch.allclose(out["logits"], student(x), atol=1e-5)


def test_one_forward_of_the_student_gives_its_logits_and_the_map(count_forwards):
    student = with_head(pooled_student())
    x = blobs(1, 2)
    counter = count_forwards(student)
    result = explain(student, x, "teacher_evidence", predict=False)
    assert counter.images == 1 and result.passes == {"forward": 1, "backward": 0}
    with torch.no_grad():
        logits = student(x)[0]
    assert result.target == int(logits.argmax()) and np.allclose(result.extras["logits"], logits.numpy(), atol=1e-5)
    assert result.heatmap.shape == (32, 32) and result.heatmap.min() == 0 and result.heatmap.max() == 1
    assert result.extras["raw"].shape == (4, 4) and result.extras["layer"] == "block3"


def test_the_target_chooses_the_class_map():
    student = with_head(pooled_student())
    x = blobs(1, 3)
    maps = evidence_maps(student, x)["maps"][0]
    results = [explain(student, x, "teacher_evidence", c, predict=False) for c in range(CLASSES)]
    for c, result in enumerate(results):
        assert result.target == c and np.allclose(result.extras["raw"], maps[c].numpy())
        # the upsampled map peaks where its own class's cells do
        cell = np.unravel_index(int(maps[c].argmax()), (4, 4))
        row, col = np.unravel_index(int(result.heatmap.argmax()), (32, 32))
        assert (row // 8, col // 8) == cell
    assert not np.allclose(results[0].heatmap, results[1].heatmap, atol=1e-3)


def test_all_class_maps_are_every_class_activation_map_from_one_forward(count_forwards):
    teacher = tiny_teacher(0)
    x = blobs(2, 4)
    counter = count_forwards(teacher)
    out = all_class_maps(teacher, x)
    assert counter.images == 2 and out["maps"].shape == (2, CLASSES, 16, 16)
    for c in range(CLASSES):
        assert torch.allclose(out["maps"][:, c], class_activation_maps(teacher, x, c)["raw"].clamp_min(0), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(out["logits"], teacher(x), atol=1e-6)


def test_targets_are_distributions_and_the_loss_is_their_kl_divergence():
    maps = torch.rand(2, 3, 8, 8)
    maps[0, 1] = 0  # no evidence at all for this class: uniform
    targets = evidence_targets(maps, (4, 4))
    assert targets.shape == (2, 3, 4, 4) and torch.allclose(targets.sum((2, 3)), torch.ones(2, 3))
    assert torch.allclose(targets[0, 1], torch.full((4, 4), 1 / 16))
    assert float(evidence_loss(targets.log(), targets)) == pytest.approx(0, abs=1e-6)
    assert float(evidence_loss(torch.zeros(2, 3, 4, 4), targets)) > 0.01  # a uniform guess is off
    shifted = targets.log() + 5.0  # a softmax over positions does not see a constant: no scale, no temperature
    assert float(evidence_loss(shifted, targets)) == pytest.approx(0, abs=1e-6)


def test_the_head_learns_the_teachers_maps_and_only_that_teachers():
    student, teacher, other = pooled_student(), tiny_teacher(0), tiny_teacher(1)
    train, held_out = blobs(128, 10), blobs(32, 11)
    states = {k: v.clone() for k, v in student.state_dict().items()}
    student.train()  # left as found, though trained against in eval mode
    head, history = train_head(student, teacher, train, epochs=30, batch_size=16, lr=3e-3, seed=0)
    assert student.training and all(torch.equal(v, student.state_dict()[k]) for k, v in states.items())
    student.eval()
    assert len(history) == 30 and history[-1] < 0.5 * history[0]
    other_head, _ = train_head(student, other, train, epochs=30, batch_size=16, lr=3e-3, seed=0)
    reseeded_head, _ = train_head(student, teacher, train, epochs=30, batch_size=16, lr=3e-3, seed=1)

    def maps_of(head):
        return evidence_maps(attach_head(student, head), held_out)["maps"]

    learnt, untrained = maps_of(head), maps_of(EvidenceHead(96, CLASSES))
    other_learnt, reseeded = maps_of(other_head), maps_of(reseeded_head)
    truth = evidence_targets(all_class_maps(teacher, held_out)["maps"], (4, 4))
    agreement, chance = median_spearman(learnt, truth), median_spearman(untrained, truth)
    assert agreement >= 0.55 and agreement > chance + 0.4, (agreement, chance)
    # What the head shows is the teacher's: trained from another seed it agrees with itself (0.94 when written),
    # against a re-initialised teacher it does not (0.37; the two teachers' own maps: 0.23, noise on a 4 x 4 grid
    # about 0.17): the same student's features and the same images leave that much in common.
    same_teacher, teachers_apart = median_spearman(learnt, reseeded), median_spearman(learnt, other_learnt, True)
    assert same_teacher >= 0.8 and teachers_apart <= 0.5, (same_teacher, teachers_apart)
    assert teachers_apart < same_teacher - 0.4 and teachers_apart < agreement - 0.25


def test_training_is_seeded_and_leaves_the_global_random_state_alone():
    student, teacher, train = pooled_student(), tiny_teacher(0), blobs(16, 12)
    before = torch.random.get_rng_state()
    heads = [train_head(student, teacher, train, epochs=2, seed=s)[0] for s in (3, 3, 4)]
    assert torch.equal(before, torch.random.get_rng_state())
    weights = [head.out.weight for head in heads]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    with pytest.raises(ValueError, match="classes"):
        train_head(student, seeded(lambda: TinyCNN(3)), train, epochs=1)


def _shipped_pair(tmp_path, student):
    meta = checkpoints.CheckpointMeta("student", CLASSES, list("abcd"), 32, [0.5] * 3, [0.25] * 3, role="student",
                                      arch_args={"depth": 3, "pooled": 2})
    student_file = checkpoints.save(student, meta, tmp_path / "student.pt")
    teacher_file = tmp_path / "teacher.pt"
    torch.save(tiny_teacher(0).state_dict(), teacher_file)
    return student_file, teacher_file


def test_attaching_leaves_the_students_weights_and_file_unchanged(tmp_path):
    student = pooled_student()
    keys = list(student.state_dict())
    first, _ = _shipped_pair(tmp_path, student)
    with_head(student)
    assert evidence_head(student) is not None and list(student.state_dict()) == keys
    assert all(not isinstance(m, EvidenceHead) for m in student.modules())
    second = checkpoints.save(student, checkpoints.load(first)[1], tmp_path / "again.pt")
    assert file_sha256(first) == file_sha256(second)


def test_a_saved_head_loads_for_its_student_and_gives_the_same_maps(tmp_path):
    student = pooled_student()
    student_file, teacher_file = _shipped_pair(tmp_path, student)
    head, history = train_head(student, tiny_teacher(0), blobs(16, 13), epochs=2)
    path = save_head(head, tmp_path / HEAD_FILE, student_file=student_file, teacher_file=teacher_file, seed=0,
                     epochs=2, history=history, classes=list("abcd"), images=16)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["student_sha256"] == file_sha256(student_file) and meta["teacher_sha256"] == file_sha256(teacher_file)
    assert (meta["num_classes"], meta["channels"], meta["epochs"], meta["loss_history"]) == (CLASSES, 96, 2, history)
    assert meta["created"] and meta["versions"]["torch"] == torch.__version__
    loaded = load_head(path, student)
    x = blobs(2, 14)
    expected = evidence_maps(attach_head(student, head), x)["maps"]
    assert torch.allclose(evidence_maps(attach_head(student, loaded), x)["maps"], expected, atol=2e-3)  # float16


def test_a_head_for_another_student_is_refused(tmp_path):
    student = pooled_student()
    student_file, teacher_file = _shipped_pair(tmp_path, student)
    path = save_head(EvidenceHead(96, CLASSES), tmp_path / HEAD_FILE, student_file=student_file,
                     teacher_file=teacher_file, seed=0, epochs=1, history=[1.0])
    with pytest.raises(ValueError, match="classes"):
        load_head(path, seeded(lambda: build_student(3, depth=3, pooled=2)))
    with pytest.raises(ValueError, match="channels"):
        load_head(path, seeded(lambda: build_student(CLASSES, depth=4, pooled=2)))
    checkpoints.save(pooled_student(seed=1), checkpoints.load(student_file)[1], student_file)  # retrained student
    with pytest.raises(ValueError, match="student_sha256"):
        load_head(path, student)
    with pytest.raises(ValueError, match="channels"):
        attach_head(student, EvidenceHead(48, CLASSES))


def test_a_student_without_a_head_is_refused_with_the_command_that_makes_one(count_forwards):
    student = pooled_student()
    counter = count_forwards(student)
    with pytest.raises(ExplainError, match=r"python -m core\.teacher_evidence DATASET"):
        explain(student, blobs(1, 15), "teacher_evidence", 0)
    assert counter.images == 0


def test_the_method_is_listed_only_when_asked_for():
    # the shipped models have no head yet: every page and study listing all methods runs without it
    assert "teacher_evidence" not in registered_methods() + registered_methods(single_pass=True)
    assert registered_methods(needs_head=True) == ["teacher_evidence"]


def test_the_command_ships_a_head_beside_the_student_and_replaces_it_only_when_forced(tmp_path, capsys):
    # the phantom's training split at 32 px, a ResNet-18 teacher (a 1 x 1 pooled grid) and a 2 x 2 student
    folder = tmp_path / "phantom"
    classes = ["no_lesion", "infiltrative", "extra_axial", "midline"]
    for role, arch, args in (("student", "student", {"depth": 3}), ("teacher", "resnet18", {})):
        meta = checkpoints.CheckpointMeta(arch, CLASSES, classes, 32, [0.5] * 3, [0.25] * 3, role=role,
                                          dataset="phantom", arch_args=args, train={"data_seed": 0})
        checkpoints.save(seeded(lambda: build_model(arch, CLASSES, **args)), meta, folder / f"{role}.pt")
    main(["phantom", "--checkpoints", str(tmp_path), "--epochs", "1"])
    assert "epoch 1" in capsys.readouterr().out
    head = load_head(folder / HEAD_FILE, checkpoints.load(folder / "student.pt")[0])
    assert json.loads((folder / "student_evidence.json").read_text())["images"] == 960
    with pytest.raises(SystemExit) as refused:
        main(["phantom", "--checkpoints", str(tmp_path), "--epochs", "1"])
    assert refused.value.code == 2 and "--force" in capsys.readouterr().err
    main(["phantom", "--checkpoints", str(tmp_path), "--epochs", "1", "--seed", "1", "--force"])
    kept = list((folder / "earlier").glob(f"replaced-*/{HEAD_FILE}"))
    assert len(kept) == 1 and torch.equal(torch.load(kept[0])["out.weight"].float(), head.out.weight)


def test_a_head_with_non_finite_weights_is_refused_and_the_student_explains_without_it(tmp_path):
    from core.teacher_evidence import attach_shipped_head

    student = pooled_student()
    student_file, teacher_file = _shipped_pair(tmp_path, student)
    head = EvidenceHead(96, CLASSES)
    with torch.no_grad():
        head.out.weight[0, 0, 0, 0] = float("nan")
    save_head(head, tmp_path / HEAD_FILE, student_file=student_file, teacher_file=teacher_file, seed=0, epochs=1,
              history=[1.0])
    with pytest.raises(ValueError, match="non-finite"):
        load_head(tmp_path / HEAD_FILE, student)
    note = attach_shipped_head(student, student_file)
    assert "non-finite" in note and evidence_head(student) is None


def test_with_held_out_images_the_head_of_the_epoch_with_the_lowest_held_out_loss_is_kept():
    from core.teacher_evidence import cache_training_pairs
    student, teacher = pooled_student(), tiny_teacher(0)
    train, held = blobs(4, 21), blobs(8, 22)  # four training images: the head soon fits them, not the held-out ones
    val_losses: list[float] = []
    head, history = train_head(student, teacher, train, epochs=40, batch_size=2, lr=3e-2, seed=0, val_images=held,
                               on_val=lambda epoch, loss: val_losses.append(loss))
    assert len(val_losses) == 40 and len(history) == 40
    assert min(val_losses) < val_losses[-1] - 1e-3  # the held-out loss has risen again by the last epoch
    acts, targets = cache_training_pairs(student, teacher, held)
    with torch.no_grad():
        kept = float(evidence_loss(head(acts), targets))
    assert kept == pytest.approx(min(val_losses), rel=1e-5)
    last, _ = train_head(student, teacher, train, epochs=40, batch_size=2, lr=3e-2, seed=0)  # no held-out images
    with torch.no_grad():
        assert float(evidence_loss(last(acts), targets)) == pytest.approx(val_losses[-1], rel=1e-5)


@pytest.mark.parametrize("design", ["conv3x3", "bottleneck", "pointwise"])
def test_every_head_design_gives_one_map_per_class_and_survives_saving(tmp_path, design):
    from core.evidence_model import HEAD_DESIGNS

    assert design in HEAD_DESIGNS
    head = seeded(lambda: EvidenceHead(96, CLASSES, hidden=8, design=design), 0)
    assert head(torch.randn(2, 96, 4, 4)).shape == (2, CLASSES, 4, 4)
    student = pooled_student()
    student_file, teacher_file = _shipped_pair(tmp_path, student)
    path = save_head(head, tmp_path / HEAD_FILE, student_file=student_file, teacher_file=teacher_file, seed=0,
                     epochs=1, history=[1.0])
    assert json.loads(path.with_suffix(".json").read_text())["design"] == design
    loaded = load_head(path, student)
    assert loaded.design == design
    act = torch.randn(1, 96, 4, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(act), head(act), atol=1e-2)  # float16 weights


def test_the_designs_differ_in_what_a_cell_sees():
    # a 3x3 convolution lets a cell's map read its neighbours; the pointwise head reads the cell alone
    act = torch.randn(1, 96, 4, 4)
    moved = act.clone()
    moved[0, :, 0, 0] += 5  # change one corner cell
    for design, neighbour_moves in (("conv3x3", True), ("bottleneck", True), ("pointwise", False)):
        head = seeded(lambda: EvidenceHead(96, CLASSES, hidden=8, design=design), 0)
        with torch.no_grad():
            changed = (head(moved) - head(act)).abs().amax(1)[0]
        assert bool(changed[0, 0] > 0) and bool(changed[1, 1] > 0) == neighbour_moves, design


def test_an_unknown_design_is_refused_and_a_first_format_head_is_the_3x3_design(tmp_path):
    with pytest.raises(ValueError, match="design"):
        EvidenceHead(96, CLASSES, design="transformer")
    student = pooled_student()
    student_file, teacher_file = _shipped_pair(tmp_path, student)
    head = seeded(lambda: EvidenceHead(96, CLASSES), 0)
    path = save_head(head, tmp_path / HEAD_FILE, student_file=student_file, teacher_file=teacher_file, seed=0,
                     epochs=1, history=[1.0])
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["design"]  # the heads shipped before designs were named
    meta_path.write_text(json.dumps(meta))
    assert load_head(path, student).design == "conv3x3"
    for bad in ("transformer", 3, None, ["conv3x3"]):
        meta_path.write_text(json.dumps({**meta, "design": bad}))
        with pytest.raises(ValueError, match="design"):
            load_head(path, student)
