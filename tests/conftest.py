import os
from pathlib import Path

import pytest

os.environ.setdefault('OMP_NUM_THREADS', '2')
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / 'shared' / 'data'

TINY = ['data.n_patients=100', 'data.image_size=32', 'train.epochs=2', 'model.width=0.125', 'eval.n_boot=50',
        'train.batch_size=32', 'train.physical_batch_size=16']


@pytest.fixture
def tiny():
    "Overrides for a run that trains in seconds."
    return list(TINY)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.exists():
        pytest.skip(f'real data folder {SHARED_DATA} not present')
    return SHARED_DATA
