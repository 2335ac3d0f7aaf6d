"""Write the demo's report: ``python tools/demo_report.py DEMO_DIR`` -> DEMO_DIR/report.md (+ report-table.md).

It only reads what the demo's stages left behind: the metric's output per submission (``eval/*.txt``, last
line ``mAP@0.5IOU=...``), the stage times, the settings and the pictures.
"""
import argparse
import csv
import glob
import json
import os
import sys

from util.common.cli import run

ROWS = [  # (eval file, what it is)
    ('leaf-a', 'leaf model A: slim Cascade Mask R-CNN (seed 0), single scale, no flip'),
    ('leaf-b', 'leaf model B: slim Mask R-CNN (seed 1), single scale, no flip'),
    ('leaf', 'leaf ensemble A + B x 2 scales x flip, fused through shared proposals'),
    ('leaf-wbf', 'leaf ensemble A + B x 2 scales x flip, late fusion by WBF'),
    ('leaf-nms', 'leaf ensemble A + B x 2 scales x flip, late fusion by NMS'),
    ('leaf-fused', 'submissions of A and B (single view) fused by WBF (util.post.fuse)'),
    ('leaf-expanded', 'leaf ensemble (shared proposals), detections copied to their ancestors'),
    ('final', 'final: leaf ensemble + parent model (expansion, mask NMS, combine)'),
]
ENSEMBLE_ROWS = ('leaf', 'leaf-wbf', 'leaf-nms', 'leaf-fused')


def read_map(path):
    with open(path) as f:
        last = [line for line in f.read().splitlines() if line.strip()][-1]
    key, _, value = last.partition('=')
    if key != 'mAP@0.5IOU':
        raise ValueError(f'{path}: last line is not mAP@0.5IOU=...')
    return float(value)


def results_table(demo_dir):
    lines = ['| submission (validation split) | mAP@0.5IOU |', '|---|---:|']
    scores = {}
    for name, what in ROWS:
        path = os.path.join(demo_dir, 'eval', f'{name}.txt')
        if os.path.exists(path):
            scores[name] = read_map(path)
            lines.append(f'| {what} | {scores[name]:.4f} |')
    return '\n'.join(lines) + '\n', scores


def times_table(demo_dir):
    lines = ['| stage | what | seconds |', '|---|---|---:|']
    total = 0.0
    with open(os.path.join(demo_dir, 'stage_times.tsv'), newline='') as f:
        for name, what, seconds in csv.reader(f, delimiter='\t'):
            lines.append(f'| {name} | {what} | {float(seconds):.0f} |')
            total += float(seconds)
    lines.append(f'| all | | {total:.0f} |')
    return '\n'.join(lines) + '\n'


def pictures(demo_dir, pattern, title):
    paths = sorted(glob.glob(os.path.join(demo_dir, pattern)))
    if not paths:
        return ''
    body = '\n'.join(f'![{os.path.basename(p)}]({os.path.relpath(p, demo_dir)})' for p in paths)
    return f'### {title}\n\n{body}\n\n'


