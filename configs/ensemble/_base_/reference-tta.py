# The reference solution's test-time augmentation: two scales, each also mirrored; its test settings
# (score threshold 0, 120 detections per image); fusion through shared proposals (mmdet_ext.ensemble.tta).
views = dict(scales=[(1333, 800), (1600, 960)], flip=True)
fusion = dict(type='SharedProposals', max_proposals=1000, proposal_iou=0.7, proposal_nms='across-views')
test_cfg = dict(score_thr=0.0, iou_thr=None, max_per_img=120, mask_thr=None)  # None: first member's config
