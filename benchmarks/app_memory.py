"""Resident memory and cold start of the app in a real browser walk, measured in one run.

    python benchmarks/app_memory.py [--datasets phantom brain_tumor ...] [--quick] [--out FILE]

Starts ``streamlit run explorer/Home.py`` (``KD_APP_THREADS=1``) on a free loopback port and samples the
resident memory (RSS) of the server and all its child processes every 0.1 s in a thread, for the peak.
Cold start: process start to the Home page's title rendered in headless Chromium (the browser is started
first: a user's browser is already open). Then two browser sessions walk the app at the same time, on
different datasets: every page of every dataset by deep link (``?dataset=...``), one upload of a generated
PNG on the Dataset page and one Explain run with every explainer on one image, per session. Targets (what a
share link must fit): cold start <= 5 s, RSS <= 600 MB after the cold start, <= 1.5 GB at peak (and so after the walk).

``--quick`` (phantom; the Glossary page, then an upload on the Explanations page explained there with the
feature-map explainer) is the smoke run the tests use. Results go to ``benchmarks/results/app_memory.json``
(written atomically) with a Markdown snippet beside it (``.md``). Other busy processes on a small machine slow
the cold start: the load average is recorded with the numbers. Needs Debian's ``chromium`` and
``chromium-driver`` and selenium.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.app_server import RssSampler, server, wait_healthy  # noqa: E402
from benchmarks.report import measured_on, write_results  # noqa: E402
from explorer import page_list  # noqa: E402
from scripts.screenshots import chrome, chromium_paths, click_button, errors_shown, free_port  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "app_memory.json"
QUICK_OUT = ROOT / "runs" / "app_memory_quick.json"  # git-ignored: a smoke run never replaces the numbers in docs/
DATASETS = ("phantom", "brain_tumor", "eye_disease", "alzheimer")
# Measured value: (target, what it is). The peak bounds the RSS after the walk too.
TARGETS = {"cold_start_s": (5.0, "cold start, s"),
           "rss_after_cold_start_mb": (600.0, "RSS after the cold start, MB"),
           "rss_after_walk_mb": (1500.0, "RSS after the walk, MB"),
           "rss_peak_mb": (1500.0, "RSS at peak, MB")}
HOME_TITLE = "Knowledge distillation explorer"
# Page -> the title it draws ({dataset} filled in): seen once the page has rendered.
HEADINGS = {"home": HOME_TITLE, "dataset": "Dataset: {dataset}", "compare": "Teacher vs student",
            "feature_maps": "Feature maps, layer by layer", "explanations": "Explanations side by side",
            "faithfulness": "Faithfulness over the test set", "timing": "Timing the explainers",
            "train": "Train and distil", "glossary": "Glossary", "lesson": "Lesson: can we trust a fast explanation?"}
# url path -> title, every page in the app's order (a page added to `explorer.page_list` needs its title above).
PAGES = {p.url_path: HEADINGS[p.name] for p in page_list.PAGES}
# The quick walk visits Glossary, then uploads on the Explanations page and explains the upload there: two pages,
# one page load each (the Dataset page's grid and charts take Chromium 10-40 s on a busy 2-core machine).
QUICK_PAGES = ("glossary",)
QUICK_METHODS = ("feature_maps",)  # the full walk explains with every registered method
# Pages with an image chooser -> text shown once an upload has been used (the Dataset page's note under its
# predictions; the Explanations page goes on to its predicted costs, and explains cheap methods as it opens).
UPLOAD_DONE = {"dataset": "An uploaded image is resized", "explanations": "Predicted cost"}


# --- the browser ---------------------------------------------------------------------------------------------

def _body_and_running(driver) -> tuple[str, list[str], bool]:
    """(body text, h1 texts, whether Streamlit is still running the script)."""
    from selenium.webdriver.common.by import By

    body = driver.find_element(By.TAG_NAME, "body").text
    titles = [h.text for h in driver.find_elements(By.TAG_NAME, "h1")]
    running = any(el.is_displayed() and "Running" in el.text
                  for el in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'))
    return body, titles, running


def _crashed(driver) -> bool:
    """Whether the page shows an uncaught exception: the step is over (its errors are recorded)."""
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'))


def wait_until(driver, done, what: str, timeout: float, poll: float = 0.25, settle: float = 0.0) -> float:
    """Poll ``done(body, titles, running)`` until it has held for ``settle`` s, or the script has stopped on an
    exception; returns the time it first held. Raises TimeoutError.

    The settling matters: Streamlit shows its "Running" indicator only a moment after a run starts, so a page
    can look finished for a poll or two while its script is still running.
    """
    from selenium.common.exceptions import StaleElementReferenceException

    deadline, since = time.perf_counter() + timeout, None
    while True:
        with contextlib.suppress(StaleElementReferenceException):  # Streamlit re-rendered meanwhile: try again
            body, titles, running = _body_and_running(driver)
            if done(body, titles, running) or (not running and _crashed(driver)):
                since = since or time.perf_counter()
                if time.perf_counter() - since >= settle:
                    return since
            else:
                since = None
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout:.0f} s (at {driver.current_url})")
        time.sleep(poll)


def wait_rendered(driver, title: str, what: str, timeout: float, text: str | None = None) -> float:
    """Wait until the page shows ``title`` (and ``text``) and its script has finished running."""
    return wait_until(driver, lambda body, titles, running: title in titles and not running
                      and (text is None or text in body), what, timeout, settle=1.0)


def write_png(path: Path, side: int = 300) -> Path:
    """A generated RGB test pattern (a disc on a gradient), as an upload would be."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[:side, :side]
    disc = (yy - side / 2) ** 2 + (xx - side / 3) ** 2 < (side / 6) ** 2
    grey = (xx * 200 / side).astype(np.uint8) + 40 * disc.astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB").save(path)
    return path


