"""Render nbs/index.ipynb to README.md without quarto (nbdev_readme needs the quarto binary, which is not
available offline): the notebook's markdown cells, in order. `--check` exits 1 if README.md is out of date."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render() -> str:
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text(encoding='utf-8'))
    parts = [''.join(c['source']).strip() for c in nb['cells'] if c['cell_type'] == 'markdown']
    note = '<!-- generated from nbs/index.ipynb by tools/render_readme.py; edit the notebook, not this file -->'
    return note + '\n\n' + '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if readme.read_text(encoding='utf-8') != text:
            print('README.md is out of date: run `python tools/render_readme.py`'); sys.exit(1)
    else:
        readme.write_text(text, encoding='utf-8')
