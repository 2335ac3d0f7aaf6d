"""Class-subset experts' data: a class list from util.data.subsets, annotation files built on it with
``--subset FILE`` (and test shards), and rebalancing on such a file; real CLIs on the synthetic download."""
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from util.common.hierarchy import load_default, subset_classes
from util.data.annotations import load_annotations
from util.data.rebalance import (
    PRESETS,
    auto_bands,
    format_bands,
    parse_bands,
    scale_bands,
)

H = load_default()


def build(root, subset, out, check=True):
    return run_cli(['-m', 'util.data.build', '--masks-csv', str(root / 'challenge-2019-train-segmentation-masks.csv'),
                    '--img-root', str(root), '--subset', str(subset), '--no-progress', '--out', str(out)], check=check)


def instances_by_mid(ann):
    """{(img_id, mid, box, mask counts)} of an annotation file: what an instance is, whatever its label index."""
    mids = ann['metainfo']['mids']
    return Counter((item['img_id'], mids[inst['bbox_label']], tuple(round(v, 3) for v in inst['bbox']),
                    inst['mask']['counts']) for item in ann['data_list'] for inst in item['instances'])


@pytest.fixture(scope='module')
def rare(synthetic_data, tmp_path_factory):
    """The 3 rarest classes of the synthetic leaf training file, as a class list, and the expert's file."""
    folder = tmp_path_factory.mktemp('expert')
    classes = folder / 'rare.txt'
    proc = run_cli(['-m', 'util.data.subsets', '--rarest', '3', '--annotations',
                    str(synthetic_data / 'annotations/leaf-train.pkl'), '--out', str(classes)])
    assert f'{classes}: 3 classes' in proc.stdout
    ann = folder / 'expert-train.pkl'
    build(synthetic_data, classes, ann)
    return classes, ann


def test_rarest_classes_are_those_with_fewest_instances(synthetic_data, rare):
    classes, _ = rare
    leaf = load_annotations(str(synthetic_data / 'annotations/leaf-train.pkl'))
    per_mid = Counter(leaf['metainfo']['mids'][i['bbox_label']] for it in leaf['data_list'] for i in it['instances'])
    chosen = subset_classes(H, str(classes))
    assert len(chosen) == 3 and set(chosen) <= set(per_mid)     # classes without training masks are left out
    third_lowest = sorted(per_mid.values())[2]
    assert all(per_mid[m] <= third_lowest for m in chosen)
    # Written in hierarchy order, after comments saying how it was made.
    lines = classes.read_text().splitlines()
    assert lines[0].startswith(f'# the 3 rarest of {len(per_mid)} classes of leaf')
    assert 'util.data.subsets --rarest 3' in lines[1]
    assert [line.split(',')[0] for line in lines if not line.startswith('#')] == chosen


def test_frequency_band_and_most_frequent(tmp_path):
    band = tmp_path / 'band.txt'
    run_cli(['-m', 'util.data.subsets', '--frequency-band', '0-9', '--out', str(band)])
    top = tmp_path / 'top.txt'
    run_cli(['-m', 'util.data.subsets', '--most-frequent', '10', '--out', str(top)])
    assert subset_classes(H, str(band)) == subset_classes(H, str(top))
    proc = run_cli(['-m', 'util.data.subsets', '--frequency-band', '300-', '--out', str(tmp_path / 'x.txt')],
                   check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        'error: --frequency-band 300-: the pool has only 275 classes (ranks 0-274)']


def test_build_on_a_class_list_keeps_exactly_those_classes_instances(synthetic_data, rare):
    classes, ann_path = rare
    expert, leaf = load_annotations(str(ann_path)), load_annotations(str(synthetic_data / 'annotations/leaf-train.pkl'))
    mids = subset_classes(H, str(classes))
    assert expert['metainfo']['mids'] == mids
    assert expert['metainfo']['classes'] == [H.name(m) for m in mids]
    assert expert['metainfo']['subset'] == str(classes)
    want = Counter({k: n for k, n in instances_by_mid(leaf).items() if k[1] in mids})
    assert sum(want.values()) > 0 and instances_by_mid(expert) == want


