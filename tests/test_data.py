"""Data layer beyond the chapter's own checks (bad-input cases and preprocessing formulas live in nbs/04_data.ipynb):
readers, splits, cache, subgroups through a build, the validate CLI, the real embedded sets.

References are independent of dpmed: Pillow and NumPy for pixels, nibabel's canonical reorientation for
MONAI's, naive loops for splits, the embedded NIH arrays (data/) for the real-data manifest."""
import argparse, os, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dpmed.cli import build_parser
from dpmed.core import DpmedError
from dpmed.config import DataConfig, load_config
from dicom_fixture import write_dicom
from dpmed.imageset import patient_split
from dpmed import data as D

from conftest import NIH_NPZ, NIH_CSV, PNEU, ADRENAL


# ---------------------------------------------------------------- fixtures


def png_set(tmp, n=24, size=(40, 32), patients=None, seed=0):
    "n PNGs and a manifest table (not yet written) with two labels and demographics."
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        Image.fromarray((rng.random(size) * 255).astype(np.uint8)).save(tmp / f"im{i}.png")
        rows.append({'id': f"im{i}", 'path': f"im{i}.png", 'patient_id': f"p{i // 2 if patients is None else patients[i]}",
                     'age': float(20 + (3 * i) % 75), 'sex': 'FM'[i % 2], 'a': int(i % 3 == 0), 'b': int(i % 4 == 1),
                     'view': 'PA'})
    return pd.DataFrame(rows)


def cfg_for(tmp, df, name='manifest.csv', **kw):
    p = tmp / name
    if name.endswith('.parquet'): df.to_parquet(p, index=False)
    else: df.to_csv(p, index=False)
    base = dict(dataset='manifest', manifest=str(p), labels=['a', 'b'], image_size=16, cache_dir=str(tmp / 'cache'),
                subgroups=[{'name': 'sex', 'column': 'sex'}], val_fraction=0.2, test_fraction=0.25)
    base.update(kw)
    return DataConfig(**base)


def cache_entries(cfg):
    d = Path(cfg.cache_dir)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def build(cfg):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', D.DataWarning)
        return D.imageset_from_config(cfg, log=None)


# ---------------------------------------------------------------- subgroups through a whole build
# (the bad-input cases, each naming file, row and field, are tested in nbs/04_data.ipynb)
def test_subgroup_without_test_members_warns(tmp_path):
    df = png_set(tmp_path, 12)
    df['split'] = ['train'] * 6 + ['val'] * 2 + ['test'] * 4
    df['site'] = ['A'] * 8 + ['B'] * 4                     # site A has no test member
    cfg = cfg_for(tmp_path, df, subgroups=[{'name': 'site', 'column': 'site'}])
    with pytest.warns(D.DataWarning, match=r'subgroup site=A has no members in test \(8 in the whole'):
        s = D.imageset_from_config(cfg, log=None)
    assert len(s) == 12                                     # a warning, not an error


def test_subgroup_column_missing_is_skipped_and_said(tmp_path):
    "A declared subgroup whose column the data lacks is skipped (the default sex/age work on any data), with a warning."
    from dpmed.datasets import load_dataset
    df = png_set(tmp_path, 8)
    cfg = cfg_for(tmp_path, df, subgroups=[{'name': 'sex', 'column': 'sex'}, {'name': 'eth', 'column': 'ethnicity'}])
    with pytest.warns(D.DataWarning, match=r"subgroup 'eth' skipped \(column 'ethnicity' not in the data\)"):
        s = load_dataset(cfg)
    assert s.skipped_subgroups == [{'name': 'eth', 'column': 'ethnicity', 'reason': "column 'ethnicity' not in the data"}]
    assert 'sex' in s.meta and 'eth' not in s.meta
    assert s.split('test').skipped_subgroups == s.skipped_subgroups          # subsets keep the record