# --- the walk ------------------------------------------------------------------------------------------------

class Walk:
    """One browser session's walk over its datasets; each step's seconds and any error box it showed."""

    def __init__(self, name: str, driver, url: str, pages: tuple[str, ...], methods: tuple[str, ...],
                 png: Path, sampler: RssSampler, timeout: float, explain_timeout: float, abort: threading.Event):
        self.name, self.driver, self.url, self.pages, self.methods = name, driver, url, pages, methods
        self.png, self.sampler, self.timeout, self.explain_timeout = png, sampler, timeout, explain_timeout
        self.abort = abort  # set when either session fails: the other stops at its next step
        self.steps: list[dict] = []

    def step(self, what: str, dataset: str, run) -> None:
        if self.abort.is_set():
            raise RuntimeError(f"{self.name} stopped: the other session failed")
        start = time.perf_counter()
        run()
        self.steps.append({"session": self.name, "step": what, "dataset": dataset,
                           "seconds": round(time.perf_counter() - start, 2),
                           "rss_mb": round(self.sampler.current_mb(), 1), "errors": errors_shown(self.driver)})
        print(f"  {self.name}: {what} on {dataset}: {self.steps[-1]['seconds']:.1f} s, "
              f"RSS {self.steps[-1]['rss_mb']:.0f} MB", flush=True)

    def visit(self, page: str, dataset: str, query: str = "") -> None:
        self.driver.get(f"{self.url}/{page}?dataset={dataset}{query}")
        wait_rendered(self.driver, PAGES[page].format(dataset=dataset), f"{self.name}: {page or 'home'} on {dataset}",
                      self.timeout)

    def upload(self, page: str, dataset: str, query: str = "") -> None:
        from selenium.webdriver.common.by import By

        self.visit(page, dataset, f"&source=Upload{query}")
        wait_until(self.driver, lambda *_: bool(self.driver.find_elements(By.CSS_SELECTOR, 'input[type="file"]')),
                   f"{self.name}: the upload widget on {page}, {dataset}", self.timeout)
        self.driver.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(self.png))
        wait_rendered(self.driver, PAGES[page].format(dataset=dataset), f"{self.name}: upload on {page}, {dataset}",
                      self.timeout, text=UPLOAD_DONE[page])

    def explain(self, dataset: str, upload: bool = False) -> None:
        """Explain test image 0, or an upload made first on the same page: press Explain, unless the page explained
        as it opened (cheap methods, `explorer.explanations_view.runs_on_arrival`)."""
        from selenium.webdriver.common.by import By

        methods, done = f"&method={','.join(self.methods)}", f"computed for {dataset}"
        if upload:
            self.upload("explanations", dataset, methods)  # it waits for the predicted costs
        else:
            self.visit("explanations", dataset, f"&image=0{methods}")
        wait_until(self.driver, lambda body, titles, running: ("Press Explain" in body or done in body) and not running,
                   f"{self.name}: the Explanations page on {dataset}", self.timeout, settle=1.0)
        if done not in self.driver.find_element(By.TAG_NAME, "body").text:
            click_button(self.driver, "Explain")
        wait_rendered(self.driver, PAGES["explanations"], f"{self.name}: Explain ({', '.join(self.methods)}) "
                      f"on {dataset}", self.explain_timeout, text=f"computed for {dataset}")

    def run(self, datasets: list[str]) -> list[dict]:
        try:
            self.walk(datasets)
        except BaseException:
            self.abort.set()
            raise
        return self.steps

    def walk(self, datasets: list[str]) -> None:
        for i, dataset in enumerate(datasets):
            for page in self.pages:
                self.step(page or "home", dataset, lambda: self.visit(page, dataset))
            if i == 0:  # one upload and one Explain per session, while its pages' models are loaded
                explain = f"explain {len(self.methods)} method{'s' if len(self.methods) != 1 else ''}"
                if "dataset" in self.pages:
                    self.step("upload on dataset", dataset, lambda: self.upload("dataset", dataset))
                    self.step(explain, dataset, lambda: self.explain(dataset))
                else:  # the quick walk explains its upload on the Explanations page: one page load fewer
                    self.step(f"upload and {explain}", dataset, lambda: self.explain(dataset, upload=True))


