"""Adapters: each source, as it ships, becomes a manifest that builds into an ImageSet.

Real files from the embedded data/ (NIH 1,000 set, PneumoniaMNIST, AdrenalMNIST3D), in every clone;
otherwise small fixtures written here in the source's exact format. Expected values are computed from the
fixture tables with plain pandas/numpy, not with dpmed."""
import argparse, json, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from dpmed.cli import build_parser
from dpmed.core import DpmedError
from dpmed.config import load_config
from dpmed.core import PAPER_CXR_LABELS
from dpmed import adapters as A
from dpmed import data as D
from dicom_fixture import write_dicom

from conftest import NIH_NPZ, PNEU, ADRENAL, NIH_EXTRA_ROWS


def build(manifest, tmp, *sets):
    cfg = load_config(Path(manifest).parent / 'dataset.yaml', [f'data.cache_dir={tmp / "cache"}', *sets])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', D.DataWarning)
        return D.imageset_from_config(cfg.data, log=None), cfg


def no_leak(meta):
    p = {s: set(meta.patient_id[meta.split == s]) for s in ('train', 'val', 'test')}
    return not (p['train'] & p['val'] or p['train'] & p['test'] or p['val'] & p['test'])


def gray(path, value=100, size=(24, 20), mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(abs(hash(path.name)) % 2**32).integers(0, 255, size).astype(np.uint8)
    a[0, 0] = value
    if mode == 'I;16': Image.fromarray((a.astype(np.uint16) * 257)).save(path)
    else: Image.fromarray(a).save(path)




# ---------------------------------------------------------------- NIH ChestX-ray14
def test_nih_real_1000(tmp_path, nih_data_entry):
    m = A.adapt_nih(nih_data_entry, NIH_NPZ, tmp_path / 'nih')
    t = pd.read_csv(m)
    rep = json.loads((tmp_path / 'nih' / 'adapter.json').read_text())
    assert len(t) == 1000 and t.patient_id.nunique() == 264 and rep['skipped_no_image'] == NIH_EXTRA_ROWS
    assert t.sex.isin(['F', 'M']).all() and t.age.notna().all() and t.age.between(0, 120).all()
    meta = pd.read_csv(nih_data_entry).set_index('Image Index').loc[t['id']]
    assert (t.age.to_numpy() == meta['Patient Age'].to_numpy()).all()
    assert (t.sex.to_numpy() == meta['Patient Gender'].to_numpy()).all()
    assert (t.effusion.to_numpy() == meta['Finding Labels'].str.contains('Effusion').to_numpy()).all()
    s, cfg = build(m, tmp_path)
    assert no_leak(s.meta) and set(s.meta.split) == {'train', 'val', 'test'}
    assert cfg.data.subgroups[1]['bins'] == [0, 30, 60, 70, 80, 100]


def test_nih_folder_fixture(tmp_path):
    rows = []
    for i, (pid, fu, lab, age, sex, view) in enumerate([
            (1, 0, 'Cardiomegaly', 58, 'M', 'PA'), (1, 1, 'Cardiomegaly|Effusion', '058Y', 'M', 'PA'),
            (2, 0, 'No Finding', 81, 'F', 'AP'), (3, 0, 'Hernia', 412, 'F', 'PA'), (4, 0, 'Mass|Nodule', 30, 'F', 'LL'),
            (5, 0, 'No Finding', 44, 'M', 'PA'), (6, 0, 'Pneumonia', 7, 'F', 'AP'), (7, 0, 'Edema', 66, 'M', 'PA')]):
        name = f"{pid:08d}_{fu:03d}.png"
        if i != 5: gray(tmp_path / 'src' / f"images_00{i % 2 + 1}" / 'images' / name)   # row 5 image not downloaded
        rows.append({'Image Index': name, 'Finding Labels': lab, 'Follow-up #': fu, 'Patient ID': pid,
                     'Patient Age': age, 'Patient Gender': sex, 'View Position': view,
                     'OriginalImage[Width': 2500, 'Height]': 2048, 'OriginalImagePixelSpacing[x': 0.14, 'y]': 0.14})
    pd.DataFrame(rows).to_csv(tmp_path / 'Data_Entry_2017.csv', index=False)
    m = A.adapt_nih(tmp_path / 'Data_Entry_2017.csv', tmp_path / 'src', tmp_path / 'out')
    t = pd.read_csv(m, dtype={'patient_id': str})
    rep = json.loads((tmp_path / 'out' / 'adapter.json').read_text())
    assert rep['skipped_no_image'] == 1 and rep['skipped_view'] == 1 and rep['dropped_age_over_120'] == 1
    assert t['id'].tolist() == ['00000001_000.png', '00000001_001.png', '00000002_000.png', '00000006_000.png',
                                '00000007_000.png']
    assert t.age.tolist() == [58, 58, 81, 7, 66] and t.patient_id.iloc[0] == '00000001'
    assert t.cardiomegaly.tolist() == [1, 1, 0, 0, 0] and t.effusion.tolist() == [0, 1, 0, 0, 0]
    assert t[[A.snake(l) for l in A.NIH_LABELS]].iloc[2].sum() == 0          # No Finding


def test_nih_unknown_finding_writes_nothing(tmp_path):
    gray(tmp_path / 'img' / 'a.png')
    pd.DataFrame([{'Image Index': 'a.png', 'Finding Labels': 'Dragon', 'Follow-up #': 0, 'Patient ID': 1,
                   'Patient Age': 50, 'Patient Gender': 'F', 'View Position': 'PA'}]).to_csv(tmp_path / 'd.csv', index=False)
    with pytest.raises(DpmedError, match="unknown finding.*Dragon"):
        A.adapt_nih(tmp_path / 'd.csv', tmp_path / 'img', tmp_path / 'out')
    assert not (tmp_path / 'out').exists() and not list(tmp_path.glob('.out*'))


# ---------------------------------------------------------------- CheXpert
def chexpert_fixture(tmp):
    root = tmp / 'CheXpert-v1.0-small'
    rng = np.random.default_rng(0)
    for csv, n in (('train.csv', 30), ('valid.csv', 8)):
        rows = []
        for k in range(n):
            pid = k // 2 if csv == 'train.csv' else 60000 + k
            view = 'Lateral' if (csv == 'train.csv' and k % 7 == 6) else 'Frontal'
            rel = f"CheXpert-v1.0-small/{csv[:5]}/patient{pid:05d}/study1/view{1 + (view == 'Lateral')}_{view.lower()}.jpg"
            if k % 2 and csv == 'train.csv': rel = rel.replace('study1', 'study2')
            gray(tmp / rel)
            r = {'Path': rel, 'Sex': 'Unknown' if (k == 4 and csv == 'train.csv') else ['Female', 'Male'][pid % 2], 'Age': int(rng.integers(18, 90)),
                 'Frontal/Lateral': view, 'AP/PA': 'AP' if view == 'Frontal' else None}
            r.update({l: rng.choice([1.0, 0.0, -1.0, np.nan]) for l in A.CHEXPERT_LABELS})
            rows.append(r)
        pd.DataFrame(rows).to_csv(root / csv, index=False)
    return root


@pytest.mark.parametrize('policy', ['zeros', 'ones'])
def test_chexpert(tmp_path, policy):
    root = chexpert_fixture(tmp_path)
    m = A.adapt_chexpert(root, tmp_path / 'out', uncertain=policy)
    t = pd.read_csv(m)
    src = pd.concat([pd.read_csv(root / 'train.csv'), pd.read_csv(root / 'valid.csv')], ignore_index=True)
    src = src[(src['Frontal/Lateral'] == 'Frontal') & (src.Sex != 'Unknown')]
    assert len(t) == len(src) and (t.split == 'test').sum() == 8
    for l in A.CHEXPERT_LABELS[1:]:
        v = src[l].to_numpy()
        expect = np.where(v == 1, 1, np.where(v == -1, int(policy == 'ones'), 0))
        assert (t[A.snake(l)].to_numpy() == expect).all(), l
    assert (t.sex.to_numpy() == src.Sex.map({'Female': 'F', 'Male': 'M'}).to_numpy()).all()
    s, _ = build(m, tmp_path)
    assert no_leak(s.meta) and (s.meta.split == 'test').sum() == 8
    assert set(s.meta.loc[s.meta.split != 'test', 'split']) == {'train', 'val'}


def test_chexpert_bad_label_value(tmp_path):
    root = chexpert_fixture(tmp_path)
    t = pd.read_csv(root / 'train.csv'); t.loc[3, 'Edema'] = 2.0; t.to_csv(root / 'train.csv', index=False)
    with pytest.raises(DpmedError, match=r"train\.csv row 4, field 'Edema'.*not 1, 0, -1 or blank"):
        A.adapt_chexpert(root, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------- MIMIC-CXR-JPG
def test_mimic(tmp_path):
    root = tmp_path / 'mimic-cxr-jpg' / '2.0.0'
    meta, lab, spl, pat = [], [], [], []
    rng = np.random.default_rng(1)
    for s in range(6):
        subject = 10000032 + s
        pat.append({'subject_id': subject, 'gender': 'FM'[s % 2], 'anchor_age': 50 + s, 'anchor_year': 2180,
                    'anchor_year_group': '2014 - 2016', 'dod': None})
        for st in range(2):
            study = 50000000 + 10 * s + st
            lab.append({'subject_id': subject, 'study_id': study,
                        **{l: rng.choice([1.0, 0.0, -1.0, np.nan]) for l in A.CHEXPERT_LABELS}})
            for v, view in enumerate(['PA', 'LATERAL']):
                dicom = f"{s:02d}{st}{v}aaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee"
                meta.append({'dicom_id': dicom, 'subject_id': subject, 'study_id': study,
                             'PerformedProcedureStepDescription': 'CHEST (PA AND LAT)', 'ViewPosition': view,
                             'Rows': 3056, 'Columns': 2544, 'StudyDate': 21800506 + 10000 * st, 'StudyTime': 213014.531})
                spl.append({'dicom_id': dicom, 'study_id': study, 'subject_id': subject,
                            'split': ['train', 'train', 'train', 'train', 'validate', 'test'][s]})
                gray(root / 'files' / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
    pat.append({'subject_id': 99999999, 'gender': 'F', 'anchor_age': 40, 'anchor_year': 2150})
    pd.DataFrame(meta).to_csv(root / 'mimic-cxr-2.0.0-metadata.csv.gz', index=False)
    pd.DataFrame(lab).to_csv(root / 'mimic-cxr-2.0.0-chexpert.csv.gz', index=False)
    pd.DataFrame(spl).to_csv(root / 'mimic-cxr-2.0.0-split.csv.gz', index=False)
    pd.DataFrame(pat).to_csv(tmp_path / 'patients.csv.gz', index=False)
    m = A.adapt_mimic(root, tmp_path / 'patients.csv.gz', tmp_path / 'out', uncertain='ones')
    t = pd.read_csv(m)
    assert len(t) == 12 and (t.view == 'PA').all()
    assert t.age.tolist() == [50 + s + st for s in range(6) for st in range(2)]           # anchor_age + years since
    assert t.split.tolist() == ['train'] * 8 + ['val'] * 2 + ['test'] * 2
    L = pd.DataFrame(lab)
    exp = (L['Edema'].isin([1.0, -1.0])).astype(int).to_numpy()
    assert (t.edema.to_numpy() == exp).all()
    s, _ = build(m, tmp_path)
    assert len(s) == 12 and no_leak(s.meta)


# ---------------------------------------------------------------- PadChest
def test_padchest(tmp_path):
    rows = []
    labels = ["['normal']", "['pleural effusion', 'cardiomegaly']", "['pneumonia', 'infiltrates']", 'nan-garbage[',
              "['cardiomegaly']", "['atelectasis', 'loc left']", "['cardiomegaly', 'pleural effusion']", "['normal']"]
    for i, lab in enumerate(labels * 3):
        name = f"img_{i}.png"
        gray(tmp_path / 'images' / str(i % 3) / name, mode='I;16')
        rows.append({'ImageID': name, 'ImageDir': i % 3, 'StudyDate_DICOM': 20140101 + i, 'StudyID': f"s{i}",
                     'PatientID': f"pt{i // 2}", 'PatientBirth': 1940.0 + i if i != 9 else np.nan,
                     'PatientSex_DICOM': 'O' if i == 10 else 'FM'[i // 2 % 2], 'ViewPosition_DICOM': 'POSTEROANTERIOR',
                     'Projection': 'L' if i == 11 else 'PA', 'MethodProjection': 'Manual review of DICOM fields',
                     'Labels': lab, 'Localizations': '[]'})
    csv = tmp_path / 'PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz'
    pd.DataFrame(rows).to_csv(csv, index=False)
    m = A.adapt_padchest(csv, tmp_path / 'images', tmp_path / 'out')
    t = pd.read_csv(m)
    rep = json.loads((tmp_path / 'out' / 'adapter.json').read_text())
    src = pd.DataFrame(rows)
    keep = src[(src.Projection != 'L') & ~src.Labels.str.startswith('nan') & src.PatientBirth.notna()
               & src.PatientSex_DICOM.isin(['F', 'M'])]
    assert t['id'].tolist() == keep.ImageID.tolist() and rep['skipped_projection'] == 1
    assert (t.age.to_numpy() == (keep.StudyDate_DICOM // 10000 - keep.PatientBirth).to_numpy()).all()
    assert (t.cardiomegaly.to_numpy() == keep.Labels.str.contains("'cardiomegaly'").to_numpy()).all()
    assert (t.pleural_effusion.to_numpy() == keep.Labels.str.contains("pleural effusion").to_numpy()).all()
    assert yaml.safe_load((tmp_path / 'out' / 'dataset.yaml').read_text())['data']['intensity'] == 'percentile'
    s, _ = build(m, tmp_path)
    assert s.images.shape[1:] == (1, 64, 64) and no_leak(s.meta)


# ---------------------------------------------------------------- VinDr-CXR
def test_vindr(tmp_path):
    pytest.importorskip('pydicom', reason='pydicom is not installed (pip install pydicom)')
    root = tmp_path / 'vindr'
    (root / 'annotations').mkdir(parents=True)
    findings = ['Aortic enlargement', 'Atelectasis', 'Cardiomegaly', 'Pleural effusion', 'Nodule/Mass', 'Other disease']
    rng = np.random.default_rng(2)
    train, test = [], []
    for i in range(14):
        img = f"{i:032x}"
        write_dicom(root / 'train' / f"{img}.dicom", rng.integers(0, 4095, (20, 20)), bits_stored=12,
                    sex=None if i == 3 else 'MF'[i % 2], age=None if i == 5 else f"{40 + i:03d}Y")
        for rad in ('R8', 'R9', 'R10'):
            train.append({'image_id': img, 'rad_id': rad, **{f: int(rng.random() < 0.4) for f in findings},
                          'No finding': 0})
    for i in range(5):
        img = f"{100 + i:032x}"
        write_dicom(root / 'test' / f"{img}.dicom", rng.integers(0, 4095, (20, 20)), sex='F', age='061Y', bits_stored=12)
        test.append({'image_id': img, **{f: int(rng.random() < 0.3) for f in findings}, 'No finding': 0})
    pd.DataFrame(train).to_csv(root / 'annotations' / 'image_labels_train.csv', index=False)
    pd.DataFrame(test).to_csv(root / 'annotations' / 'image_labels_test.csv', index=False)
    m = A.adapt_vindr(root, tmp_path / 'out')
    t = pd.read_csv(m)
    rep = json.loads((tmp_path / 'out' / 'adapter.json').read_text())
    assert rep['train_dropped_no_demographics'] == 2 and len(t) == 12 + 5 and (t.split == 'test').sum() == 5
    tr = pd.DataFrame(train)
    for img in t.loc[t.split != 'test', 'id']:                  # majority of 3 readers, by a naive loop
        votes = tr[tr.image_id == img]
        for f in findings:
            assert t.loc[t.id == img, A.snake(f)].item() == int(votes[f].sum() >= 2)
    assert t.loc[t.id == f"{7:032x}", 'age'].item() == 47
    any_reader = pd.read_csv(A.adapt_vindr(root, tmp_path / 'out1', min_readers=1))
    assert (any_reader.cardiomegaly >= t.cardiomegaly).all()
    s, _ = build(m, tmp_path, 'data.image_size=16')
    assert len(s) == 17 and no_leak(s.meta)


# ---------------------------------------------------------------- UKA-CXR-style master list
def uka_fixture(tmp, n=30):
    rng = np.random.default_rng(3)
    rows = []
    for i in range(n):
        sub = f"batch{i % 2}"
        gray(tmp / 'UKA_preprocessed' / sub / f"{1000 + i}.jpg")
        r = {'image_id': 1000 + i, 'split': ['train', 'train', 'train', 'valid', 'test'][i % 5], 'subset': sub,
             'patient_id': f"u{i}", 'age': int(rng.integers(20, 95)), 'gender': 'MF'[i % 2]}
        for l in PAPER_CXR_LABELS:
            col = l.replace('atelectasis', 'disturbances')
            r[col] = int(rng.integers(0, 5))
        rows.append(r)
    pd.DataFrame(rows).to_csv(tmp / 'final_UKA_master_list.csv', index=False)
    return pd.DataFrame(rows)


def test_uka(tmp_path):
    src = uka_fixture(tmp_path)
    m = A.adapt_uka(tmp_path / 'final_UKA_master_list.csv', tmp_path / 'UKA_preprocessed', tmp_path / 'out')
    t = pd.read_csv(m)
    assert list(t.columns[6:14]) == PAPER_CXR_LABELS
    for l in PAPER_CXR_LABELS:
        assert (t[l].to_numpy() == (src[l.replace('atelectasis', 'disturbances')] >= 3).to_numpy()).all()
    assert t.split.tolist() == src.split.tolist()
    s, cfg = build(m, tmp_path)
    assert s.label_names == PAPER_CXR_LABELS and (s.meta.split == 'val').sum() == 6


def test_uka_bad_grade(tmp_path):
    src = uka_fixture(tmp_path)
    src.loc[7, 'congestion'] = 7
    src.to_csv(tmp_path / 'final_UKA_master_list.csv', index=False)
    with pytest.raises(DpmedError, match=r"row 8, field 'congestion': grade 7 is not one of 0-4"):
        A.adapt_uka(tmp_path / 'final_UKA_master_list.csv', tmp_path / 'UKA_preprocessed', tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------- MedMNIST
def test_pneumoniamnist_real(tmp_path):
    m = A.adapt_medmnist(PNEU, tmp_path / 'pn')
    s, cfg = build(m, tmp_path)
    z = np.load(PNEU)
    assert s.label_names == ['pneumonia'] and cfg.data.subgroups == [] and cfg.model.name == 'resnet9'
    for sp in ('train', 'val', 'test'):
        part = s.split(sp)
        assert np.array_equal(np.asarray(part.images)[:, 0], z[f'{sp}_images'])
        assert np.array_equal(part.labels[:, 0], z[f'{sp}_labels'][:, 0])


def test_adrenalmnist3d_real(tmp_path):
    m = A.adapt_medmnist(ADRENAL, tmp_path / 'ad')
    s, cfg = build(m, tmp_path)
    z = np.load(ADRENAL)
    assert s.images.shape == (1584, 1, 28, 28, 28) and cfg.model.name == 'resnet9_3d' and cfg.data.spatial_dims == 3
    te = s.split('test')
    assert np.array_equal(np.asarray(te.images)[:, 0], z['test_images']) and te.labels.sum() == z['test_labels'].sum()


def test_medmnist_multiclass_and_multilabel_fixture(tmp_path):
    rng = np.random.default_rng(4)
    arrs = {}
    for sp, n in (('train', 30), ('val', 10), ('test', 10)):
        arrs[f'{sp}_images'] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
        arrs[f'{sp}_labels'] = rng.integers(0, 4, (n, 1))
    np.savez(tmp_path / 'bloodmnist.npz', **arrs)
    m = A.adapt_medmnist(tmp_path / 'bloodmnist.npz', tmp_path / 'b', label_names=['a', 'b', 'c', 'd'])
    s, cfg = build(m, tmp_path, 'data.image_size=28')
    y = np.concatenate([arrs[f'{sp}_labels'][:, 0] for sp in ('train', 'val', 'test')])
    assert s.images.shape == (50, 3, 28, 28) and (s.labels.argmax(1) == y).all() and (s.labels.sum(1) == 1).all()
    ml = {k: (rng.random((v.shape[0], 5)) < 0.3).astype(np.uint8) if 'labels' in k else v[..., 0] for k, v in arrs.items()}
    np.savez(tmp_path / 'chestmnist.npz', **ml)
    m = A.adapt_medmnist(tmp_path / 'chestmnist.npz', tmp_path / 'c')
    s, _ = build(m, tmp_path)
    assert s.label_names == [f'class_{i}' for i in range(5)] and s.images.shape[1] == 1   # 14 names do not fit 5 columns
    assert np.array_equal(s.split('val').labels, ml['val_labels'])


# ---------------------------------------------------------------- CT folder (NIfTI)
def test_ct_folder(tmp_path):
    pytest.importorskip('nibabel', reason='nibabel is not installed (pip install nibabel)')
    import nibabel as nib
    rng = np.random.default_rng(5)
    rows = []
    for i in range(24):
        vol = rng.normal(40, 30, (20, 18, 16)).astype(np.float32)
        if i % 2: vol[8:12, 8:12, 6:10] = -60                 # a hypodense lesion
        nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1])), tmp_path / f"case{i:03d}.nii.gz")
        rows.append({'id': f"case{i:03d}", 'label': ['no', 'yes'][i % 2], 'age': int(rng.integers(40, 85)),
                     'sex': ['female', 'male'][i // 2 % 2], 'site': 'A'})
    pd.DataFrame(rows).to_csv(tmp_path / 'labels.csv', index=False)
    m = A.adapt_ct_folder(tmp_path, tmp_path / 'labels.csv', tmp_path / 'out', spacing=[1.6, 1.6, 2.5])
    s, cfg = build(m, tmp_path, 'data.image_size=12')
    assert s.images.shape == (24, 1, 12, 12, 12) and s.label_names == ['pancreatic_cancer']
    assert s.labels[:, 0].tolist() == [i % 2 for i in range(24)] and cfg.model.name == 'resnet9_3d'
    assert cfg.data.subgroups[1] == {'name': 'age_quartile', 'column': 'age', 'quantiles': 4}
    assert no_leak(s.meta) and 'site' in s.meta
    bad = pd.DataFrame(rows); bad.loc[4, 'label'] = 'maybe'; bad.to_csv(tmp_path / 'bad.csv', index=False)
    with pytest.raises(DpmedError, match=r"bad\.csv row 5, field 'label'"):
        A.adapt_ct_folder(tmp_path, tmp_path / 'bad.csv', tmp_path / 'out2')


# ---------------------------------------------------------------- convert CLI
def test_convert_cli(tmp_path, capsys):
    uka_fixture(tmp_path)
    p = build_parser()
    args = p.parse_args(['data', 'convert', 'uka', str(tmp_path / 'final_UKA_master_list.csv'),
                         str(tmp_path / 'UKA_preprocessed'), '--threshold', '4', '--out', str(tmp_path / 'o')])
    assert args.func(args) == 0
    assert '30 rows' in capsys.readouterr().out
    assert json.loads((tmp_path / 'o' / 'adapter.json').read_text())['threshold'] == 4
    with pytest.raises(DpmedError, match='already exists'):
        args.func(args)
