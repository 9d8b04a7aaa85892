"""Timing harness (fake clock), benchmark rows, and the core.bench CLI."""

import csv
import json
from pathlib import Path

import pytest
import torch

import core.bench
from core.bench import benchmark_methods, build_parser, format_table, main, run_bench
from core.stopwatch import TimingResult, environment, time_callable

pytestmark = pytest.mark.usefixtures("single_thread")


class FakeClock:
    """A clock that advances by one second per reading and logs every event."""

    def __init__(self, events):
        self.events, self.now = events, 0.0

    def __call__(self):
        self.events.append("clock")
        self.now += 1.0
        return self.now


def test_fake_clock_sees_events_in_order():
    events = []
    result = time_callable(lambda: events.append("fn"), repeats=2, warmup=1, clock=FakeClock(events),
                           sync=lambda: events.append("sync"))
    assert events == ["fn", "sync"] + ["sync", "clock", "fn", "sync", "clock"] * 2
    assert result.samples == [1.0, 1.0] and result.warmup == 1


def test_timing_statistics():
    result = TimingResult([4.0, 1.0, 3.0, 2.0, 100.0])
    assert result.median == 3.0 and result.q25 == 2.0 and result.q75 == 4.0 and result.iqr == 2.0
    assert result.mean == pytest.approx(22.0)
    with pytest.raises(ValueError):
        time_callable(lambda: None, repeats=0)
    with pytest.raises(ValueError):
        TimingResult([])


def test_environment_names_versions_and_device():
    env = environment()
    assert {"torch", "torchvision", "captum", "numpy", "threads", "cpu", "device"} <= set(env)
    assert env["device"] == "cpu" and env["threads"] == torch.get_num_threads()


def test_benchmark_uses_same_images_and_targets_for_every_method(tiny_student, tiny_cnn, monkeypatch):
    calls = []
    real_explain = core.bench.explain

    def spy(model, x, method, target, **kwargs):
        calls.append((id(model), method, target, float(x.sum())))
        return real_explain(model, x, method, target, **kwargs)

    monkeypatch.setattr(core.bench, "explain", spy)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    progress = []
    rows = benchmark_methods({"student": tiny_student, "cnn": tiny_cnn}, images, ["feature_maps", "saliency"],
                             [2, 1], repeats=2, warmup=1, threads=1,
                             on_progress=lambda done, total, label: progress.append((done, total, label)))
    assert torch.get_num_threads() == threads  # restored
    assert [(r["model"], r["method"]) for r in rows] == [
        ("student", "forward"), ("student", "feature_maps"), ("student", "saliency"),
        ("cnn", "forward"), ("cnn", "feature_maps"), ("cnn", "saliency")]
    assert progress[-1] == (6, 6, "cnn: saliency")
    per_method = {}
    for model_id, method, target, checksum in calls:
        per_method.setdefault((model_id, method), []).append((target, checksum))
    sequences = {tuple(v) for v in per_method.values()}
    assert len(sequences) == 1  # every (model, method) saw the same images with the same targets, in order
    assert [t for t, _ in next(iter(sequences))] == [2, 2, 2, 1, 1]  # warm-up + 2 repeats, then 2 repeats
    saliency = rows[2]
    assert saliency["passes_forward"] == 1 and saliency["passes_backward"] == 1
    assert saliency["ratio_to_bound"] == pytest.approx(saliency["median_s"] / saliency["bound_s"])
    assert saliency["overhead_s"] == pytest.approx(saliency["median_s"] - rows[0]["median_s"])
    assert saliency["forward_s"] == rows[0]["median_s"]


def test_benchmark_with_fake_clock_and_budget(tiny_student):
    events = []
    rows = benchmark_methods({"s": tiny_student}, torch.randn(1, 3, 32, 32), ["integrated_gradients"], [0],
                             repeats=5, warmup=1, clock=FakeClock(events), budget_s=1e-9,
                             params={"integrated_gradients": {"n_steps": 4, "internal_batch_size": 2}})
    ig = rows[1]
    assert ig["repeats"] == 1 and ig["median_s"] == 1.0 and ig["iqr_s"] == 0.0  # the budget cut the repeats
    assert rows[0]["repeats"] == 5 and json.loads(ig["params"]) == {"internal_batch_size": 2, "n_steps": 4}