def split_datasets(datasets: list[str]) -> list[list[str]]:
    """Two sessions' datasets: alternate ones, so the two are on different datasets at the same time
    (with one dataset, both walk it)."""
    if len(datasets) == 1:
        return [datasets, datasets]
    return [datasets[0::2], datasets[1::2]]


# --- the run -------------------------------------------------------------------------------------------------

def cold_start(driver, url: str, proc, started: float, timeout: float, log_path: Path) -> float:
    """Seconds from the server's process start to the Home title in the browser."""
    wait_healthy(url, proc, started + timeout, log_path)
    driver.get(f"{url}/")
    shown = wait_until(driver, lambda body, titles, running: HOME_TITLE in titles, "the cold start (Home)",
                       max(1.0, started + timeout - time.perf_counter()), poll=0.05)
    return shown - started


def measure(args, work: Path) -> dict:
    port, log_path = free_port(), work / "streamlit.log"
    png = write_png(work / "upload.png")
    pages = QUICK_PAGES if args.quick else tuple(PAGES)
    if args.quick:
        methods = QUICK_METHODS
    else:  # here: the quick smoke run never imports the model code into this process
        from core.explainers import registered_methods
        methods = tuple(registered_methods())
    with chrome(height=1400) as first:
        first.set_page_load_timeout(args.timeout)
        started = time.perf_counter()
        with server(port, log_path) as proc:
            sampler = RssSampler(proc.pid)
            sampler.start()
            try:
                url = f"http://127.0.0.1:{port}"
                cold = cold_start(first, url, proc, started, args.cold_timeout, log_path)
                print(f"cold start {cold:.2f} s", flush=True)
                wait_rendered(first, HOME_TITLE, "Home after the cold start", args.timeout)
                time.sleep(args.read_home)  # a user reading Home: its background import of the model code runs
                after_cold = sampler.current_mb()
                with chrome(height=1400) as second:
                    second.set_page_load_timeout(args.timeout)
                    abort = threading.Event()
                    walks = [Walk(f"session {i + 1}", d, url, pages, methods, png, sampler, args.timeout,
                                  args.explain_timeout, abort) for i, d in enumerate((first, second))]
                    with ThreadPoolExecutor(2) as pool:
                        futures = [pool.submit(w.run, ds) for w, ds in zip(walks, split_datasets(args.datasets))]
                        steps = [s for f in futures for s in f.result()]
                    browser = second.capabilities.get("browserVersion", "")
                after_walk = sampler.current_mb()
            finally:
                sampler.stop()
            server_pid = proc.pid
    return {"cold_start_s": cold, "rss_after_cold_start_mb": after_cold, "rss_after_walk_mb": after_walk,
            "rss_peak_mb": sampler.peak_mb, "samples": sampler.samples, "server_pid": server_pid, "steps": steps,
            "timeline_mb": sampler.timeline, "chromium": browser, "walk": {
                "datasets": list(args.datasets), "pages": [p or "home" for p in pages], "methods": list(methods),
                "upload_page": "dataset" if "dataset" in pages else "explanations",
                "sessions": 2, "quick": bool(args.quick), "read_home": args.read_home, **preload_setting()}}


