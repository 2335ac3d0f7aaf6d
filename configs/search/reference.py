# The knobs the public solutions reported moving their scores, for the real leaf ensemble.
space = dict(
    method=['wbf', 'vote', 'nms'],
    iou_thr=(0.45, 0.7),
    conf_type=['box_and_model_avg', 'max', 'absent_model_aware_avg'],
    weights=(0.5, 2.0),
    calibrate=[False, True],
    score_thr=[0.0, 0.05, 0.2, 0.3],
    max_per_img=[7, 50, 100, 120, 200],
    nms_iou=[None, 0.5, 0.7],
    vote=[False, True],
    expand=True,
    # The leaf + parent combine (with --parent-config configs/ensemble/oid-parent_reference.py): the
    # reference's chain at mask NMS 0.5 without voting is the default; voting was its option.
    combine=[True, False],
    combine_iou=(0.4, 0.7),
    combine_vote=[False, True],
)
