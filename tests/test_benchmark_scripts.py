"The train_speed benchmark script runs end to end on a tiny case and writes what RESULTS.md is built from."
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / 'benchmarks'))
import train_speed  # noqa: E402


def test_train_speed_writes_ratios_and_cpu_memory(tmp_path):
    out = tmp_path / 'ts.json'
    res = train_speed.main(['--cases', 'resnet9:32', '--width', '0.5', '--batch', '8', '--reps', '2',
                            '--modes', 'hooks,fast_bk', '--threads', '1', '--cpu-memory', '--out', str(out)])
    saved = json.loads(out.read_text())
    assert saved['complete'] and saved['rows'] == json.loads(json.dumps(res['rows']))
    row = saved['rows'][0]
    for mode in ('hooks', 'fast_bk'):
        assert len(row[f'{mode}_all_s']) == 2 and row[f'{mode}_time_ratio'] > 0
        assert row[f'{mode}_mem_ratio'] == row[f'{mode}_mem_mb'] / row['nonprivate_mem_mb']
    # hooks holds B per-sample copies of every parameter gradient; fast_bk never does
    assert row['hooks_mem_mb'] > row['fast_bk_mem_mb']
