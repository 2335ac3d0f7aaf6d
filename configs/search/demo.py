# A small search space for the demo's leaf ensemble and its combine with the parent ensemble
# (tools/ensemble_search.py --space configs/search/demo.py).
space = dict(
    method=['wbf', 'vote', 'nms'],
    iou_thr=(0.4, 0.7),
    conf_type=['box_and_model_avg', 'max'],
    weights=(0.5, 2.0),
    calibrate=[False, True],
    score_thr=[0.0, 0.05, 0.2],
    max_per_img=[30, 60, 120],
    nms_iou=[None, 0.5],
    expand=True,
    combine=[True, False],          # with the parent ensemble (scripts/demo.sh passes --parent-config)
)
