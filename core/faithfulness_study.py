"""Does the student's explanation explain the teacher? ``python -m core.faithfulness_study DATASET``.

On a stratified sample of the test split (the whole split for the phantom), for the shipped teacher and
distilled student and every explainer (and, where an evidence head is shipped beside the student, the teacher's
evidence read off the student: `core.teacher_evidence`, its maps the student's, scored on both models):
* every map scored on the explaining model's own predicted-class probability and **cross-model** (each model's
  map on the *other* model's probability), in three families of removal (`core.study_scoring`): single pixels
  (deletion to the mean colour, insertion from a blurred image), whole patches of a 16 x 16 grid with both
  substrates, and ROAD (removed pixels imputed from their neighbours, most and least relevant first);
* the same scores of the baseline maps: random noise per pixel and at each method's own map side (the random map
  *like the map* that each method is compared with, image by image: paired t interval and sign flips), a centre
  prior (a Gaussian of a quarter of the side) and, on the phantom, the mask prior (the mean training lesion mask);
* teacher-student agreement per image (Spearman, top-10 % IoU);
* the cascading model-randomisation check on a few images (signed and absolute rank correlation, SSIM,
  top-10 % IoU per step, maps turned constant counted), beside the same scores of unrelated image pairs;
* on the phantom: pointing game with a stated tolerance, energy inside the lesion, IoU of the top 5 %;
* the measured time of each explanation, of ROAD per image and of the whole study.
The slow methods run on a seeded random subset of the images (stated in the output). The result goes under
``"faithfulness"`` in ``checkpoints/<dataset>/results.json`` with the sha256 of both checkpoints, so a study
of older checkpoints is recognisably stale. A shipped study is replaced only by one with at least its images, steps,
methods and models, or with ``--force``, and is kept under ``earlier/`` (`core.shipping`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core import checkpoints, shipping, study_scoring
from core.arguments import add_data_option, choose_dataset, integer
from core.baseline_maps import BASELINES, mask_prior, tolerance
from core.data import load_dataset
from core.evaluate import evaluation_split
from core.explain import explain
from core.explainers import EXPLAINERS, ExplainError, make_explainer, registered_methods
from core.inference import batch_for, predict_tensor
from core.layout import checkpoint_file, dataset_folder, results_file
from core.roles import DISTILLED, STUDIED, TEACHER, Role
from core.stopwatch import environment
from core.study_record import SCORING_V2, FaithfulnessStudy, StudySettings
from core.study_scores import StudyFormatError
from core.teacher_evidence import HEAD_FILE, attach_shipped_head
from core.evidence_model import evidence_head

log = logging.getLogger(__name__)

# every image; a method reading a head shipped beside the student (the teacher's evidence) where it has one
CHEAP_METHODS = tuple(m for m in EXPLAINERS if not EXPLAINERS[m].slow)
SLOW_METHODS = tuple(registered_methods(slow=True))  # a seeded subset of the images
HEAD_METHODS = tuple(registered_methods(needs_head=True))  # studied where the student's head is shipped
DEFAULT_IMAGES = 200
PATCHES = 16  # patches per side of the patch deletion/insertion grid: 8 px at 128 px
ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  # five shares, not nine: ROAD's imputation is the study's slowest part


@dataclass
class StudyConfig:
    """Settings of one study (all but the paths and threads are written beside its results: `StudySettings`)."""

    dataset: str
    checkpoints: str = "checkpoints"
    root: str | None = None
    images: int | None = None  # stratified test images; None: 200 (the phantom: its whole test split)
    slow_images: int = 40  # seeded random subset for SLOW_METHODS
    sanity_images: int = 8
    methods: tuple[str, ...] = tuple(m for m in CHEAP_METHODS + SLOW_METHODS if m not in HEAD_METHODS)
    steps: int = 10  # deletion/insertion steps (2 x (steps + 1) forwards per map, and per substrate of the patches)
    seed: int = 0
    threads: int | None = None
    # whose maps are made and scored (role keys); both models always score. ("student",) is the student variants'
    # study (benchmarks/student_frontier.py): the teacher's own maps are the same for every variant.
    explained: tuple[str, ...] = tuple(r.key for r in STUDIED)
    patches: int = PATCHES
    road_fractions: tuple[float, ...] = ROAD_FRACTIONS

    def settings(self) -> StudySettings:
        """What the study records of these settings."""
        explained = tuple(r for key in self.explained for r in STUDIED if r.key == key)
        if not self.explained or len(explained) != len(self.explained):
            raise ValueError(f"explained must name some of {tuple(r.key for r in STUDIED)}, got {self.explained}")
        return StudySettings(self.dataset, self.images, self.slow_images, self.sanity_images, tuple(self.methods),
                             self.steps, self.seed, explained, self.patches, tuple(self.road_fractions))


def study_images(meta: checkpoints.CheckpointMeta, images: int | None, root: str | None):
    """The test images: the smallest per-class cap giving at least ``images`` (None: 200, the phantom's all)."""
    if images is None and meta.dataset == "phantom":
        return evaluation_split(meta, root=root)
    images = DEFAULT_IMAGES if images is None else images
    if meta.dataset == "phantom":
        counts = np.bincount(np.asarray(load_dataset("phantom", "test", input_size=32).targets))
    else:
        counts = np.bincount(np.asarray(load_dataset(meta.dataset, "test", root=root, input_size=8,
                                                     protocol=(meta.train or {}).get("protocol", "official")).targets))
    cap = next((c for c in range(1, int(counts.max()) + 1) if np.minimum(counts, c).sum() >= images),
               int(counts.max()))
    return evaluation_split(meta, root=root, max_per_class=cap)


def requested_images(dataset: str, images: int | None) -> float:
    """How many test images a study asks for (`study_images`): math.inf for the phantom's whole split."""
    if images is None:
        return math.inf if dataset == "phantom" else DEFAULT_IMAGES
    return images


def test_indices(ds, meta: checkpoints.CheckpointMeta, root: str | None) -> list[int]:
    """Each study image's index in the test split as the app numbers it (for links to the Explanations page)."""
    if meta.dataset == "phantom":
        return [int(path.rsplit("/", 1)[1]) for path in ds.paths]
    full = load_dataset(meta.dataset, "test", root=root, input_size=8,
                        protocol=(meta.train or {}).get("protocol", "official"))
    position = {rel: i for i, (rel, _) in enumerate(full.samples)}
    return [position[path] for path in ds.paths]


def unchanged_roles(earlier: FaithfulnessStudy | None, cfg: StudyConfig, digests: dict[Role, str],
                    fingerprint: str, slow: np.ndarray) -> set[Role]:
    """The models whose checkpoint ``earlier`` scored, on the same test images with the same settings: their
    deletion/insertion scores and sanity cascades need not be computed again."""
    if earlier is None or earlier.test_fingerprint != fingerprint or list(earlier.slow_subset) != slow.tolist():
        return set()
    if _scoring_settings(earlier.config) != _scoring_settings(cfg):
        return set()
    return {r for r in STUDIED if earlier.checkpoints.get(r) == digests[r]}


def _scoring_settings(settings: StudyConfig | StudySettings) -> tuple:
    # what must match for an earlier study's scores to be taken over (besides the checkpoints and the images)
    return (settings.images, settings.slow_images, settings.sanity_images, settings.steps, settings.seed,
            settings.patches, tuple(settings.road_fractions or ()))


@dataclass(frozen=True)
class StudiedModels:
    """The two models a study explains, its test images and what each model predicts on them."""

    models: dict[Role, torch.nn.Module]
    metas: dict[Role, checkpoints.CheckpointMeta]
    digests: dict[Role, str]
    ds: object  # the study images (`core.evaluate.evaluation_split`)
    xs: dict[Role, torch.Tensor]
    preds: dict[Role, torch.Tensor]
    head_digest: str | None = None  # sha256 of the student's evidence head, where one is attached

    def explaining(self, methods, explained: tuple[Role, ...]) -> dict[str, tuple[Role, ...]]:
        """The explained models that can make each method's maps (one reading a head: the model with it).

        Raises:
            ExplainError: a method none of them can explain with, with the reason (and how to train the head).
        """
        out = {m: tuple(r for r in explained if EXPLAINERS[m].can_explain(self.models[r])) for m in methods}
        for method, roles in out.items():
            if not roles:
                make_explainer(self.models[explained[0]], method, self.metas[explained[0]].input_size)  # says why
                raise ExplainError(f"{method}: none of the explained models can explain with it")
        return out


def load_subject(cfg: StudyConfig) -> StudiedModels:
    folder = dataset_folder(cfg.dataset, root=cfg.checkpoints)
    loaded = {r: checkpoints.load(checkpoint_file(folder, r)) for r in STUDIED}
    unattached = attach_shipped_head(loaded[DISTILLED][0], checkpoint_file(folder, DISTILLED))
    if unattached:
        log.warning("the student's evidence head is left out: %s", unattached)
    digests = {r: checkpoints.file_sha256(checkpoint_file(folder, r)) for r in STUDIED}
    head = folder / HEAD_FILE
    head_digest = checkpoints.file_sha256(head) if evidence_head(loaded[DISTILLED][0]) is not None else None
    metas = {r: meta for r, (_, meta) in loaded.items()}
    ds = study_images(metas[TEACHER], cfg.images, cfg.root)
    xs = {r: batch_for(meta, ds.images) for r, meta in metas.items()}
    preds = {r: predict_tensor(model, xs[r]).argmax(1) for r, (model, _) in loaded.items()}
    return StudiedModels({r: model for r, (model, _) in loaded.items()}, metas, digests, ds, xs, preds, head_digest)


def run_study(cfg: StudyConfig, on_progress=None, earlier: FaithfulnessStudy | None = None) -> FaithfulnessStudy:
    """Run the study; returns the record written under ``"faithfulness"`` (see the module doc).

    ``earlier``: a study of the same test images and settings. Scores whose explaining and scoring checkpoints
    are both unchanged since it (the teacher's own and its baselines', after a retrain of the student alone) are
    taken from it instead of computed again; the maps are still made, so their times and localisation are new.
    """
    settings = cfg.settings()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    subject = load_subject(cfg)
    ds, n = subject.ds, len(subject.ds)
    slow = np.sort(np.random.default_rng(cfg.seed).choice(n, min(n, cfg.slow_images), replace=False))
    subsets = {m: (slow if m in SLOW_METHODS else np.arange(n)) for m in cfg.methods}
    unchanged = unchanged_roles(earlier, cfg, subject.digests, ds.fingerprint, slow)
    explaining = subject.explaining(cfg.methods, settings.explained)
    prior = mask_prior(subject.metas[TEACHER].input_size) if ds.masks is not None else None

    started = time.perf_counter()
    maps, seconds = make_maps(cfg, explaining, subject, subsets, on_progress)
    sides = {r: {m: make_explainer(subject.models[r], m, subject.metas[r].input_size).map_side()
                 for m in cfg.methods if r in explaining[m]} for r in settings.explained}
    matched = sorted({study_scoring.matched_name(side, subject.metas[r].input_size)
                      for r, by_method in sides.items() for side in by_method.values()} - {study_scoring.PER_PIXEL},
                     key=study_scoring.matched_side)
    baselines = [b for b in BASELINES if b != "mask_prior" or prior is not None] + matched
    subsets.update(study_scoring.baseline_subsets(baselines, subsets, sides,
                                                  {r: m.input_size for r, m in subject.metas.items()}, n))
    for role, meta in subject.metas.items():  # each map set holds exactly the images it is scored on
        made = study_scoring.baseline_maps(baselines, n, meta.input_size, cfg.seed, prior)
        maps[role].update({b: made[b][subsets[b]] for b in baselines})
    curves, road_seconds = study_scoring.score_curves(cfg, explaining, subject, maps, subsets, baselines,
                                                      unchanged, earlier)
    if on_progress:  # the maps are the first len(jobs) of len(jobs) + 2 parts
        jobs = sum(len(roles) for roles in explaining.values())
        on_progress((jobs + 1) / (jobs + 2), "agreement, localisation and sanity")
    methods = {name: study_scoring.method_scores(name, curves, subsets[name], maps, seconds, subject,
                                                 sides, subsets) for name in curves}
    sanity = study_scoring.sanity_cascades(cfg, explaining, subject, unchanged, earlier, CHEAP_METHODS)
    unrelated = study_scoring.unrelated_pairs(cfg, explaining, maps, CHEAP_METHODS)
    if on_progress:
        on_progress(1.0, "done")
    preds = subject.preds
    timing = {"study_seconds": round(time.perf_counter() - started, 1),
              "road_seconds_per_image": round(float(np.mean(road_seconds)), 4) if road_seconds else None}
    return FaithfulnessStudy(
        settings, n, tuple(slow.tolist()), ds.fingerprint, tuple(test_indices(ds, subject.metas[TEACHER], cfg.root)),
        tuple(ds.targets.tolist()), {r: tuple(preds[r].tolist()) for r in STUDIED},
        float(np.mean(preds[TEACHER] == preds[DISTILLED])), subject.digests,
        {r: subject.metas[r].input_size for r in STUDIED},
        tolerance(subject.metas[TEACHER].input_size) if ds.masks is not None else None, methods, sanity,
        {**environment(), **timing}, tuple(sorted(unchanged, key=lambda r: r.key)), SCORING_V2, unrelated,
        subject.head_digest if set(cfg.methods) & set(HEAD_METHODS) else None)


def make_maps(cfg: StudyConfig, explaining: dict[str, tuple[Role, ...]], subject: StudiedModels,
              subsets: dict[str, np.ndarray],
              on_progress=None) -> tuple[dict[Role, dict[str, np.ndarray]], dict[Role, dict[str, list]]]:
    """Every method's maps of the models explaining with it (`StudiedModels.explaining`) on its images, and the
    time each took."""
    maps: dict[Role, dict[str, np.ndarray]] = {r: {} for r in STUDIED}
    seconds: dict[Role, dict[str, list]] = {r: {} for r in STUDIED}
    jobs = [(r, m) for m in cfg.methods for r in STUDIED if r in explaining[m]]
    for k, (role, method) in enumerate(jobs):
        heat, times = [], []
        for i in tqdm(subsets[method], desc=f"{method} on the {role.key}", unit="img", leave=False):
            e = explain(subject.models[role], subject.xs[role][i:i + 1], method, int(subject.preds[role][i]),
                        predict=False)
            heat.append(e.heatmap)
            times.append(e.seconds)
        maps[role][method], seconds[role][method] = np.stack(heat), times
        log.info("%s on the %s: %d maps, median %.4f s", method, role.key, len(times), float(np.median(times)))
        if on_progress:
            on_progress((k + 1) / (len(jobs) + 2), f"{method} on the {role.key}")
    return maps, seconds


def read_study(checkpoints_dir: str | Path, dataset: str) -> FaithfulnessStudy | None:
    """The study stored in a dataset's results.json, or None if there is none (a malformed one is refused)."""
    path = results_file(dataset_folder(dataset, root=checkpoints_dir))
    block = json.loads(path.read_text()).get("faithfulness") if path.is_file() else None
    return None if block is None else FaithfulnessStudy.from_json(block, str(path))


def write_study(study: FaithfulnessStudy, checkpoints_dir: str | Path, dataset: str) -> Path:
    """Store the study under ``"faithfulness"`` in the dataset's results.json (atomically, other keys kept).

    The file holding the study it replaces is kept as it was under ``earlier/replaced-<time>/`` (whether it may
    be replaced is decided before the study runs: `refuse_lesser_study`)."""
    path = results_file(dataset_folder(dataset, root=checkpoints_dir))
    results = json.loads(path.read_text()) if path.is_file() else {"dataset": dataset}
    if "faithfulness" in results:
        kept = shipping.keep_replaced(path.parent, [path.name])
        log.info("the study this one replaces is kept in %s", kept)
    results["faithfulness"] = study.to_json()
    checkpoints.atomic_write_text(path, json.dumps(results, indent=1) + "\n")
    return path


def refuse_lesser_study(cfg: StudyConfig, shipped: FaithfulnessStudy | None, force: bool = False) -> None:
    """Refuse (`core.shipping.ShippingRefused`), before it runs, a study with less than the shipped one."""
    if shipped is None:
        return
    less = shipping.study_shortfalls(cfg.settings(), requested_images(cfg.dataset, cfg.images), shipped,
                                     requested_images(cfg.dataset, shipped.config.images))
    where = results_file(dataset_folder(cfg.dataset, root=cfg.checkpoints))
    shipping.refuse_lesser(f"a faithfulness study of {shipped.images} images", where, less, force)


def default_methods(checkpoints_dir: str | Path, dataset: str) -> tuple[str, ...]:
    """Every method, and those reading a head where one is shipped beside the dataset's student."""
    shipped = (dataset_folder(dataset, root=checkpoints_dir) / HEAD_FILE).is_file()
    return StudyConfig(dataset).methods + (HEAD_METHODS if shipped else ())


def build_parser() -> argparse.ArgumentParser:
    """The command line; every default is `StudyConfig`'s own, so the two cannot drift apart."""
    default = StudyConfig("")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", default=None,
                        help="a built-in dataset, or a folder of images under --root")
    add_data_option(parser)
    parser.add_argument("--checkpoints", default=default.checkpoints,
                        help="folder with <dataset>/{teacher,student}.pt")
    parser.add_argument("--root", default=default.root, help="data root (default: ../shared/datasets or $KD_DATA_ROOT)")
    parser.add_argument("--images", type=integer(1), default=default.images,
                        help=f"stratified test images (default {DEFAULT_IMAGES}; the phantom: all)")
    parser.add_argument("--slow-images", type=integer(1), default=default.slow_images,
                        help=f"images for {', '.join(SLOW_METHODS)} (default %(default)s)")
    parser.add_argument("--sanity-images", type=integer(1), default=default.sanity_images,
                        help="default %(default)s")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="default: every method, and the teacher's evidence where its head is shipped")
    parser.add_argument("--steps", type=integer(1), default=default.steps,
                        help="deletion/insertion steps (default %(default)s)")
    parser.add_argument("--patches", type=integer(1), default=default.patches,
                        help="patches per side of the patch deletion/insertion grid (default %(default)s)")
    parser.add_argument("--seed", type=integer(0), default=default.seed, help="default %(default)s")
    parser.add_argument("--threads", type=integer(1), default=default.threads)
    parser.add_argument("--fresh", action="store_true",
                        help="compute every score, even those of checkpoints the study in results.json scored")
    parser.add_argument("--force", action="store_true",
                        help="replace the study in results.json even with fewer images, steps or methods "
                             "(it is kept under earlier/)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    choose_dataset(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = StudyConfig(args.dataset, args.checkpoints, args.root, args.images, args.slow_images, args.sanity_images,
                      tuple(args.methods or default_methods(args.checkpoints, args.dataset)), args.steps, args.seed,
                      args.threads, patches=args.patches)
    try:
        shipped = read_study(args.checkpoints, args.dataset)
    except StudyFormatError as e:
        if not args.fresh:
            parser.error(f"{e}\n(--fresh computes every score without reading it)")
        shipped = None  # replaced by the fresh study, and kept under earlier/ (write_study)
    try:
        refuse_lesser_study(cfg, shipped, args.force)
    except shipping.ShippingRefused as err:  # before any model is loaded
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    study = run_study(cfg, earlier=None if args.fresh else shipped)
    if study.scores_from_earlier_study:
        print(f"scores of the unchanged {' and '.join(r.key for r in study.scores_from_earlier_study)} taken "
              f"from {results_file(dataset_folder(args.dataset, root=args.checkpoints))}")
    path = write_study(study, args.checkpoints, args.dataset)
    for name, out in study.methods.items():  # a map the teacher has none of (its evidence, read off the student): –
        own = {r: _deletion(out.score(r, r)) for r in STUDIED}
        print(f"{name:22s} deletion AUC teacher {own[TEACHER]} student {own[DISTILLED]} "
              f"student map on the teacher {_deletion(out.score(DISTILLED, TEACHER))}")
    print(f"wrote {path}")


def _deletion(scores) -> str:
    mean = scores.deletion_auc.mean if scores is not None else None
    return "–" if mean is None else f"{mean:.3f}"


if __name__ == "__main__":
    main()