# ---------------------------------------------------------------- manifest formats, labels from the dataset config
def test_parquet_equals_csv(tmp_path):
    pytest.importorskip('pyarrow', reason='pyarrow is not installed (pip install pyarrow)')
    df = png_set(tmp_path, 10)
    a = build(cfg_for(tmp_path, df))
    b = build(cfg_for(tmp_path, df, 'manifest.parquet'))
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images)) and a.meta.split.tolist() == b.meta.split.tolist()


def test_labels_from_sidecar_dataset_yaml(tmp_path):
    df = png_set(tmp_path, 10)
    cfg = cfg_for(tmp_path, df, labels=None)
    with pytest.raises(DpmedError, match='data.labels: not set'): build(cfg)
    (tmp_path / 'dataset.yaml').write_text('data:\n  labels: [b]\n')
    assert build(cfg).label_names == ['b']


# ---------------------------------------------------------------- readers
def test_png_modes(tmp_path):
    rng = np.random.default_rng(1)
    g16 = (rng.random((20, 24)) * 65535).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / 'g16.png')
    assert np.array_equal(D.read_image(tmp_path / 'g16.png'), g16)
    rgb = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / 'rgb.png')
    same = np.repeat(rgb[..., :1], 3, -1)
    Image.fromarray(same).save(tmp_path / 'gray_rgb.png')
    y = D.preprocess_2d(D.read_image(tmp_path / 'gray_rgb.png'), D.Preprocess(size=24))
    # equal channels are taken as they are: 20x24 -> 24x24 resize of channel 0 only
    assert y.shape == (1, 24, 24)
    x3 = D.preprocess_2d(D.read_image(tmp_path / 'rgb.png'), D.Preprocess(size=24, channels=3))
    assert x3.shape == (3, 24, 24)
    Image.fromarray(rgb).save(tmp_path / 'rgb.jpg', quality=95)
    assert D.read_image(tmp_path / 'rgb.jpg').shape == (20, 24, 3)


def test_luminance_matches_pillow(tmp_path):
    rgb = (np.random.default_rng(2).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / 'c.png')
    x = D.preprocess_2d(D.read_image(tmp_path / 'c.png'), D.Preprocess(size=16))[0].astype(int)
    ref = np.asarray(Image.open(tmp_path / 'c.png').convert('L')).astype(int)
    assert np.abs(x - ref).max() <= 1


def test_dicom_rescale_and_monochrome1(tmp_path):
    pytest.importorskip('pydicom', reason='pydicom is not installed (pip install pydicom)')
    a = (np.arange(12 * 10).reshape(12, 10) * 7).astype(np.uint16)
    write_dicom(tmp_path / 'a.dcm', a, slope=2.0, intercept=-1024)
    assert np.allclose(D.read_image(tmp_path / 'a.dcm'), a * 2.0 - 1024)
    write_dicom(tmp_path / 'noext', a)                      # DICM marker, no suffix
    assert np.allclose(D.read_image(tmp_path / 'noext'), a)
    write_dicom(tmp_path / 'm1.dcm', a, photometric='MONOCHROME1')
    inv = D.read_image(tmp_path / 'm1.dcm')
    assert np.allclose(inv, a.max() + a.min() - a.astype(float))   # high raw value = dark -> inverted


def test_npz_and_npy_refs(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (5, 8, 8), dtype=np.uint8)
    np.savez_compressed(tmp_path / 'x.npz', imgs=arr)
    assert np.array_equal(D.read_image('x.npz:imgs:3', tmp_path), arr[3])
    assert D.parse_ref('/a/b c.npz:imgs:12') == (Path('/a/b c.npz'), 'imgs', 12)
    assert D.npz_shapes(tmp_path / 'x.npz') == {'imgs': (5, 8, 8)}


