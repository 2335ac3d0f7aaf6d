"""Adapt a COCO-trained mmdetection checkpoint to an Open Images class subset, for ``load_from``.

    python tools/convert_pretrained.py coco.pth weights/x101-oid-leaf.pth --subset leaf

Classes with a COCO counterpart (data/coco-to-oid-classes.csv) start from the COCO head rows; the others
are initialised afresh. Prints what was copied and what was dropped. The work is
``mmdet_ext.convert_pretrained.convert_checkpoint``; bad input is one line and exit status 1.
"""
import argparse
import sys

from mmdet_ext.convert_pretrained import DEFAULT_MAPPING, convert_checkpoint
from util.common.cli import run
from util.common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY, SUBSETS, Hierarchy


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src', help='COCO-trained mmdetection checkpoint (.pth)')
    p.add_argument('dst', help='output checkpoint')
    p.add_argument('--subset', default='leaf', choices=SUBSETS, help='Open Images class subset of the new model')
    p.add_argument('--mapping', default=DEFAULT_MAPPING, help='COCO -> Open Images class table (CSV)')
    p.add_argument('--hierarchy', default=DEFAULT_HIERARCHY)
    p.add_argument('--num-coco-classes', type=int, default=80)
    args = p.parse_args(argv)
    mids = Hierarchy.from_json(args.hierarchy, DEFAULT_CLASSES).subset(args.subset)
    report = convert_checkpoint(args.src, args.dst, mids, args.mapping, args.num_coco_classes)
    print(report.summary())
    print(f'wrote {args.dst}: {len(mids)} classes ({args.subset})')


if __name__ == '__main__':
    sys.exit(run(main))
