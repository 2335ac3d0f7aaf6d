"""The data benchmark runs end to end at a tiny scale and ends with its one-line summary."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_smoke(tmp_path):
    r = subprocess.run([sys.executable, 'tools/analysis_tools/benchmark_data.py', '--scale', '0.0002',
                        '--conversion-images', '3', '--work-dir', str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r'conversion_masks_per_s=\d+ load_s=[\d.]+ load_peak_rss_mb=\d+ rebalance_s=[\d.]+',
                        last), last
    assert os.listdir(tmp_path) == []          # scratch files removed
