"""Render nbs/index.ipynb to README.md without quarto (nbdev_readme needs the quarto binary, which is not
available offline): the notebook's markdown cells, in order. A line `<!-- include: PATH -->` (PATH relative to the
repository root, e.g. figures/summary.md) is followed by that file's current content, so the result tables in
README are the ones `make reproduce` last wrote. `--check` exits 1 if README.md is out of date."""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r'^<!-- include: (\S+) -->[ \t]*$', re.M)


def include(m) -> str:
    "The include marker followed by the file's content (or a note saying which command writes it)."
    rel = m.group(1)
    path = (ROOT / rel).resolve()
    if ROOT not in path.parents: raise SystemExit(f'nbs/index.ipynb: include {rel!r} is outside the repository')
    body = path.read_text(encoding='utf-8').strip() if path.exists() else f'*({rel} is written by `make reproduce`)*'
    return f'{m.group(0).rstrip()}\n\n{body}'


def render() -> str:
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text(encoding='utf-8'))
    parts = [INCLUDE.sub(include, ''.join(c['source']).strip()) for c in nb['cells'] if c['cell_type'] == 'markdown']
    note = '<!-- generated from nbs/index.ipynb by tools/render_readme.py; edit the notebook, not this file -->'
    return note + '\n\n' + '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if readme.read_text(encoding='utf-8') != text:
            print('README.md is out of date: run `python tools/render_readme.py`'); sys.exit(1)
    else:
        readme.write_text(text, encoding='utf-8')
