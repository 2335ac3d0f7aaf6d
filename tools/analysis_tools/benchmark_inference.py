"""Where an ensemble test run's time goes, and what pipelining the CPU work gains, at real image size.

Images of ``--width`` x ``--height`` go through an ensemble (``--configs``, random weights: timing does not
need trained ones; the heads' last layers re-drawn with a larger spread so that every image keeps
``--dets`` detections) in three ways, in the same run:

1. stage by stage, timed per image: load (decode), views (resize, pack), model (the device work:
   ``predict_views``), paste (masks at full size), encode (RLE), write (JSON line, gzip);
2. the serial tester (``run_shard(workers=0)``): every stage one after the other in one process;
3. the pipelined tester (``run_shard(workers=N)``): views made in DataLoader workers, paste + encode in a
   pool, the model in the main process; its results file must be byte-identical to the serial one.

Last line:

    model_s_per_img=... cpu_side_s_per_img=... serial_images_per_s=... pipelined_images_per_s=...
        pipelined_vs_serial=... overlap_efficiency=... slowest_cpu_stage=...   (one line)

``overlap_efficiency`` = pipelined throughput / model-only throughput (1.0: the CPU work is completely
hidden). On a CPU-only machine the model and the CPU side share the same cores, so expect a modest gain;
``cpu_side_s_per_img`` is the CPU work per image on one core: a GPU box with K spare cores can feed at most
K / cpu_side_s_per_img images per second.

    python tools/analysis_tools/benchmark_inference.py [--configs C ...] [--device cuda:0] [--images 8] \
        [--width 1024] [--height 768] [--dets 120] [--scales 256,256] [--flip] [--workers 2]
    # on a GPU, the real L1/L2/L3 configs at the reference's views:
    python tools/analysis_tools/benchmark_inference.py --device cuda:0 --configs configs/oid/cascade-mask-rcnn_x101-64x4d_fpn_oid-leaf.py \
        configs/oid/cascade-mask-rcnn_r101-dconv-c3-c5_fpn_oid-leaf.py \
        configs/oid/cascade-mask-rcnn_x101-64x4d-dconv-c5_fpn_amp_oid-leaf.py --scales 1333,800 1600,960 --flip
"""
from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore', category=UserWarning)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import mmdet_ext  # noqa: E402,F401
from mmdet_ext.ensemble import FUSIONS, Member, view_specs  # noqa: E402
from mmdet_ext.ensemble.runner import run_shard  # noqa: E402
from mmdet_ext.launch import load_config  # noqa: E402
from util.post.results_io import ResultsWriter  # noqa: E402

TINY = 'configs/tiny/cascade-mask-rcnn_r18-tiny_fpn_oid-leaf.py'
SPREAD = {'fc_cls': 0.5, 'rpn_cls': 0.5, 'conv_logits': 0.5, 'fc_reg': 0.05, 'rpn_reg': 0.05}
CPU_STAGES = ('load', 'views', 'paste', 'encode', 'write')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--configs', nargs='+', default=[TINY])
    p.add_argument('--device', default='cpu')
    p.add_argument('--images', type=int, default=8)
    p.add_argument('--width', type=int, default=1024)
    p.add_argument('--height', type=int, default=768)
    p.add_argument('--dets', type=int, default=120, help='detections per image')
    p.add_argument('--scales', nargs='+', default=['256,256'])
    p.add_argument('--flip', action='store_true')
    p.add_argument('--workers', type=int, default=2, help='worker processes of the pipelined run')
    p.add_argument('--fusion', default='SharedProposals')
    p.add_argument('--warmup', type=int, default=1)
    return p.parse_args(argv)


def build_models(configs, device, dets):
    from mmdet.apis import init_detector
    models = []
    for i, path in enumerate(configs):
        torch.manual_seed(i)
        model = init_detector(load_config(path), None, device=device, palette='random')
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                std = next((s for key, s in SPREAD.items() if key in name), None)
                if std is not None:
                    p.copy_((torch.randn(p.shape, generator=g) * std).to(p.device))
        cfg = model.test_cfg.get('rcnn', model.test_cfg)
        cfg.score_thr, cfg.max_per_img = 0.0, dets
        models.append(model)
    return models


