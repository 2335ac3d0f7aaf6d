"""Post-processing: the tester's results files -> one validated submission CSV.

    results_io     the results format (JSON lines, gzip), resumable writer, streaming reader
    to_submission  results -> submission CSV: EncodedMask, score threshold, top-k  (python -m util.post.to_submission)
    expand         detections copied up the hierarchy                             (python -m util.post.expand)
    mask_nms       mask NMS (and voting) per image and label over submissions     (python -m util.post.mask_nms)
    combine        submissions with disjoint classes side by side, a per-image cap (python -m util.post.combine)
    merge          shard submissions -> one, in test-id order                     (python -m util.post.merge)
    fuse           submissions of any codebase fused: wbf, vote or nms            (python -m util.post.fuse)
    validate       a submission checked as the competition would                  (python -m util.post.validate)
    pipeline       the whole chain over every shard, resumable, in a worker pool  (python -m util.post.pipeline)
    draw           predictions next to ground truth, by eye                       (python -m util.post.draw)
"""