def test_nifti_orientation_matches_nibabel_canonical(tmp_path):
    pytest.importorskip('nibabel', reason='nibabel is not installed (pip install nibabel)')
    import nibabel as nib
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 300, (12, 12, 12)).astype(np.float32)
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])                   # LPS-style axes
    nib.save(nib.Nifti1Image(vol, aff), tmp_path / 'v.nii.gz')
    a, info = D.ImageReader()(tmp_path / 'v.nii.gz')
    out = D.preprocess_3d(a, D.Preprocess(spatial_dims=3, size=12, intensity='window', window=[-200, 200]), info)
    can = nib.as_closest_canonical(nib.load(tmp_path / 'v.nii.gz')).get_fdata()
    ref = np.rint(np.clip((can + 200) / 400, 0, 1) * 255).transpose(2, 1, 0)
    assert out.shape == (1, 12, 12, 12) and np.abs(out[0].astype(float) - ref).max() <= 1


def test_nifti_spacing_and_crop(tmp_path):
    pytest.importorskip('nibabel', reason='nibabel is not installed (pip install nibabel)')
    import nibabel as nib
    vol = np.zeros((20, 20, 20), np.float32); vol[5:15, 5:15, 5:15] = 100
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / 'c.nii.gz')
    a, info = D.ImageReader()(tmp_path / 'c.nii.gz')
    p = D.Preprocess(spatial_dims=3, size=10, intensity='window', window=[0, 100], spacing=[2, 2, 2])
    out = D.preprocess_3d(a, p, info)[0].astype(float) / 255
    assert out.shape == (10, 10, 10)
    block = vol.reshape(10, 2, 10, 2, 10, 2).mean((1, 3, 5)) / 100      # 2 mm = mean of 2x2x2 blocks
    assert np.abs(out - block.transpose(2, 1, 0)).mean() < 0.08
    p = D.Preprocess(spatial_dims=3, size=8, intensity='window', window=[0, 100], crop_size=[8, 8, 8])
    out = D.preprocess_3d(a, p, info)[0]
    assert (out == 255).all()                                 # centre 8^3 lies inside the cube 5..15
    p = D.Preprocess(spatial_dims=3, size=30, intensity='window', window=[0, 100], crop_size=[30, 30, 30])
    out = D.preprocess_3d(a, p, info)[0]
    assert out[:10].max() == 0 and out[10:20, 10:20, 10:20].min() == 255  # zero padding, content centred


# ---------------------------------------------------------------- splits (intensity and resize: nbs/04_data.ipynb)
def test_stratified_split_spreads_rare_labels():
    rng = np.random.default_rng(5)
    n = 600
    k = 1 + rng.poisson(1.5, n)
    pid = np.repeat(np.arange(n), k)
    rare = np.repeat(rng.random(n) < 0.04, k).astype(int)
    meta = pd.DataFrame({'patient_id': pid, 'rare': rare})
    strat_err, plain_err = [], []
    for seed in range(10):
        for lab, err in ((['rare'], strat_err), (None, plain_err)):
            sp = patient_split(meta, 0.15, 0.2, seed, labels=lab)
            leak = sum(len(set(sp[pid == p])) > 1 for p in range(n))       # naive loop
            assert leak == 0
            prev = [rare[sp == s].mean() for s in ('train', 'val', 'test')]
            err.append(np.max(np.abs(np.array(prev) - rare.mean())))
        assert abs((sp == 'test').mean() - 0.2) < 0.03
    assert np.mean(strat_err) < 0.5 * np.mean(plain_err), (np.mean(strat_err), np.mean(plain_err))
    # patients with many images are not drawn to one split: the patient shares follow the fractions too
    heavy = pd.DataFrame({'patient_id': np.repeat(np.arange(400), k2 := 1 + rng.poisson(np.where(np.arange(400) % 5, 0.5, 12))),
                          'y': np.repeat(rng.random(400) < 0.3, k2).astype(int)})
    shares = []
    for seed in range(6):
        sp = patient_split(heavy, 0.15, 0.2, seed, labels=['y'])
        first = pd.Series(sp).groupby(heavy.patient_id.to_numpy()).first()
        shares.append([(first == name).mean() for name in ('train', 'val', 'test')])
        assert np.allclose([(sp == name).mean() for name in ('train', 'val', 'test')], [0.65, 0.15, 0.2], atol=0.04)
    assert np.allclose(np.mean(shares, 0), [0.65, 0.15, 0.2], atol=0.025), np.mean(shares, 0)
    a = patient_split(meta, 0.15, 0.2, 1, labels=['rare']); b = patient_split(meta, 0.15, 0.2, 2, labels=['rare'])
    assert (a == patient_split(meta, 0.15, 0.2, 1, labels=['rare'])).all() and (a != b).any()


