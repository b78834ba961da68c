"""Render every page of the built docs in headless Chromium and check the layout.

``make docs-check`` runs this file (``python docs/check_rendering.py``); it
builds the docs first unless given ``--no-build``.  Each page is loaded at a
desktop width (1280 px) and at a phone width (390 px), and fails when

- a code block (``pre``) is wider than its box, whether it scrolls
  sideways or is clipped: either way the end of its longest line is hidden
  (at 1280 px the text column is wide enough for the docs' lines; at 390 px
  docs/_static/pescador.css wraps long lines instead),
- inline code (a ``code`` element outside a block) runs past the right
  edge of the text block it sits in (a long unbroken name),
- an image is missing or broken (``naturalWidth`` 0), or a raster figure
  has fewer than two pixels per CSS pixel (blurry on a high-density screen),
- the page as a whole scrolls sideways, or something sticks out past the
  right edge of the window,
- the site navigation cannot be reached (at 390 px: the menu button opens a
  drawer that lists the pages).

The search page must find ``zmq_offload``.  Screenshots of a few pages at
both widths go to ``docs/_build/screens/``: look at them.

How: the pages are served over HTTP from ``docs/_build`` on 127.0.0.1; one
Chromium per width loads a driver page that holds every page in an iframe of
that width (media queries follow the iframe's width) and runs the checks
below in each, then prints its findings into the DOM, which ``--dump-dom``
returns.  Run with pytest (``pytest docs/check_rendering.py``), the test
below is skipped when Chromium is not installed.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

try:  # the tests below run with ``pytest docs/check_rendering.py``
    import pytest

    pytestmark = pytest.mark.timeout(300)
except ImportError:  # running the check needs no pytest
    pass

DOCS = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(DOCS, "_build")
HTML = os.path.join(BUILD, "html")
SCREENS = os.path.join(BUILD, "screens")
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
SCREENSHOT_PAGES = [
    "index.html", "usage.html", "multiplexing.html", "parallel.html", "frameworks.html", "tuning.html", "api.html",
]
SEARCH_TERM = "zmq_offload"
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}

# The checks, run in each page's window once it has loaded (its images
# included).  ``report`` lists what failed as strings; ``info`` counts.
CHECK_JS = r"""
function visible(win, el) {
  const r = el.getBoundingClientRect();
  const cs = win.getComputedStyle(el);
  return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none';
}
function scrolls(ox) { return ox === 'auto' || ox === 'scroll'; }
function describe(el) {
  const text = (el.textContent || '').trim().split('\n')[0].slice(0, 60);
  return el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\s+/).join('.') : '') +
    (text ? ' "' + text + '"' : '');
}
function checkPage(win) {
  const doc = win.document, problems = [], info = {pre: 0, pre_scrolling: 0, img: 0};
  const W = win.innerWidth;
  // 1. code blocks: every line shown whole.  A block wider than its box is
  // a problem whether it scrolls or not: a scroll bar hides the end of the
  // longest line (where an error message says what to do).  At desktop width
  // the column is wide enough; at phone width pescador.css wraps the lines.
  for (const pre of doc.querySelectorAll('pre')) {
    if (!visible(win, pre)) continue;
    info.pre++;
    const ox = win.getComputedStyle(pre).overflowX;
    if (pre.scrollWidth > pre.clientWidth + 1) {
      if (scrolls(ox)) {
        info.pre_scrolling++;
        problems.push('code block scrolls sideways, its longest line hidden (' + pre.scrollWidth +
                      ' px of content in ' + pre.clientWidth + ' px): ' + describe(pre));
      } else problems.push('code block clipped (' + pre.scrollWidth + ' px of content in ' +
                           pre.clientWidth + ' px, overflow-x ' + ox + '): ' + describe(pre));
    }
    const r = pre.getBoundingClientRect();
    for (let a = pre.parentElement; a && a !== doc.body; a = a.parentElement) {
      const aox = win.getComputedStyle(a).overflowX;
      if (aox === 'visible') continue;
      const ar = a.getBoundingClientRect();
      if (r.right > ar.right + 1 || r.left < ar.left - 1)
        problems.push('code block cut off by ' + describe(a).slice(0, 60) + ': ' + describe(pre));
      break;
    }
  }
  // 1b. inline code: each of its line boxes ends inside the text column
  // (the block it sits in, within the page's article).
  const column = doc.querySelector('.bd-article') || doc.body;
  const columnRight = column.getBoundingClientRect().right;
  for (const code of column.querySelectorAll('code, tt, kbd')) {
    if (code.closest('pre') || !visible(win, code)) continue;
    let block = code.parentElement;
    while (block !== column && win.getComputedStyle(block).display.startsWith('inline')) block = block.parentElement;
    const limit = Math.min(block.getBoundingClientRect().right, columnRight);
    const right = Math.max(...[...code.getClientRects()].map(b => b.right));
    if (right > limit + 1)
      problems.push('inline code runs past the text column (to ' + Math.round(right) + ' px, the column ends at ' +
                    Math.round(limit) + ' px, ' + describe(block).slice(0, 40) + '): ' + describe(code));
  }
  // 2. images: present, decoded, sharp on a 2x screen.
  for (const img of doc.images) {
    info.img++;
    const src = img.getAttribute('src');
    if (!img.complete || img.naturalWidth === 0) { problems.push('image missing or broken: ' + src); continue; }
    const shown = img.getBoundingClientRect().width;
    if (/^_images\/.*\.(png|jpe?g|gif|webp)$/i.test(src) && shown > 0 && img.naturalWidth < 1.95 * shown)
      problems.push('image ' + src + ' is ' + img.naturalWidth + ' px wide, shown at ' +
                    Math.round(shown) + ' CSS px: under 2x');
  }
  // 3. the page itself must not scroll sideways, nor anything stick out.
  const sw = Math.max(doc.documentElement.scrollWidth, doc.body.scrollWidth);
  if (sw > W + 1) problems.push('the page scrolls horizontally: ' + sw + ' px wide in a ' + W + ' px window');
  const out = [];
  for (const el of doc.body.querySelectorAll('*')) {
    const cs = win.getComputedStyle(el);
    if (cs.position === 'fixed' || !visible(win, el)) continue;
    const r = el.getBoundingClientRect();
    if (r.right <= W + 1) continue;
    let contained = false;
    for (let a = el.parentElement; a && a !== doc.body; a = a.parentElement) {
      const acs = win.getComputedStyle(a);
      if (acs.overflowX !== 'visible' || acs.position === 'fixed' || acs.visibility === 'hidden') { contained = true; break; }
    }
    if (!contained) out.push(describe(el).slice(0, 80) + ' (right edge at ' + Math.round(r.right) + ' px)');
  }
  if (out.length) problems.push('past the right edge of the ' + W + ' px window: ' + out.slice(0, 3).join('; '));
  return {problems, info};
}
function checkNavigation(win, phone) {
  // Desktop: the site navigation (header links or sidebar) shows links.
  // Phone: the menu button shows, and opens a drawer that lists the pages.
  const doc = win.document;
  const links = sel => [...doc.querySelectorAll(sel)].filter(a => visible(win, a)).length;
  if (!phone) {
    const n = links('.bd-header .navbar-nav a, .bd-sidebar-primary nav a');
    return n >= 3 ? [] : ['no site navigation visible (' + n + ' links)'];
  }
  const button = doc.querySelector('.primary-toggle');
  if (!button || !visible(win, button)) return ['no menu button for the site navigation at phone width'];
  button.click();
  const n = links('#pst-primary-sidebar-modal a');
  const dialog = doc.querySelector('#pst-primary-sidebar-modal');
  if (dialog && dialog.open) dialog.close();
  return n >= 3 ? [] : ['the menu button opens no navigation (' + n + ' links in the drawer)'];
}
async function checkSearch(win) {
  const doc = win.document;
  for (let i = 0; i < 100; i++) {
    const hits = doc.querySelectorAll('#search-results ul.search li');
    if (hits.length) return {problems: [], info: {hits: hits.length}};
    await new Promise(ok => setTimeout(ok, 100));
  }
  return {problems: ['search for "TERM" found nothing'], info: {hits: 0}};
}
async function run() {
  const results = {};
  for (const frame of document.querySelectorAll('iframe')) {
    const name = frame.dataset.page, win = frame.contentWindow;
    try {
      await new Promise(ok => setTimeout(ok, 50));
      let r;
      if (frame.dataset.search) r = await checkSearch(win);
      else {
        r = checkPage(win);
        r.problems.push(...checkNavigation(win, PHONE));
      }
      r.width = win.innerWidth;
      results[name] = r;
    } catch (e) {
      results[name] = {problems: ['the check failed: ' + e], info: {}};
    }
  }
  const out = document.createElement('pre');
  out.id = 'check-results';
  out.textContent = JSON.stringify(results);
  document.body.appendChild(out);
}
window.addEventListener('load', () => { run(); });
"""


def pages(root: str = HTML) -> list[str]:
    """Every HTML page of the build, as paths relative to ``root``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".html"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return found


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def build(out: str = HTML) -> None:
    """Build the HTML docs, warnings as errors (as ``make docs``)."""
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS, out],
        check=True,
        timeout=300,
    )


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves /html/... from the built docs and /check/... from the drivers."""

    html_root = HTML

    def translate_path(self, path):
        if path.startswith("/html/"):  # one handler per request: directory is ours
            self.directory, path = self.html_root, path[len("/html"):]
        else:
            self.directory = BUILD
        return super().translate_path(path)

    def log_message(self, *args):
        pass


def serve(html_root: str = HTML) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve the docs on a free port of 127.0.0.1; return the server and its URL."""
    handler = functools.partial(type("Handler", (_Handler,), {"html_root": html_root}), directory=BUILD)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def driver_page(names: list[str], width: int, height: int, phone: bool) -> str:
    """The page that loads every docs page in an iframe and checks it."""
    frames = [
        f'<iframe data-page="{html.escape(n)}" src="/html/{html.escape(n)}" '
        f'style="width:{width}px;height:{height}px;border:0;display:block"></iframe>'
        for n in names
    ]
    frames.append(
        f'<iframe data-page="search.html?q={SEARCH_TERM}" data-search="1" '
        f'src="/html/search.html?q={SEARCH_TERM}" style="width:{width}px;height:{height}px;border:0"></iframe>'
    )
    script = CHECK_JS.replace("PHONE", "true" if phone else "false").replace("TERM", SEARCH_TERM)
    return "<!doctype html><html><body style='margin:0'>" + "".join(frames) + f"<script>{script}</script></body></html>"


