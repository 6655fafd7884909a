"""The documentation site builds offline from the notebooks and renders in a real browser.

`docs/build.py` builds _docs/ (incrementally: after `make docs` this is quick). Headless Chromium (Debian's
`chromium`, driven over its DevTools protocol on the loopback interface) opens the home page and chapters, waits
for MathJax, and the checks look at the screenshot: the figure on the page matches the committed PNG pixel for
pixel (after scaling), and where a formula is there is typeset ink drawn with MathJax's own fonts. Every request
the pages make must be a local file: the site works without a network. Screenshots are kept in
_proc/docs-screenshots/ to look at.
"""
import base64, io, json, os, re, shutil, subprocess, sys, time, urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / '_docs'
SHOTS = ROOT / '_proc' / 'docs-screenshots'
CHAPTERS = sorted(p.stem for p in (ROOT / 'nbs').glob('*.ipynb') if p.stem != 'index')
EXPERIMENTS = sorted(p.stem for p in (ROOT / 'nbs' / 'experiments').glob('*.ipynb'))
MODULES = sorted(p.stem for p in (ROOT / 'dpmed').glob('*.py') if not p.name.startswith('_'))
FATAL = re.compile(r'image file not readable|nonexisting document|failed to import|not included in any toctree|'
                   r'undefined label|Unknown directive|Unknown interpreted text role|Could not lex', re.I)


def _tree_state() -> dict:
    "mtime and size of every file of the checkout, outside the build's own folders, .git, venvs and run outputs."
    skip = re.compile(r'^(\.git|\.venv.*|_docs|_proc|runs|__pycache__|\.pytest_cache|.*\.egg-info)$')
    out = {}
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if not skip.match(x)]
        for f in files:
            st = os.stat(os.path.join(d, f)); out[os.path.join(d, f)] = (st.st_mtime_ns, st.st_size)
    return out


@pytest.fixture(scope='module')
def site():
    before = _tree_state()
    r = subprocess.run([sys.executable, str(ROOT / 'docs' / 'build.py'), '-q'], capture_output=True, text=True,
                       timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    fatal = [l for l in r.stderr.splitlines() if 'WARNING' in l and FATAL.search(l)]
    assert not fatal, '\n'.join(fatal)
    after = _tree_state()
    added_or_removed = sorted(set(before) ^ set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k]
                     and Path(k).relative_to(ROOT).parts[0] in ('docs', 'figures', 'settings.ini', 'setup.py'))
    assert not added_or_removed and not changed, \
        f"building the docs touched files outside _docs/ and _proc/: {(added_or_removed + changed)[:10]}"
    return SITE


def test_every_chapter_experiment_and_module_has_a_page_in_reading_order(site):
    home = (site / 'index.html').read_text(encoding='utf-8')
    nav = home[home.index('bd-docs-nav'):]
    nav = nav[:nav.index('</nav>')]                                                # the sidebar's links only
    order = [m for m in re.findall(r'href="([\w./-]+)\.html', nav)]
    for name in CHAPTERS: assert (site / f'{name}.html').exists(), name
    assert [o for o in order if o in CHAPTERS] == CHAPTERS                     # the sidebar reads 00, 01, ..., 14
    for name in EXPERIMENTS: assert f'experiments/{name}' in order and (site / 'experiments' / f'{name}.html').exists()
    for m in MODULES: assert (site / 'api' / f'{m}.html').exists(), m


def test_api_reference_is_generated_from_the_docstrings(site):
    from dpmed.runner import list_param
    page = (site / 'api' / 'runner.html').read_text(encoding='utf-8')
    assert 'id="dpmed.runner.list_param"' in page                                  # a documented function...
    summary = list_param.__doc__.split(':')[0]
    assert summary in re.sub(r'<[^>]+>', '', page).replace('&#8217;', "'")         # ...with its docstring text
    assert '10b_runner.html' in page                                              # and a link to its chapter


