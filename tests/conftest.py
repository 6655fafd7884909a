import os
from pathlib import Path

import pytest

os.environ.setdefault('OMP_NUM_THREADS', '2')
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / 'data'                       # the embedded real data (in every clone; no test skips for it)
NIH_NPZ = DATA / 'nih_cxr14_1000_64px' / 'nih_cxr14_1000_64.npz'
NIH_CSV = DATA / 'nih_cxr14_1000_64px' / 'metadata.csv'
PNEU = DATA / 'pneumoniamnist' / 'pneumoniamnist_28.npz'
ADRENAL = DATA / 'adrenalmnist3d' / 'adrenalmnist3d.npz'
NIH_EXTRA_ROWS = 3                         # rows of images not in the npz, added to the NIH table below

TINY = ['data.n_patients=100', 'data.image_size=32', 'train.epochs=2', 'model.width=0.125', 'eval.n_boot=50',
        'train.batch_size=32', 'train.physical_batch_size=16']


@pytest.fixture
def tiny():
    "Overrides for a run that trains in seconds."
    return list(TINY)


@pytest.fixture
def nih_data_entry(tmp_path):
    "The embedded NIH-1000 table written as NIH's own Data_Entry_2017 CSV (plus 3 rows whose images are absent)."
    import pandas as pd
    t = pd.read_csv(NIH_CSV)
    d = pd.DataFrame({'Image Index': t['filename'], 'Finding Labels': t['finding_labels'], 'Follow-up #': t['follow_up'],
                      'Patient ID': t['patient_id'], 'Patient Age': t['age'], 'Patient Gender': t['sex'],
                      'View Position': t['view']})
    extra = d.iloc[:NIH_EXTRA_ROWS].assign(**{'Image Index': [f'99999999_{i:03d}.png' for i in range(NIH_EXTRA_ROWS)]})
    path = tmp_path / 'Data_Entry_2017_v2020.csv'
    pd.concat([d, extra]).to_csv(path, index=False)
    return path