def test_stratify_by_sex(tmp_path):
    df = png_set(tmp_path, 60, patients=list(range(60)))
    cfg = cfg_for(tmp_path, df, stratify_by=['sex'])
    m = build(cfg).meta
    share = m.groupby('split').sex.apply(lambda s: (s == 'F').mean())
    assert (abs(share - 0.5) <= 0.1).all(), share


# ---------------------------------------------------------------- cache
def test_cache_reuse_stale_and_keys(tmp_path, capsys):
    df = png_set(tmp_path, 10)
    cfg = cfg_for(tmp_path, df)
    a = D.imageset_from_config(cfg)
    assert 'cached 10 images' in capsys.readouterr().out
    assert len(cache_entries(cfg)) == 1
    calls = []
    orig = D.ImageReader.__call__
    D.ImageReader.__call__ = lambda self, ref: (calls.append(ref), orig(self, ref))[1]
    try:
        b = D.imageset_from_config(cfg)
        assert calls == [] and np.array_equal(np.asarray(a.images), np.asarray(b.images))
        # a source file replaced -> detected as stale and rebuilt, never silently used
        Image.fromarray(np.zeros((40, 32), np.uint8)).save(tmp_path / 'im4.png')
        os.utime(tmp_path / 'im4.png', ns=(1, 1))
        c = D.imageset_from_config(cfg)
        out = capsys.readouterr().out
        assert 'is stale' in out and 'im4.png changed' in out and len(calls) == 10
        assert (np.asarray(c.images)[4] == 0).all() and np.array_equal(np.asarray(c.images)[5], np.asarray(a.images)[5])
    finally:
        D.ImageReader.__call__ = orig
    # a truncated cache file -> stale
    entry = Path(cfg.cache_dir) / cache_entries(cfg)[0]
    with open(entry / 'images.u8', 'r+b') as f: f.truncate(100)
    D.imageset_from_config(cfg)
    assert 'images.u8 has 100 bytes' in capsys.readouterr().out
    # other preprocessing -> another entry; the first stays valid
    D.imageset_from_config(cfg_for(tmp_path, df, image_size=8))
    assert len(cache_entries(cfg)) == 2


def test_no_cache_equals_cache(tmp_path):
    df = png_set(tmp_path, 12)
    a = build(cfg_for(tmp_path, df))
    b = build(cfg_for(tmp_path, df, cache=False))
    assert not isinstance(b.images, np.memmap) and np.array_equal(np.asarray(a.images), b.images)


