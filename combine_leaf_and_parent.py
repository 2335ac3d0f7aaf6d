"""Final step of the leaf + parent pipeline: per image, the leaf detections followed by the parent ones.

The parent submission is the mask-NMS merge of the expanded leaf detections and the parent model's
(see scripts/postprocess.sh). Give several parent submissions with --nms-iou to merge them here in the
same pass instead. The work is done by util.post.combine.combine_leaf_and_parent.

    python combine_leaf_and_parent.py --leaf LEAF.csv --parent PARENT.csv [PARENT.csv ...] -o OUT.csv
                                      [--nms-iou 0.5 [--vote]] [--max-dets N]
"""
import argparse
import sys

from util.common.cli import run
from util.post.combine import combine_leaf_and_parent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='Leaf detections + merged parent detections, per image.')
    parser.add_argument('--leaf', required=True, help='leaf submission CSV (left untouched)')
    parser.add_argument('--parent', required=True, nargs='+', help='parent submission CSV(s)')
    parser.add_argument('-o', '--out', required=True)
    parser.add_argument('--nms-iou', type=float, default=None,
                        help='mask-NMS the parent inputs together at this IoU first (default: off)')
    parser.add_argument('--vote', action='store_true', help='mask voting in that NMS')
    parser.add_argument('--max-dets', type=int, default=None, help='keep the N best detections per image')
    args = parser.parse_args(argv)
    if args.vote and args.nms_iou is None:
        parser.error('--vote needs --nms-iou')
    stats = combine_leaf_and_parent(args.leaf, args.parent, args.out, args.nms_iou, args.vote,
                                    args.max_dets, progress=True)
    print(f'{args.out}: {stats}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(run(main))
