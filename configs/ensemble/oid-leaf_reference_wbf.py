# The same members and views, fused late: every member x view predicts on its own, boxes and scores are
# fused per class with weighted boxes fusion (ensemble-boxes), masks re-segmented in every view.
_base_ = ['./oid-leaf_reference.py']
fusion = dict(_delete_=True, type='WBF', fusion_iou=0.55, skip_box_thr=0.0, conf_type='avg')
