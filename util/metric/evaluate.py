"""Score a submission with the official challenge metric (OpenImagesInstanceSegmentationChallenge mAP@0.5IOU).

Inputs are the raw files as Google distributes them (masks CSV + mask PNGs, box CSV, image-level labels
CSV, hierarchy JSON, class CSV) and a Kaggle-format submission. GT masks are resized (nearest) to the
image size: the image header's with --images-dir, else the submission row's ImageWidth x ImageHeight.
As in the official scorer, every GT image counts, also one the submission has no row for (its GT are
misses); --submitted-only evaluates just the images the submission lists (a held-out subset). Submission
rows for images that are not in the ground truth are ignored, as the official scorer ignores them (their
masks are still checked against their own row's size; their image files are never looked up), and their
number is printed. Equal scores are ordered as the official scorer orders them (``--ties official``, the
default: its number to the last digit); ``--ties fp-first`` ranks false positives first instead
(deterministic on any numpy build, the lowest AP any order of the ties could give). The rules are in
``util.metric.rules``.

Bad input (a label outside the class list, a mask of the wrong size, a malformed row) stops the run with
one line naming file:line and exit status 1; --skip-unknown-labels skips unknown labels with a warning.
The last line of the output is ``mAP@0.5IOU=<10 decimals>``.

    python -m util.metric.evaluate --masks-csv M --masks-dir D --bbox-csv B --labels-csv L --hierarchy H \\
        --classes C --submission S [--images-dir I] [--per-class OUT.csv] [--plots DIR] [--workers N] \\
        [--skip-unknown-labels] [--submitted-only] [--ties {official,fp-first}]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from ..common.cli import run
from ..common.errors import DataError
from ..common.hierarchy import read_class_names
from ..common.submission import SubmissionError, iter_submission
from .classes import load_classes
from .detections import check_scores, class_indices
from .evaluator import ImageTask, evaluate_tasks
from .groundtruth import MaskFinder, read_ground_truth
from .rules import TIES, EvalResult


@dataclass
class SubmissionStats:
    rows: int = 0
    skipped_labels: int = 0
    first_skipped: str = ''
    missing_gt_images: int = 0
    not_in_gt: int = 0
    first_not_in_gt: str = ''
    seen: dict = field(default_factory=dict)


def submission_tasks(path, gt, classes, stats: SubmissionStats, images_dir=None, skip_unknown=False,
                     submitted_only=False):
    """One ImageTask per submission row, then (unless ``submitted_only``) one per GT image it lacks."""
    try:
        for row in iter_submission(path):
            where = f'{path}:{row.line}: image {row.image_id}'
            stats.seen[row.image_id] = row.line      # the reader refuses repeated ids and sizes <= 0
            stats.rows += 1
            record = gt.images.get(row.image_id)
            if record is None:
                stats.not_in_gt += 1
                stats.first_not_in_gt = stats.first_not_in_gt or where
            idx, keep, skipped = class_indices([d[0] for d in row.detections], classes, where, skip_unknown)
            if skipped:
                stats.skipped_labels += skipped
                stats.first_skipped = stats.first_skipped or where
            yield ImageTask(row.image_id, where, record, (row.height, row.width), idx,
                            check_scores([row.detections[k][1] for k in keep], where),
                            encoded=[row.detections[k][2] for k in keep], images_dir=images_dir)
    except SubmissionError as e:
        raise DataError(str(e)) from None
    if submitted_only:
        return
    for image_id, rec in gt.images.items():
        if image_id not in stats.seen:
            stats.missing_gt_images += 1
            yield ImageTask(image_id, f'image {image_id} (GT only)', rec, None, images_dir=images_dir)


def evaluate_files(masks_csv, masks_dir, bbox_csv, labels_csv, hierarchy, classes_csv, submission,
                   images_dir=None, workers=1, skip_unknown_labels=False, submitted_only=False,
                   log=print, ties='official') -> EvalResult:
    """Everything the command does except the reports: GT files + submission -> EvalResult."""
    classes, _ = load_classes(hierarchy, classes_csv)
    known = set(classes.hierarchy.order) | set(classes.mids)
    finder = MaskFinder(masks_dir)
    t0 = time.perf_counter()
    image_ids = None
    if submitted_only:
        try:
            image_ids = {row.image_id for row in iter_submission(submission, parse=False)}
        except SubmissionError as e:
            raise DataError(str(e)) from None
    gt = read_ground_truth(masks_csv, bbox_csv, labels_csv, known, image_ids)
    for p in gt.problems():
        log(f'warning: {p}', file=sys.stderr)
    stats = SubmissionStats()
    tasks = submission_tasks(submission, gt, classes, stats, images_dir, skip_unknown_labels, submitted_only)
    result = evaluate_tasks(tasks, classes, finder, workers, ties)
    if stats.skipped_labels:
        log(f'warning: {stats.skipped_labels} detections with labels outside the class list skipped '
            f'(first at {stats.first_skipped})', file=sys.stderr)
    if stats.not_in_gt:
        log(f'warning: {stats.not_in_gt} submission images are not in the ground truth: ignored, as the official '
            f'scorer ignores them (first at {stats.first_not_in_gt})', file=sys.stderr)
    if stats.missing_gt_images:
        log(f'warning: {stats.missing_gt_images} GT images have no submission row: their GT count as misses '
            '(--submitted-only leaves them out)', file=sys.stderr)
    log(f'{len(gt.images)} GT images, {stats.rows} submission rows; {result.images_evaluated} images evaluated, '
        f'{result.images_ignored} without GT ignored; {int((result.counted_gt > 0).sum())} classes with '
        f'counted GT; {time.perf_counter() - t0:.1f} s')
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m util.metric.evaluate', description=__doc__.split('\n')[0])
    p.add_argument('--masks-csv', required=True, help='challenge-2019-validation-segmentation-masks.csv')
    p.add_argument('--masks-dir', required=True, help='folder of the mask PNGs (or of validation-masks-0..f/)')
    p.add_argument('--bbox-csv', required=True, help='challenge-2019-validation-segmentation-bbox.csv')
    p.add_argument('--labels-csv', required=True, help='challenge-2019-validation-segmentation-labels.csv')
    p.add_argument('--hierarchy', required=True, help='challenge-2019-label300-segmentable-hierarchy.json')
    p.add_argument('--classes', required=True, help='challenge-2019-classes-description-segmentable.csv')
    p.add_argument('--submission', required=True, help='Kaggle-format submission CSV')
    p.add_argument('--images-dir', help='images ({ImageID}.jpg): their headers give the image sizes')
    p.add_argument('--per-class', metavar='OUT.csv', help='write LabelName, Name, AP, CountedGT, Detections')
    p.add_argument('--plots', metavar='DIR', help='write per-class AP bars and precision-recall curves')
    p.add_argument('--workers', type=int, default=1, help='worker processes (default 1)')
    p.add_argument('--skip-unknown-labels', action='store_true',
                   help='skip detections whose label is not in --classes (warn) instead of failing')
    p.add_argument('--submitted-only', action='store_true',
                   help='evaluate only the images the submission lists (default: every GT image, as Kaggle)')
    p.add_argument('--ties', choices=TIES, default=TIES[0],
                   help="order of equal scores: the official scorer's numpy argsort order (default: its "
                        'number to the last digit on the same numpy build), or fp-first: false positives '
                        'before true positives (deterministic on any build; the lowest AP the ties allow)')
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    result = evaluate_files(a.masks_csv, a.masks_dir, a.bbox_csv, a.labels_csv, a.hierarchy, a.classes,
                            a.submission, a.images_dir, a.workers, a.skip_unknown_labels, a.submitted_only,
                            ties=a.ties)
    names = read_class_names(a.classes)
    if a.per_class:
        from .report import write_per_class
        write_per_class(a.per_class, result, names)
        print(f'per-class results: {a.per_class}')
    if a.plots:
        from .report import write_plots
        paths = write_plots(a.plots, result, names)
        print(f'plots: {len(paths)} PNGs in {a.plots}')
    print(f'mAP@0.5IOU={result.mean_ap:.10f}')


if __name__ == '__main__':
    sys.exit(run(main))
