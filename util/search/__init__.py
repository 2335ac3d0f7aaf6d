"""Choosing an ensemble on validation: cached member predictions, a resumable search, calibration.

Imports common, post and metric: a trial is post-processing (``util.post.fuse`` and friends) scored by the
metric (``util.metric.session``), on predictions the models made once.

    members      the cached predictions of every member x view (submission CSVs; a parent ensemble's beside
                 the leaf one's), two validation folds
    space        the search space file: which knobs, which values
    calibrate    per-member isotonic score calibration (scikit-learn), fitted on one fold's outcomes
    trial        one setting -> fused, post-processed predictions (optionally combined with the parent
                 ensemble's as util.post.pipeline does) -> the metric on each fold
    study        the Optuna study (SQLite: resumable, shareable), its baselines and its best setting
    report       leaderboard (CSV, markdown), a plot of mAP against the knobs, the winning config file
"""
