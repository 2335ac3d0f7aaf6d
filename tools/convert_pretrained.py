"""Adapt a trained mmdetection checkpoint to another class list, for ``load_from``.

    python tools/convert_pretrained.py coco.pth weights/x101-oid-leaf.pth --to-classes leaf
    python tools/convert_pretrained.py leaf.pth weights/leaf-rare-100.pth \\
        --from-classes leaf --to-classes data/subsets/leaf-rare-100.txt

From COCO (the default ``--from-classes coco``): classes with a COCO counterpart (data/coco-to-oid-classes.csv)
start from the COCO head rows; the others are initialised afresh. From an Open Images class list (a preset or
a class-list file, the classes of the source model in hierarchy order): the rows of the target classes, which
must all be among them, are selected in every head, so a class-subset expert starts as the full model.
Prints what was copied and what was dropped. The work is ``mmdet_ext.convert_pretrained.convert_checkpoint``;
bad input is one line and exit status 1.
"""
import argparse
import sys

from mmdet_ext.convert_pretrained import DEFAULT_MAPPING, convert_checkpoint
from util.common.cli import run
from util.common.hierarchy import (
    DEFAULT_CLASSES,
    DEFAULT_HIERARCHY,
    SUBSET_HELP,
    Hierarchy,
    subset_arg,
    subset_classes,
)

COCO = 'coco'


def from_classes_arg(value: str) -> str:
    return value if value == COCO else subset_arg(value)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src', help='trained mmdetection checkpoint (.pth)')
    p.add_argument('dst', help='output checkpoint')
    p.add_argument('--from-classes', default=COCO, type=from_classes_arg,
                   help=f'classes of the source model: {COCO} (default; see --mapping) or an Open Images '
                        f'{SUBSET_HELP}')
    p.add_argument('--to-classes', '--subset', dest='to_classes', default='leaf', type=subset_arg,
                   help='classes of the new model (default leaf); ' + SUBSET_HELP)
    p.add_argument('--mapping', default=DEFAULT_MAPPING, help='COCO -> Open Images class table (CSV)')
    p.add_argument('--hierarchy', default=DEFAULT_HIERARCHY)
    p.add_argument('--num-coco-classes', type=int, default=80)
    args = p.parse_args(argv)
    hierarchy = Hierarchy.from_json(args.hierarchy, DEFAULT_CLASSES)
    mids = subset_classes(hierarchy, args.to_classes)
    from_mids = None if args.from_classes == COCO else subset_classes(hierarchy, args.from_classes)
    report = convert_checkpoint(args.src, args.dst, mids, args.mapping, args.num_coco_classes, from_mids=from_mids,
                                names=hierarchy.names)
    print(report.summary())
    print(f'wrote {args.dst}: {len(mids)} classes ({args.to_classes})')


if __name__ == '__main__':
    sys.exit(run(main))
