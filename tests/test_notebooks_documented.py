"""Every experiment notebook runs with plain `papermill IN OUT ...` exactly as its own text documents it.

The commands are taken from the notebooks' markdown, not copied here: change a documented command and this test
runs the new one. Commands that start a full-size study (they set `settings`, the study sizes) run with the same
options in the same form (`-p` stays `-p`, `-y` stays `-y`) but tiny values; every other command runs verbatim.
"""
import json, os, re, shlex, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / 'nbs' / 'experiments'
NOTEBOOKS = sorted(p.stem for p in EXP.glob('*.ipynb'))
ORDER = ['train_eval', 'cxr_study', 'ct_study', 'fairness_report', 'figures']    # report and figures read a sweep
TINY = {'epsilons': '[inf, 8]', 'seeds': '[0]', 'jobs': '1', 'n_boot': '50',
        'settings': '{data.n_patients: 80, data.image_size: 16, train.epochs: 1, model.width: 0.125, '
                    'train.batch_size: 32, eval.n_boot: 50}'}


def _nb(name): return json.loads((EXP / f'{name}.ipynb').read_text(encoding='utf-8'))

def documented_commands(name) -> list:
    "The `papermill ...` lines of the notebook's markdown code blocks (backslash continuations joined)."
    cmds = []
    for c in _nb(name)['cells']:
        if c['cell_type'] != 'markdown': continue
        for block in re.findall(r'```[^\n]*\n(.*?)```', ''.join(c['source']), re.S):
            cmds += [l.strip() for l in block.replace('\\\n', ' ').splitlines() if l.strip().startswith('papermill ')]
    return cmds

