"""The app under load: several sessions explaining with the slow methods at once, and another user's light page
meanwhile, measured with and without the server's queue for slow runs in one run.

    python benchmarks/app_load.py [--sessions 6] [--slots 6 default] [--quick] [--out FILE]

For each slot setting (``--slots``: a number is ``KD_APP_EXPLAINERS``, the runs with a slow method the server
lets explain at once, so as many as the sessions means no queue; ``default`` is the app as shipped) a fresh
``streamlit run explorer/Home.py`` (``KD_APP_THREADS=1``) is started, and the resident memory (RSS) of the server
and its children sampled every 0.1 s for the peak. One headless Chromium, "another user", times its light page
(``--light-page``, the Dataset page by default) a few times alone; then ``--sessions`` browser sessions, spread
over ``--datasets``, open the Explanations page with integrated gradients and GradientSHAP (the page's own
scoring on), press Explain at the same moment, and wait for their result, noting the queue position the page
shows, while the other user loads the light page again and again. Targets: the RSS at peak <= 1.5 GB and the light
page under load at most 2x its time alone (medians), for the app as shipped (the last setting); the ratios of the
settings to each other are printed too.

The browsers run on the server's machine here, while in use they run on the users' own: each look a session takes
at its page (Chromium extracting the page's text) spends the server's cores. So the explaining sessions look every
``--explain-poll`` seconds (2 by default: their results take tens of seconds; 0.25 with ``--quick``), the light
page's user every 0.25 s.

``--quick`` (two sessions on phantom, integrated gradients with the scoring off, the Glossary as the light page)
is the smoke run the tests use. Results go to ``benchmarks/results/app_load.json`` (written atomically) with a
Markdown table beside it (``.md``). Needs Debian's ``chromium`` and ``chromium-driver`` and selenium.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.app_memory import PAGES, environment, wait_rendered, wait_until  # noqa: E402
from benchmarks.app_server import RssSampler, server, wait_healthy  # noqa: E402
from benchmarks.report import measured_on, write_results  # noqa: E402
from scripts.screenshots import chrome, chromium_paths, click_button, errors_shown, free_port  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "app_load.json"
QUICK_OUT = ROOT / "runs" / "app_load_quick.json"  # git-ignored: a smoke run never replaces the numbers in docs/
DATASETS = ("phantom", "brain_tumor", "eye_disease", "alzheimer")
METHODS = ("integrated_gradients", "gradient_shap")
QUICK_METHODS = ("integrated_gradients",)
SLOTS_SETTING = "KD_APP_EXPLAINERS"
# Measured value: (target, what it is), for the app as shipped.
TARGETS = {"rss_peak_mb": (1500.0, "RSS at peak, MB"),
           "light_page_factor": (2.0, "light page under load / alone")}
WAITING = re.compile(r"Waiting for (\d+) runs? ahead")
SCORING = ("Deletion / insertion", "Sanity check")  # the page's scoring checkboxes, ticked when it opens


# --- the sessions --------------------------------------------------------------------------------------------

def timed_visit(driver, url: str, page: str, dataset: str, timeout: float) -> float:
    """Seconds from asking for ``page`` to its title drawn and its script finished."""
    start = time.perf_counter()
    driver.get(f"{url}/{page}?dataset={dataset}")
    shown = wait_rendered(driver, PAGES[page].format(dataset=dataset), f"{page} on {dataset}", timeout)
    return shown - start


def untick(driver, label: str) -> None:
    """Untick the checkbox labelled ``label``."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.XPATH, f'//label[contains(., "{label}")]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    box.click()