def preload_setting() -> dict:
    """Whether the server (started with this process's environment) imports the model code in the background on
    Home, and the torch build that decides it by default (`explorer.runtime.preload_wanted`)."""
    from explorer import runtime

    return {"preload": runtime.preload_wanted(runtime.installed_torch_dir()),
            "preload_setting": os.environ.get("KD_APP_PRELOAD"), "torch_build": runtime.torch_build()}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Hardware and versions, without importing torch here (it would cost this process 4 s and 500 MB)."""
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2),
            "machine": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
            "torch": version("torch"), "streamlit": version("streamlit"), "selenium": version("selenium"),
            "memory_total_mb": _mem_total_mb(), "rss_source": "psutil" if _has_psutil() else "/proc/<pid>/status"}


def _mem_total_mb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024)
    return None


def _has_psutil() -> bool:
    return importlib.util.find_spec("psutil") is not None


def with_targets(measured: dict) -> dict:
    """The four measured values, each with its target and the ratio measured / target."""
    return {key: {"measured": round(measured[key], 3), "target": target, "ratio": round(measured[key] / target, 3),
                  "met": measured[key] <= target, "label": label} for key, (target, label) in TARGETS.items()}


def preload_words(walk: dict) -> str:
    if walk.get("torch_build") is None:
        return ""
    setting = walk.get("preload_setting")
    return (f"; torch's {walk['torch_build']} build, "
            + (f"`KD_APP_PRELOAD={setting}`, " if setting else "")
            + ("so Home imports the model code in the background" if walk["preload"] else
               "Home's background import of the model code off"))


def table(checks: dict) -> str:
    lines = [f"{'':<32} {'measured':>10} {'target':>10} {'ratio':>7}"]
    for check in checks.values():
        lines.append(f"{check['label']:<32} {check['measured']:>10.2f} {'<= ' + format(check['target'], 'g'):>10} "
                     f"{check['ratio']:>7.2f}  {'PASS' if check['met'] else 'FAIL'}")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The docs/benchmarks.md snippet: one table and the conditions it was measured under."""
    env, walk = result["environment"], result["walk"]
    rows = [f"| {c['label']} | {c['measured']:.2f} | <= {c['target']:g} | {c['ratio']:.2f} |"
            for c in result["checks"].values()]
    return "\n".join([
        f"App memory and cold start (`python benchmarks/app_memory.py{' --quick' if walk['quick'] else ''}`; "
        f"two browser sessions, {len(walk['pages'])} page(s) on {', '.join(walk['datasets'])}, an upload on "
        f"{walk['upload_page']} and an Explain run with {len(walk['methods'])} method(s) each"
        + (f"; the RSS after the cold start sampled after {walk['read_home']:g} s on Home" if walk.get("read_home")
           else "") + preload_words(walk) + "):", "",
        "| measure | measured | target | measured / target |", "| --- | --- | --- | --- |", *rows, "",
        measured_on(result["created"], env, "streamlit"), ""])


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS),
                        help="datasets the two sessions walk (alternately shared out)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: phantom only, the Glossary page, then an upload on the Explanations page "
                             "explained there with the feature-map explainer")
    parser.add_argument("--out", default=None, help=f"JSON file, the Markdown snippet beside it (default "
                        f"{DEFAULT_OUT.relative_to(ROOT)}; with --quick {QUICK_OUT.relative_to(ROOT)})")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds allowed for one page")
    parser.add_argument("--explain-timeout", type=float, default=1200.0, help="seconds allowed for one Explain run")
    parser.add_argument("--cold-timeout", type=float, default=180.0, help="seconds allowed for the cold start")
    parser.add_argument("--read-home", type=float, default=10.0,
                        help="seconds on Home before the RSS after the cold start is sampled and the walk starts "
                             "(a user reading it; where Home imports the model code in the background, time for "
                             "that import, so that the RSS after the cold start includes it)")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets = ["phantom"]
    args.out = args.out or str(QUICK_OUT if args.quick else DEFAULT_OUT)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    browser, driver = chromium_paths()
    for exe in (browser, driver):
        if not Path(exe).is_file():
            print(f"error: {exe} is missing (install Debian's chromium and chromium-driver)", file=sys.stderr)
            return 2
    env = environment()
    print(f"{env['cpu']} x{env['cpu_count']}, load average {env['load_average']:.2f}; python {env['python']}, "
          f"torch {env['torch']}, streamlit {env['streamlit']}; RSS from {env['rss_source']}", flush=True)
    from selenium.common.exceptions import WebDriverException

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="app_memory_") as work:
        try:
            measured = measure(args, Path(work))
        except (TimeoutError, RuntimeError, LookupError, OSError, WebDriverException) as err:
            log = Path(work) / "streamlit.log"
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:] if log.is_file() else ""
            print(f"error: {err}\n--- server log (tail) ---\n{tail}", file=sys.stderr)
            return 2
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.perf_counter() - start, 1), "checks": with_targets(measured),
              "environment": {**env, "chromium": measured.pop("chromium"),
                              "load_average_end": round(os.getloadavg()[0], 2)}, **measured}
    errors = [s for s in result["steps"] if s["errors"]]
    print("\n" + table(result["checks"]))
    print(f"\n{len(result['steps'])} steps in {result['seconds']:.0f} s; peak from {result['samples']} samples")
    for step in errors:
        print(f"warning: {step['session']}: {step['step']} on {step['dataset']} showed: {step['errors']}")
    out = Path(args.out)
    write_results(out, result, markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0 if all(c["met"] for c in result["checks"].values()) else 1  # 2: nothing measured (above)


if __name__ == "__main__":
    raise SystemExit(main())