def test_pages_load_nothing_from_the_network(site):
    for page in site.rglob('*.html'):
        for tag in re.findall(r'<(?:script|link|img|iframe)\b[^>]*>', page.read_text(encoding='utf-8')):
            if re.search(r'rel="(?:canonical|alternate)"', tag): continue
            remote = re.search(r'(?:src|href)="((?:https?:)?//[^"]+)"', tag)
            assert not remote, f"{page.relative_to(site)} loads {remote.group(1)}"
    assert (site / '_static' / 'mathjax' / 'tex-chtml.js').exists()
    assert list((site / '_static' / 'mathjax' / 'output' / 'chtml' / 'fonts' / 'woff-v2').glob('MathJax_Main-Regular.woff'))


# ---------------------------------------------------------------------------------------------------- the browser
class Chromium:
    "Headless Chromium driven over the DevTools protocol (websocket on 127.0.0.1)."
    FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync', '--hide-scrollbars',
             '--window-size=1280,1000', '--remote-debugging-port=0']

    def __init__(self, profile: Path):
        exe = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
        if exe is None: pytest.fail("headless Chromium is needed for the docs test: `make browser` "
                                    "(apt-get install chromium) installs it")
        self.proc = subprocess.Popen([exe, *self.FLAGS, f'--user-data-dir={profile}', 'about:blank'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, t0 = profile / 'DevToolsActivePort', time.time()
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            assert self.proc.poll() is None and time.time() - t0 < 60, 'chromium did not start'
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        local = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: never via a proxy
        targets = json.loads(local.open(f'http://127.0.0.1:{port}/json/list', timeout=30).read())
        import websocket
        url = next(t['webSocketDebuggerUrl'] for t in targets if t['type'] == 'page')
        self.ws, self.n, self.events = websocket.create_connection(url, timeout=120, suppress_origin=True), 0, []
        self.send('Page.enable'); self.send('Network.enable')

    def send(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({'id': self.n, 'method': method, 'params': params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == self.n:
                if 'error' in msg: raise RuntimeError(f"{method}: {msg['error']}")
                return msg['result']
            self.events.append(msg)

    def open(self, path: Path) -> None:
        "Load a page (until its load event)."
        self.events.clear()
        self.send('Page.navigate', url=path.as_uri())
        while not any(e.get('method') == 'Page.loadEventFired' for e in self.events):
            self.events.append(json.loads(self.ws.recv()))

    def requested(self) -> list:
        "Every URL the page has requested since it was opened (MathJax's later font and extension loads included)."
        return [e['params']['request']['url'] for e in self.events if e.get('method') == 'Network.requestWillBeSent']

    def evaluate(self, js: str):
        r = self.send('Runtime.evaluate', expression=js, awaitPromise=True, returnByValue=True)
        if 'exceptionDetails' in r: raise RuntimeError(r['exceptionDetails'])
        return r['result']['value']

    def shot(self, selector=None, i=0) -> Image.Image:
        "Screenshot of the first screen, or of the `i`-th element matching `selector` (scrolled into view)."
        kw = {}
        if selector:
            box = self.evaluate(BOX % (json.dumps(selector), i))
            kw = {'clip': {**box, 'scale': 1}}
        return Image.open(io.BytesIO(base64.b64decode(self.send('Page.captureScreenshot', format='png', **kw)['data'])))

    def close(self):
        self.ws.close(); self.proc.terminate(); self.proc.wait(timeout=30)


BOX = """(() => {
  const e = document.querySelectorAll(%s)[%d];
  e.scrollIntoView({block: 'center'});
  const r = e.getBoundingClientRect();
  return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height};
})()"""
DISPLAY, INLINE, IMAGE = 'mjx-container[display="true"]', 'mjx-container:not([display="true"])', 'article img'

LAYOUT = """(async () => {
  for (let i = 0; i < 200 && document.querySelector('.math') && !(window.MathJax && MathJax.startup); i++)
    await new Promise(r => setTimeout(r, 50));
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  await document.fonts.ready;
  const box = e => { const r = e.getBoundingClientRect(); return {width: r.width, height: r.height}; };
  const math = [...document.querySelectorAll('mjx-container')];
  return {
    typeset: math.length, errors: document.querySelectorAll('mjx-merror').length,
    untypeset: [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container') && /\\\\[(\\[]/.test(e.textContent)).length,
    fonts: [...document.fonts].filter(f => f.family.startsWith('MJX')).map(f => [f.family, f.status]),
    display: math.filter(m => m.getAttribute('display') === 'true').map(box),
    inline: math.filter(m => m.getAttribute('display') !== 'true').map(box),
    images: [...document.querySelectorAll('article img')].map(i => ({src: i.getAttribute('src'),
             loaded: i.complete && i.naturalWidth > 0, ...box(i)})),
  };
})()"""


@pytest.fixture(scope='module')
def browser(site, tmp_path_factory):
    b = Chromium(tmp_path_factory.mktemp('chromium-profile'))
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield b
    b.close()


def look(browser, page: str) -> dict:
    "Open a page of the site, wait for MathJax, keep a screenshot of the first screen; its layout facts."
    browser.open(SITE / page)
    info = browser.evaluate(LAYOUT)
    urls = browser.requested()
    assert any('mathjax' in u for u in urls), urls
    remote = [u for u in urls if not u.startswith(('file:', 'data:', 'blob:'))]
    assert not remote, f"{page} requested {remote}"
    browser.shot().save(SHOTS / (page.replace('/', '_').replace('.html', '.png')))
    assert info['errors'] == 0 and info['untypeset'] == 0, info
    fonts = dict(info['fonts'])
    assert fonts and 'error' not in fonts.values() and 'loaded' in fonts.values(), fonts   # MathJax's own fonts
    return info


def assert_formula_rendered(browser, selector, i, name):
    "Typeset ink where the formula is: dark glyph pixels spread over its box, neither empty nor a solid block."
    img = browser.shot(selector, i).convert('L'); img.save(SHOTS / f'{name}.png')
    ink = np.asarray(img) < 160
    assert ink.any(), f"{name}: nothing drawn where the formula is"
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    glyphs = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]                      # the formula's inked box
    assert glyphs.shape[0] >= 10 and glyphs.shape[1] >= 60, (name, glyphs.shape)
    assert 0.05 < glyphs.mean() < 0.6, (name, glyphs.mean())                     # strokes, not a solid block
    assert np.abs(np.diff(glyphs.any(axis=0).astype(int))).sum() >= 8, name     # several separate glyphs


def assert_figure_rendered(browser, images, i, name):
    "The `i`-th image on screen is the committed PNG: the same picture after scaling (grey levels correlate)."
    img = images[i]
    assert img['loaded'] and img['width'] > 200 and img['height'] > 100, img
    shot = browser.shot(IMAGE, i).convert('L')
    shot.save(SHOTS / f'{name}.png')
    ref = Image.open(ROOT / 'figures' / Path(img['src']).name).convert('L')
    size = (128, max(8, round(128 * shot.size[1] / shot.size[0])))           # compare at 128 px wide (box filter):
    a, b = (np.asarray(x.resize(size, Image.BOX), dtype=float).ravel() for x in (shot, ref))   # no aliasing of thin lines
    assert a.std() > 10, name                                                   # not a blank box
    r, diff = np.corrcoef(a, b)[0, 1], np.abs(a - b).mean()
    assert r > 0.9 and diff < 10, (name, r, diff)                               # another figure: r ~0.1, diff ~17


def test_home_page_shows_the_figure_and_the_math(browser):
    info = look(browser, 'index.html')
    figs = [k for k, i in enumerate(info['images']) if i['src'].endswith('auroc_vs_epsilon.png')]
    assert figs, info['images']
    assert_figure_rendered(browser, info['images'], figs[0], 'index_figure')
    assert info['inline'], info
    widest = max(range(len(info['inline'])), key=lambda k: info['inline'][k]['width'])
    assert_formula_rendered(browser, INLINE, widest, 'index_formula')


def test_figures_chapter_shows_its_formula_and_figures(browser):
    info = look(browser, '12_figures.html')
    assert info['display'], info
    assert_formula_rendered(browser, DISPLAY, 0, 'figures_spd_formula')
    shown = {Path(i['src']).name for i in info['images']}
    committed = {p.name for p in (ROOT / 'figures').glob('*.png')}
    assert shown and shown <= committed, (shown, committed)
    for k in range(2): assert_figure_rendered(browser, info['images'], k, 'figures_' + Path(info['images'][k]['src']).stem)


def test_chapter_with_display_math_renders_every_formula(browser):
    info = look(browser, '06_accounting.html')
    assert info['typeset'] >= 10 and info['display'], info
    assert_formula_rendered(browser, DISPLAY, 0, 'accounting_formula')
