"""The teacher-transfer comparison keeps the start that validation prefers and refuses a shipped teacher trained
with another recipe (`benchmarks/teacher_transfer.py`), on histories made up here."""

import pytest

from benchmarks import teacher_transfer as tt


def history(losses, accs):
    return [{"epoch": i + 1, "val_loss": loss, "val_acc": acc, "train_loss": 1.0} for i, (loss, acc) in
            enumerate(zip(losses, accs))]


def test_the_best_epoch_is_the_lowest_validation_loss_not_the_last_or_the_most_accurate():
    h = history([0.9, 0.4, 0.5], [0.6, 0.80, 0.85])
    assert tt.best(h) == {"epoch": 2, "val_acc": 0.80, "val_loss": 0.4}
    assert tt.curve(h)[-1] == {"epoch": 3, "val_acc": 0.85, "val_loss": 0.5}  # only the validation columns


def test_the_table_names_each_arm_and_the_preferred_start():
    arms = {"from the brain_tumor teacher": history([0.5, 0.31], [0.7, 0.90]),
            "from scratch (shipped)": history([0.6, 0.28], [0.6, 0.92])}
    result = {"dataset": "alzheimer", "source": "brain_tumor", "recipe": "cpu budget",
              "arms": {k: {"curve": tt.curve(h), "best": tt.best(h)} for k, h in arms.items()},
              "preferred": "from scratch (shipped)", "created": "2026-01-01T00:00:00",
              "environment": {"cpu": "cpu", "cpu_count": 2, "load_average": 0.0, "python": "3", "torch": "2"}}
    table = tt.markdown(result)
    assert "| from the brain_tumor teacher | 2 | 0.9000 | 0.3100 | 0.9000 |" in table
    assert "| from scratch (shipped) | 2 | 0.9200 | 0.2800 | 0.9200 |" in table
    assert "Validation prefers: **from scratch (shipped)**" in table


def test_a_shipped_teacher_of_another_recipe_is_refused(monkeypatch, tmp_path):
    from core import checkpoints

    real = checkpoints.load_meta

    def other_recipe(path):
        meta = real(path)
        meta.train["lr"] = meta.train["lr"] * 2
        return meta

    monkeypatch.setattr(checkpoints, "load_meta", other_recipe)
    with pytest.raises(SystemExit, match="another recipe \\(lr\\)"):
        tt.main(["--dataset", "alzheimer", "--runs", str(tmp_path)])
    assert not list(tmp_path.iterdir()), "nothing is trained for a comparison that cannot be made"
