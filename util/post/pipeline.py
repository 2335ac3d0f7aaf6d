"""The post-processing chain over every test shard: leaf and parent results -> one validated submission.

Per shard NAME (a results file NAME.jsonl or NAME.jsonl.gz in each results folder), under ``work``:

    leaf_csv/NAME.csv         leaf results -> CSV (score threshold, top-k)     to_submission
    parent_csv/NAME.csv       parent results -> CSV                            to_submission
    leaf_parents/NAME.csv     leaf detections copied to their ancestors        expand (parents only)
    parent_expanded/NAME.csv  parent detections copied up (Bear -> Carnivore)  expand
    parent_nms/NAME.csv       mask NMS of the two (optional voting)            mask_nms
    combined/NAME.csv         leaf + surviving parents (optional cap)          combine
    valid/NAME.txt            the shard checked as the competition would       validate (its summary)

then the shards are merged in test-id order into ``out`` (every listed id exactly once, in order; the
merge refuses anything else), so ``out`` appears only complete and valid. One model's results
(``results_dir_to_submission``, ``--results``) take the first and last steps only.

A plan is data: a list of ``Step`` (name, shard, output, inputs, function, arguments). ``run_steps`` runs
each step once the steps writing its inputs are done, in a pool of ``jobs`` processes (numpy and
pycocotools are imported once per worker, not once per step), with one progress bar per step name.
Resumable: every output is written under a temporary name and renamed when complete, and a step whose
output exists is skipped (a leftover ``*.tmp`` of a killed run is not an output). Delete an output, or
``work``, to redo it. A failing step stops the run (the running ones finish) with its one-line error,
prefixed by its shard and step.

    discover_shards(leaf_dir, parent_dir, shard_ids)      -> [Shard]
    chain_plan(shard, work, ids, options)                 -> [Step]   the leaf + parent chain
    single_plan(shard, work, ids, options)                -> [Step]   one model: results -> CSV, validation
    run_steps(steps, jobs, progress)                      -> [bool]   per step: ran (True) or skipped
    postprocess(leaf_dir, parent_dir, ids, work, out, options, shard_ids, jobs, progress)
    results_dir_to_submission(results_dir, ids, out, work, options, shard_ids, jobs, progress)

    python -m util.post.pipeline --leaf-results DIR --parent-results DIR --ids SAMPLE_CSV --work DIR
        --out CSV [--shard-ids DIR] [--score-thr T] [--top-k K] [--iou-thr T] [--vote] [--max-dets N]
        [--jobs N] [--hierarchy JSON] [--no-progress]
    python -m util.post.pipeline --results DIR --ids SAMPLE_CSV --work DIR --out CSV [...]
"""
from __future__ import annotations

import argparse
import functools
import glob
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable

from ..common.atomic import AtomicWriter
from ..common.cli import add_progress_flag, run
from ..common.cli import progress as progress_bar
from ..common.errors import DataError
from ..common.hierarchy import DEFAULT_CLASSES, DEFAULT_HIERARCHY, Hierarchy, class_list
from ..common.workers import start_worker
from .combine import combine_leaf_and_parent
from .expand import Expander, expand_submission
from .mask_nms import mask_nms_submissions
from .merge import merge_submissions
from .to_submission import results_to_submission
from .validate import validate_submission

RESULTS_SUFFIXES = ('.jsonl', '.jsonl.gz')


@dataclass(frozen=True)
class Options:
    """The chain's settings (the CLI's flags of the same names)."""
    score_thr: float = 0.0               # results -> CSV: keep scores >= this
    top_k: int | None = None             # results -> CSV: detections per image per model
    iou_thr: float = 0.5                 # mask NMS
    vote: bool = False                   # mask voting in the NMS
    max_dets: int | None = None          # per-image cap of the final submission
    hierarchy: str = DEFAULT_HIERARCHY


@dataclass(frozen=True)
class Shard:
    name: str
    leaf: str                            # results file (the only one for a single model)
    parent: str | None = None
    ids: str | None = None               # the shard's id list (missing images -> empty rows)


@dataclass(frozen=True)
class Step:
    """One step of one shard: ``func(output, **kwargs)`` writes ``output`` (atomically) from ``inputs``."""
    name: str
    shard: str
    output: str
    inputs: tuple[str, ...]
    func: Callable
    kwargs: dict = field(default_factory=dict)


