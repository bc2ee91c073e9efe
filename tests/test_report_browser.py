"""Open a report's index.html in headless Chromium: every image decodes, the comparison table is there.

The report itself holds no script, so the check runs in a wrapper page served beside it from a local HTTP
server (same origin, so the wrapper may look into the report's iframe), and Chromium's ``--dump-dom`` returns
what the wrapper found. A screenshot of the report is saved to $AEBENCH_SCREENSHOT or
/tmp/aebench-report-screenshot.png and its path printed. Skipped when Chromium is absent (Debian: ``chromium``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p and Path(p).exists()), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

CHECK_PAGE = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="f" src="report/index.html" width="1280" height="900"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {
  var d = this.contentDocument;
  var imgs = Array.prototype.slice.call(d.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.alt; });
  var r = {images: imgs.length, bad: bad, table: !!d.getElementById("comparison-table"),
           rows: d.querySelectorAll("#comparison-table tbody tr").length,
           scripts: d.scripts.length, title: d.title};
  document.getElementById("result").textContent = "RESULT " + JSON.stringify(r) + " END";
});
</script></body></html>
"""

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package "
                                "`chromium`, installed by .ci/run: apt-get install chromium)")


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def site(tmp_path: Path):
    """A report from the golden results folder, and an HTTP server on 127.0.0.1 serving it with the check page."""
    from test_report import golden_results

    from aebench.report import build_report

    root = tmp_path / "site"
    root.mkdir()
    files = build_report(golden_results(tmp_path), root / "report")
    (root / "check.html").write_text(CHECK_PAGE)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield files, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


def test_report_renders_in_chromium(site, tmp_path: Path) -> None:
    files, url = site
    html = files.html.read_text()
    n_img = len(re.findall(r"<img ", html))
    assert n_img > 10

    res = chromium(["--virtual-time-budget=15000", "--dump-dom", f"{url}/check.html"], tmp_path / "profile1")
    m = re.search(r"RESULT (\{.*?\}) END", res.stdout)
    assert m, f"the check page did not report (rc {res.returncode}); stderr tail:\n{res.stderr[-2000:]}"
    found = json.loads(m.group(1))
    assert found["images"] == n_img
    assert found["bad"] == [], f"images that did not decode: {found['bad']}"
    assert found["table"] and found["rows"] == 3  # ae, vae and vae[beta=4]
    assert found["scripts"] == 0
    assert found["title"] == "aebench report: golden-suite"

    # the report opens offline, straight from the file, and renders something visible
    shot = Path(os.environ.get("AEBENCH_SCREENSHOT") or Path(tempfile.gettempdir()) / "aebench-report-screenshot.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    res = chromium(["--window-size=1280,2400", f"--screenshot={shot}", files.html.resolve().as_uri()],
                   tmp_path / "profile2")
    assert shot.is_file(), f"no screenshot (rc {res.returncode}); stderr tail:\n{res.stderr[-2000:]}"
    from PIL import Image, ImageStat

    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        assert max(ImageStat.Stat(im.convert("L")).stddev) > 10, "the screenshot is blank"
    print(f"\nreport screenshot: {shot}")
