"""Start-up of the command line stays light: parsing (and every `--help`) imports no torch, pandas, NumPy or
dpmed chapter; handlers are imported only when their command runs. Times are measured by
benchmarks/cli_startup.py, not asserted here."""
import json, subprocess, sys
from pathlib import Path

import pytest

from dpmed.cli import build_parser

HEAVY = ('torch', 'pandas', 'numpy', 'scipy', 'opacus', 'matplotlib', 'sklearn', 'papermill', 'yaml')
ROOT = Path(__file__).resolve().parents[1]


def imported_after(code: str) -> set:
    "Top-level modules, and dpmed submodules, imported by a fresh interpreter running `code`."
    probe = (f"import sys\n{code}\n"
             "print('\\n'.join(m for m in sys.modules if '.' not in m or m.startswith('dpmed.')))")
    r = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def every_help_argv() -> list:
    "argv of `--help` for every command and subcommand the parser knows (walked, not listed by hand)."
    import argparse
    out = [['--help'], ['--version']]
    def walk(parser, prefix):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, p in a.choices.items():
                    out.append(prefix + [name, '--help']); walk(p, prefix + [name])
    walk(build_parser(), [])
    return out


def test_help_of_every_command_imports_nothing_heavy():
    argvs = every_help_argv()
    assert len(argvs) >= 20 and ['data', 'convert', 'ct-folder', '--help'] in argvs
    code = ("import contextlib, io\nfrom dpmed.cli import main\n"
            f"for a in {argvs!r}:\n"
            "    with contextlib.redirect_stdout(io.StringIO()): assert main(a) == 0, a\n")
    mods = imported_after(code)
    assert not [m for m in HEAVY if m in mods], sorted(m for m in HEAVY if m in mods)
    assert {m for m in mods if m.startswith('dpmed.')} == {'dpmed.cli'}


def test_a_command_imports_only_its_own_chapter():
    mods = imported_after("from dpmed.cli import main\nassert main(['accountant', '--sample-rate', '0.01', "
                          "'--noise-multiplier', '1', '--steps', '10', '--delta', '1e-5', '--accountant', 'gdp', '--json']) == 0")
    assert 'dpmed.accounting' in mods and 'pandas' not in mods and 'dpmed.data' not in mods


def test_every_handler_exists_and_follows_the_naming_scheme():
    import importlib
    specs = set()
    def collect(parser):
        import argparse
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for p in a.choices.values():
                    f = p.get_default('func')
                    if f is not None: specs.add(f.spec)
                    collect(p)
    collect(build_parser())
    assert len(specs) == 11
    for spec in specs:
        mod, name = spec.split(':')
        assert name.startswith('_cmd_') and callable(getattr(importlib.import_module(mod), name)), spec


def test_benchmark_script_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'cli_startup.py'), '--repeats', '1',
                        '--out', str(tmp_path / 'b.json')], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / 'b.json').read_text())['results']
    assert 'dpmed --help' in res and 'dpmed calibrate --help' in res and all(v['median_s'] > 0 for v in res.values())


def test_help_names_every_registered_accountant(capsys):
    "The help text names the accountants without importing the registry; it must list exactly the registry's."
    import re
    from dpmed.accounting import ACCOUNTANTS
    from dpmed.cli import main
    for cmd in ('accountant', 'calibrate'):
        assert main([cmd, '--help']) == 0
        text = ' '.join(capsys.readouterr().out.split())
        named = re.search(r'--accountant NAME (.*?) \(dpmed\.accounting\.ACCOUNTANTS\)', text).group(1)
        assert set(re.findall(r'[a-z]+', named)) - {'default', 'or'} == set(ACCOUNTANTS), named
