"""Class rebalancing by rank bands: an epoch list of image indices that evens out a long tail.

Classes are ranked by the number of distinct images they occur in (largest first; ties by class index).
Each band of ranks gets one rule; one "round" applies every rule once, with its own seed:

    down:A-B:T     each class sampled down to T of its images (all of them if it has fewer)
    keep:A-B       each image of each class once
    repeat:A-:F    each image of each class F times
    up:A-B:T       topped up to T draws, rarest class first, counting the draws its images already got
                   from other classes (whole repeats of its images + a random remainder)

Draws add up per image (an image holding two kept classes is drawn twice). ``up`` bands run after all
others so that they see every draw; ranks no band covers are kept. In a round an image drawn c times
appears c times spread evenly over the round's list (copy j at position ~ (j + u) / c, u random), and
the rounds are concatenated. The output is an ``.npy`` of int64 indices into the annotation file's
``data_list``; iterate it in order (no shuffling sampler, which would undo the spreading).

Presets (the reference's): ``leaf`` = down:0-23:6000,keep:24-63,up:64-240:1500,repeat:241-:10 ;
``parent`` = down:0-4:30000,keep:5-9,up:10-:10000. Their ranks are absolute (tuned for 275 and 23 classes).
``auto`` (the default) reads the annotation file's metainfo: the ``parent`` preset for the parent subsets,
otherwise the ``leaf`` one, its rank bands scaled to the file's class count: for a class-subset file (an
expert's 100 rare classes) the same fractions of the ranking get each rule (top ~9% sampled down, the next
~14% kept, then topped up, the rarest ~12% repeated), with the same draw targets.

Built-in alternatives needing no index file, for configs: mmengine's ``ClassBalancedDataset``
(``dataset=dict(type='ClassBalancedDataset', oversample_thr=1e-3, dataset=...)``, repeat factor per image
from class frequencies) and mmdet's ``ClassAwareSampler`` (``train_dataloader.sampler =
dict(type='ClassAwareSampler', num_sample_class=1)``, class-uniform sampling).

    python -m util.data.rebalance ann/leaf_train.pkl --out ann/leaf_train.rebalanced.npy --preset leaf --rounds 7
    python -m util.data.rebalance ann/rare-train.pkl --out ann/rare-train-balanced.npy    # auto: scaled bands
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..common.atomic import AtomicWriter
from ..common.cli import run
from ..common.errors import DataError
from .annotations import load_annotations

PRESETS = {
    'leaf': 'down:0-23:6000,keep:24-63,up:64-240:1500,repeat:241-:10',
    'parent': 'down:0-4:30000,keep:5-9,up:10-:10000',
}
PRESET_CLASSES = {'leaf': 275, 'parent': 23}       # the class counts the presets' ranks were set for
PARENT_SUBSETS = ('parent', 'parent23', 'parent25')
AUTO = 'auto'
_BAND_RE = re.compile(r'^(down|keep|up|repeat):(\d+)-(\d*)(?::(\d+))?$')


@dataclass(frozen=True)
class Band:
    kind: str            # down | keep | up | repeat
    first: int           # first rank (0 = the class with most images), inclusive
    last: int | None     # last rank, inclusive; None = to the end
    value: int | None    # target draws (down, up) or factor (repeat)

    def covers(self, rank: int) -> bool:
        return rank >= self.first and (self.last is None or rank <= self.last)


def parse_bands(spec: str) -> list[Band]:
    """``'down:0-23:6000,keep:24-63,...'`` (or a preset name) -> bands; overlaps are an error."""
    spec = PRESETS.get(spec, spec)
    bands = []
    for part in filter(None, (p.strip() for p in spec.split(','))):
        m = _BAND_RE.match(part)
        if not m:
            raise DataError(f'--bands: cannot read {part!r} (expected KIND:FIRST-[LAST][:VALUE])')
        kind, first, last, value = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        last = int(last) if last else None
        if (kind == 'keep') != (value is None):
            raise DataError(f'--bands: {part!r}: {kind} ' + ('takes no value' if kind == 'keep' else 'needs a value'))
        if last is not None and last < first:
            raise DataError(f'--bands: {part!r}: last rank before first')
        bands.append(Band(kind, first, last, int(value) if value else None))
    ordered = sorted(bands, key=lambda b: b.first)
    for a, b in zip(ordered, ordered[1:]):
        if a.last is None or a.last >= b.first:
            raise DataError(f'--bands: ranks of {a.kind}:{a.first}- and {b.kind}:{b.first}- overlap')
    return bands


def format_bands(bands: list[Band]) -> str:
    """Bands -> the spec ``parse_bands`` reads."""
    return ','.join(f'{b.kind}:{b.first}-{"" if b.last is None else b.last}{"" if b.value is None else f":{b.value}"}'
                    for b in bands)


def scale_bands(bands: list[Band], from_classes: int, to_classes: int) -> list[Band]:
    """Rank bands set for ``from_classes`` classes moved to ``to_classes``: every rank boundary scaled by
    the ratio (bands stay contiguous; a band left with no rank is dropped); targets and factors unchanged."""
    def at(rank):
        return round(rank * to_classes / from_classes)
    out = []
    for b in sorted(bands, key=lambda b: b.first):
        first = at(b.first)
        last = None if b.last is None else at(b.last + 1) - 1
        if first >= to_classes or (last is not None and last < first):
            continue
        out.append(Band(b.kind, first, last, b.value))
    return out


def auto_bands(metainfo: dict) -> tuple[str, list[Band]]:
    """The ``auto`` preset for an annotation file: (the preset it derives from, its bands)."""
    base = 'parent' if metainfo.get('subset') in PARENT_SUBSETS else 'leaf'
    return base, scale_bands(parse_bands(base), PRESET_CLASSES[base], len(metainfo['classes']))


def class_images(data_list: list, num_classes: int) -> list[np.ndarray]:
    """Per class, the sorted indices of the images holding at least one of its (non-ignored) instances."""
    img, lab = [], []
    for i, item in enumerate(data_list):
        labels = {inst['bbox_label'] for inst in item['instances'] if not inst.get('ignore_flag', 0)}
        img.extend([i] * len(labels))
        lab.extend(labels)
    img, lab = np.asarray(img, np.int64), np.asarray(lab, np.int64)
    if len(lab) and (lab.min() < 0 or lab.max() >= num_classes):
        raise DataError(f'bbox_label {int(lab.max())} outside the {num_classes} classes of the metainfo')
    order = np.lexsort((img, lab))
    img, lab = img[order], lab[order]
    bounds = np.searchsorted(lab, np.arange(num_classes + 1))
    return [img[bounds[k]:bounds[k + 1]] for k in range(num_classes)]


def rank_classes(class_imgs: list[np.ndarray]) -> np.ndarray:
    """Class indices by distinct images, largest first; ties by class index."""
    sizes = np.array([len(x) for x in class_imgs], np.int64)
    return np.lexsort((np.arange(len(sizes)), -sizes))


def band_of_classes(class_imgs, bands: list[Band]) -> list[Band | None]:
    """The band of each class (None: no band covers its rank, so it is kept)."""
    out = [None] * len(class_imgs)
    for rank, k in enumerate(rank_classes(class_imgs)):
        out[k] = next((b for b in bands if b.covers(rank)), None)
    return out


def draw_round(class_imgs, bands: list[Band], n_images: int, rng: np.random.Generator) -> np.ndarray:
    """How many times each image is drawn in one round (int64 per image)."""
    counts = np.zeros(n_images, np.int64)
    ranked = rank_classes(class_imgs)
    band = band_of_classes(class_imgs, bands)
    for k in ranked:
        imgs, b = class_imgs[k], band[k]
        if len(imgs) == 0 or (b is not None and b.kind == 'up'):
            continue
        if b is None or b.kind == 'keep':
            counts[imgs] += 1
        elif b.kind == 'repeat':
            counts[imgs] += b.value
        elif b.kind == 'down':
            counts[imgs if len(imgs) <= b.value else rng.choice(imgs, b.value, replace=False)] += 1
    for k in ranked[::-1]:   # top-ups, rarest first
        imgs, b = class_imgs[k], band[k]
        if len(imgs) == 0 or b is None or b.kind != 'up':
            continue
        need = b.value - int(counts[imgs].sum())
        if need > 0:
            whole, rest = divmod(need, len(imgs))
            counts[imgs] += whole
            if rest:
                counts[rng.choice(imgs, rest, replace=False)] += 1
    return counts


def spread_evenly(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Image indices, image i appearing counts[i] times at evenly spaced places in a random order."""
    idx = np.flatnonzero(counts)
    c = counts[idx]
    rep = np.repeat(idx, c)
    j = np.arange(len(rep)) - np.repeat(np.cumsum(c) - c, c)
    key = (j + np.repeat(rng.random(len(idx)), c)) / np.repeat(c, c)
    return rep[np.argsort(key, kind='stable')]


