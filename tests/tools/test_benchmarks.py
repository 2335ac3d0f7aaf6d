"""Every benchmark runs at a tiny size and ends with the machine-readable line the README documents.

Speeds are not checked here (that is the benchmarks' job at full size); this keeps them from rotting."""
import math
import re

import pytest
from conftest import run_cli

BENCH = 'tools/analysis_tools/'


def last_line_values(proc, keys):
    line = proc.stdout.strip().splitlines()[-1]
    values = dict(re.findall(r'(\w+)=(\S+)', line))
    assert list(values) == keys, line
    return {k: float(v) for k, v in values.items()}


def test_postprocess_benchmark(tmp_path):
    proc = run_cli([BENCH + 'benchmark_postprocess.py', '--images', '24', '--shards', '3', '--dets', '20',
                    '--jobs', '2', '--width', '320', '--height', '240', '--objects', '40', '--dense-images', '2',
                    '--workdir', str(tmp_path)])
    values = last_line_values(proc, ['chain_images_per_s', 'peak_rss_mb', 'speedup_vs_per_process'])
    assert values['chain_images_per_s'] > 0 and values['peak_rss_mb'] > 0 and values['speedup_vs_per_process'] > 0
    # The pipeline (in process and with 2 workers) and the per-process chain wrote the same submission,
    # with a line per step.
    assert 'are byte-identical' in proc.stdout
    for step in ('results->csv', 'expand', 'mask nms', 'combine', 'validate', 'merge', 'chain'):
        assert re.search(rf'^ *{re.escape(step)}: pipeline .* img/s \| per process .* img/s \| .*x$', proc.stdout,
                         re.M), step
    rows = (tmp_path / 'parallel.csv').read_text().splitlines()
    assert len(rows) == 25 and (tmp_path / 'parallel' / 'valid' / 'shard02.txt').is_file()


def test_eval_benchmark(tmp_path):
    proc = run_cli([BENCH + 'benchmark_eval.py', '--images', '12', '--workers', '2',
                    '--data-dir', str(tmp_path)])
    values = last_line_values(proc, ['eval_images_per_s', 'peak_rss_mb'])
    assert values['eval_images_per_s'] > 0
    mean_ap = float(re.search(r'mAP@0\.5IOU=([0-9.]+)', proc.stdout).group(1))
    assert 0 < mean_ap <= 1


def test_data_benchmark(tmp_path):
    proc = run_cli([BENCH + 'benchmark_data.py', '--scale', '0.0005', '--conversion-images', '4',
                    '--work-dir', str(tmp_path)])
    values = last_line_values(proc, ['conversion_masks_per_s', 'load_s', 'load_peak_rss_mb', 'rebalance_s'])
    assert values['conversion_masks_per_s'] > 0 and values['load_peak_rss_mb'] > 0
    assert list(tmp_path.iterdir()) == []           # its scratch folder is removed


@pytest.mark.slow
def test_ensemble_benchmark():
    proc = run_cli([BENCH + 'benchmark_ensemble.py', '--num-images', '2', '--warmup', '1',
                    '--scales', '160,160', '192,192'])
    values = last_line_values(proc, ['ensemble_overhead_pct', 'images_per_s', 'peak_rss_mb'])
    assert math.isfinite(values['ensemble_overhead_pct']) and values['images_per_s'] > 0


def test_resume_benchmark(tmp_path):
    # It asserts itself that both ways deliver the same batch after the skipped ones.
    proc = run_cli([BENCH + 'benchmark_resume.py', '--iters', '4', '--images', '8', '--workers', '0',
                    '--late-iters', '1000', '--work-dir', str(tmp_path)])
    values = last_line_values(proc, ['fetch_s_per_1k_iters', 'skip_s_at_late_iter', 'resume_speedup_at_late_iter'])
    assert values['fetch_s_per_1k_iters'] > 0 and values['resume_speedup_at_late_iter'] > 0


def test_fusion_benchmark(tmp_path):
    proc = run_cli([BENCH + 'benchmark_fusion.py', '--what', 'submission', '--images', '6', '--inputs', '2',
                    '--dets', '20', '--width', '320', '--height', '240', '--objects', '40', '--jobs', '2',
                    '--workdir', str(tmp_path)])
    values = last_line_values(proc, ['submission_fusion_images_per_s', 'peak_rss_mb'])
    assert values['submission_fusion_images_per_s'] > 0 and values['peak_rss_mb'] > 0
    for method in ('wbf', 'vote', 'nms'):
        for jobs in (1, 2):
            assert re.search(rf'^submission_fusion_images_per_s=\S+ method={method} jobs={jobs} ', proc.stdout,
                             re.M)
    assert 'every method wrote the same bytes whatever --jobs' in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ['input0.csv', 'input1.csv']


@pytest.mark.slow
def test_federated_benchmark(tmp_path):
    proc = run_cli([BENCH + 'benchmark_federated.py', '--train', '8', '--val', '3', '--iters', '4',
                    '--workdir', str(tmp_path)])
    values = last_line_values(proc, ['plain_map', 'federated_map'])
    assert all(0 <= v <= 1 for v in values.values())


def test_inference_benchmark():
    proc = run_cli([BENCH + 'benchmark_inference.py', '--images', '3', '--width', '320', '--height', '240',
                    '--dets', '20', '--workers', '1', '--warmup', '0'])
    line = proc.stdout.strip().splitlines()[-1]
    values = dict(re.findall(r'(\w+)=(\S+)', line))
    assert list(values) == ['model_s_per_img', 'cpu_side_s_per_img', 'serial_images_per_s',
                            'pipelined_images_per_s', 'pipelined_vs_serial', 'overlap_efficiency',
                            'slowest_cpu_stage'], line
    assert all(float(values[k]) > 0 for k in list(values)[:-1])
    assert values['slowest_cpu_stage'] in ('load', 'views', 'paste', 'encode', 'write')
    assert 'results byte-identical: True' in proc.stdout
    for stage in ('load', 'views', 'model', 'paste', 'encode', 'write'):
        assert re.search(rf'^  {stage} +[0-9.]+ s/img$', proc.stdout, re.M), stage


def test_late_fusion_benchmark():
    proc = run_cli([BENCH + 'benchmark_late_fusion.py', '--images', '1', '--lists', '3', '--dets', '10',
                    '--width', '320', '--height', '240', '--classes', '12'])
    line = proc.stdout.strip().splitlines()[-1]
    values = dict(re.findall(r'(\w+)=(\S+)', line))
    assert ['late_fusion_s_per_img', 'wbf_s', 'masks_s'] == list(values)[:3], line
    assert float(values['late_fusion_s_per_img']) > 0


def test_search_benchmark(tmp_path):
    proc = run_cli([BENCH + 'benchmark_search.py', '--images', '12', '--workers', '2', '--trials', '3',
                    '--baseline-images', '6', '--data-dir', str(tmp_path)])
    values = last_line_values(proc, ['trial_s', 'trial_metric_s', 'metric_cold_s', 'metric_warm_s',
                                     'session_setup_s', 'evaluate_files_s', 'images', 'views', 'workers'])
    assert values['images'] == 12 and values['views'] == 3 and values['trial_s'] > 0
    assert 0 <= values['trial_metric_s'] <= values['trial_s']
    assert 'from the files and the session' in proc.stdout and 'same mAPs' in proc.stdout
    assert (tmp_path / 'sub-view2.csv').exists()