# ---- shards ------------------------------------------------------------------------------------------
def _results_files(folder: str) -> dict[str, str]:
    """Shard name -> results file in ``folder``; a shard with both suffixes is ambiguous."""
    if not os.path.isdir(folder):
        raise DataError(f'{folder}: no such results folder')
    found: dict[str, str] = {}
    for suffix in RESULTS_SUFFIXES:
        for path in glob.glob(os.path.join(glob.escape(folder), '*' + suffix)):
            name = os.path.basename(path)[:-len(suffix)]
            if name in found:
                raise DataError(f'{folder}: both {name}.jsonl and {name}.jsonl.gz: keep one')
            found[name] = path
    return found


def discover_shards(leaf_dir: str, parent_dir: str | None = None, shard_ids: str | None = None) -> list[Shard]:
    """Every NAME.jsonl / NAME.jsonl.gz of ``leaf_dir``, sorted by name; ``parent_dir`` must hold the
    same names, no more, no fewer. ``shard_ids`` may hold NAME.csv (or NAME.txt) id lists."""
    leaf = _results_files(leaf_dir)
    if not leaf:
        raise DataError(f'{leaf_dir}: no results files (*.jsonl, *.jsonl.gz)')
    parent = _results_files(parent_dir) if parent_dir is not None else {}
    if parent_dir is not None:
        for name in sorted(leaf):
            if name not in parent:
                raise DataError(f'{parent_dir}: no results for shard {name} ({name}.jsonl or {name}.jsonl.gz)')
        for name in sorted(set(parent) - set(leaf)):
            raise DataError(f'{parent[name]}: no leaf results for shard {name} in {leaf_dir}')
    shards = []
    for name in sorted(leaf):
        ids = None
        if shard_ids is not None:
            ids = next((p for p in (os.path.join(shard_ids, name + e) for e in ('.csv', '.txt'))
                        if os.path.exists(p)), None)
        shards.append(Shard(name, leaf[name], parent.get(name), ids))
    return shards


# ---- the steps (module-level functions, so that a worker process can run them) -------------------------
@functools.lru_cache(maxsize=None)
def _hierarchy(path: str) -> Hierarchy:
    return Hierarchy.from_json(path, DEFAULT_CLASSES)


@functools.lru_cache(maxsize=None)
def _all_classes() -> tuple[str, ...]:
    return tuple(class_list('all'))


def _to_csv(out, results, ids, score_thr, top_k):
    results_to_submission(results, out, score_thr, top_k, ids)


def _expand(out, inp, hierarchy, parents_only):
    expand_submission(inp, out, Expander(_hierarchy(hierarchy), parents_only))


def _nms(out, inputs, iou_thr, vote):
    mask_nms_submissions(list(inputs), out, iou_thr, vote)


def _combine(out, leaf, parent, max_dets):
    combine_leaf_and_parent(leaf, [parent], out, max_dets=max_dets)


def _validate(out, inp, sizes):
    """The shard's submission checked (sizes from the test id list); the report is the step's output."""
    rep = validate_submission(inp, classes=list(_all_classes()), sizes=sizes)
    if not rep.ok:
        raise DataError(f'{rep.problems[0]} (INVALID: {rep.n_problems} problems; '
                        f'python -m util.post.validate {inp} lists them)')
    with AtomicWriter(out) as f:
        f.write(rep.summary() + '\n')


def chain_plan(shard: Shard, work: str, ids: str | None, options: Options = Options()) -> list[Step]:
    """The leaf + parent chain of one shard, in an order that runs (a step after those it reads)."""
    p = lambda step: os.path.join(work, step, shard.name + ('.txt' if step == 'valid' else '.csv'))
    convert = dict(ids=shard.ids, score_thr=options.score_thr, top_k=options.top_k)
    h = options.hierarchy
    return [
        Step('leaf_csv', shard.name, p('leaf_csv'), (shard.leaf,), _to_csv, dict(results=shard.leaf, **convert)),
        Step('parent_csv', shard.name, p('parent_csv'), (shard.parent,), _to_csv,
             dict(results=shard.parent, **convert)),
        Step('leaf_parents', shard.name, p('leaf_parents'), (p('leaf_csv'),), _expand,
             dict(inp=p('leaf_csv'), hierarchy=h, parents_only=True)),
        Step('parent_expanded', shard.name, p('parent_expanded'), (p('parent_csv'),), _expand,
             dict(inp=p('parent_csv'), hierarchy=h, parents_only=False)),
        Step('parent_nms', shard.name, p('parent_nms'), (p('leaf_parents'), p('parent_expanded')), _nms,
             dict(inputs=(p('leaf_parents'), p('parent_expanded')), iou_thr=options.iou_thr, vote=options.vote)),
        Step('combined', shard.name, p('combined'), (p('leaf_csv'), p('parent_nms')), _combine,
             dict(leaf=p('leaf_csv'), parent=p('parent_nms'), max_dets=options.max_dets)),
        Step('valid', shard.name, p('valid'), (p('combined'),), _validate, dict(inp=p('combined'), sizes=ids)),
    ]


