"""The layout's rules, read from the source: what may import what (README, "Layout")."""
import ast
import glob
import os
import subprocess
import sys

import pytest
from conftest import REPO

HEAVY = {'torch', 'mmdet', 'mmcv', 'mmengine', 'torchvision'}
PACKAGES = ('common', 'data', 'post', 'metric', 'search')
# Which util packages each one may import (besides itself).
ALLOWED = {'common': set(), 'data': {'common'}, 'metric': {'common'}, 'post': {'common', 'data'},
           'search': {'common', 'data', 'post', 'metric'}}


def imported_modules(path: str) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth."""
    package = os.path.relpath(os.path.dirname(path), REPO).replace(os.sep, '.')
    names = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                names.append('.'.join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module)
    return names


def util_files():
    files = sorted(glob.glob(os.path.join(REPO, 'util', '**', '*.py'), recursive=True))
    assert len(files) > 25
    return files


def test_every_util_module_lives_in_a_stage_package():
    loose = [f for f in util_files() if os.path.dirname(f) == os.path.join(REPO, 'util')
             and os.path.basename(f) != '__init__.py']
    assert loose == []
    for pkg in PACKAGES:
        doc = ast.get_docstring(ast.parse(open(os.path.join(REPO, 'util', pkg, '__init__.py')).read()))
        modules = {os.path.basename(f)[:-3] for f in glob.glob(os.path.join(REPO, 'util', pkg, '*.py'))} - {'__init__'}
        # The package docstring is a map: every module is named in it.
        assert doc and all(m in doc for m in modules), (pkg, sorted(m for m in modules if m not in (doc or '')))


@pytest.mark.parametrize('path', util_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_util_imports_follow_the_layout(path):
    rel = os.path.relpath(path, os.path.join(REPO, 'util')).split(os.sep)
    own = rel[0] if len(rel) > 1 else None
    for name in imported_modules(path):
        top = name.split('.')
        assert top[0] not in HEAVY, (path, name)
        if top[0] == 'util' and own and len(top) > 1:
            assert top[1] == own or top[1] in ALLOWED[own], f'{path}: util.{own} imports {name}'


def test_util_imports_no_deep_learning_stack_at_run_time():
    """Importing every util module (and the CLIs' main functions) loads none of torch/mmdet/mmcv/mmengine."""
    mods = [os.path.relpath(f, REPO)[:-3].replace(os.sep, '.').removesuffix('.__init__') for f in util_files()]
    code = ('import importlib, sys\n'
            f'for m in {mods!r}: importlib.import_module(m)\n'
            f'print(sorted(m for m in sys.modules if m.split(".")[0] in {sorted(HEAVY)!r}))')
    p = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == '[]', p.stdout + p.stderr


IMPORT_NAME = {'opencv-python-headless': 'cv2', 'pillow': 'PIL', 'gcsfs': 'gcsfs', 'scikit-learn': 'sklearn',
               'ensemble-boxes': 'ensemble_boxes'}


def test_every_declared_dependency_is_imported():
    """A dependency no code imports goes (pyproject.toml's dependencies and extras)."""
    import re
    import tomllib
    with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
        project = tomllib.load(f)['project']
    declared = project['dependencies'] + [d for extra in project['optional-dependencies'].values() for d in extra]
    sources = [p for d in ('util', 'mmdet_ext', 'tools', 'tests') for p in
               glob.glob(os.path.join(REPO, d, '**', '*.py'), recursive=True)]
    sources.append(os.path.join(REPO, 'combine_leaf_and_parent.py'))
    imported = {name.split('.')[0] for p in sources for name in imported_modules(p) if name}
    for requirement in declared:
        dist = re.match(r'[A-Za-z0-9_.-]+', requirement).group(0).lower()
        module = IMPORT_NAME.get(dist, dist.replace('-', '_'))
        if dist == 'gcsfs':      # fsspec's backend for gs://, loaded by fsspec itself (mmdet_ext.fileio)
            continue
        assert module in imported, f'{dist} is declared in pyproject.toml but nothing imports {module}'
