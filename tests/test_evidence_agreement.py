"""The teacher's evidence against the teacher's occlusion map (one it never learnt from): a quick run end to end."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import evidence_agreement
from core import checkpoints
from core.explain import explain
from core.faithfulness import agreement
from core.faithfulness_study import study_images
from core.inference import batch_for, predict_tensor
from tests.support import ship_seeded_head, student_as_teacher

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


def cheap_pair_with_head(root):
    """The shipped phantom student as both models (a teacher whose occlusion takes seconds), with a seeded head."""
    return ship_seeded_head(student_as_teacher(root))


def test_each_map_is_compared_with_the_teachers_occlusion_on_the_same_images_and_classes(tmp_path):
    folder = cheap_pair_with_head(tmp_path / "checkpoints")
    out = tmp_path / "agreement.json"
    assert evidence_agreement.main(["--datasets", "phantom", "brain_tumor", "--checkpoints",
                                    str(tmp_path / "checkpoints"), "--images", "4", "--threads", "1",
                                    "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["datasets"]) == ["phantom"]  # brain_tumor has no head there: left out
    found = result["datasets"]["phantom"]
    assert found["images"] == 4
    # the student's CAM against the teacher's occlusion, worked out here from the explainers themselves
    model, meta = checkpoints.load(folder / "teacher.pt")
    x = batch_for(meta, study_images(meta, 4, None).images)
    targets = predict_tensor(model, x).argmax(1).tolist()
    expected = np.median([agreement(explain(model, x[i:i + 1], "occlusion", t, predict=False).heatmap,
                                    explain(model, x[i:i + 1], "cam", t, predict=False).heatmap)["spearman"]
                          for i, t in enumerate(targets)])
    assert found["with_teacher_occlusion"]["cam"] == expected
    assert set(found["with_teacher_occlusion"]) == {"teacher_evidence", "grad_cam", "cam", "feature_maps"}
    assert all(-1 <= v <= 1 for v in found["with_teacher_occlusion"].values())
    table = out.with_suffix(".md").read_text()
    assert "| phantom | 4 |" in table and "occlusion" in table


def test_nonsense_counts_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        evidence_agreement.main(["--images", "0", "--out", str(tmp_path / "a.json")])
    assert stopped.value.code == 2 and not any(tmp_path.iterdir())
    assert "--images" in capsys.readouterr().err