def test_a_class_list_with_a_parent_gets_its_descendants_masks(synthetic_data, tmp_path):
    leaf = load_annotations(str(synthetic_data / 'annotations/leaf-train.pkl'))
    present = {leaf['metainfo']['mids'][i['bbox_label']] for it in leaf['data_list'] for i in it['instances']}
    parent = next(p for p in H.parent_labels if H.descendants(p) & present)
    classes = tmp_path / 'with-parent.csv'
    classes.write_text(f'LabelName,Name\n{parent},{H.name(parent)}\n')
    build(synthetic_data, classes, tmp_path / 'p.pkl')
    ann = load_annotations(str(tmp_path / 'p.pkl'))
    got = sum(len(it['instances']) for it in ann['data_list'])
    want = sum(1 for it in leaf['data_list'] for i in it['instances']
               if leaf['metainfo']['mids'][i['bbox_label']] in H.descendants(parent))
    assert ann['metainfo']['mids'] == [parent] and got == want > 0


def test_bad_class_lists_are_refused_by_build(synthetic_data, tmp_path):
    bad = tmp_path / 'bad.txt'
    bad.write_text('/m/0kmg4\n/m/0kmg4\n')
    proc = build(synthetic_data, bad, tmp_path / 'x.pkl', check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f'error: {bad}:2: /m/0kmg4 listed twice (first on line 1)']
    proc = build(synthetic_data, tmp_path / 'missing.txt', tmp_path / 'x.pkl', check=False)
    assert proc.returncode == 2 and 'is neither a preset' in proc.stderr
    assert not (tmp_path / 'x.pkl').exists()


def test_test_shards_carry_the_class_list(synthetic_data, rare, tmp_path):
    classes, _ = rare
    run_cli(['-m', 'util.data.shards', '--sample-csv', str(synthetic_data / 'sample_empty_submission.csv'),
             '--out', str(tmp_path / 'shards'), '--num-shards', '2', '--subset', str(classes), '--no-progress'])
    manifest = json.loads((tmp_path / 'shards/manifest.json').read_text())
    shard = load_annotations(str(tmp_path / 'shards' / manifest['shards'][0]['file']))
    assert shard['metainfo']['mids'] == subset_classes(H, str(classes))


def test_scaled_bands():
    leaf = parse_bands('leaf')
    assert scale_bands(leaf, 275, 275) == leaf
    assert format_bands(scale_bands(leaf, 275, 100)) == 'down:0-8:6000,keep:9-22,up:23-87:1500,repeat:88-:10'
    for n in (1, 3, 23, 100, 500):
        bands = scale_bands(leaf, 275, n)
        covered = [r for r in range(n) if any(b.covers(r) for b in bands)]
        assert covered == list(range(n))                       # contiguous, every rank once
        assert parse_bands(format_bands(bands)) == bands         # and a valid spec
    assert auto_bands({'subset': 'leaf', 'classes': [''] * 275}) == ('leaf', leaf)
    assert auto_bands({'subset': 'parent23', 'classes': [''] * 23}) == ('parent', parse_bands(PRESETS['parent']))


def test_rebalance_on_an_expert_file_uses_bands_scaled_to_its_classes(rare, tmp_path):
    _, ann_path = rare
    auto = run_cli(['-m', 'util.data.rebalance', str(ann_path), '--out', str(tmp_path / 'auto.npy')])
    spec = format_bands(scale_bands(parse_bands('leaf'), 275, 3))
    assert f'bands (auto: leaf preset for 3 classes): {spec}' in auto.stdout
    run_cli(['-m', 'util.data.rebalance', str(ann_path), '--out', str(tmp_path / 'explicit.npy'), '--bands', spec])
    index, explicit = np.load(tmp_path / 'auto.npy'), np.load(tmp_path / 'explicit.npy')
    assert np.array_equal(index, explicit)
    data_list = load_annotations(str(ann_path))['data_list']
    assert len(index) > 0 and index.min() >= 0 and index.max() < len(data_list)
    # Three classes: the commonest kept, the two others topped up to the leaf preset's 1500 draws a round.
    report = pd.read_csv(tmp_path / 'auto.csv')
    assert list(report['band']) == ['keep', 'up', 'up']
    assert (report['draws_per_round'][1:] >= 1500).all()
