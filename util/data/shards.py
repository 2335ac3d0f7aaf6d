"""Test images -> N consecutive shards, each an annotation file with empty instances, plus a manifest.

Inference over the 99,999 test images runs as independent jobs (the reference used 25 shards of 4,000);
each job reads one shard file through the same dataset class as training. Shards are consecutive runs of
the image list (the order of ``sample_empty_submission.csv``, or sorted ids for a folder), as equal as
possible: the first ``total % N`` shards hold one image more. Sizes come from the CSV's ImageWidth and
ImageHeight, or from the JPEG headers (``--sizes-from images``). Files are named
``shard_{i:02d}_of_{N:02d}.pkl`` with i counting from 0; ``manifest.json`` lists them.

    python -m util.data.shards --sample-csv D/sample_empty_submission.csv --out ann/test_shards --num-shards 25
    python -m util.data.shards --images-dir D/test --out ann/test_shards --num-shards 25
    python -m util.data.shards plan --shards-dir ann/test_shards     # what scripts/test_shards.sh runs
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd

from ..common.atomic import AtomicWriter
from ..common.cli import add_progress_flag, progress, run
from ..common.errors import DataError
from ..common.hierarchy import SUBSET_HELP, load_default, subset_arg
from ..common.image_io import find_image, image_size, list_image_ids
from ..common.oid_files import IMAGE_EXTENSIONS
from ..common.submission import SubmissionWriter
from .annotations import make_metainfo, save_annotations


def read_sample_csv(path: str) -> pd.DataFrame:
    """``ImageID,ImageWidth,ImageHeight,...`` -> DataFrame (ids unique, sizes positive integers)."""
    try:
        df = pd.read_csv(path, dtype={'ImageID': str}, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f'{path}: file not found') from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f'{path}: not a readable CSV ({e})') from None
    missing = [c for c in ('ImageID', 'ImageWidth', 'ImageHeight') if c not in df.columns]
    if missing:
        raise DataError(f'{path}:1: missing column(s) {", ".join(missing)}')
    sizes = df[['ImageWidth', 'ImageHeight']].apply(pd.to_numeric, errors='coerce')
    bad = ~(np.isfinite(sizes.to_numpy(np.float64)).all(axis=1) & (sizes.to_numpy(np.float64) > 0).all(axis=1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f'{path}:{i + 2}: image {df["ImageID"].iat[i]}: width/height not positive numbers')
    dup = df['ImageID'].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f'{path}:{i + 2}: image {df["ImageID"].iat[i]} listed twice')
    return pd.DataFrame({'ImageID': df['ImageID'], 'width': sizes['ImageWidth'].astype(np.int64),
                         'height': sizes['ImageHeight'].astype(np.int64)})


def shard_bounds(total: int, num_shards: int) -> list[tuple[int, int]]:
    """[start, end) of each of ``num_shards`` consecutive, near-equal shards of ``total`` items."""
    if num_shards < 1:
        raise DataError('--num-shards must be at least 1')
    if num_shards > total:
        raise DataError(f'--num-shards {num_shards} is more than the {total} images')
    base, extra = divmod(total, num_shards)
    sizes = [base + (i < extra) for i in range(num_shards)]
    ends = np.cumsum(sizes)
    return [(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def shard_name(i: int, n: int, ext: str = '.pkl') -> str:
    width = max(2, len(str(n)))
    return f'shard_{i:0{width}d}_of_{n:0{width}d}{ext}'


def make_shards(images: list[tuple[str, int, int]], num_shards: int, file_names: dict | None = None):
    """[(image_id, width, height)] -> list of data_lists (empty instances). Image files are ``{id}.jpg`` (the
    test download's) unless ``file_names`` maps an id to its file's name."""
    names = file_names or {}
    items = [{'img_id': i, 'img_path': names.get(i, i + IMAGE_EXTENSIONS[0]), 'width': int(w), 'height': int(h),
              'instances': []} for i, w, h in images]
    return [items[s:e] for s, e in shard_bounds(len(items), num_shards)]


def write_shards(out_dir: str, shards, metainfo: dict, source: str, ext: str = '.pkl') -> dict:
    """Write every shard file, then the manifest (each file atomically)."""
    n = len(shards)
    entries = []
    for i, items in enumerate(shards):
        name = shard_name(i, n, ext)
        save_annotations(os.path.join(out_dir, name), metainfo, items)
        entries.append({'index': i, 'file': name, 'images': len(items),
                        'first_image_id': items[0]['img_id'] if items else None,
                        'last_image_id': items[-1]['img_id'] if items else None})
    manifest = {'num_shards': n, 'num_images': sum(len(s) for s in shards), 'source': source,
                'subset': metainfo['subset'], 'shards': entries}
    with AtomicWriter(os.path.join(out_dir, 'manifest.json')) as f:
        json.dump(manifest, f, indent=1)
    return manifest


def read_manifest(shards_dir: str) -> dict:
    """The manifest ``write_shards`` wrote, its shard files checked to exist."""
    path = os.path.join(shards_dir, 'manifest.json')
    try:
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
        files = [e['file'] for e in sorted(manifest['shards'], key=lambda e: e['index'])]
    except FileNotFoundError:
        raise DataError(f'{path}: no shard manifest (make the shards with python -m util.data.shards)') from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f'{path}: not a shard manifest ({e})') from None
    for name in files:
        if not os.path.isfile(os.path.join(shards_dir, name)):
            raise DataError(f'{path}: shard file {name} not found')
    return manifest


def shard_plan(shards_dir: str | None = None, ann_file: str | None = None, num_shards: int | None = None):
    """The shards a test loop runs, in order: ``[(name, annotation file, '' or 'I/N'), ...]``.

    Either the files of a shards folder (from its manifest), or one annotation file that the tester splits
    into ``num_shards`` consecutive parts itself (``--shard I/N``), named as ``write_shards`` would name them.
    """
    if (shards_dir is None) == (ann_file is None):
        raise DataError('give a shards folder or an annotation file with a shard count')
    if shards_dir is not None:
        manifest = read_manifest(shards_dir)
        return [(os.path.splitext(e['file'])[0], os.path.join(shards_dir, e['file']), '')
                for e in sorted(manifest['shards'], key=lambda e: e['index'])]
    if not os.path.isfile(ann_file):
        raise DataError(f'{ann_file}: annotation file not found')
    if not num_shards or num_shards < 1:
        raise DataError('--num-shards must be a positive integer')
    return [(shard_name(i, num_shards, ''), ann_file, f'{i}/{num_shards}') for i in range(num_shards)]


def plan_main(argv=None) -> None:
    """``python -m util.data.shards plan (--shards-dir D | --ann-file F --num-shards N)``: one tab-separated
    line per shard (name, annotation file, shard spec), for scripts/test_shards.sh."""
    p = argparse.ArgumentParser(prog='python -m util.data.shards plan', description=plan_main.__doc__)
    p.add_argument('--shards-dir', default=None)
    p.add_argument('--ann-file', default=None)
    p.add_argument('--num-shards', type=int, default=None)
    a = p.parse_args(argv)
    for name, path, spec in shard_plan(a.shards_dir, a.ann_file, a.num_shards):
        print(f'{name}\t{path}\t{spec}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m util.data.shards', description=__doc__.split('\n\n')[0])
    p.add_argument('--sample-csv', default=None, help='sample_empty_submission.csv (ids, order and sizes)')
    p.add_argument('--images-dir', default=None, help='folder of test images (ids, or sizes with --sizes-from images)')
    p.add_argument('--sizes-from', choices=('csv', 'images'), default=None,
                   help='where sizes come from (default: the CSV when given, else the JPEG headers)')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--num-shards', type=int, default=25)
    p.add_argument('--subset', default='leaf', type=subset_arg,
                   help='classes written in the metainfo; ' + SUBSET_HELP)
    p.add_argument('--format', choices=('pkl', 'json'), default='pkl')
    p.add_argument('--id-list', default=None, metavar='CSV',
                   help='also write the sharded images as an empty submission (ImageID, sizes), in shard order: '
                        'the --ids list of scripts/postprocess.sh for a split without a sample submission')
    add_progress_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    if not a.sample_csv and not a.images_dir:
        raise DataError('give --sample-csv or --images-dir')
    sizes_from = a.sizes_from or ('csv' if a.sample_csv else 'images')
    if sizes_from == 'csv' and not a.sample_csv:
        raise DataError('--sizes-from csv needs --sample-csv')
    if sizes_from == 'images' and not a.images_dir:
        raise DataError('--sizes-from images needs --images-dir')
    if a.sample_csv:
        df = read_sample_csv(a.sample_csv)
        ids, source = df['ImageID'].tolist(), a.sample_csv
    else:
        ids, source = list_image_ids(a.images_dir), a.images_dir
    # Image files are looked up (their extension read) only where they are read anyway.
    paths = {i: find_image(a.images_dir, i) for i in ids} if sizes_from == 'images' else {}
    if sizes_from == 'csv':
        images = list(zip(ids, df['width'].tolist(), df['height'].tolist()))
    else:
        images = [(i, *image_size(paths[i]))
                  for i in progress(ids, desc='image sizes', unit='img', enabled=a.progress)]
    if not images:
        raise DataError(f'{source}: no test images')
    shards = make_shards(images, a.num_shards, {i: os.path.basename(p) for i, p in paths.items()})
    manifest = write_shards(a.out, shards, make_metainfo(load_default(), a.subset), source, '.' + a.format)
    if a.id_list:
        with SubmissionWriter(a.id_list) as w:
            for image_id, width, height in images:
                w.write(image_id, width, height, [])
    sizes = sorted({e['images'] for e in manifest['shards']})
    print(f'{a.out}: {manifest["num_images"]} images in {a.num_shards} shards of '
          f'{"/".join(map(str, sizes))} images; manifest {os.path.join(a.out, "manifest.json")}')


if __name__ == '__main__':
    if sys.argv[1:2] == ['plan']:
        raise SystemExit(run(plan_main, sys.argv[2:]))
    raise SystemExit(run(main))
