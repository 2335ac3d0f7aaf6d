# The demo's views and test settings (slim 256 px models on the synthetic dataset, scripts/demo.sh).
views = dict(scales=[(256, 256), (320, 320)], flip=True)
fusion = dict(type='SharedProposals', max_proposals=1000, proposal_iou=0.7, proposal_nms='across-views')
test_cfg = dict(score_thr=0.0, iou_thr=None, max_per_img=30, mask_thr=None)