def single_plan(shard: Shard, work: str, ids: str | None, options: Options = Options()) -> list[Step]:
    """One model's shard: results -> CSV, then validation."""
    csv_path = os.path.join(work, 'csv', shard.name + '.csv')
    return [
        Step('csv', shard.name, csv_path, (shard.leaf,), _to_csv,
             dict(results=shard.leaf, ids=shard.ids, score_thr=options.score_thr, top_k=options.top_k)),
        Step('valid', shard.name, os.path.join(work, 'valid', shard.name + '.txt'), (csv_path,), _validate,
             dict(inp=csv_path, sizes=ids)),
    ]


# ---- running a plan ----------------------------------------------------------------------------------
def is_done(step: Step) -> bool:
    """Outputs are renamed into place only when complete, so existing means finished."""
    return os.path.exists(step.output)


def run_step(step: Step) -> bool:
    """Run ``step`` unless its output exists; True if it ran."""
    if is_done(step):
        return False
    step.func(step.output, **step.kwargs)
    return True


def _failure(step: Step, e: BaseException) -> DataError:
    if isinstance(e, OSError) and not isinstance(e, DataError):
        e = f'{e.filename}: {e.strerror}' if getattr(e, 'filename', None) else (e.strerror or str(e))
    return DataError(f'shard {step.shard}: {step.name}: {e}')


def _dependencies(steps: list[Step]) -> list[set[int]]:
    """For each step, the steps writing its inputs; they must come earlier in the list."""
    producer = {}
    for k, s in enumerate(steps):
        if s.output in producer:
            raise ValueError(f'two steps write {s.output}')
        producer[s.output] = k
    deps = [{producer[i] for i in s.inputs if i in producer} for s in steps]
    for k, d in enumerate(deps):
        if any(j >= k for j in d):
            raise ValueError(f'step {k} ({steps[k].name}) reads the output of a later step')
    return deps


def run_steps(steps: list[Step], jobs: int = 1, progress: bool = False) -> list[bool]:
    """Run a plan: each step after the steps writing its inputs, up to ``jobs`` at a time in worker
    processes (``jobs`` 1: in this process, in list order). Returns, per step, whether it ran (False:
    its output existed). The first failure stops the run with a DataError naming its shard and step."""
    deps = _dependencies(steps)
    names = list(dict.fromkeys(s.name for s in steps))
    ran: list[bool | None] = [None] * len(steps)
    pool = ProcessPoolExecutor(jobs, initializer=start_worker, initargs=(os.getpid(),)) if jobs > 1 else None       # before the bars' monitor thread
    bars = {n: progress_bar(None, progress, desc=n, unit='shard', position=i, leave=True,
                            total=sum(s.name == n for s in steps)) for i, n in enumerate(names)}

    def finish(k, did):
        ran[k] = did
        bars[steps[k].name].update(1)

    try:
        if pool is None:
            for k, step in enumerate(steps):
                try:
                    finish(k, run_step(step))
                except (DataError, OSError) as e:
                    raise _failure(step, e) from None
            return ran
        pending, running = list(range(len(steps))), {}
        while pending or running:
            for k in [k for k in pending if all(ran[d] is not None for d in deps[k])]:
                pending.remove(k)
                if is_done(steps[k]):
                    finish(k, False)
                else:
                    running[pool.submit(run_step, steps[k])] = k
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                k = running.pop(future)
                try:
                    finish(k, future.result())
                except (DataError, OSError) as e:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise _failure(steps[k], e) from None
                except BrokenProcessPool:
                    raise _failure(steps[k], 'a worker process died (out of memory? killed?)') from None
        return ran
    finally:
        for bar in bars.values():
            bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _report(steps: list[Step], ran: list[bool]) -> None:
    for name in dict.fromkeys(s.name for s in steps):
        did = [r for s, r in zip(steps, ran) if s.name == name]
        print(f'{name}: {sum(did)} run, {len(did) - sum(did)} done before', file=sys.stderr)


def _plan_and_merge(shards, plan, ids, work, out, options, jobs, progress) -> None:
    steps = [s for shard in shards for s in plan(shard, work, ids, options)]
    ran = run_steps(steps, jobs, progress)
    _report(steps, ran)
    merged = [s.inputs[0] for s in steps if s.name == 'valid']      # each shard's validated CSV
    merge_submissions(merged, ids, out, progress=progress)
    print(f'done: {out}', file=sys.stderr)


