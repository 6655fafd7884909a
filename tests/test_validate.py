"`dpmed data validate` without --decode: the cheap checks that catch what training would trip on."
import contextlib, io, json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dpmed.cli import EXIT_INVALID, main


def png_manifest(tmp, n=12, seed=0):
    "n small PNGs, two patients' worth of splits, and a manifest table with label `a` (both classes in each split)."
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(tmp / f'im{i}.png')
        rows.append({'id': f'im{i}', 'path': f'im{i}.png', 'patient_id': f'p{i // 2}', 'age': 30.0 + i,
                     'sex': 'FM'[i % 2], 'split': ['train', 'val', 'test'][(i // 2) % 3], 'a': (i // 2) % 2 if i < 6 else i % 2})
    return pd.DataFrame(rows)


def validate(tmp, df, *extra):
    df.to_csv(tmp / 'm.csv', index=False)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(['data', 'validate', str(tmp / 'm.csv'), '--labels', 'a', '--set', 'data.subgroups=[]', *extra])
    return rc, out.getvalue(), err.getvalue()


def one_line_error(rc, err, *parts):
    assert rc == EXIT_INVALID, err
    assert err.count('\n') == 1 and err.startswith('dpmed: error:') and 'Traceback' not in err, err
    for p in parts: assert p in err, (p, err)


def test_valid_manifest_passes_and_json_reports_counts(tmp_path):
    df = png_manifest(tmp_path)
    rc, out, err = validate(tmp_path, df, '--json')
    assert rc == 0, err
    rep = json.loads(out)
    assert rep['items'] == len(df) and rep['patients'] == df.patient_id.nunique() and rep['warnings'] == []
    all_row = [r for r in rep['counts'] if r['split'] == 'all' and r['subgroup'] == 'all'][0]
    assert all_row['a'] == int(df.a.sum()) and all_row['images'] == len(df)
    assert not list(tmp_path.glob('*_summary.png'))                     # no figure unless --figure


def test_text_file_named_png(tmp_path):
    df = png_manifest(tmp_path)
    (tmp_path / 'im4.png').write_text('id,path\n1,2\n')
    rc, _, err = validate(tmp_path, df)
    one_line_error(rc, err, 'm.csv row 5', "(id 'im4')", "field 'path'", 'im4.png', 'not a PNG file')


def test_truncated_png(tmp_path):
    df = png_manifest(tmp_path)
    raw = (tmp_path / 'im7.png').read_bytes()
    (tmp_path / 'im7.png').write_bytes(raw[:len(raw) - 20])
    rc, _, err = validate(tmp_path, df)
    one_line_error(rc, err, 'm.csv row 8', "field 'path'", 'truncated PNG')


def test_same_image_under_two_ids(tmp_path):
    df = png_manifest(tmp_path)
    df.loc[9, 'path'] = './im2.png'                                     # another spelling of the same file
    rc, _, err = validate(tmp_path, df)
    one_line_error(rc, err, "field 'path'", 'rows [3, 10]', "'im2', 'im9'", 'same image')


def test_same_array_of_an_npz_under_two_ids(tmp_path):
    np.savez(tmp_path / 'a.npz', x=np.zeros((4, 8, 8), np.uint8))
    df = pd.DataFrame({'path': [f'a.npz:x:{i}' for i in (0, 1, 2, 1)], 'patient_id': list('pqrs'), 'a': [0, 1, 0, 1]})
    rc, _, err = validate(tmp_path, df)
    one_line_error(rc, err, 'rows [2, 4]', "'a.npz:x:1'")


def test_label_with_one_class_everywhere_is_an_error(tmp_path):
    df = png_manifest(tmp_path).assign(a=0)
    rc, _, err = validate(tmp_path, df)
    one_line_error(rc, err, "field 'a'", 'label is 0 in all 12 rows', 'AUROC')


def test_label_with_one_class_in_a_split_is_a_warning(tmp_path):
    df = png_manifest(tmp_path)
    df.loc[df.split == 'test', 'a'] = 0
    df.loc[df.split == 'train', 'a'] = 1
    rc, out, err = validate(tmp_path, df, '--json')
    assert rc == 0, err
    w = json.loads(out)['warnings']
    assert any("'a' is 0 in every test row" in x and 'AUROC is undefined' in x for x in w), w
    assert any("'a' is 1 in every train row" in x and 'no negatives' in x for x in w), w
    assert not any('val' in x for x in w)


def test_other_sex_codes_are_accepted_as_their_own_group(tmp_path):
    df = png_manifest(tmp_path)
    df.loc[[0, 3], 'sex'] = ['O', 'u']
    rc, out, err = validate(tmp_path, df, '--set', 'data.subgroups=[{name: sex, column: sex}]', '--json')
    assert rc == 0, err
    rep = json.loads(out)
    groups = {r['group']: r['images'] for r in rep['counts'] if r['split'] == 'all' and r['subgroup'] == 'sex'}
    assert groups == {'F': int((df.sex == 'F').sum()), 'M': int((df.sex == 'M').sum()), 'O': 1, 'U': 1}
    assert any('beyond F/M' in w and 'O (1 rows)' in w for w in rep['warnings'])


def test_figure_only_where_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    df = png_manifest(tmp_path)
    rc, out, err = validate(tmp_path, df)
    assert rc == 0 and 'figure:' not in out and not list(tmp_path.glob('*summary*'))
    rc, out, err = validate(tmp_path, df, '--figure', str(tmp_path / 'f' / 'summary.png'))
    assert rc == 0, err
    assert (tmp_path / 'f' / 'summary.png').stat().st_size > 1000