def chromium_args(chromium: str, width: int, height: int) -> list[str]:
    return [
        chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
        "--no-first-run", "--disable-extensions", "--mute-audio", f"--window-size={width},{height}",
    ]


def run_checks(chromium: str, base: str, names: list[str]) -> dict:
    """Check every page at both widths; {width name: {page: result}}."""
    os.makedirs(os.path.join(BUILD, "check"), exist_ok=True)
    jobs = {}
    for label, (width, height) in WIDTHS.items():
        driver = os.path.join(BUILD, "check", f"driver-{label}.html")
        with open(driver, "w") as f:
            f.write(driver_page(names, width, height, phone=(label == "phone")))
        args = chromium_args(chromium, width, height) + [
            "--virtual-time-budget=60000", "--run-all-compositor-stages-before-draw", "--dump-dom",
            f"{base}/check/driver-{label}.html",
        ]
        jobs[label] = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    results = {}
    for label, job in jobs.items():
        dom, _ = job.communicate(timeout=120)
        start = dom.find('<pre id="check-results">')
        if start < 0:
            raise RuntimeError(f"Chromium at {label} width returned no check results (the driver did not finish)")
        body = dom[start + len('<pre id="check-results">'): dom.index("</pre>", start)]
        results[label] = json.loads(html.unescape(body))
    return results


