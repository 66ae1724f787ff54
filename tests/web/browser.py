"""The real browser the page tests drive: Debian's chromium through Playwright (never a downloaded one).

`.ci/run` installs chromium; on a machine without it, `ensure_chromium()` installs it with apt-get when it
may (as root), fails in CI, and skips elsewhere. Screenshots go under the test run's output folder
(`ENCLAVE_TEST_OUTPUT`, default `.test-output/` in the checkout, git-ignored), never into the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
# as the machine's notes say: without the background-networking flags chromium calls out, and is refused
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
OUTPUT = Path(os.environ.get("ENCLAVE_TEST_OUTPUT", Path(__file__).resolve().parents[2] / ".test-output"))
_AXE = Axe()


def ensure_chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if Path(CHROMIUM).exists():
            return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail("CI must provide chromium (.ci/run installs it)")
    pytest.skip("no chromium, and it cannot be installed here")


def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot under the output folder's screenshots/, named for the page it shows."""
    path = OUTPUT / "screenshots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_accessible(page: Page) -> None:
    """axe-core finds no serious or critical violation on the page as it is now."""
    results = _AXE.run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in {"serious", "critical"}]
    assert not bad, "\n".join(f"{v['id']} ({v['impact']}): {v['help']} at "
                              f"{[n['target'] for n in v['nodes']][:3]}" for v in bad)
