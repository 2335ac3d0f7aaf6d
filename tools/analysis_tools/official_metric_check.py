"""Hold ``util.metric.evaluate`` against Google's own scorer (TF Object Detection API) on the same files.

The official code needs TensorFlow and an old ``object_detection`` package, so it runs in an interpreter of
its own (``--official-python``; how to make one is below). This script writes its inputs the way the
challenge's instructions describe, from the raw files that ``util.metric.evaluate`` reads directly:

- the bbox CSV and the image-level labels CSV as they are; the masks CSV turned into the segmentation
  format (``ImageID,LabelName,ImageWidth,ImageHeight,XMin,XMax,YMin,YMax,IsGroupOf,Mask``): each PNG resized
  (nearest) to its image and encoded as a submission mask, its box and IsGroupOf taken from the bbox row with
  the same image, label and coordinates;
- all three expanded up the hierarchy by the official ``oid_hierarchical_labels_expansion``;
- a label map of the class CSV, and each submission as one row per detection.

Then ``oid_challenge_evaluation`` scores each submission, ``util.metric.evaluate`` scores it from the raw files, and
the two mAPs and every per-class AP are compared. ``--random-submissions N`` adds adversarial submissions
built from the ground truth; ``--extra-images K`` adds rows for images outside the ground truth (both
scorers ignore them); ``--score-levels K`` gives them tied scores, which the default tie order
(``--ties official``, as ``util.metric.evaluate``'s) matches exactly; ``--ties fp-first`` shows how far
the FP-first order lies from it. The last line reads
``max_map_diff=... max_class_ap_diff=... submissions=... speedup_vs_official=...``.

Making the official interpreter (about 1.7 GB; the 2020 packaging of the scorer needs these shims, applied by
this script: numpy/pandas aliases removed since, and pure-Python protobuf for its old generated code):

    python3.11 -m venv work_dirs/tf-official
    work_dirs/tf-official/bin/pip install tensorflow-cpu pandas pycocotools six
    work_dirs/tf-official/bin/pip install --no-deps tf-object-detection==0.0.3

    python tools/analysis_tools/official_metric_check.py --official-python work_dirs/tf-official/bin/python \\
        --data-dir work_dirs/demo/data --submissions work_dirs/demo/submissions/val-*.csv
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from util.common.hierarchy import Hierarchy  # noqa: E402
from util.common.image_io import find_image, image_size, read_mask  # noqa: E402
from util.common.mask_codec import decode_mask, encode_mask, resize_nearest  # noqa: E402
from util.common.oid_files import (  # noqa: E402
    SEGMENTATION_COLUMNS,
    bbox_csv_name,
    labels_csv_name,
    masks_csv_name,
)
from util.common.submission import SHORTEST, SubmissionWriter, iter_submission  # noqa: E402
from util.metric.evaluate import evaluate_files  # noqa: E402
from util.metric.groundtruth import MaskFinder  # noqa: E402
from util.metric.rules import TIES  # noqa: E402

PREFIX = 'OpenImagesInstanceSegmentationChallenge_'
# Run inside the official interpreter: shims for what newer numpy / pandas removed, then the scorer's CLI.
OFFICIAL_EVAL = r'''
import sys
import numpy as np, pandas as pd
for name, kind in (('bool', bool), ('float', float), ('int', int), ('object', object)):
    if not hasattr(np, name):
        setattr(np, name, kind)
pd.DataFrame.as_matrix = lambda self: self.to_numpy()
pd.Series.as_matrix = lambda self: self.to_numpy()
from absl import app
from object_detection.metrics import oid_challenge_evaluation
sys.argv = ['oid_challenge_evaluation'] + sys.argv[1:]
app.run(oid_challenge_evaluation.main)
'''
OFFICIAL_EXPAND = 'object_detection.dataset_tools.oid_hierarchical_labels_expansion'


def official_env() -> dict:
    return dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION='python', TF_CPP_MIN_LOG_LEVEL='3')


def read_csv(path: str) -> list[dict]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def write_csv(path: str, header: list[str], rows) -> None:
    with open(path, 'w', newline='') as f:
        w = csv.writer(f, lineterminator='\n')
        w.writerow(header)
        w.writerows(rows)


def segmentation_rows(data_dir: str, masks_csv: str, bbox_csv: str, images_dir: str):
    """The masks CSV in the official segmentation format; its box and IsGroupOf come from the bbox row
    with exactly the same image, label and coordinates (the official merge is exact too)."""
    group_of = {(r['ImageID'], r['LabelName'], r['XMin'], r['XMax'], r['YMin'], r['YMax']): r['IsGroupOf']
                for r in read_csv(bbox_csv)}
    finder, sizes, unmatched = MaskFinder(data_dir), {}, 0
    for r in read_csv(masks_csv):
        box = (r['BoxXMin'], r['BoxXMax'], r['BoxYMin'], r['BoxYMax'])
        key = (r['ImageID'], r['LabelName'], *box)
        if key not in group_of:
            unmatched += 1
            continue
        if r['ImageID'] not in sizes:
            sizes[r['ImageID']] = image_size(find_image(images_dir, r['ImageID'], masks_csv))
        width, height = sizes[r['ImageID']]
        mask = resize_nearest(read_mask(finder(r['MaskPath'], masks_csv)), height, width)
        yield [r['ImageID'], r['LabelName'], width, height, *box, group_of[key], encode_mask(mask)]
    if unmatched:
        print(f'{masks_csv}: {unmatched} mask rows have no bbox row with the same coordinates; left out '
              '(the official merge would keep them as masks without a box)', file=sys.stderr)


def prediction_rows(submission: str):
    for row in iter_submission(submission):
        for label, score, encoded in row.detections:
            yield [row.image_id, row.width, row.height, label, repr(float(score)), encoded]


def random_submission(path: str, segm_csv: str, bbox_csv: str, images_dir: str, mids: list[str],
                      hierarchy: Hierarchy, rng: np.random.Generator, score_levels: int = 0,
                      extra_images: int = 0) -> None:
    """A submission that visits the metric's corners: detections near GT masks (shifted, so IoUs spread
    around 0.5) under their own label, an ancestor's or a wrong one; duplicates; rectangles on box-only and
    group-of boxes; empty masks; labels the image has no verdict on. Scores are distinct, or with
    ``score_levels`` K drawn from K values (ties). ``extra_images`` rows for images the ground truth does
    not have (no image file either) are added: both scorers must ignore them."""
    gt = {}
    for r in read_csv(segm_csv):
        gt.setdefault(r['ImageID'], []).append(r)
    boxes = {}
    for r in read_csv(bbox_csv):
        boxes.setdefault(r['ImageID'], []).append(r)
    image_ids = sorted(set(gt) | set(boxes))
    with SubmissionWriter(path, SHORTEST) as out:
        for image_id in image_ids:
            width, height = image_size(find_image(images_dir, image_id, bbox_csv))
            dets = []

            def add(label, mask):
                score = rng.integers(1, score_levels + 1) / score_levels if score_levels else rng.random()
                dets.append((label, float(score), encode_mask(mask)))

            for r in gt.get(image_id, []):
                mask = decode_mask(r['Mask'], height, width)
                for _ in range(rng.choice([0, 1, 1, 1, 2])):
                    ys, xs = np.nonzero(mask)
                    extent = max(1, int(max(np.ptp(ys), np.ptp(xs)) if ys.size else 1))
                    shifted = np.roll(mask, tuple(rng.integers(-extent // 3, extent // 3 + 1, 2)), axis=(0, 1))
                    up = sorted(hierarchy.ancestors(r['LabelName']))
                    label = rng.choice([r['LabelName']] * 3 + up[:2] + [mids[rng.integers(len(mids))]])
                    add(str(label), shifted)
            for r in boxes.get(image_id, []):                 # box-level GT, with or without a mask
                if rng.random() < 0.5:
                    x0, x1 = (int(float(r[k]) * width) for k in ('XMin', 'XMax'))
                    y0, y1 = (int(float(r[k]) * height) for k in ('YMin', 'YMax'))
                    mask = np.zeros((height, width), np.uint8)
                    mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1
                    add(r['LabelName'], mask)
            for _ in range(rng.integers(0, 3)):                # false positives, some of unjudged classes
                mask = np.zeros((height, width), np.uint8)
                y, x = rng.integers(0, height - 1), rng.integers(0, width - 1)
                mask[y:y + int(rng.integers(1, height // 2)), x:x + int(rng.integers(1, width // 2))] = 1
                add(mids[rng.integers(len(mids))], mask)
            if rng.random() < 0.2:
                add(mids[rng.integers(len(mids))], np.zeros((height, width), np.uint8))   # empty mask
            out.write(image_id, width, height, dets)
        for k in range(extra_images):                          # images outside the GT, without files
            height, width = (int(v) for v in rng.integers(16, 64, 2))
            mask = np.zeros((height, width), np.uint8)
            mask[:height // 2, :width // 2] = 1
            label = mids[rng.integers(len(mids))]
            out.write(f'{0xfeed0000 + k:016x}', width, height, [(label, 0.5, encode_mask(mask))])


def labelmap(classes_csv: str, path: str) -> list[str]:
    with open(classes_csv, newline='') as f:
        mids = [r[0] for r in csv.reader(f) if r]
    with open(path, 'w') as f:
        for i, mid in enumerate(mids, start=1):
            f.write(f'item {{\n  name: "{mid}"\n  id: {i}\n}}\n')
    return mids


def run_official(python: str, args: list[str], code: str | None = None) -> None:
    cmd = [python, '-c', code, *args] if code else [python, '-m', OFFICIAL_EXPAND, *args]
    proc = subprocess.run(cmd, env=official_env(), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f'error: the official scorer failed ({" ".join(cmd[:3])}): {proc.stderr.strip()[-2000:]}')


def read_official_metrics(path: str) -> tuple[float, dict]:
    per_class, mean_ap = {}, None
    with open(path) as f:
        for line in f:
            name, _, value = line.strip().rpartition(',')
            if name == PREFIX + 'Precision/mAP@0.5IOU':
                mean_ap = float(value)
            elif name.startswith(PREFIX + 'PerformanceByCategory/AP@0.5IOU/'):     # ... /AP@0.5IOU//m/0abc
                per_class[name[len(PREFIX + 'PerformanceByCategory/AP@0.5IOU/'):]] = float(value)
    return mean_ap, per_class


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--official-python', required=True, help='interpreter with tensorflow + tf-object-detection')
    p.add_argument('--data-dir', required=True, help='the validation files in Google\'s layout')
    p.add_argument('--submissions', nargs='*', default=[], help='Kaggle-format validation submissions')
    p.add_argument('--random-submissions', type=int, default=0,
                   help='also this many random submissions built from the ground truth (seeded)')
    p.add_argument('--score-levels', type=int, default=0,
                   help='random submissions draw scores from this many values (ties); default: distinct scores')
    p.add_argument('--extra-images', type=int, default=0,
                   help='random submissions also hold rows for this many images outside the ground truth')
    p.add_argument('--ties', choices=TIES, default=TIES[0],
                   help="util.metric.evaluate's order of tied scores (default official: the scorer's own numpy "
                        'argsort order; fp-first: false positives first)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--split', default='validation')
    p.add_argument('--hierarchy', default=os.path.join(ROOT, 'data/challenge-2019-label300-segmentable-hierarchy.json'))
    p.add_argument('--classes', default=os.path.join(ROOT, 'data/challenge-2019-classes-description-segmentable.csv'))
    p.add_argument('--work-dir', help='keep the official-format files here (default: a temporary folder)')
    a = p.parse_args(argv)

    d = a.data_dir
    masks_csv = os.path.join(d, masks_csv_name(a.split))
    bbox_csv = os.path.join(d, bbox_csv_name(a.split))
    labels_csv = os.path.join(d, labels_csv_name(a.split))
    images_dir = os.path.join(d, a.split)
    work = a.work_dir or tempfile.mkdtemp(prefix='official_metric_')
    os.makedirs(work, exist_ok=True)
    w = lambda name: os.path.join(work, name)

    t = time.perf_counter()
    mids = labelmap(a.classes, w('labelmap.pbtxt'))
    write_csv(w('segm.csv'), SEGMENTATION_COLUMNS, segmentation_rows(d, masks_csv, bbox_csv, images_dir))
    for src, dst, kind in ((bbox_csv, 'bbox-expanded.csv', 1), (w('segm.csv'), 'segm-expanded.csv', 1),
                           (labels_csv, 'labels-expanded.csv', 2)):
        run_official(a.official_python, [f'--json_hierarchy_file={a.hierarchy}', f'--input_annotations={src}',
                                         f'--output_annotations={w(dst)}', f'--annotation_type={kind}'])
    submissions = list(a.submissions)
    hierarchy = Hierarchy.from_json(a.hierarchy, a.classes)
    for k in range(a.random_submissions):
        submissions.append(w(f'random{k}.csv'))
        random_submission(submissions[-1], w('segm.csv'), bbox_csv, images_dir, mids, hierarchy,
                          np.random.default_rng([a.seed, k]), a.score_levels, a.extra_images)
    if not submissions:
        p.error('nothing to compare: give --submissions and/or --random-submissions')
    print(f'official inputs written and expanded in {time.perf_counter() - t:.1f} s: {work}', flush=True)

    map_diffs, class_diffs, official_s, ours_s = [], [], 0.0, 0.0
    for n, submission in enumerate(submissions):
        write_csv(w(f'pred{n}.csv'), ['ImageID', 'ImageWidth', 'ImageHeight', 'LabelName', 'Score', 'Mask'],
                  prediction_rows(submission))
        t = time.perf_counter()
        run_official(a.official_python, [
            f'--input_annotations_boxes={w("bbox-expanded.csv")}',
            f'--input_annotations_labels={w("labels-expanded.csv")}',
            f'--input_annotations_segm={w("segm-expanded.csv")}', f'--input_class_labelmap={w("labelmap.pbtxt")}',
            f'--input_predictions={w(f"pred{n}.csv")}', f'--output_metrics={w(f"metrics{n}.csv")}'], OFFICIAL_EVAL)
        official_s += time.perf_counter() - t
        official_map, official_ap = read_official_metrics(w(f'metrics{n}.csv'))
        t = time.perf_counter()
        ours = evaluate_files(masks_csv, d, bbox_csv, labels_csv, a.hierarchy, a.classes, submission,
                              images_dir=images_dir, log=lambda *x, **k: None, ties=a.ties)
        ours_s += time.perf_counter() - t
        ours_ap = dict(zip(ours.mids, ours.ap))
        scored = {m for m in mids if not np.isnan(official_ap.get(m, np.nan))}
        ours_scored = {m for m in mids if not np.isnan(ours_ap.get(m, np.nan))}
        if scored != ours_scored:       # a class one side scores and the other does not: as bad as it gets
            print(f'classes scored by one side only: official {sorted(scored - ours_scored)}, '
                  f'ours {sorted(ours_scored - scored)}')
        worst = max((abs(official_ap[m] - ours_ap[m]) for m in scored), default=0.0) \
            if scored == ours_scored else float('inf')
        map_diffs.append(abs(official_map - ours.mean_ap))
        class_diffs.append(worst)
        print(f'{os.path.basename(submission)}: official mAP {official_map:.10f}, ours {ours.mean_ap:.10f}, '
              f'|diff| {map_diffs[-1]:.2e}; {len(scored)} classes scored, max per-class |diff| {worst:.2e}',
              flush=True)
    print(f'official scorer {official_s:.1f} s, util.metric.evaluate {ours_s:.1f} s for {len(submissions)} submissions')
    print(f'max_map_diff={max(map_diffs):.2e} max_class_ap_diff={max(class_diffs):.2e} '
          f'submissions={len(submissions)} speedup_vs_official={official_s / ours_s:.1f}')


if __name__ == '__main__':
    main()