def screenshots(chromium: str, base: str, names: list[str] = SCREENSHOT_PAGES) -> list[str]:
    """Screenshots of ``names`` at both widths into docs/_build/screens/."""
    os.makedirs(SCREENS, exist_ok=True)
    written = []
    for name in names:
        for label, (width, height) in WIDTHS.items():
            path = os.path.join(SCREENS, f"{name[:-5]}-{width}.png")
            subprocess.run(
                chromium_args(chromium, width, height)
                + ["--virtual-time-budget=3000", f"--screenshot={path}", f"{base}/html/{name}"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
            )
            written.append(path)
    return written


def check(build_first: bool = True, shots: bool = True, html_root: str = HTML) -> tuple[dict, list[str]]:
    """Build (optionally), check every page at both widths, take screenshots."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("Chromium is not installed (Debian: apt-get install -y chromium)")
    if build_first:
        build()
    names = pages(html_root)
    server, base = serve(html_root)
    try:
        results = run_checks(chromium, base, names)
        written = screenshots(chromium, base) if shots else []
    finally:
        server.shutdown()
    return results, written


def failures(results: dict) -> list[str]:
    """Every problem found, as 'width page: problem' lines."""
    return [
        f"{label} {page}: {problem}"
        for label, by_page in results.items()
        for page, result in by_page.items()
        for problem in result["problems"]
    ]


def table(results: dict) -> str:
    """One line per page: pass or FAIL at each width, with counts."""
    labels = list(results)
    names = sorted(set().union(*(r.keys() for r in results.values())))
    lines = ["page".ljust(36) + "".join(f"{lab} ({WIDTHS[lab][0]}px)".ljust(22) for lab in labels)]
    for name in names:
        row = name.ljust(36)
        for lab in labels:
            r = results[lab].get(name)
            status = "missing" if r is None else ("FAIL" if r["problems"] else "pass")
            extra = ""
            if r and "pre" in r.get("info", {}):
                extra = f" {r['info']['pre']} pre, {r['info']['pre_scrolling']} scroll"
            elif r and "hits" in r.get("info", {}):
                extra = f" {r['info']['hits']} hits"
            row += (status + extra).ljust(22)
        lines.append(row)
    return "\n".join(lines)


def _needs_chromium():
    import pytest

    if find_chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium; `make docs-check` installs it)")


def test_pages_render_at_desktop_and_phone_width():
    """Every page renders without clipped code, broken images, or sideways scrolling."""
    _needs_chromium()
    results, _ = check(shots=False)
    assert len(results["phone"]) == len(pages()) + 1  # every page, and the search
    assert not failures(results), "\n" + table(results) + "\n" + "\n".join(failures(results))


BROKEN_PAGE = """<!doctype html><html><head><meta name="viewport" content="width=device-width">
<style>body { margin: 0; } .box { width: 300px; overflow: hidden; }</style></head><body>
<pre id="clipped" style="width: 200px; overflow: hidden">CLIPPED {line}</pre>
<div class="box"><pre id="cut" style="width: 900px">CUT {line}</pre></div>
<pre id="scrolls" style="width: 200px; overflow-x: auto">SCROLLS {line}</pre>
<pre id="fits" style="width: 200px; overflow-x: auto">FITS short</pre>
<pre id="wraps" style="width: 200px; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere">WRAPS {line}</pre>
<p style="width: 300px">Some prose with <code>INLINE{line}</code> in it.</p>
<p style="width: 300px">Some prose with <code>SHORT</code> in it.</p>
<img src="no-such-image.png" alt="missing">
<div style="width: 1600px">wide</div>
</body></html>"""


def test_the_check_finds_hidden_code_broken_images_and_sideways_scrolling(tmp_path):
    """The checks fail on a page that has each fault (so a pass means something)."""
    _needs_chromium()
    (tmp_path / "broken.html").write_text(BROKEN_PAGE.replace("{line}", "x" * 300))
    server, base = serve(str(tmp_path))
    try:
        results = run_checks(find_chromium(), base, ["broken.html"])
    finally:
        server.shutdown()
    for label, (width, _) in WIDTHS.items():
        found = "\n".join(results[label]["broken.html"]["problems"])
        assert "code block clipped" in found and '"CLIPPED' in found
        assert "code block cut off by div.box" in found and '"CUT' in found
        assert "code block scrolls sideways, its longest line hidden" in found and '"SCROLLS' in found
        assert "inline code runs past the text column" in found and '"INLINE' in found
        for fine in ("FITS", "WRAPS", "SHORT"):  # a block that fits or wraps, inline code that fits
            assert fine not in found
        assert "image missing or broken: no-such-image.png" in found
        assert "the page scrolls horizontally: " in found and f" px wide in a {width} px window" in found
        assert results[label]["broken.html"]["width"] == width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true", help="check docs/_build/html as it is")
    parser.add_argument("--no-screenshots", action="store_true", help="skip the screenshots")
    parser.add_argument("--html", help="check this built HTML directory instead (implies --no-build)")
    opts = parser.parse_args(argv)
    html_root = os.path.abspath(opts.html) if opts.html else HTML
    results, written = check(
        build_first=not (opts.no_build or opts.html), shots=not opts.no_screenshots, html_root=html_root
    )
    print(table(results))
    problems = failures(results)
    for line in problems:
        print("FAIL", line)
    for path in written:
        print("screenshot:", os.path.relpath(path))
    print(f"{len(problems)} problems in {sum(len(r) for r in results.values())} page renderings")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