def test_failed_build_leaves_no_entry(tmp_path):
    df = png_set(tmp_path, 80)
    (tmp_path / 'im70.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    cfg = cfg_for(tmp_path, df)
    with pytest.raises(DpmedError, match='row 71'): build(cfg)
    assert cache_entries(cfg) == []                          # not even the hidden temporary folder


# ---------------------------------------------------------------- config fields
@pytest.mark.parametrize('item, field', [('data.intensity=gamma', 'data.intensity'), ('data.window=[5,1]', 'data.window'),
                                         ('data.spacing=[1,1]', 'data.spacing'), ('data.channels=2', 'data.channels'),
                                         ('data.augment={spin: 1}', 'data.augment'), ('data.spatial_dims=4', 'data.spatial_dims'),
                                         ('data.intensity=window', 'data.window'), ('data.augment={hflip: 2}', 'data.augment.hflip')])
def test_config_checks(item, field):
    with pytest.raises(DpmedError, match=field.replace('.', r'\.')):
        load_config(overrides=[item])


# ---------------------------------------------------------------- augmentation
def test_augment_brightness_and_identity():
    x = torch.rand(6, 1, 12, 12) * 0.5 + 0.25
    g = torch.Generator().manual_seed(0)
    y = D.Augment2d(brightness=0.2)(x, g)
    shift = (y - x).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-6)     # one shift per image
    assert shift.abs().max() <= 0.2 + 1e-6 and shift[:, 0].std() > 0
    assert D.make_augment(DataConfig()) is None
    aug = D.make_augment(DataConfig(augment={'rotate': 5}))
    assert isinstance(aug, D.Augment2d) and aug.rotate == 5
    # rotation by a random angle keeps a centred disc (rotation invariant) in place
    yy, xx = torch.meshgrid(torch.arange(17.), torch.arange(17.), indexing='ij')
    disc = (((yy - 8) ** 2 + (xx - 8) ** 2) < 25).float()[None, None].repeat(4, 1, 1, 1)
    r = D.Augment2d(rotate=45)(disc, torch.Generator().manual_seed(1))
    assert (r - disc).abs().mean() < 0.03


# ---------------------------------------------------------------- validate CLI
def _parser():
    return build_parser()


def test_validate_cli_counts_and_figure(tmp_path, capsys):
    df = png_set(tmp_path, 24)
    df.to_csv(tmp_path / 'm.csv', index=False)
    args = _parser().parse_args(['data', 'validate', str(tmp_path / 'm.csv'), '--labels', 'a', 'b',
                                 '--figure', str(tmp_path / 'f.png'),
                                 '--set', 'data.subgroups=[{name: sex, column: sex}, {name: age_group, column: age, bins: [0, 40, 100]}]'])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert 'no patient in two splits' in out and (tmp_path / 'f.png').stat().st_size > 2000
    rep = D.validate_manifest(load_config(overrides=['data.dataset=manifest', f'data.manifest={tmp_path / "m.csv"}',
                                                     'data.labels=[a,b]', 'data.subgroups=[{name: sex, column: sex}]']).data)
    t, c = rep['table'], rep['counts']
    for (split, sex), g in t.groupby(['split', 'sex']):     # naive pandas reference
        row = c[(c.split == split) & (c.subgroup == 'sex') & (c.group == sex)].iloc[0]
        assert row.images == len(g) and row.a == g.a.sum() and row.b == g.b.sum() and row.patients == g.patient_id.nunique()


def test_validate_cli_bad_manifest(tmp_path):
    df = png_set(tmp_path, 8); df.loc[2, 'age'] = -1
    df.to_csv(tmp_path / 'm.csv', index=False)
    args = _parser().parse_args(['data', 'validate', str(tmp_path / 'm.csv'), '--labels', 'a', '--no-figure'])
    with pytest.raises(DpmedError, match=r"m\.csv row 3 \(id 'im2'\), field 'age'"):
        args.func(args)


def test_validate_decode_finds_corrupt(tmp_path):
    df = png_set(tmp_path, 20)
    raw = (tmp_path / 'im1.png').read_bytes()
    (tmp_path / 'im1.png').write_bytes(raw[:60] + bytes(len(raw) - 72) + raw[-12:])   # headers fine, pixels corrupt
    df.to_csv(tmp_path / 'm.csv', index=False)
    args = _parser().parse_args(['data', 'validate', str(tmp_path / 'm.csv'), '--labels', 'a', '--no-figure', '--decode',
                                 '--set', 'data.subgroups=[]'])
    with pytest.raises(DpmedError, match='row 2.*cannot decode'):
        args.func(args)


