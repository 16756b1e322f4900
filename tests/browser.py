"""Open a local HTML file in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) and
report what a reader would get: every request the page made, each image's decoded width, a screenshot.

    python tests/browser.py reports/index.html shot.png    # prints the findings as JSON, writes the screenshot

Tests call `open_page`; `skip_reason()` says why a browser test cannot run here (it is then skipped,
visibly), or None.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("VIDEOGPT_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium phones home at start (Google hosts, component updates).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set VIDEOGPT_CHROMIUM)"
    return None


@dataclass
class PageVisit:
    requests: list[str] = field(default_factory=list)       # every URL the page asked for, the file included
    images: list[dict] = field(default_factory=list)        # {"alt", "naturalWidth", "complete"} per <img>
    screenshot: bytes = b""                                 # PNG of the full page
    console_errors: list[str] = field(default_factory=list)

    def external_requests(self, own_url: str) -> list[str]:
        """Requests other than the page's own file and its embedded data: URIs."""
        return [u for u in self.requests if u != own_url and not u.startswith("data:")]


def open_page(path: str | Path, width: int = 1200) -> tuple[PageVisit, str]:
    """Load `path` (file://) in headless Chromium with a fresh profile; returns (what happened, the page's URL).

    Requests are recorded and every one other than the file itself is aborted, so nothing leaves the
    machine even if the page tried."""
    from playwright.sync_api import sync_playwright

    url = Path(path).resolve().as_uri()
    visit = PageVisit()
    profile = tempfile.mkdtemp(prefix="videogpt-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                           args=FLAGS, viewport={"width": width, "height": 900})
            try:
                page = context.new_page()
                page.on("request", lambda req: visit.requests.append(req.url))
                page.on("console", lambda msg: msg.type == "error" and visit.console_errors.append(msg.text))
                page.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
                page.goto(url, wait_until="load")
                visit.images = page.evaluate("Array.from(document.images, i => "
                                             "({alt: i.alt, naturalWidth: i.naturalWidth, complete: i.complete}))")
                visit.screenshot = page.screenshot(full_page=True)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return visit, url


def pixel_std(png: bytes) -> float:
    """Standard deviation of the screenshot's grey levels: about 0 for a blank page."""
    import numpy as np
    from PIL import Image
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64).std())


if __name__ == "__main__":
    visit, url = open_page(sys.argv[1])
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_bytes(visit.screenshot)
    print(json.dumps({"url": url, "external_requests": visit.external_requests(url), "images": visit.images,
                      "pixel_std": pixel_std(visit.screenshot), "console_errors": visit.console_errors}, indent=1))