def rebalance(class_imgs, n_images: int, bands: list[Band], rounds: int = 7, seed: int = 0) -> np.ndarray:
    """``rounds`` rounds, round r seeded by (seed, r), concatenated -> int64 indices into data_list."""
    parts = []
    for r in range(rounds):
        rng = np.random.default_rng([seed, r])
        parts.append(spread_evenly(draw_round(class_imgs, bands, n_images, rng), rng))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def class_report(class_imgs, index: np.ndarray, n_images: int, bands, metainfo: dict, rounds: int):
    """Per class: rank, band, images before, and draws per round after."""
    drawn = np.bincount(index, minlength=n_images)
    band = band_of_classes(class_imgs, bands)
    rows = []
    for rank, k in enumerate(rank_classes(class_imgs)):
        imgs, b = class_imgs[k], band[k]
        rows.append({'rank': rank, 'mid': metainfo['mids'][k], 'name': metainfo['classes'][k],
                     'band': b.kind if b else 'keep', 'band_value': b.value if b and b.value else '',
                     'images_before': len(imgs),
                     'draws_per_round': round(float(drawn[imgs].sum()) / max(rounds, 1), 2),
                     'distinct_images_after': int((drawn[imgs] > 0).sum())})
    return pd.DataFrame(rows)


def plot_report(df: pd.DataFrame, path: str) -> None:
    """Images per class before, draws per round after, by rank (log scale)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = df['rank'].to_numpy()
    before, after = df['images_before'].astype(float), df['draws_per_round'].astype(float)
    ax.plot(x, before.where(before > 0), label='images before', color='tab:gray')   # log axis: hide zeros
    ax.plot(x, after.where(after > 0), label='draws per round after', color='tab:blue')
    for kind, colour in (('down', '#fde0dd'), ('up', '#e0ecf4'), ('repeat', '#e5f5e0')):
        sel = x[df['band'] == kind]
        if len(sel):
            ax.axvspan(sel.min() - 0.5, sel.max() + 0.5, color=colour, zorder=0, label=f'{kind} band')
    ax.set_yscale('log')
    ax.set_xlabel('class rank (most images first)')
    ax.set_ylabel('images')
    ax.legend(loc='upper right')
    ax.set_title('Class rebalancing')
    fig.tight_layout()
    with AtomicWriter(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m util.data.rebalance', description=__doc__.split('\n\n')[0])
    p.add_argument('annotations', help='annotation file (.pkl/.json) whose data_list the indices point into')
    p.add_argument('--out', required=True, help='output .npy of int64 indices')
    p.add_argument('--preset', choices=[AUTO, *sorted(PRESETS)], default=AUTO,
                   help='band preset; auto (default): from the file\'s subset, ranks scaled to its class count')
    p.add_argument('--bands', default=None, help='band spec overriding --preset, e.g. "down:0-23:6000,keep:24-63,'
                   'up:64-240:1500,repeat:241-:10"')
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--report', default=None,
                   help='report prefix: PREFIX.csv and PREFIX.png (default: the --out path without .npy)')
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    if not a.out.endswith('.npy'):
        raise DataError(f'{a.out}: the index list must be a .npy file')
    if a.rounds < 1:
        raise DataError('--rounds must be at least 1')
    bands = parse_bands(a.bands) if a.bands else None if a.preset == AUTO else parse_bands(a.preset)
    ann = load_annotations(a.annotations)
    data_list, metainfo = ann['data_list'], ann['metainfo']
    if bands is None:
        base, bands = auto_bands(metainfo)
        print(f'bands (auto: {base} preset for {len(metainfo["classes"])} classes): {format_bands(bands)}')
    class_imgs = class_images(data_list, len(metainfo['classes']))
    index = rebalance(class_imgs, len(data_list), bands, a.rounds, a.seed)
    with AtomicWriter(a.out, 'wb') as f:
        np.save(f, index.astype(np.int64))
    prefix = a.report or a.out[:-len('.npy')]
    df = class_report(class_imgs, index, len(data_list), bands, metainfo, a.rounds)
    with AtomicWriter(prefix + '.csv') as f:
        df.to_csv(f, index=False, lineterminator='\n')
    plot_report(df, prefix + '.png')
    print(f'{a.out}: {len(index)} entries over {a.rounds} rounds ({len(index) / a.rounds:.0f} per round) '
          f'from {len(data_list)} images; report {prefix}.csv, {prefix}.png')


if __name__ == '__main__':
    raise SystemExit(run(main))
