# The demo's leaf members fused late with per-class NMS over all member x view detections (a baseline);
# its IoU is the test setting iou_thr (None: the first member's test_cfg.rcnn.nms).
_base_ = ['./demo-leaf.py']
fusion = dict(_delete_=True, type='NMS')