class Explainer:
    """One session that opens the Explanations page, presses Explain with the others and waits for its result."""

    def __init__(self, name: str, driver, url: str, dataset: str, methods: tuple[str, ...], scoring: bool,
                 timeout: float, explain_timeout: float, poll: float):
        self.name, self.driver, self.url, self.dataset, self.methods = name, driver, url, dataset, methods
        self.scoring, self.timeout, self.explain_timeout, self.poll = scoring, timeout, explain_timeout, poll
        self.most_ahead = 0  # the largest queue position the page showed

    def open(self) -> None:
        self.driver.get(f"{self.url}/explanations?dataset={self.dataset}&image=1&method={','.join(self.methods)}")
        wait_rendered(self.driver, PAGES["explanations"], f"{self.name}: Explanations on {self.dataset}",
                      self.timeout, text="Press Explain")
        if not self.scoring:
            for label in SCORING:
                untick(self.driver, label)
                time.sleep(0.5)
                wait_rendered(self.driver, PAGES["explanations"], f"{self.name}: {label} off", self.timeout,
                              text="Press Explain")

    def _done(self, body: str, titles: list[str], running: bool) -> bool:
        for ahead in WAITING.findall(body):
            self.most_ahead = max(self.most_ahead, int(ahead))
        return f"computed for {self.dataset}" in body and not running

    def explain(self, start: threading.Barrier) -> dict:
        start.wait()
        began = time.perf_counter()
        click_button(self.driver, "Explain")
        done = wait_until(self.driver, self._done, f"{self.name}: Explain on {self.dataset}", self.explain_timeout,
                          poll=self.poll, settle=1.0)
        return {"session": self.name, "dataset": self.dataset, "seconds": round(done - began, 2),
                "most_ahead_shown": self.most_ahead, "errors": errors_shown(self.driver)}


def light_page_times(driver, url: str, page: str, dataset: str, timeout: float, until: threading.Event,
                     start: threading.Barrier) -> list[float]:
    """The other user's light page loaded again and again from the explainers' start until they are all done."""
    start.wait()
    seconds = []
    while not until.is_set() or not seconds:
        seconds.append(round(timed_visit(driver, url, page, dataset, timeout), 2))
    return seconds


# --- one server ----------------------------------------------------------------------------------------------

def slot_env(slots: str) -> dict:
    """The server's environment for a ``--slots`` value: ``default`` leaves the app's own."""
    env = {k: v for k, v in os.environ.items() if k != SLOTS_SETTING}
    return env if slots == "default" else {**env, SLOTS_SETTING: slots}


def measure_setting(args, slots: str, work: Path) -> dict:
    """One slot setting on a fresh server: the light page alone, then under the explaining sessions."""
    port, log_path = free_port(), work / f"streamlit-{slots}.log"
    url = f"http://127.0.0.1:{port}"
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(slot_env(slots))  # `server` starts the app with this process's environment
    try:
        with ExitStack() as stack:
            other = stack.enter_context(chrome(height=1400))
            drivers = [stack.enter_context(chrome(height=1400)) for _ in range(args.sessions)]
            for driver in [other, *drivers]:
                driver.set_page_load_timeout(args.timeout)
            proc = stack.enter_context(server(port, log_path))
            sampler = RssSampler(proc.pid)
            sampler.start()
            stack.callback(sampler.stop)
            wait_healthy(url, proc, time.perf_counter() + args.cold_timeout, log_path)
            timed_visit(other, url, args.light_page, args.light_dataset, args.timeout)  # loads what the page needs
            alone = [round(timed_visit(other, url, args.light_page, args.light_dataset, args.timeout), 2)
                     for _ in range(args.repeats)]
            sessions = [Explainer(f"session {i + 1}", d, url, args.datasets[i % len(args.datasets)], args.methods,
                                  not args.quick, args.timeout, args.explain_timeout, args.explain_poll)
                        for i, d in enumerate(drivers)]
            with ThreadPoolExecutor(len(sessions)) as pool:  # open the pages (and load the models) together
                list(pool.map(Explainer.open, sessions))
            before = sampler.current_mb()
            start, finished = threading.Barrier(len(sessions) + 1), threading.Event()
            with ThreadPoolExecutor(len(sessions) + 1) as pool:
                light = pool.submit(light_page_times, other, url, args.light_page, args.light_dataset, args.timeout,
                                    finished, start)
                runs = [pool.submit(s.explain, start) for s in sessions]
                try:
                    results = [r.result() for r in runs]
                finally:
                    finished.set()
                under_load = light.result()
            after = sampler.current_mb()
        server_pid = proc.pid
    finally:
        os.environ.clear()
        os.environ.update(saved)
    factor = statistics.median(under_load) / statistics.median(alone)
    print(f"  slots {slots}: RSS peak {sampler.peak_mb:.0f} MB; light page {statistics.median(alone):.2f} s alone, "
          f"{statistics.median(under_load):.2f} s under load ({factor:.2f}x); last result after "
          f"{max(r['seconds'] for r in results):.0f} s", flush=True)
    return {"slots": slots, "rss_peak_mb": round(sampler.peak_mb, 1), "rss_before_mb": round(before, 1),
            "rss_after_mb": round(after, 1), "light_alone_s": alone, "light_under_load_s": under_load,
            "light_page_factor": round(factor, 3), "last_result_s": max(r["seconds"] for r in results),
            "sessions": results, "timeline_mb": sampler.timeline, "server_pid": server_pid}


