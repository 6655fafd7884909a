"""Sphinx configuration of the dpmed documentation site (built by docs/build.py; see docs/docs.md for why Sphinx).

Everything the pages need is served from the site itself: MathJax comes from the `django-static-mathjax` wheel
(MathJax 3, no Django needed) and is copied into _static/mathjax, so formulas render without a network.
"""
import configparser, os, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                       # autodoc imports the package from this checkout
os.environ.setdefault('OMP_NUM_THREADS', '1')

_ini = configparser.ConfigParser(delimiters=['=']); _ini.read(ROOT / 'settings.ini', encoding='utf-8')
_cfg = _ini['DEFAULT']

project = _cfg['title']
author = _cfg['author']
copyright = _cfg['copyright']
release = version = _cfg['version']

extensions = ['myst_nb', 'sphinx.ext.autodoc', 'sphinx.ext.mathjax', 'sphinx.ext.viewcode']
root_doc = 'index'
exclude_patterns = ['**.ipynb_checkpoints']
suppress_warnings = ['myst.header']                  # chapters start at '#', later sections may skip levels

# notebooks: shown as prose and code, never executed; $...$ and $$...$$ are math
nb_execution_mode = 'off'
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence']
myst_heading_anchors = 3

# API reference from the docstrings
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_default_options = {'members': True}
add_module_names = False
default_role = 'literal'                              # docstrings write `name` for code, as in markdown

# MathJax 3 from the local copy (the default would load it from a CDN)
def _mathjax_dir() -> Path:
    import mathjax                                   # the django-static-mathjax wheel: MathJax's es5 build
    return Path(mathjax.__file__).parent / 'static' / 'mathjax' / 'es5'

mathjax_path = 'mathjax/tex-chtml.js'

html_theme = 'sphinx_book_theme'
html_title = 'dpmed'
html_static_path = []
html_theme_options = {
    'home_page_in_toc': True,
    'show_navbar_depth': 1,
    'show_toc_level': 2,
    'use_download_button': False,
    'use_fullscreen_button': False,
    'navigation_with_keys': False,
}
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False


def _copy_mathjax(app, exception):
    "Copy the MathJax files the pages load (CommonHTML output, its fonts, TeX extensions, menu, a11y)."
    if exception is not None or app.builder.format != 'html': return
    import shutil
    src, dst = _mathjax_dir(), Path(app.outdir) / '_static' / 'mathjax'
    if (dst / 'tex-chtml.js').exists() and (dst / 'tex-chtml.js').stat().st_size == (src / 'tex-chtml.js').stat().st_size:
        return
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / 'tex-chtml.js', dst / 'tex-chtml.js')
    for d in ('input', 'output', 'ui', 'a11y', 'adaptors', 'sre'):
        shutil.copytree(src / d, dst / d, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns('svg', 'svg.js') if d == 'output' else None)


_CODE = re.compile(r'(``.*?``|`[^`]*`)')

def _plain_docstring(app, what, name, obj, options, lines):
    "Docstrings here are plain text with `code`: escape what reST would read as markup (`*`, `|`, `name_`)."
    for k, line in enumerate(lines):
        parts = _CODE.split(line)
        for j in range(0, len(parts), 2):
            parts[j] = re.sub(r'(\w)_\b', r'\1\\_', parts[j].replace('*', r'\*').replace('|', r'\|'))
        lines[k] = ''.join(parts)


def _keep_outputs_in_proc(app):
    "MyST-NB writes notebook output files next to the site (`_docs/../jupyter_execute`): keep them in _proc/ instead."
    cfg = app.env.mystnb_config
    app.env.mystnb_config = cfg.copy(output_folder=str(Path(app.srcdir).parent / 'jupyter_execute'),
                                     execution_cache_path=str(Path(app.srcdir).parent / 'jupyter_cache'))


def setup(app):
    app.connect('builder-inited', _keep_outputs_in_proc, priority=900)   # after MyST-NB's own set-up
    app.connect('build-finished', _copy_mathjax)
    app.connect('autodoc-process-docstring', _plain_docstring)
