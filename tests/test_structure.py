"""The package's shape (issue 14): imports flow one way, imports inside functions are few and named as deferred,
functions stay short. Read from the source with `ast`, so a violation names the file and line."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / 'dpmed'
MODULES = {p.stem: p for p in sorted(PKG.glob('*.py')) if not p.stem.startswith('_')}


def _tree(name):
    return ast.parse(MODULES[name].read_text(encoding='utf-8'))


def _dpmed_target(node):
    "The dpmed module an import statement names (None for third-party imports)."
    if isinstance(node, ast.ImportFrom):
        mod = node.module or ''
        if node.level: return mod.split('.')[0] if mod else None
        return mod.split('.')[1] if mod.startswith('dpmed.') else None
    return None


def top_level_graph() -> dict:
    return {m: {t for n in _tree(m).body if (t := _dpmed_target(n)) in MODULES} for m in MODULES}


def find_cycle(graph: dict) -> list | None:
    "A cycle of `graph` (module -> imported modules) as a path, or None."
    state = {}
    def visit(m, path):
        if state.get(m) == 'done': return None
        if state.get(m) == 'open': return path + [m]
        state[m] = 'open'
        for d in sorted(graph.get(m, ())):
            if (c := visit(d, path + [m])): return c
        state[m] = 'done'
    return next((c for m in graph if (c := visit(m, []))), None)


def test_module_imports_form_no_cycle():
    graph = top_level_graph()
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    assert graph['core'] == set() and 'cli' not in set().union(*graph.values())
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']     # the check can fail


def test_imports_inside_functions_are_named_as_deferred():
    bad = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding='utf-8').splitlines()
        for fn in ast.walk(_tree(name)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            for n in ast.walk(fn):
                target = _dpmed_target(n)
                if target is None or target == 'cli': continue
                here = lines[n.lineno - 1] + lines[n.lineno - 2]
                if 'deferred' not in here: bad.append(f"{path.name}:{n.lineno} {fn.name}: {lines[n.lineno - 1].strip()}")
    assert not bad, 'imports inside functions not named as deferred:\n' + '\n'.join(bad)


def test_no_function_is_longer_than_60_lines():
    long = [f"{p.name}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for m, p in MODULES.items() for n in ast.walk(_tree(m))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, 'functions over 60 lines:\n' + '\n'.join(long)


def test_every_notebook_code_cell_parses():
    "nbdev_test skips a cell with a syntax error and still reports success, so the checks in it would never run."
    import json
    bad = []
    for nb in sorted((PKG.parent / 'nbs').rglob('*.ipynb')):
        if '.ipynb_checkpoints' in nb.parts: continue
        for i, c in enumerate(json.loads(nb.read_text(encoding='utf-8'))['cells']):
            if c['cell_type'] != 'code': continue
            code = '\n'.join(l for l in ''.join(c['source']).splitlines() if not l.lstrip().startswith(('%', '!')))
            try: ast.parse(code)
            except SyntaxError as e: bad.append(f"{nb.relative_to(PKG.parent)} cell {i}: {e.msg} (line {e.lineno})")
    assert not bad, 'notebook cells that do not parse:\n' + '\n'.join(bad)
