"""Draw a submission's predictions next to the ground truth of the same images: the by-eye check of a model.

Each PNG is two panels, ground truth (from an annotation file) on the left and the submission's detections
at or above ``--score-thr`` on the right, in one colour per class (the same in both panels). Only the
annotation file's classes are drawn (a leaf file: leaf detections, not their copies on the ancestors, which
would cover them); ``--all-classes`` draws every detection.

    python -m util.post.draw submission.csv --annotations ann/leaf-val.pkl --img-root D \\
        --out work_dirs/pictures --limit 4 --score-thr 0.5
"""
from __future__ import annotations

import argparse
import os

from PIL import Image
from pycocotools import mask as mask_utils

from ..common.atomic import AtomicWriter
from ..common.cli import run
from ..common.drawing import draw_item, side_by_side
from ..common.errors import DataError
from ..common.hierarchy import load_default
from ..common.mask_codec import decode_encoded_batch
from ..common.submission import iter_submission
from ..data.annotations import load_annotations


def _tight_box(rle: dict) -> list[float]:
    """[x1, y1, x2, y2) of the mask, read from the (bytes-counts) RLE without decoding it (zeros when empty)."""
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return [x, y, x + w, y + h]


def prediction_item(row, rank: dict[str, int], score_thr: float, keep: set[str] | None = None,
                    where: str = '') -> dict:
    """A submission row as an annotation item (labels index ``rank``, boxes from the masks); only labels in
    ``keep`` when given. Masks go through the strict decoder; errors name ``where`` and the detection."""
    where = where or f'image {row.image_id}'
    chosen = [k for k, (label, score, _) in enumerate(row.detections)
              if score >= score_thr and (keep is None or label in keep)]
    rles = decode_encoded_batch([row.detections[k][2] for k in chosen], row.height, row.width,
                                lambda j: f'{where}: detection {chosen[j] + 1}')
    instances = []
    for k, rle in zip(chosen, rles):
        label = row.detections[k][0]
        if label not in rank:
            raise DataError(f'{where}: detection {k + 1}: unknown label {label}')
        instances.append({'bbox': _tight_box(rle), 'bbox_label': rank[label], 'mask': rle})
    return {'img_id': row.image_id, 'instances': instances}


def draw_predictions(submission: str, annotations: str, img_root: str, out_dir: str, limit: int = 4,
                     score_thr: float = 0.5, all_classes: bool = False) -> list[str]:
    """Write up to ``limit`` side-by-side PNGs for images present in both files; returns their paths."""
    h = load_default()
    rank = h.rank
    names = [h.name(m) for m in h.order]
    ann = load_annotations(annotations)
    ann_mids = ann['metainfo']['mids']
    keep = None if all_classes else set(ann_mids)
    gt = {item['img_id']: item for item in ann['data_list']}
    written = []
    os.makedirs(out_dir, exist_ok=True)
    for row in iter_submission(submission):
        if len(written) >= limit:
            break
        item = gt.get(row.image_id)
        if item is None:
            continue
        gt_item = {'img_id': item['img_id'], 'instances': [
            dict(inst, bbox_label=rank[ann_mids[inst['bbox_label']]]) for inst in item['instances']]}
        image = Image.open(os.path.join(img_root, item['img_path'])).convert('RGB')
        picture = side_by_side(draw_item(image, gt_item, names),
                               draw_item(image, prediction_item(row, rank, score_thr, keep,
                                                                f'{submission}:{row.line}: image {row.image_id}'),
                                         names))
        path = os.path.join(out_dir, f'{row.image_id}.png')
        with AtomicWriter(path, 'wb') as f:
            picture.save(f, format='PNG')
        written.append(path)
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog='python -m util.post.draw', description=__doc__.split('\n\n')[0])
    p.add_argument('submission', help='Kaggle-format submission CSV')
    p.add_argument('--annotations', required=True, help='annotation file with the ground truth (.pkl/.json)')
    p.add_argument('--img-root', required=True, help='folder the annotation img_path entries are relative to')
    p.add_argument('--out', required=True, help='folder for the PNGs')
    p.add_argument('--limit', type=int, default=4)
    p.add_argument('--score-thr', type=float, default=0.5)
    p.add_argument('--all-classes', action='store_true', help="also draw classes outside the annotation file's")
    args = p.parse_args(argv)
    paths = draw_predictions(args.submission, args.annotations, args.img_root, args.out, args.limit,
                             args.score_thr, args.all_classes)
    print(f'wrote {len(paths)} pictures to {args.out}')


if __name__ == '__main__':
    raise SystemExit(run(main))