def notebook_parameters(name) -> set:
    "Names assigned in the cell tagged `parameters`."
    import ast
    cell = [c for c in _nb(name)['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    assert len(cell) == 1, f"{name}: expected one cell tagged 'parameters'"
    tree = ast.parse(''.join(cell[0]['source']))
    return {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}

def given_parameters(argv) -> dict:
    "Parameters set by `-p NAME VALUE` (as text) and `-y YAML` (parsed) in a papermill argv."
    out, i = {}, 3
    while i < len(argv):
        if argv[i] in ('-p', '--parameters'): out[argv[i + 1]] = argv[i + 2]; i += 3
        elif argv[i] in ('-y', '--parameters_yaml'): out.update(yaml.safe_load(argv[i + 1])); i += 2
        else: raise AssertionError(f"unexpected papermill option {argv[i]!r} in {shlex.join(argv)}")
    return out

def shrink(argv, params) -> list:
    "The same command with tiny values for the study-size parameters, each in the form the command gives it."
    given = given_parameters(argv)
    argv, i = list(argv), 3
    while i < len(argv):
        if argv[i] == '-p':
            if argv[i + 1] in TINY: argv[i + 2] = TINY[argv[i + 1]]
            i += 3
        else:
            y = yaml.safe_load(argv[i + 1])
            argv[i + 1] = yaml.safe_dump({k: yaml.safe_load(TINY[k]) if k in TINY else v for k, v in y.items()},
                                         default_flow_style=True, width=10**6).strip()
            i += 2
    return argv + [a for k in sorted(set(TINY) & params - set(given)) for a in ('-p', k, TINY[k])]


def test_every_experiment_notebook_is_known_and_documents_a_command():
    assert sorted(ORDER) == NOTEBOOKS, "add the new experiment notebook to ORDER (and a check below)"
    for name in NOTEBOOKS: assert documented_commands(name), f"{name}.ipynb documents no papermill command"


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_documented_commands_name_the_notebook_and_its_parameters(name):
    params = notebook_parameters(name)
    for cmd in documented_commands(name):
        argv = shlex.split(cmd)
        assert argv[:2] == ['papermill', f'nbs/experiments/{name}.ipynb'] and argv[2].endswith('.ipynb'), cmd
        unknown = set(given_parameters(argv)) - params
        assert not unknown, f"{name}: documented command sets unknown parameters {sorted(unknown)}: {cmd}"


ALL = sorted(str(p.relative_to(ROOT / 'nbs')) for p in (ROOT / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)

@pytest.mark.parametrize('path', ALL)
def test_notebook_names_the_dpmed_kernel_and_python(path):
    "Chapters and experiments name the `dpmed` kernel and Python (kept by nbdev_clean: settings.ini)."
    md = json.loads((ROOT / 'nbs' / path).read_text(encoding='utf-8'))['metadata']
    fix = (f"{path}: the notebook must name the kernel: open it in Jupyter with the 'Python (dpmed)' kernel, or set its "
           "metadata to kernelspec {name: dpmed, display_name: dpmed, language: python} and language_info {name: python}")
    assert md.get('kernelspec', {}).get('name') == 'dpmed' and md['kernelspec'].get('language') == 'python', fix
    assert md.get('language_info', {}).get('name') == 'python', fix


def test_dpmed_kernel_is_registered_for_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try: spec = KernelSpecManager().get_kernel_spec('dpmed')
    except NoSuchKernel: pytest.fail("no 'dpmed' Jupyter kernel: run `make kernel` (make test and make reproduce do)")
    assert spec.language == 'python' and os.path.samefile(spec.argv[0], sys.executable), spec.argv


def _no_errors(path):
    nb = json.loads(Path(path).read_text(encoding='utf-8'))
    errs = [o for c in nb['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error']
    assert not errs, errs
    return nb

def _val(v):
    "A parameter as the notebook sees it: `-p` text parsed as YAML, `-y` values as they are."
    return yaml.safe_load(v) if isinstance(v, str) else v

def _check(name, params, cwd):
    "What each notebook must have written, given the parameters the command set."
    if name == 'train_eval':
        m = json.loads((cwd / params['run_dir'] / 'metrics.json').read_text())
        overrides = params.get('overrides')
        if overrides is not None:                       # `-p overrides '[...]'` arrived as a list of overrides
            eps = [float(o.split('=')[1]) for o in _val(overrides) if o.startswith('privacy.epsilon=')]
            assert m['private'] and 0 < float(m['epsilon']) <= eps[0] * 1.001, m['epsilon']
        else: assert m['auroc_mean'] > 0                # the tiny default configuration
    elif name in ('cxr_study', 'ct_study'):
        res = pd.read_csv(cwd / params['out'] / 'results.csv')
        eps = _val(params.get('epsilons', ['inf', 8]))
        seeds = _val(params.get('seeds', [0]))
        assert len(res) == len(eps) * len(seeds), res
        assert set(res.dataset) == {'phantom_' + name.split('_')[0]}
        assert (cwd / params['out'] / 'figures' / 'auroc_vs_epsilon.png').exists()
    elif name == 'fairness_report':
        spd = pd.read_csv(cwd / params['results_dir'] / 'fairness' / 'spd.csv')
        assert {'sex', 'age_group'} <= set(spd.attribute)
    elif name == 'figures':
        assert (cwd / params['out'] / 'auroc_vs_epsilon.png').stat().st_size > 10_000


@pytest.mark.slow
def test_documented_commands_run_as_written(tmp_path):
    "Run every documented command in a fresh folder (with `nbs/` as in a checkout) and check what it wrote."
    (tmp_path / 'nbs').symlink_to(ROOT / 'nbs')
    env = {**os.environ, 'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ORDER:
        for cmd in documented_commands(name):
            argv = shlex.split(cmd)
            run = shrink(argv, notebook_parameters(name)) if 'settings' in given_parameters(argv) else argv
            text = cmd if run == argv else shlex.join(run)
            p = subprocess.run(['bash', '-c', text], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            assert p.returncode == 0, f"{text}\n{p.stderr[-3000:]}"
            nb = _no_errors(tmp_path / run[2])
            assert nb['metadata']['kernelspec']['name'] == 'dpmed'
            _check(name, given_parameters(run), tmp_path)


def test_progress_bars_are_widgets_in_jupyter(tmp_path):
    "tqdm.auto (the training loop's progress bar) draws a Jupyter widget on the dpmed kernel, not 'IProgress not found'."
    import nbformat, papermill as pm
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='steps'): pass")])
    nb.metadata.update(kernelspec={'name': 'dpmed', 'language': 'python', 'display_name': 'dpmed'})
    nbformat.write(nb, tmp_path / 'bar.ipynb')
    out = pm.execute_notebook(str(tmp_path / 'bar.ipynb'), str(tmp_path / 'out.ipynb'), progress_bar=False)
    outputs = out.cells[0].outputs
    assert not any('IProgress' in o.get('text', '') for o in outputs), outputs
    assert any('application/vnd.jupyter.widget-view+json' in o.get('data', {}) for o in outputs), outputs