# --- the report ----------------------------------------------------------------------------------------------

def with_targets(measured: dict) -> dict:
    """The app as shipped against each target, with the ratio measured / target."""
    return {key: {"measured": measured[key], "target": target, "ratio": round(measured[key] / target, 3),
                  "met": measured[key] <= target, "label": label} for key, (target, label) in TARGETS.items()}


ROWS = (("rss_peak_mb", "RSS at peak, MB", "{:.0f}"), ("light_alone", "light page alone, s (median)", "{:.2f}"),
        ("light_load", "light page under load, s (median)", "{:.2f}"),
        ("light_page_factor", "light page under load / alone", "{:.2f}"),
        ("last_result_s", "last session's result, s", "{:.0f}"), ("most_ahead", "largest queue position shown", "{}"))


def row_values(setting: dict) -> dict:
    return {**setting, "light_alone": statistics.median(setting["light_alone_s"]),
            "light_load": statistics.median(setting["light_under_load_s"]),
            "most_ahead": max(s["most_ahead_shown"] for s in setting["sessions"])}


def setting_name(slots: str) -> str:
    return "as shipped" if slots == "default" else f"{SLOTS_SETTING}={slots}"


def table(result: dict) -> str:
    settings = [row_values(s) for s in result["settings"]]
    lines = [f"{'':<36}" + "".join(f"{setting_name(s['slots']):>24}" for s in settings)
             + (f"{'last / first':>14}" if len(settings) > 1 else "")]
    for key, label, fmt in ROWS:
        line = f"{label:<36}" + "".join(f"{fmt.format(s[key]):>24}" for s in settings)
        if len(settings) > 1 and settings[0][key]:
            line += f"{settings[-1][key] / settings[0][key]:>14.2f}"
        lines.append(line)
    lines.append("")
    for check in result["checks"].values():
        lines.append(f"{check['label']:<36} {check['measured']:>10.2f} <= {check['target']:g}  ratio "
                     f"{check['ratio']:.2f}  {'PASS' if check['met'] else 'FAIL'}")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The docs/benchmarks.md snippet: the settings side by side, the targets, and the conditions."""
    load, settings = result["load"], [row_values(s) for s in result["settings"]]
    head = "| measure | " + " | ".join(setting_name(s["slots"]) for s in settings) + " | target |"
    targets = {"rss_peak_mb": "<= 1500", "light_page_factor": "<= 2"}
    rows = [f"| {label} | " + " | ".join(fmt.format(s[key]) for s in settings) + f" | {targets.get(key, '')} |"
            for key, label, fmt in ROWS]
    return "\n".join([
        f"The app under load (`python benchmarks/app_load.py{' --quick' if load['quick'] else ''}`; "
        f"{load['sessions']} browser sessions on {', '.join(load['datasets'])} press Explain at once with "
        f"{', '.join(load['methods'])}" + ("" if load["quick"] else " and the page's scoring")
        + f", while another user loads the {load['light_page']} page of {load['light_dataset']}; a fresh server "
          "per setting, the targets for the app as shipped" + (
            f"; the explaining sessions look at their pages every {load['explain_poll_s']:g} s, the other user's "
            "every 0.25 s" if "explain_poll_s" in load else "") + "):", "",
        head, "| --- |" + " --- |" * (len(settings) + 1), *rows, "",
        measured_on(result["created"], result["environment"], "streamlit"), ""])


# --- the run -------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=6, help="browser sessions explaining at once")
    parser.add_argument("--slots", nargs="+", default=None,
                        help=f"{SLOTS_SETTING} values measured in turn, a fresh server each: a whole number, or "
                             "'default' for the app as shipped (default: as many as the sessions, i.e. no queue, "
                             "then default)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS),
                        help="datasets the explaining sessions use, in turn")
    parser.add_argument("--light-page", default="dataset", choices=sorted(PAGES), help="the other user's page")
    parser.add_argument("--light-dataset", default="brain_tumor", choices=DATASETS, help="its dataset")
    parser.add_argument("--repeats", type=int, default=3, help="times the light page is timed alone")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 sessions on phantom, integrated gradients without scoring, the Glossary "
                             "as the light page")
    parser.add_argument("--out", default=None, help=f"JSON file, the Markdown table beside it (default "
                        f"{DEFAULT_OUT.relative_to(ROOT)}; with --quick {QUICK_OUT.relative_to(ROOT)})")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds allowed for one page")
    parser.add_argument("--explain-timeout", type=float, default=1200.0, help="seconds allowed for one result")
    parser.add_argument("--explain-poll", type=float, default=None,
                        help="seconds between two looks of an explaining session at its page (default 2; 0.25 with "
                             "--quick, whose waits are short): "
                             "each look asks its Chromium for the page's text, work that in use runs on the user's "
                             "own machine, not on the server's cores")
    parser.add_argument("--cold-timeout", type=float, default=180.0, help="seconds allowed for the server to start")
    args = parser.parse_args(argv)
    args.methods = METHODS
    if args.quick:
        args.sessions, args.datasets, args.methods = 2, ["phantom"], QUICK_METHODS
        args.light_page, args.light_dataset, args.repeats = "glossary", "phantom", 2
    if args.sessions < 1 or args.repeats < 1:
        parser.error("--sessions and --repeats must be at least 1")
    if args.explain_poll is None:  # (0 is refused below, not taken for the default)
        args.explain_poll = 0.25 if args.quick else 2.0
    if not 0 < args.explain_poll <= 10:
        parser.error("--explain-poll must be above 0 and at most 10 seconds")
    args.slots = args.slots or [str(args.sessions), "default"]
    for slots in args.slots:
        if slots != "default" and (not slots.isdigit() or int(slots) < 1):
            parser.error(f"--slots takes whole numbers of at least 1 or 'default', got {slots!r}")
    args.out = args.out or str(QUICK_OUT if args.quick else DEFAULT_OUT)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for exe in chromium_paths():
        if not Path(exe).is_file():
            print(f"error: {exe} is missing (install Debian's chromium and chromium-driver)", file=sys.stderr)
            return 2
    env = environment()
    print(f"{env['cpu']} x{env['cpu_count']}, load average {env['load_average']:.2f}; python {env['python']}, "
          f"torch {env['torch']}, streamlit {env['streamlit']}; RSS from {env['rss_source']}", flush=True)
    from selenium.common.exceptions import WebDriverException

    started = time.perf_counter()
    settings = []
    with tempfile.TemporaryDirectory(prefix="app_load_") as work:
        for slots in args.slots:
            try:
                settings.append(measure_setting(args, slots, Path(work)))
            except (TimeoutError, RuntimeError, LookupError, OSError, WebDriverException) as err:
                log = Path(work) / f"streamlit-{slots}.log"
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:] if log.is_file() else ""
                print(f"error: slots {slots}: {err}\n--- server log (tail) ---\n{tail}", file=sys.stderr)
                return 2
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.perf_counter() - started, 1), "checks": with_targets(settings[-1]),
              "environment": {**env, "load_average_end": round(os.getloadavg()[0], 2)},
              "load": {"sessions": args.sessions, "datasets": list(args.datasets)[:args.sessions],
                       "methods": list(args.methods), "scoring": not args.quick, "light_page": args.light_page,
                       "light_dataset": args.light_dataset, "repeats": args.repeats, "quick": bool(args.quick),
                       "explain_poll_s": args.explain_poll},
              "settings": settings}
    print("\n" + table(result))
    for setting in settings:
        for session in setting["sessions"]:
            if session["errors"]:
                print(f"warning: slots {setting['slots']}: {session['session']} showed: {session['errors']}")
    out = Path(args.out)
    write_results(out, result, markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0 if all(c["met"] for c in result["checks"].values()) else 1  # 2: nothing measured (above)


if __name__ == "__main__":
    raise SystemExit(main())