def postprocess(leaf_dir: str, parent_dir: str, ids: str, work: str, out: str, options: Options = Options(),
                shard_ids: str | None = None, jobs: int = 1, progress: bool = False) -> bool:
    """The whole chain into ``out``; False (nothing done) if ``out`` exists already."""
    if os.path.exists(out):
        print(f'skip (done): {out}', file=sys.stderr)
        return False
    _hierarchy(options.hierarchy)                    # a bad hierarchy fails here, before any work
    shards = discover_shards(leaf_dir, parent_dir, shard_ids)
    _plan_and_merge(shards, chain_plan, ids, work, out, options, jobs, progress)
    return True


def results_dir_to_submission(results_dir: str, ids: str, out: str, work: str, options: Options = Options(),
                              shard_ids: str | None = None, jobs: int = 1, progress: bool = False) -> bool:
    """One model's results (every shard of ``results_dir``) -> one validated submission ``out``;
    False if ``out`` exists already."""
    if os.path.exists(out):
        print(f'skip (done): {out}', file=sys.stderr)
        return False
    shards = discover_shards(results_dir, None, shard_ids)
    _plan_and_merge(shards, single_plan, ids, work, out, options, jobs, progress)
    return True


# ---- command line ------------------------------------------------------------------------------------
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util.post.pipeline',
                                     description='Result shards -> one validated submission (resumable).')
    parser.add_argument('--leaf-results', help='leaf-model results, one file per shard (NAME.jsonl[.gz])')
    parser.add_argument('--parent-results', help='parent-model results with the same shard names')
    parser.add_argument('--results', help='one model\'s results instead (results -> CSV, validation, merge)')
    parser.add_argument('--ids', required=True,
                        help='test id list in submission order (sample_empty_submission.csv, with sizes)')
    parser.add_argument('--work', required=True, help='intermediate files (per step, per shard)')
    parser.add_argument('--out', required=True, help='the validated submission')
    parser.add_argument('--shard-ids', help='NAME.csv / NAME.txt id list per shard (missing images -> empty rows)')
    parser.add_argument('--score-thr', type=float, default=0.0, help='results -> CSV score threshold (0)')
    parser.add_argument('--top-k', type=int, default=None, help='results -> CSV detections per image per model')
    parser.add_argument('--iou-thr', type=float, default=0.5, help='mask NMS IoU threshold (0.5)')
    parser.add_argument('--vote', action='store_true', help='mask voting in the NMS')
    parser.add_argument('--max-dets', type=int, default=None, help='per-image cap of the final submission')
    parser.add_argument('--jobs', type=int, default=1, help='steps run in parallel, in worker processes (1)')
    parser.add_argument('--hierarchy', default=DEFAULT_HIERARCHY, help='class hierarchy JSON')
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    if args.results is None and (args.leaf_results is None or args.parent_results is None):
        parser.error('give --leaf-results and --parent-results, or --results')
    if args.results is not None:
        chain_only = [f for f, given in (('--leaf-results', args.leaf_results),
                                         ('--parent-results', args.parent_results),
                                         ('--iou-thr', args.iou_thr != 0.5), ('--vote', args.vote),
                                         ('--max-dets', args.max_dets is not None),
                                         ('--hierarchy', args.hierarchy != DEFAULT_HIERARCHY)) if given]
        if chain_only:
            parser.error(f'--results (one model: results -> CSV, validation, merge) does not take {chain_only[0]}')
    for flag, value in (('--jobs', args.jobs), ('--top-k', args.top_k), ('--max-dets', args.max_dets)):
        if value is not None and value < (1 if flag == '--jobs' else 0):
            parser.error(f'{flag} must be at least {1 if flag == "--jobs" else 0}')
    if not 0.0 <= args.iou_thr <= 1.0:
        parser.error('--iou-thr must be in [0, 1]')
    options = Options(args.score_thr, args.top_k, args.iou_thr, args.vote, args.max_dets, args.hierarchy)
    if args.results is not None:
        results_dir_to_submission(args.results, args.ids, args.out, args.work, options, args.shard_ids,
                                  args.jobs, args.progress)
    else:
        postprocess(args.leaf_results, args.parent_results, args.ids, args.work, args.out, options,
                    args.shard_ids, args.jobs, args.progress)


if __name__ == '__main__':
    sys.exit(run(main))
