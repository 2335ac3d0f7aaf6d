# The demo's leaf members fused late with per-class NMS over all member x view detections (a baseline).
_base_ = ['./demo-leaf.py']
fusion = dict(_delete_=True, type='NMS', fusion_iou=0.5)