def write_images(folder, n, width, height):
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        for _ in range(12):
            x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
            size = int(rng.integers(30, min(width, height) // 3))
            cv2.ellipse(img, (x + size // 2, y + size // 2), (size // 2, size // 3), float(rng.integers(0, 180)),
                        0, 360, tuple(int(c) for c in rng.integers(80, 256, 3)), -1)
        image_id = f'{i:016x}'
        cv2.imwrite(os.path.join(folder, image_id + '.jpg'), img)
        items.append(dict(img_id=image_id, img_path=image_id + '.jpg', width=width, height=height, instances=[]))
    return items


def timed_stages(ensemble, items, folder, classes, out) -> dict:
    """Seconds per stage, summed over the images (each stage synchronised on CUDA)."""
    def sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    total = dict.fromkeys(('load', 'views', 'model', 'paste', 'encode', 'write'), 0.0)
    dets = 0
    maker = ensemble.view_maker
    with ResultsWriter(out, classes) as writer:
        for item in items:
            path = os.path.join(folder, item['img_path'])
            t0 = time.perf_counter()
            loaded = maker.load(path, item['img_id'])
            t1 = time.perf_counter()
            views = maker.views_of(loaded)
            t2 = time.perf_counter()
            with torch.no_grad():
                work = ensemble.predict_views(views)
            sync()
            t3 = time.perf_counter()
            from mmdet_ext.ensemble.masks import paste_crops
            from util.common.mask_codec import encode_region
            h, w = work.height, work.width
            crops = None if work.masks is not None else paste_crops(work.probs, work.bboxes, h, w, work.mask_thr)
            t4 = time.perf_counter()
            if crops is None:
                from mmdet_ext.ensemble.runner import _rles
                rles = _rles(work.masks.cpu())
            else:
                rles = [encode_region(crop, y0, x0, h, w) for crop, y0, x0 in crops]
            t5 = time.perf_counter()
            writer.write(item['img_id'], work.width, work.height, work.labels.tolist(), work.scores.tolist(), rles)
            t6 = time.perf_counter()
            for k, (a, b) in zip(total, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6))):
                total[k] += b - a
            dets += len(rles)
    total['dets'] = dets
    return total


def main(argv=None):
    args = parse_args(argv)
    torch.backends.cudnn.benchmark = False
    models = build_models(args.configs, args.device, args.dets)
    scales = [tuple(int(v) for v in s.split(',')) for s in args.scales]
    ensemble = FUSIONS.build(dict(type=args.fusion), default_args=dict(
        members=[Member(m) for m in models], views=view_specs(scales, args.flip), num_classes=None,
        score_thr=0.0, max_per_img=args.dets))
    classes = [f'/m/{k:05d}' for k in range(ensemble.num_classes)]
    with tempfile.TemporaryDirectory() as d:
        items = write_images(d, args.images + args.warmup, args.width, args.height)
        warm, items = items[:args.warmup], items[args.warmup:]
        if warm:
            timed_stages(ensemble, warm, d, classes, os.path.join(d, 'warm.jsonl'))
        stages = timed_stages(ensemble, items, d, classes, os.path.join(d, 'stages.jsonl'))
        n = len(items)
        t0 = time.perf_counter()
        run_shard(ensemble, items, d, os.path.join(d, 'serial.jsonl.gz'), classes, progress=False, workers=0)
        serial_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_shard(ensemble, items, d, os.path.join(d, 'piped.jsonl.gz'), classes, progress=False,
                  workers=args.workers)
        piped_s = time.perf_counter() - t0
        same = filecmp.cmp(os.path.join(d, 'serial.jsonl.gz'), os.path.join(d, 'piped.jsonl.gz'), shallow=False)
    per = {k: v / n for k, v in stages.items() if k != 'dets'}
    cpu_side = sum(per[k] for k in CPU_STAGES)
    slowest = max(CPU_STAGES, key=per.get)
    print(f'{len(models)} models x {len(ensemble.specs) if hasattr(ensemble, "specs") else len(scales)} views, '
          f'{n} images of {args.width}x{args.height}, {stages["dets"] / n:.0f} detections/img, device '
          f'{args.device}, {torch.get_num_threads()} torch threads, {args.workers} workers')
    for k, v in per.items():
        print(f'  {k:<7} {v:8.4f} s/img')
    print(f'serial {serial_s / n:.3f} s/img, pipelined {piped_s / n:.3f} s/img; results byte-identical: {same}')
    if not same:
        sys.exit('error: the pipelined results differ from the serial ones')
    print(f'model_s_per_img={per["model"]:.4f} cpu_side_s_per_img={cpu_side:.4f} '
          f'serial_images_per_s={n / serial_s:.3f} pipelined_images_per_s={n / piped_s:.3f} '
          f'pipelined_vs_serial={serial_s / piped_s:.3f} overlap_efficiency={(n / piped_s) * per["model"]:.3f} '
          f'slowest_cpu_stage={slowest}')


if __name__ == '__main__':
    main()
