"""Torch-free half of the toolkit, one package per pipeline stage (nothing here imports torch or mmdet).

    common/   the shared ground: errors, atomic output, CLI runner, hierarchy, formats (EncodedMask,
              submission CSV, text files), image and mask PNG reading, drawing
    data/     Google's CSVs + PNGs -> annotation files, rebalancing, test shards, synthetic data, COCO
    post/     results files -> submission CSV: expansion, mask NMS, combine, merge, validate, the chain
    metric/   the official challenge metric: rules, ground truth, detections, parallel evaluator, CLI

Imports go one way: ``common`` <- ``data`` <- ``post``, and ``common`` <- ``metric``; ``metric`` and
``post`` never import each other (tests/test_architecture.py holds this).
"""