# ---------------------------------------------------------------- real data
def test_nih_1000_manifest_real(tmp_path, nih_data_entry):
    from dpmed.adapters import adapt_nih
    m = adapt_nih(nih_data_entry, NIH_NPZ, tmp_path / 'nih')
    cfg = load_config(tmp_path / 'nih' / 'dataset.yaml', [f'data.cache_dir={tmp_path / "cache"}'])
    s = build(cfg.data)
    z = np.load(NIH_NPZ)
    assert len(s) == 1000 and s.meta.sex.isin(['F', 'M']).all() and s.meta.age.notna().all()
    order = pd.Index(z['filenames']).get_indexer(s.meta['id'])
    assert (order >= 0).all()
    assert np.array_equal(np.asarray(s.images)[:, 0], z['images'][order])
    assert np.array_equal(s.labels.astype(np.uint8), z['labels14'][order])
    assert (s.meta.sex.to_numpy() == z['sex'][order]).all() and (s.meta.age.to_numpy() == z['age'][order]).all()
    pats = {sp: set(s.meta.patient_id[s.meta.split == sp]) for sp in ('train', 'val', 'test')}
    assert not (pats['train'] & pats['val'] or pats['train'] & pats['test'] or pats['val'] & pats['test'])
    assert all(pats.values())


def test_nih_trains_end_to_end_through_dpmed_train(tmp_path, nih_data_entry):
    from dpmed import cli
    from dpmed.adapters import adapt_nih
    adapt_nih(nih_data_entry, NIH_NPZ, tmp_path / 'nih')
    run = tmp_path / 'run'
    rc = cli.main(['train', str(tmp_path / 'nih' / 'dataset.yaml'), '--set', 'data.image_size=32',
                   '--set', 'data.labels=[effusion,infiltration,atelectasis]', '--set', 'train.epochs=1',
                   '--set', 'model.width=0.125', '--set', f'data.cache_dir={tmp_path / "cache"}',
                   '--set', 'eval.n_boot=20', '--out', str(run), '--quiet'])
    assert rc == 0
    pred = pd.read_csv(run / 'predictions.csv')
    meta = pd.read_csv(tmp_path / 'nih' / 'manifest.csv').set_index('id')
    assert len(pred) > 100 and pred['sex'].isin(['F', 'M']).all() and pred['age'].notna().all()
    # the test patients are none of the training patients
    log = pd.read_csv(run / 'predictions.csv')
    test_pat = set(meta.loc[log['id'], 'patient_id'])
    from dpmed.config import load_config as _lc
    s = build(_lc(run / 'config.yaml').data)
    assert not test_pat & set(s.meta.patient_id[s.meta.split == 'train'])


def test_stratify_by_declared_age_bins(tmp_path):
    df = png_set(tmp_path, 80, patients=list(range(80)))
    df['age'] = [25.0] * 8 + [65.0] * 72                      # a small young group
    sub = [{'name': 'age_group', 'column': 'age', 'bins': [0, 30, 60, 100]}]
    for seed in range(5):                                     # 8 young patients: 25% test = 2, 20% val = 1.6
        m = build(cfg_for(tmp_path, df, subgroups=sub, stratify_by=['age_group'], stratify=False, split_seed=seed)).meta
        young = m[m.age < 30].split.value_counts()
        assert 1 <= young.get('test', 0) <= 3 and 1 <= young.get('val', 0) <= 3, (seed, young)


# ---------------------------------------------------------------- the embedded real sets, by name (no skip)

BUILTIN = {'nih_cxr14_1000': dict(n=1000, shape=(1, 64, 64), labels=8, patients=264),
           'pneumoniamnist': dict(n=5856, shape=(1, 28, 28), labels=1, splits={'train': 4708, 'val': 524, 'test': 624}),
           'adrenalmnist3d': dict(n=1584, shape=(1, 28, 28, 28), labels=1, splits={'train': 1188, 'val': 98, 'test': 298})}


