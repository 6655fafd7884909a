"""Build the documentation site from the notebooks, offline: `python docs/build.py` -> _docs/index.html.

Sphinx reads a staging copy of the sources in _proc/docs (nothing in nbs/ is touched):
- nbs/index.ipynb (the README) as the home page, with a hidden table of contents appended;
- every chapter nbs/NN_*.ipynb in file order, and every experiment notebook, with nbdev's directives removed
  (`#| hide` cells dropped, `#| export` lines stripped, the `- key: value` front matter taken out of the title
  cell); notebooks are shown as prose and code, without executing them;
- figures/*.png, so the README and chapter *figures* show the committed figures;
- one API page per module of dpmed/, generated from the docstrings by sphinx.ext.autodoc;
- the pages in docs/*.md.
A file is written to the staging folder only when its content changed, so Sphinx rebuilds only what changed.
"""
from __future__ import annotations

import argparse, json, re, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, DOCS = ROOT / 'nbs', ROOT / 'docs'
DIRECTIVE = re.compile(r'^\s*#\s*\|')
FRONT_MATTER = re.compile(r'^- [A-Za-z_]+: .*$', re.M)


def write_if_changed(path: Path, data: bytes | str) -> None:
    "Write `path` only when its content differs (keeps mtimes, so Sphinx rebuilds only changed pages)."
    data = data.encode('utf-8') if isinstance(data, str) else data
    if path.exists() and path.read_bytes() == data: return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def directives(cell) -> list:
    "nbdev's `#| name ...` directives of a code cell."
    return [l.split('|', 1)[1].strip() for l in ''.join(cell['source']).splitlines() if DIRECTIVE.match(l)]


def strip_nbdev(nb: dict) -> dict:
    "The notebook as a reader sees it: hidden cells dropped, directive lines and front matter removed, no outputs."
    cells = []
    for i, c in enumerate(nb['cells']):
        src = ''.join(c['source'])
        if c['cell_type'] == 'code':
            ds = directives(c)
            if any(d.split()[0] in ('hide', 'default_exp') for d in ds if d): continue
            src = '\n'.join(l for l in src.splitlines() if not DIRECTIVE.match(l)).strip('\n')
            if not src.strip(): continue
            c = {**c, 'outputs': [], 'execution_count': None}
        elif c['cell_type'] == 'markdown' and not cells:
            src = FRONT_MATTER.sub('', src).rstrip() + '\n'
        cells.append({**c, 'source': src})
    return {**nb, 'cells': cells}


def stage_notebook(src: Path, dst: Path, extra_md: str | None = None) -> None:
    nb = strip_nbdev(json.loads(src.read_text(encoding='utf-8')))
    if extra_md:
        nb['cells'].append({'cell_type': 'markdown', 'id': 'dpmed-docs-toc', 'metadata': {}, 'source': extra_md})
    write_if_changed(dst, json.dumps(nb, indent=1, ensure_ascii=False) + '\n')


def chapters() -> list:
    "Chapter notebooks in reading order (their file names: 00_core, 01_config, ..., 04a_adapters after 04_data)."
    return sorted(p for p in NBS.glob('*.ipynb') if p.name != 'index.ipynb')


def modules() -> list:
    "(module name, chapter stem) for every exported module of dpmed."
    out = []
    for py in sorted((ROOT / 'dpmed').glob('*.py')):
        if py.name.startswith('_'): continue
        m = re.search(r'File to edit: \.\./nbs/(.+?)\.ipynb', py.read_text(encoding='utf-8')[:2000])
        out.append((f'dpmed.{py.stem}', m.group(1) if m else None))
    return out


def toc(title: str, entries: list, hidden: bool = True, maxdepth: int = 1) -> str:
    opts = f':caption: {title}\n:maxdepth: {maxdepth}\n' + (':hidden:\n' if hidden else '')
    return '```{toctree}\n' + opts + '\n' + '\n'.join(entries) + '\n```\n'


def api_pages(stage: Path) -> list:
    "One page per module (its docstrings via autodoc, a link to its chapter) and the API index."
    names = []
    for mod, chapter in modules():
        short = mod.split('.')[1]
        link = f"Source chapter: [{chapter}](../{chapter}.ipynb). " if chapter else ''
        write_if_changed(stage / 'api' / f'{short}.md',
                         f"# `{mod}`\n\n{link}Generated from the docstrings.\n\n"
                         f"```{{eval-rst}}\n.. automodule:: {mod}\n   :members:\n   :show-inheritance:\n```\n")
        names.append(short)
    write_if_changed(stage / 'api' / 'index.md',
                     "# API reference\n\nEvery public name of the package, module by module, from its docstrings "
                     "(the chapters explain the why; these pages list signatures and one-line summaries).\n\n"
                     + toc('Modules', names, hidden=False))
    return names


def stage(stage_dir: Path) -> Path:
    "Lay out the Sphinx sources in `stage_dir`; stale files from earlier layouts are removed."
    keep = set()
    def track(p: Path): keep.add(p.resolve()); return p
    chs = chapters()
    exps = sorted((NBS / 'experiments').glob('*.ipynb'))
    pages = sorted(DOCS.glob('*.md'))
    for p in chs: stage_notebook(p, track(stage_dir / p.name))
    for p in exps: stage_notebook(p, track(stage_dir / 'experiments' / p.name))
    for p in pages: write_if_changed(track(stage_dir / p.name), p.read_bytes())
    for p in sorted((ROOT / 'figures').glob('*.png')): write_if_changed(track(stage_dir / 'figures' / p.name), p.read_bytes())
    for n in api_pages(stage_dir) + ['index']: track(stage_dir / 'api' / f'{n}.md')
    index_toc = (toc('Chapters', [p.stem for p in chs]) + '\n'
                 + toc('Experiment notebooks', [f'experiments/{p.stem}' for p in exps]) + '\n'
                 + toc('Reference', ['api/index'] + [p.stem for p in pages]))
    stage_notebook(NBS / 'index.ipynb', track(stage_dir / 'index.ipynb'), index_toc)
    for p in stage_dir.rglob('*'):
        if p.is_file() and p.suffix in ('.ipynb', '.md', '.png') and p.resolve() not in keep: p.unlink()
    return stage_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT / '_docs'), help='the site (default: _docs)')
    ap.add_argument('--stage', default=str(ROOT / '_proc' / 'docs'), help='staging folder (default: _proc/docs)')
    ap.add_argument('--fresh', action='store_true', help='rebuild every page')
    ap.add_argument('-q', '--quiet', action='store_true')
    args = ap.parse_args(argv)
    from sphinx.cmd.build import build_main
    src = stage(Path(args.stage))
    doctrees = Path(args.stage).parent / 'doctrees'
    opts = ['-b', 'html', '-c', str(DOCS), '-d', str(doctrees), '-j', '1', '--keep-going']
    if args.fresh: opts.append('-E')
    if args.quiet: opts.append('-q')
    return build_main([*opts, str(src), args.out])


if __name__ == '__main__':
    sys.exit(main())