def test_run_bench_writes_csv_and_json(tmp_path):
    rows = run_bench("phantom", random_weights=True, teacher_arch="resnet18", student_depth=3, input_size=32,
                     images=2, methods=["feature_maps", "grad_cam"], repeats=1, warmup=0, threads=1, out=tmp_path)
    assert len(rows) == 6 and {r["model"] for r in rows} == {"teacher", "student"}
    with (tmp_path / "bench.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6
    payload = json.loads((tmp_path / "bench.json").read_text())
    assert payload["environment"]["torch"] == torch.__version__
    assert payload["environment"]["threads"] == rows[0]["threads"] == 1
    assert payload["config"]["random_weights"] and len(payload["rows"]) == 6
    assert "grad_cam" in format_table(rows)


def test_run_bench_reads_checkpoints_with_their_preprocessing(tmp_path, tiny_student):
    from core.checkpoints import CheckpointMeta, save
    from core.models import build_teacher
    from core.phantom import PHANTOM_CLASSES

    classes = list(PHANTOM_CLASSES)
    teacher = build_teacher("resnet18", 4).eval()
    save(teacher, CheckpointMeta("resnet18", 4, classes, 48, [0.5] * 3, [0.25] * 3, dataset="phantom"),
         tmp_path / "t.pt")
    save(tiny_student, CheckpointMeta("student", 4, classes, 32, [0.1] * 3, [0.2] * 3, role="student",
                                      dataset="phantom", arch_args={"depth": 3}), tmp_path / "s.pt")
    rows = run_bench("phantom", tmp_path / "t.pt", tmp_path / "s.pt", images=3, methods=["saliency"], repeats=1,
                     warmup=0, threads=1)
    sizes = {r["model"]: r["input_size"] for r in rows}
    assert sizes == {"teacher": "48x48", "student": "32x32"} and all(r["images"] == 3 for r in rows)


def test_cli_documents_every_option_and_fails_clearly(tmp_path, capsys):
    parser = build_parser()
    assert all(action.help for action in parser._actions)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0
    code = main(["--dataset", "phantom", "--teacher", str(tmp_path / "missing.pt"), "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 2 and "missing.pt" in capsys.readouterr().err
    assert main(["--random-weights", "--teacher-arch", "resnet18", "--student-depth", "3", "--input-size", "32",
                 "--images", "1", "--methods", "saliency", "--repeats", "1", "--param", "saliency.abs=1",
                 "--out", str(tmp_path), "--no-progress"]) == 2  # saliency has no parameter 'abs'
    assert main(["--random-weights", "--teacher-arch", "resnet18", "--student-depth", "3", "--input-size", "32",
                 "--images", "1", "--methods", "occlusion", "--repeats", "1", "--param", "occlusion.window=16",
                 "--param", "occlusion.stride=16", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "occlusion" in capsys.readouterr().out and (tmp_path / "bench.json").is_file()


def test_speed_factors_split_the_headline_into_distillation_and_method():
    from core.bench import factor_lines, speed_factors

    rows = [{"model": "teacher", "method": "grad_cam", "median_s": 0.060},
            {"model": "student", "method": "grad_cam", "median_s": 0.006},
            {"model": "student", "method": "feature_maps", "median_s": 0.008},
            {"model": "student", "method": "cam", "median_s": 0.004}]
    f = speed_factors(rows)
    assert f["distillation"] == pytest.approx(10.0)
    assert f["method"] == pytest.approx({"feature_maps": 0.75, "cam": 1.5})
    assert f["headline"] == pytest.approx({"feature_maps": 7.5, "cam": 15.0})
    assert any("0.75x" in line for line in factor_lines(f))
    assert speed_factors(rows[1:]) is None and factor_lines(None) == []


def test_a_timing_table_with_less_does_not_replace_the_shipped_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))  # the checkpoint root: its tables are shipped work
    out = tmp_path / "phantom" / "timing"
    small = ["--random-weights", "--teacher-arch", "resnet18", "--student-depth", "3", "--input-size", "32",
             "--methods", "saliency", "--repeats", "1", "--warmup", "0", "--threads", "1", "--out", str(out),
             "--no-progress"]
    assert main([*small, "--images", "2"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main([*small, "--images", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "images 1 (shipped: 2)" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*small, "--images", "1", "--force"]) == 0
    assert json.loads((out / "bench.json").read_text())["config"]["images"] == 1
    [kept] = (tmp_path / "phantom" / "earlier").glob("replaced-*")
    assert {p.name: p.read_bytes() for p in (kept / "timing").iterdir()} == before
    # a table outside the checkpoint root is a run's own: rewritten freely
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "elsewhere"))
    assert main([*small, "--images", "1"]) == 0 and len(list((tmp_path / "phantom" / "earlier").iterdir())) == 1


def test_the_teachers_evidence_is_timed_on_the_student_with_its_shipped_head_and_refused_without(tmp_path):
    import shutil

    from core.bench import BenchError
    from tests.support import ship_seeded_head

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "phantom"
    for name in ("teacher.pt", "teacher.json", "student.pt", "student.json"):
        shutil.copyfile(shipped / name, tmp_path / name)
    asked = dict(images=2, methods=["cam", "teacher_evidence"], repeats=1, warmup=0, threads=1)
    with pytest.raises(BenchError, match=r"python -m core\.teacher_evidence"):
        run_bench("phantom", tmp_path / "teacher.pt", tmp_path / "student.pt", **asked)
    ship_seeded_head(tmp_path)
    rows = run_bench("phantom", tmp_path / "teacher.pt", tmp_path / "student.pt", **asked)
    timed = sorted((r["model"], r["method"]) for r in rows)
    assert timed == [("student", "cam"), ("student", "forward"), ("student", "teacher_evidence"),
                     ("teacher", "cam"), ("teacher", "forward")]
    evidence = next(r for r in rows if r["method"] == "teacher_evidence")
    assert (evidence["passes_forward"], evidence["passes_backward"]) == (1, 0)
