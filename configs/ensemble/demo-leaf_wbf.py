# The demo's leaf members fused late with weighted boxes fusion.
_base_ = ['./demo-leaf.py']
fusion = dict(_delete_=True, type='WBF', fusion_iou=0.55, skip_box_thr=0.0, conf_type='avg')
