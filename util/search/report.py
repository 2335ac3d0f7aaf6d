"""What a search found: a leaderboard (CSV and markdown), mAP against the knobs that mattered, the winner.

Every row shows its mAP on fold A (where settings are chosen) and fold B (held out), and the difference to
the best single member-view on each fold, so that a setting that only fits fold A shows it.

    leaderboard(study, baselines)           -> pandas DataFrame, best fold A first
    write_leaderboard(df, csv_path, md_path, top)   the CSV whole; the markdown's top rows (``merged_rows``)
    plot_knobs(study, path)                 -> the knobs plotted (most important first)
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from ..common.atomic import AtomicWriter
from .study import finished


def _describe(setting: dict) -> str:
    """One line of the knobs: the combine's own knobs only where it ran, ``expand`` only where it did not
    (the combine's chain expands by itself)."""
    parts = []
    combined = bool(setting.get('combine'))
    for key in sorted(setting):
        value = setting[key]
        if key == 'pipeline' or (key.startswith('combine_') and not combined) or (key == 'expand' and combined):
            continue
        if key == 'weights':
            value = '/'.join(f'{w:.2g}' for w in value.values())
        elif isinstance(value, float):
            value = f'{value:.3g}'
        parts.append(f'{key}={value}')
    return ' '.join(parts)


def leaderboard(study, baselines: list[dict]) -> pd.DataFrame:
    singles = [r for r in baselines if r['name'].startswith('single ')]
    best_a = max((r['fold_a'] for r in singles), default=np.nan)
    best_b = max((r['fold_b'] for r in singles), default=np.nan)
    rows = [dict(name=r['name'], fold_a=r['fold_a'], fold_b=r['fold_b'], setting=_describe(r['setting']))
            for r in baselines]
    for t in finished(study):
        setting = json.loads(t.user_attrs['setting'])
        rows.append(dict(name=f'trial {t.number}', fold_a=t.value, fold_b=t.user_attrs['fold_b'],
                         setting=_describe(setting)))
    df = pd.DataFrame(rows, columns=['name', 'fold_a', 'fold_b', 'setting'])
    df['delta_a'] = df['fold_a'] - best_a
    df['delta_b'] = df['fold_b'] - best_b
    return df.sort_values(['fold_a', 'name'], ascending=[False, True], kind='stable').reset_index(drop=True)


def merged_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with rows of the same setting and mAPs as one row, names joined (a reference row
    and the trial that ran it: the hand-set recipe is the study's first trial), in the board's order."""
    key = df['setting'] + '|' + df['fold_a'].map(repr) + '|' + df['fold_b'].map(repr)
    rows = []
    for _, group in df.groupby(key, sort=False):
        row = group.iloc[0].copy()
        row['name'] = ' = '.join(sorted(group['name'], key=lambda n: n.startswith('trial ')))
        rows.append(row)
    return pd.DataFrame(rows, columns=df.columns).reset_index(drop=True)


def write_leaderboard(df: pd.DataFrame, csv_path: str, md_path: str, top: int = 15) -> None:
    """The whole board as CSV (a row per reference and per trial); its top rows as markdown, a setting
    that a reference row and a trial share shown once."""
    with AtomicWriter(csv_path) as f:
        df.to_csv(f, index=False, float_format='%.6f')
    lines = ['| setting | fold A (chosen on) | fold B (held out) | delta A | delta B |', '|---|---:|---:|---:|---:|']
    for r in merged_rows(df).head(top).itertuples():
        lines.append(f'| {r.name}: {r.setting} | {r.fold_a:.4f} | {r.fold_b:.4f} | {r.delta_a:+.4f} | '
                     f'{r.delta_b:+.4f} |')
    with AtomicWriter(md_path) as f:
        f.write('\n'.join(lines) + '\n')


def knob_importance(study) -> list[str]:
    """Knobs, most important first (Optuna's fANOVA importances; the space's order when it cannot tell)."""
    import optuna
    trials = finished(study)
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    try:
        ranked = list(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        ranked = []
    return ranked + [n for n in names if n not in ranked]


def plot_knobs(study, path: str, knobs: int = 3) -> list[str]:
    """Fold A (dots) and fold B (crosses) mAP of every trial against each of the top ``knobs`` knobs."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    trials = finished(study)
    names = [n for n in knob_importance(study) if len({str(t.params.get(n)) for t in trials}) > 1][:knobs]
    if not names:
        return []
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [t.params.get(name) for t in trials]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        xs = values if numeric else [sorted(set(map(str, values))).index(str(v)) for v in values]
        ax.scatter(xs, [t.value for t in trials], s=14, label='fold A (chosen on)')
        ax.scatter(xs, [t.user_attrs['fold_b'] for t in trials], s=14, marker='x', label='fold B (held out)')
        if not numeric:
            labels = sorted(set(map(str, values)))
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_xlabel(name)
        ax.set_ylabel('mAP@0.5IOU')
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return names
