"""First visit of every page on every dataset: the server's time to run the page, measured in one fresh process.

    python benchmarks/first_visit.py [--datasets phantom brain_tumor ...] [--read-home 5] [--preload] [--out FILE]

Runs the app as Streamlit's AppTest does (the real scripts, in this process, on the app's one torch thread),
starting cold: Home first (the process has imported Streamlit, nothing of the app), then for each dataset in
turn every page by deep link, as a user who opens each page once. Each time is one script run of the page: what
the server spends before the browser can draw it (the browser's own drawing is not included; on a 2-core machine
Chromium adds seconds to the Dataset page's grid, see ``benchmarks/app_memory.py``). After Home the walk waits
``--read-home`` seconds (default 5), as a user reads Home before the first click. ``--preload`` runs the app with
``KD_APP_PRELOAD=1``: Home then imports the model code in the background once it has drawn
(`explorer.runtime.preload_model_code`), and a page that needs it sooner waits for the rest of that import. The
step that imports torch is named. Target: every page at most 2 s. Results go to
``benchmarks/results/first_visit.json`` with a Markdown table beside it (``.md``), which ``python -m
core.results`` renders into docs/benchmarks.md. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import measured_on, write_results  # noqa: E402
from explorer import page_list  # noqa: E402

TARGET_S = 2.0
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "first_visit.json"
PRELOAD_OUT = ROOT / "benchmarks" / "results" / "first_visit_preload.json"
DATASETS = ("phantom", "brain_tumor", "eye_disease", "alzheimer")
# Every page but Home (visited first): file stem -> sidebar title, the row names of the table below.
PAGES = {p.name: p.title for p in page_list.PAGES if not p.default}


def walk(datasets: list[str], read_home: float = 0.0, timeout: float = 600.0) -> list[dict]:
    """Home, ``read_home`` seconds on it, then every page of every dataset once; one record per script run."""
    from streamlit.testing.v1 import AppTest

    steps = []

    def timed(step: str, dataset: str, run) -> None:
        torch_before = "torch" in sys.modules
        start = time.perf_counter()
        at = run()
        seconds = time.perf_counter() - start
        problems = [e.value for e in at.exception] + [e.value for e in at.error]
        steps.append({"page": step, "dataset": dataset, "seconds": round(seconds, 3),
                      "title": at.title[0].value if len(at.title) else None,
                      "imported_torch": not torch_before and "torch" in sys.modules,
                      "errors": [str(p)[:200] for p in problems]})

    at = AppTest.from_file(str(ROOT / "explorer" / "Home.py"), default_timeout=timeout)
    timed("home", datasets[0], at.run)
    time.sleep(read_home)  # the user reads Home; the model code is imported in the background meanwhile
    for dataset in datasets:
        for page in PAGES:
            at.query_params.clear()
            at.query_params["dataset"] = dataset
            timed(page, dataset, lambda page=page: at.switch_page(page_list.page(page).link).run())
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--read-home", type=float, default=5.0,
                        help="seconds spent on Home before the first click (a user reading it)")
    parser.add_argument("--preload", action="store_true", help="with KD_APP_PRELOAD=1 (default out: "
                        f"{PRELOAD_OUT.relative_to(ROOT)})")
    parser.add_argument("--out", default=None, help="JSON file for the numbers (Markdown beside it; default "
                        f"{DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    args.out = args.out or str(PRELOAD_OUT if args.preload else DEFAULT_OUT)
    os.environ["KD_APP_PRELOAD"] = "1" if args.preload else "0"
    started = time.perf_counter()
    steps = walk(args.datasets, args.read_home)
    from core.stopwatch import environment  # after the walk: it imports torch
    from explorer import runtime

    pages = [s for s in steps if s["page"] != "home"]
    slow = [s for s in pages if s["seconds"] > TARGET_S]
    for s in steps:
        note = " (imports torch)" if s["imported_torch"] else ""
        print(f"{s['dataset']:>12} {s['page']:<13} {s['seconds']:7.2f} s{note}  {s['title']!r}"
              f"{'  ERROR' if s['errors'] else ''}")
    print(f"{len(pages) - len(slow)} of {len(pages)} first visits within {TARGET_S} s")
    payload = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "seconds": time.perf_counter() - started, "target_s": TARGET_S, "steps": steps,
               "within_target": len(pages) - len(slow), "visits": len(pages), "config": vars(args),
               "background_import_s": runtime.preload_seconds,
               "torch_build": runtime.torch_build(),
               "environment": environment()}
    out = Path(args.out)
    write_results(out, payload, markdown(payload))
    errors = [s for s in steps if s["errors"]]
    return 1 if errors else 0


def markdown(result: dict) -> str:
    """The docs/benchmarks.md snippet: one row per page, one column per dataset, the torch import marked."""
    steps, env = result["steps"], result["environment"]
    datasets = list(dict.fromkeys(s["dataset"] for s in steps if s["page"] != "home"))
    cell = {(s["page"], s["dataset"]): s for s in steps}

    def shown(s: dict) -> str:
        text = f"{s['seconds']:.2f}" + (" (torch import)" if s["imported_torch"] else "")
        return f"**{text}**" if s["seconds"] > result["target_s"] else text

    home = next(s for s in steps if s["page"] == "home")
    read = result.get("config", {}).get("read_home", 0)
    background = result.get("background_import_s")
    preload = result.get("config", {}).get("preload")
    reading = (f"then {read:g} s reading Home" + (", while the model code is imported in the background"
                                                  + (f" ({background:.1f} s)" if background else "")
                                                  if preload else "") + "; ") if read else ""
    rows = [f"| {PAGES[p]} | " + " | ".join(shown(cell[(p, d)]) for d in datasets) + " |" for p in PAGES
            if all((p, d) in cell for d in datasets)]
    return "\n".join([
        f"First visit of each page, server time to run it (`python benchmarks/first_visit.py{' --preload' if preload else ''}`"
        + (f", torch's {result['torch_build']} build" if result.get("torch_build") else "") + "; one fresh process, "
        f"pages in this order, datasets left to right; Home first: {home['seconds']:.2f} s, {reading}in bold: over the "
        f"{result['target_s']:g} s target):", "",
        "| page | " + " | ".join(datasets) + " |", "| --- |" + " --- |" * len(datasets), *rows, "",
        f"{result['within_target']} of {result['visits']} first visits within {result['target_s']:g} s. "
        + measured_on(result["created"], env), ""])


if __name__ == "__main__":
    raise SystemExit(main())
