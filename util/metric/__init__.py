"""The challenge metric (OpenImagesInstanceSegmentationChallenge mAP@0.5IOU), exact and fast.

    rules        the official scorer's rules without I/O: expansion, matching, AP, tie order
    matching     the rules' four greedy stages for all classes of an image in one compiled call
    classes      load_classes: the evaluated class list with its hierarchy expansions
    groundtruth  Google's raw GT files -> per-image ground truth (masks resized to the image)
    detections   one image's predictions -> the rules' Detections, checked strictly
    evaluator    many images through a worker pool with bounded memory -> EvalResult
    session      the ground truth read once, for many evaluations of the same images (a search)
    evaluate     the command line                                              (python -m util.metric.evaluate)
    report       per-class CSV and precision-recall plots
"""