def search_section(demo_dir):
    """The search's top leaderboard rows, and the chosen setting's held-out mAP next to the hand-set ones."""
    folder = os.path.join(demo_dir, 'search')
    board, best = os.path.join(folder, 'leaderboard.csv'), os.path.join(folder, 'best_setting.json')
    if not (os.path.exists(board) and os.path.exists(best)):
        return ''
    with open(board, newline='') as f:
        rows = {r['name']: r for r in csv.DictReader(f)}
    chosen = json.load(open(best))
    lines = ['## Ensemble search (validation: fold A chooses, fold B reports)\n',
             'The leaf and parent ensembles\' members x views predicted the validation images once; '
             '`tools/ensemble_search.py` '
             f'scored {sum(n.startswith("trial ") for n in rows)} settings of fusion, member weights, '
             'calibration, post-processing and the combine with the parent ensemble on them with the '
             'challenge metric.\n',
             '| setting | fold A | fold B (held out) |', '|---|---:|---:|']
    picks = [(f'chosen (trial {chosen["trial"]})', rows.get(f'trial {chosen["trial"]}')),
             ('hand-set (defaults: WBF 0.55, equal weights, expansion)', rows.get('hand-set (defaults)')),
             ('hand-set + parent ensemble (defaults; the pipeline\'s combine at mask NMS 0.5)',
              rows.get('hand-set + parent combine (defaults)')),
             ('shared proposals (the ensemble config as shipped, expanded)', rows.get('shared proposals')),
             ('final submission of the pipeline (shared proposals + parent model)',
              rows.get('final (pipeline: shared proposals + parent model)'))]
    singles = [r for n, r in rows.items() if n.startswith('single ')]
    if singles:
        top = max(singles, key=lambda r: float(r['fold_a']))
        picks.append((f'best single member-view on fold A ({top["name"][7:]})', top))
    for what, r in picks:
        if r is not None:
            lines.append(f'| {what} | {float(r["fold_a"]):.4f} | {float(r["fold_b"]):.4f} |')
    lines.append('\nChosen: ' + ', '.join(f'{k}={v}' for k, v in sorted(chosen.items())
                                           if k not in ('trial', 'fold_a', 'fold_b', 'pipeline')) + '.\n')
    if chosen.get('pipeline'):
        lines.append('It combines the leaf and the parent ensemble (`search/best_ensemble.py`, '
                     f'`search/best_parent_ensemble.py`), then: `{chosen["pipeline"]}`.\n')
    top = open(os.path.join(folder, 'leaderboard.md')).read().splitlines()[:10]
    lines += ['Leaderboard, top rows (`search/leaderboard.csv` has all):\n', *top, '']
    return '\n'.join(lines) + '\n'


def write_report(demo_dir):
    table, scores = results_table(demo_dir)
    settings_path = os.path.join(demo_dir, 'settings.json')
    settings = json.load(open(settings_path)) if os.path.exists(settings_path) else {}
    checks = []
    if 'final' in scores:
        checks.append(f'- final submission mAP {scores["final"]:.4f} (target >= 0.3: '
                      f'{"met" if scores["final"] >= 0.3 else "NOT met"})')
    fused = [name for name in ENSEMBLE_ROWS if name in scores]
    if fused and {'leaf-a', 'leaf-b'} <= scores.keys():
        best = max(scores['leaf-a'], scores['leaf-b'])
        winner = max(fused, key=lambda name: scores[name])
        checks.append(f'- heterogeneous leaf ensemble under its best fusion ({winner}) {scores[winner]:.4f} vs '
                      f'best single leaf model {best:.4f} '
                      f'({"at least as high" if scores[winner] >= best else "LOWER"})')
    report = ['# Demo report\n',
              'The whole pipeline on a synthetic dataset in the official Open Images formats, on CPU: '
              'slim Cascade Mask R-CNN and Mask R-CNN models (`configs/tiny/`), ensembles as config files '
              '(`configs/ensemble/`) with every fusion on the same members, the post-processing '
              'chain and the challenge metric. Settings: '
              + ', '.join(f'{k}={v}' for k, v in settings.items()) + '.\n',
              '## Validation mAP (the challenge metric)\n', table,
              'The leaf-only rows score 0 on the parent classes the metric expands the ground truth to; '
              'the expansion and the parent model recover them.\n',
              *[c + '\n' for c in checks], '\n', search_section(demo_dir),
              pictures(demo_dir, 'search/knobs.png', 'Search: mAP against the knobs that mattered most'),
              '\n## Time per stage\n', times_table(demo_dir),
              '\n## Pictures\n\n',
              pictures(demo_dir, 'pictures/predictions/*.png', 'Ground truth (left) and final predictions '
                       'with score >= 0.5 (right), validation images'),
              pictures(demo_dir, 'pictures/eval/ap_per_class.png', 'AP per class, final submission'),
              pictures(demo_dir, 'pictures/eval/pr_curves_*.png', 'Precision-recall curves, final submission'),
              pictures(demo_dir, 'data/annotations/leaf-rebalance.png', 'Leaf rebalancing: images per class '
                       'before and after')]
    with open(os.path.join(demo_dir, 'report.md'), 'w') as f:
        f.write('\n'.join(report))
    with open(os.path.join(demo_dir, 'report-table.md'), 'w') as f:
        f.write(table + ''.join(c + '\n' for c in checks))
    return scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('demo_dir')
    args = p.parse_args(argv)
    write_report(args.demo_dir)
    print(f'wrote {os.path.join(args.demo_dir, "report.md")}')


if __name__ == '__main__':
    sys.exit(run(main))
