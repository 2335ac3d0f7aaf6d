"""The search's member-view cache predicted by a pool of processes (``--jobs``): the same files as one
process writes with the pool's thread count (CPU sums, hence the last digits, depend on it), and an
unreadable image stops it with the error naming the file, no process left behind."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import time

import pytest

from util.common.errors import DataError
from util.data.annotations import load_annotations

TINY_LEAF = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'


@pytest.mark.slow
def test_pooled_cache_equals_the_serial_one_and_stops_on_an_unreadable_image(synthetic_data, tmp_path):
    from _ensemble_helpers import save_checkpoint, tiny_detector, write_ensemble

    from mmdet_ext.ensemble.config import load_ensemble_config
    from mmdet_ext.ensemble.member_views import cache_member_views
    root = synthetic_data
    ann = str(root / 'annotations/leaf-val.pkl')
    ckpts = [save_checkpoint(tiny_detector(seed, num_classes=None, max_per_img=20), str(tmp_path / f'w{seed}.pth'))
             for seed in (0, 1)]
    cfg = load_ensemble_config(write_ensemble(tmp_path / 'leaf.py', [('a', TINY_LEAF, ckpts[0]),
                                                                     ('b', TINY_LEAF, ckpts[1])], flip=True))
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, os.cpu_count() // 2))          # a pool of 2's share of the cores each
    try:
        serial = cache_member_views(cfg, ann, str(root), str(tmp_path / 'serial'), progress=False)
    finally:
        torch.set_num_threads(threads)
    pooled = cache_member_views(cfg, ann, str(root), str(tmp_path / 'pooled'), progress=False, jobs=2)
    assert [(m, v) for m, v, _ in pooled] == [(m, v) for m, v, _ in serial] == \
        [('a', '160x128'), ('a', '160x128-flip'), ('b', '160x128'), ('b', '160x128-flip')]
    for (_, _, one), (_, _, two) in zip(serial, pooled):
        assert open(one, 'rb').read() == open(two, 'rb').read(), two
    # One image cut short: the pool's error is the runner's one line naming it, and the pool is gone.
    broken = tmp_path / 'broken'
    shutil.copytree(root / 'validation', broken / 'validation')
    path = load_annotations(ann)['data_list'][3]['img_path']
    with open(broken / path, 'r+b') as f:
        f.truncate(100)
    with pytest.raises(DataError, match=os.path.basename(path)):
        cache_member_views(cfg, ann, str(broken), str(tmp_path / 'broken-cache'), progress=False, jobs=2)
    deadline = time.monotonic() + 10            # ended by the error, not left to finish their member-views
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert multiprocessing.active_children() == []
