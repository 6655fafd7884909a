"README.md is rendered from nbs/index.ipynb; the two must not drift apart."
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_matches_index_notebook():
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'render_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_readme_has_exactly_the_two_setup_commands():
    text = (ROOT / 'README.md').read_text()
    block = text.split('## Set up')[1].split('```sh')[1].split('```')[0]
    cmds = [l.split('#')[0].strip() for l in block.strip().splitlines()]
    assert cmds == ['make reproduce', 'make test']
    assert (ROOT / 'figures' / 'auroc_vs_epsilon.png').exists()


def test_readme_tables_come_from_the_files_make_reproduce_writes():
    "Every `<!-- include: PATH -->` in README is followed by PATH's current content (refreshed without hand edits)."
    import re
    text = (ROOT / 'README.md').read_text()
    marks = re.findall(r'^<!-- include: (\S+) -->$', text, re.M)
    assert 'figures/summary.md' in marks
    assert (ROOT / 'figures' / 'summary.md').exists()
    for rel in marks:
        f = ROOT / rel
        after = text.split(f'<!-- include: {rel} -->', 1)[1].lstrip('\n')
        assert after.startswith(f.read_text().strip() if f.exists() else f'*({rel} is written by `make reproduce`)*'), rel
