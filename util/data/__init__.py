"""Data preparation: Google's download -> what training and the tester read.

    annotations  the annotation file format (mmengine BaseDataset layout, .pkl or .json)
    build        masks CSVs + PNGs + images -> leaf / parent annotation files   (python -m util.data.build)
    federated    bbox + image-level labels CSVs -> verified classes, box-only ignore boxes (build --bbox-csv)
    rebalance    banded class rebalancing -> an epoch index list + report      (python -m util.data.rebalance)
    subsets      class lists for experts: rarest / most frequent / a band of ranks (python -m util.data.subsets)
    shards       test images -> N shard files + manifest.json                   (python -m util.data.shards)
    synthetic    a small synthetic download in the official formats             (python -m util.data.synthetic)
    coco_export  annotation file -> COCO instances JSON                         (python -m util.data.coco_export)
    draw         annotation pictures, to check a conversion by eye              (python -m util.data.draw)
"""
