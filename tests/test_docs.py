"""The README and docs/: a short README with both commands and a link to every doc, links that resolve, and the
generated blocks each written into its own file by `python -m core.results`."""

import json
import re
from pathlib import Path

import pytest

from core import results
from tests.test_results import _results_tree

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor a Markdown heading gets on the repository's web page: lower case, punctuation dropped, spaces
    to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # a comment in code is no heading
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_readme_is_short_and_keeps_the_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "```bash\npip install -r requirements.txt && streamlit run explorer/Home.py\n```" in readme
    assert "```bash\n./scripts/test.sh\n```" in readme


def test_every_doc_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert {p.name for p in DOCS} >= {"app.md", "deploy.md", "training.md", "reproducing.md", "results.md",
                                      "benchmarks.md", "architecture.md"}
    for doc in DOCS:
        assert f"](docs/{doc.name})" in readme, doc.name


@pytest.mark.parametrize("page", [REPO / "README.md"] + DOCS, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.exists(), f"{page.name}: {target} is not in the repository"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: {target} names no heading of {linked.name}"


def test_slug_drops_punctuation_as_the_anchors_do():
    assert slug("How these numbers differ from the paper's") == "how-these-numbers-differ-from-the-papers"
    assert slug(" What the splits separate") == "what-the-splits-separate"


def test_headline_has_one_row_per_dataset_from_its_official_split(tmp_path):
    root = _results_tree(tmp_path, 0.95)  # brain_tumor, official and pooled
    timing = root / "brain_tumor" / "timing"
    timing.mkdir()
    rows = [{"model": "teacher", "method": "grad_cam", "median_s": 0.1},
            {"model": "student", "method": "grad_cam", "median_s": 0.02},
            {"model": "student", "method": "feature_maps", "median_s": 0.01}]
    (timing / "bench.json").write_text(json.dumps({"rows": rows}))
    text = results.render_headline(root)
    assert [line for line in text.splitlines() if line.startswith("| brain_tumor")] == \
        ["| brain_tumor | 200 | 0.9500 | 0.9000 ± 0.0100 | 0.9000 ± 0.0100 | 10.0x |"]
    (timing / "bench.json").unlink()
    assert "| 0.9000 ± 0.0100 | – |" in results.render_headline(root), "no timing run: no speed-up"
    assert "python -m core.reproduce phantom" in results.render_headline(tmp_path / "empty")


def _repo_with_blocks(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "benchmarks" / "results" / "train_speed.md").write_text("Training throughput: 12.0 images / s\n")
    blocks: dict[str, list[str]] = {}
    for name, start, end, _ in results.BLOCKS:  # a file may hold several blocks (the README: two)
        blocks.setdefault(name, []).append(f"{start}\nold\n{end}\n")
    for name, parts in blocks.items():
        (root / name).write_text(f"{name} head\n" + "between\n".join(parts) + f"{name} tail\n", encoding="utf-8")
    return root


def test_main_writes_each_block_into_its_own_file_and_check_names_the_stale_one(tmp_path, capsys):
    root = _repo_with_blocks(tmp_path)
    assert {name for name, *_ in results.BLOCKS} == {"README.md", "docs/results.md", "docs/benchmarks.md"}
    assert results.main(["--check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert all(name in out for name in ("README.md", "docs/results.md", "docs/benchmarks.md"))
    assert results.main(["--root", str(root)]) == 0
    assert results.main(["--check", "--root", str(root)]) == 0
    readme, bench = (root / "README.md").read_text(), (root / "docs" / "benchmarks.md").read_text()
    assert readme.startswith("README.md head\n") and readme.endswith("\nREADME.md tail\n") and "old" not in readme
    assert "No results yet" in readme and "No results yet" in (root / "docs" / "results.md").read_text()
    assert "Training throughput: 12.0 images / s" in bench and "Training throughput" not in readme
    (root / "docs" / "benchmarks.md").write_text(bench.replace("12.0", "13.0"))
    capsys.readouterr()
    assert results.main(["--check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "docs/benchmarks.md" in out and "README.md" not in out and "docs/results.md" not in out


def test_a_file_without_its_markers_is_named(tmp_path):
    root = _repo_with_blocks(tmp_path)
    (root / "docs" / "results.md").write_text("the markers are gone\n")
    with pytest.raises(SystemExit, match="docs/results.md has lost its <!-- results:start -->"):
        results.main(["--check", "--root", str(root)])
