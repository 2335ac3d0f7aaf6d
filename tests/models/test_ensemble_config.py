"""Ensemble config files: the shipped recipes load, overrides and flags apply, mistakes are one line."""
import glob
import os

import pytest
from conftest import REPO
from mmengine.config import Config

from mmdet_ext.ensemble.config import (
    apply_flags,
    check_config,
    config_from_flags,
    load_ensemble_config,
    member_classes,
)
from util.common.errors import DataError
from util.common.hierarchy import load_default

TINY = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'
SHIPPED = sorted(glob.glob(os.path.join(REPO, 'configs', 'ensemble', '*.py')))


@pytest.fixture(autouse=True)
def _at_repo(monkeypatch):
    monkeypatch.chdir(REPO)          # member paths are relative to the repository root


def test_recipes_ship_as_files():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {'oid-leaf_reference.py', 'oid-parent_reference.py', 'demo-leaf.py', 'demo-parent.py'} <= names


@pytest.mark.parametrize('path', SHIPPED, ids=os.path.basename)
def test_shipped_recipe_loads_and_names_its_missing_checkpoint(path, tmp_path):
    cfg = load_ensemble_config(path)
    assert cfg.members and cfg.fusion['type'] and set(cfg.views) <= {'scales', 'flip'}
    for member in cfg.members:
        assert os.path.isfile(member['config']), member['config']
    first = cfg.members[0]['checkpoint']
    if not os.path.exists(first):
        with pytest.raises(DataError, match=f'^{first}: checkpoint not found .members.0. of {path}'):
            check_config(cfg, path)
    ckpt = tmp_path / 'w.pth'
    ckpt.write_bytes(b'x')
    check_config(apply_flags(cfg, dict(checkpoints=[str(ckpt)] * len(cfg.members))), path)
    # Every fusion parameter is one its class takes (a misspelt one would fail only when run).
    import inspect

    from mmdet_ext.ensemble import FUSIONS
    fusion = dict(cfg.fusion)
    params = inspect.signature(FUSIONS.get(fusion.pop('type'))).parameters
    assert set(fusion) <= set(params), (path, sorted(set(fusion) - set(params)))


def test_inheritance_and_cfg_options_override():
    path = os.path.join(REPO, 'configs', 'ensemble', 'oid-leaf_reference_wbf.py')
    cfg = load_ensemble_config(path, {'members.1.weight': 2.0, 'test_cfg.max_per_img': 200})
    assert cfg.fusion['type'] == 'WBF' and 'max_proposals' not in cfg.fusion     # _delete_ replaced it
    assert cfg.views == dict(scales=[(1333, 800), (1600, 960)], flip=True)      # from the _base_
    assert [m.get('weight', 1.0) for m in cfg.members] == [1.0, 2.0, 1.0]
    assert cfg.test_cfg['max_per_img'] == 200 and cfg.test_cfg['score_thr'] == 0.0


def test_flags_override_a_file(tmp_path):
    ckpt = tmp_path / 'w.pth'
    ckpt.write_bytes(b'x')
    path = os.path.join(REPO, 'configs', 'ensemble', 'demo-leaf.py')
    cfg = apply_flags(load_ensemble_config(path), dict(checkpoints=[str(ckpt)] * 2, score_thr=0.3,
                                                       scales=[(200, 100)], weights=[1, 3], max_proposals=50))
    assert cfg.test_cfg['score_thr'] == 0.3 and cfg.test_cfg['max_per_img'] == 30
    assert cfg.views['scales'] == [[200, 100]] and cfg.views['flip'] is True
    assert [m['weight'] for m in cfg.members] == [1, 3] and cfg.fusion['max_proposals'] == 50
    wbf = os.path.join(REPO, 'configs', 'ensemble', 'demo-leaf_wbf.py')
    with pytest.raises(DataError, match='--proposal-iou is a parameter of the SharedProposals fusion; .* uses WBF'):
        apply_flags(load_ensemble_config(wbf), dict(checkpoints=[str(ckpt)] * 2, proposal_iou=0.5))


def test_flags_alone_describe_a_shared_proposal_ensemble(tmp_path):
    ckpt = tmp_path / 'w.pth'
    ckpt.write_bytes(b'x')
    cfg = config_from_flags(dict(configs=[TINY], checkpoints=[str(ckpt)], flip=True, iou_thr=0.6))
    assert cfg.fusion == dict(type='SharedProposals') and cfg.views == dict(scales=None, flip=True)
    assert cfg.test_cfg == dict(score_thr=None, iou_thr=0.6, max_per_img=None, mask_thr=None)
    with pytest.raises(DataError, match='give an ensemble config file, or --configs'):
        config_from_flags({})


@pytest.mark.parametrize('text,message', [
    ("members = []", 'needs members'),
    ("members = [dict(config=%r, checkpoint=%r, wieght=2)]", r"members\[0\] has unknown keys \['wieght'\]"),
    ("members = [dict(config=%r, checkpoint=%r, weight=-1)]", r'members\[0\].weight must be a number >= 0'),
    ("members = [dict(config=%r, checkpoint=%r)]\nviews = dict(scales=[(0, 3)])", 'views.scales must be'),
    ("members = [dict(config=%r, checkpoint=%r)]\ntest_cfg = dict(score=0.1)", r"test_cfg has unknown keys \['score'\]"),
    ("members = [dict(config=%r, checkpoint=%r)]\nfusion = dict(iou=1)", 'needs fusion = dict.type='),
    ("members = [dict(config=%r, checkpoint=%r)", 'not a readable config'),
])
def test_mistakes_are_one_line_naming_the_file(tmp_path, text, message):
    ckpt = tmp_path / 'w.pth'
    ckpt.write_bytes(b'x')
    path = tmp_path / 'ens.py'
    path.write_text(text.replace('%r', '{!r}').format(TINY, str(ckpt)) if '%r' in text else text)
    with pytest.raises(DataError, match=message) as e:
        cfg = load_ensemble_config(str(path))
        cfg.setdefault('fusion', dict(type='SharedProposals'))
        check_config(cfg, str(path))
    assert '\n' not in str(e.value) and str(path) in str(e.value) or 'members' in str(e.value)


def test_member_classes_map_a_subset_into_the_ensemble():
    h = load_default()
    leaves = h.subset('leaf')
    assert member_classes(None, leaves, 0) is None
    some = [leaves[7], leaves[3]]
    assert member_classes(some, leaves, 0) == [7, 3]
    with pytest.raises(DataError, match=r"members\[2\].classes: 1 classes are not among the ensemble's 275"):
        member_classes([leaves[0], '/m/not-a-class'], leaves, 2)
    parents = h.subset('parent')
    with pytest.raises(DataError, match='not among'):
        member_classes('parent', leaves, 0)      # parents are not leaf classes
    assert member_classes('parent', list(parents) + leaves, 1) == list(range(len(parents)))


def test_unknown_fusion_type_lists_the_known_ones(tmp_path):
    from mmdet_ext.ensemble.config import build_ensemble
    ckpt = tmp_path / 'w.pth'
    ckpt.write_bytes(b'x')
    cfg = Config(dict(members=[dict(config=TINY, checkpoint=str(ckpt))], views=dict(scales=None),
                      fusion=dict(type='Magic'), test_cfg={}))
    with pytest.raises(DataError, match=r"fusion.type 'Magic' is unknown; known: \[.*'SharedProposals'.*'WBF'"):
        build_ensemble(cfg, load_default().subset('leaf'))
