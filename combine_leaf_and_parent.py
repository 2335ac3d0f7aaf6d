"""Final step of the leaf + parent pipeline: per image, the leaf detections followed by the parent ones.

The parent submission is the mask-NMS merge of the expanded leaf detections and the parent model's
(``python -m util.post.pipeline`` makes it). Give several parent submissions with --iou-thr to merge them
here in the same pass instead. A thin entry point, where users of the reference expect it; the work is
done by util.post.combine.combine_leaf_and_parent.

    python combine_leaf_and_parent.py --leaf LEAF.csv --parent PARENT.csv [PARENT.csv ...] -o OUT.csv
                                      [--iou-thr 0.5 [--vote]] [--max-dets N] [--no-progress]
"""
import argparse
import sys

from util.common.cli import add_progress_flag, run
from util.post.combine import combine_leaf_and_parent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='Leaf detections + merged parent detections, per image.')
    parser.add_argument('--leaf', required=True, help='leaf submission CSV (left untouched)')
    parser.add_argument('--parent', required=True, nargs='+', help='parent submission CSV(s)')
    parser.add_argument('-o', '--out', required=True)
    parser.add_argument('--iou-thr', type=float, default=None,
                        help='mask-NMS the parent inputs together at this IoU first (default: off)')
    parser.add_argument('--vote', action='store_true', help='mask voting in that NMS')
    parser.add_argument('--max-dets', type=int, default=None, help='keep the N best detections per image')
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    if args.vote and args.iou_thr is None:
        parser.error('--vote needs --iou-thr')
    stats = combine_leaf_and_parent(args.leaf, args.parent, args.out, args.iou_thr, args.vote,
                                    args.max_dets, args.progress)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