@pytest.mark.parametrize('name', list(BUILTIN))
def test_builtin_real_dataset_loads_by_name(name, tmp_path):
    from dpmed.config import config_from_dict
    from dpmed.datasets import load_dataset, DATASETS
    want = BUILTIN[name]
    cfg = config_from_dict({'data': {'dataset': name, 'cache_dir': str(tmp_path / 'cache')},
                            'model': {'name': DATASETS[name].model}})
    assert cfg.name == name and cfg.data.image_size == want['shape'][-1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        s = load_dataset(cfg.data)
    assert s.images.shape == (want['n'],) + want['shape'] and s.images.dtype == np.uint8
    assert len(s.label_names) == want['labels'] and set(np.unique(s.labels)) == {0.0, 1.0}
    pats = {sp: set(s.meta.patient_id[s.meta.split == sp]) for sp in ('train', 'val', 'test')}
    assert all(pats.values()) and not (pats['train'] & pats['val'] or pats['train'] & pats['test'] or pats['val'] & pats['test'])
    for sp in ('train', 'val', 'test'):                       # every split has both classes of every label
        y = s.split(sp).labels
        assert (y.sum(0) > 0).all() and (y.sum(0) < len(y)).all(), (sp, y.sum(0))
    if 'splits' in want:                                      # MedMNIST: the official split, pixels as published
        assert s.meta.split.value_counts().to_dict() == want['splits']
        z = np.load(PNEU if name == 'pneumoniamnist' else ADRENAL)
        assert np.array_equal(np.asarray(s.split('val').images)[:, 0], z['val_images'])
        assert np.array_equal(s.split('test').labels[:, 0], z['test_labels'][:, 0])
        assert [g['name'] for g in s.skipped_subgroups] == ['sex', 'age_group']      # no sex/age: skipped, said so
        assert sum("skipped (column 'sex' not in the data)" in str(w.message) for w in caught) == 1
    else:                                                     # NIH: split per patient, demographics joined from metadata.csv
        meta = pd.read_csv(NIH_CSV).set_index('filename').loc[s.meta['id']]
        assert s.meta.patient_id.nunique() == want['patients'] and s.skipped_subgroups == []
        assert (s.meta.sex.to_numpy() == meta.sex.to_numpy()).all() and (s.meta.age.to_numpy() == meta.age.to_numpy()).all()
        z = np.load(NIH_NPZ)
        order = pd.Index(z['filenames']).get_indexer(s.meta['id'])
        assert np.array_equal(np.asarray(s.images)[:, 0], z['images'][order])
        names = [str(n).lower() for n in z['label_names']]
        assert np.array_equal(s.labels, z['labels14'][order][:, [names.index(l) for l in s.label_names]])
        assert set(s.meta.age_group.dropna()) <= {'[0,30)', '[30,60)', '[60,70)', '[70,80)', '[80,100)'}


@pytest.mark.parametrize('name', list(BUILTIN))
def test_builtin_real_dataset_one_private_epoch(name, tmp_path):
    "One epoch of DP-SGD on each embedded set: runs, spends about the target epsilon, writes a named run directory."
    from dpmed.config import config_from_dict
    from dpmed.datasets import DATASETS
    from dpmed.rundir import train_and_save
    cfg = config_from_dict({'data': {'dataset': name, 'cache_dir': str(tmp_path / 'cache')},
                            'model': {'name': DATASETS[name].model, 'width': 0.125},
                            'privacy': {'epsilon': 8.0},
                            'train': {'epochs': 1, 'batch_size': 128, 'physical_batch_size': 64, 'num_threads': 1,
                                      'tensorboard': False},
                            'eval': {'n_boot': 20}})
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        m = train_and_save(cfg, tmp_path / 'run', progress=False)
    assert m['private'] and 0 < m['epsilon'] <= 8.0 + 1e-6 and m['dataset'] == name and m['steps'] >= 1
    assert 0 <= m['auroc_mean'] <= 1 and m['bootstrap_unit'] == 'patient'
    assert [g['name'] for g in m['subgroups_skipped']] == ([] if name == 'nih_cxr14_1000' else ['sex', 'age_group'])
    pred = pd.read_csv(tmp_path / 'run' / 'predictions.csv')
    assert ('sex' in pred) == (name == 'nih_cxr14_1000')
