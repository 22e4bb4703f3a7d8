#!/usr/bin/env python3
"""Browser test of the gateway's page in real headless Chromium (Playwright).

Usage: page_test.py GATEWAY_URL [SCREENSHOT_PATH]
Environment: CHROMIUM (default /usr/bin/chromium), KDFS_AUTH_TOKEN (if the gateway has one).

Opens the page, uploads two files through the file input, waits for both progress rows
to finish and checks both hashes equal their SHA-256, finds them in the file list,
downloads one through its link and compares the bytes, deletes the other (accepting
the confirmation), checks the cluster panel lists every datanode of /info as live,
and saves a screenshot. Exits non-zero with a message on the first failure.
"""

import hashlib
import json
import os
import sys
import tempfile
import urllib.request

from playwright.sync_api import expect, sync_playwright

TIMEOUT_MS = 60_000


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    url = sys.argv[1].rstrip("/")
    shot = sys.argv[2] if len(sys.argv) > 2 else "kdfs-page.png"
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    token = os.environ.get("KDFS_AUTH_TOKEN", "")

    with urllib.request.urlopen(url + "/info", timeout=10) as r:
        info = json.load(r)
    datanodes = len(info["datanodes"])

    tmp = tempfile.mkdtemp(prefix="kdfs-browser-")
    files = {}
    for name, size in [("first file.bin", 3 * 1024 * 1024 + 17), ("sëcond.txt", 4321)]:
        data = os.urandom(size)
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        files[name] = (path, data, hashlib.sha256(data).hexdigest())

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        if token:
            page.locator("details summary").click()
            page.fill("#token", token)
            page.locator("#token").dispatch_event("change")

        # Upload both through the file input.
        page.set_input_files("#file-input", [v[0] for v in files.values()])
        rows = page.locator('[data-testid="upload-row"]')
        expect(rows).to_have_count(2)
        for name, (_, _, digest) in files.items():
            row = page.locator(f'[data-testid="upload-row"][data-name="{name}"]')
            expect(row).to_have_attribute("data-state", "done")
            shown = row.locator('[data-testid="upload-hash"]').inner_text().strip()
            assert shown == digest, f"{name}: page shows {shown}, sha256 is {digest}"

        # Both appear in the list.
        for name, (_, _, digest) in files.items():
            expect(page.locator(f'[data-testid="file-row"][data-hash="{digest}"]')).to_have_count(1)

        # Download the first through its link and compare bytes.
        name = "first file.bin"
        _, data, digest = files[name]
        row = page.locator(f'[data-testid="file-row"][data-hash="{digest}"]')
        with page.expect_download() as dl:
            row.locator('[data-testid="download-link"]').click()
        got = open(dl.value.path(), "rb").read()
        assert got == data, f"downloaded {len(got)} bytes differ from the {len(data)} uploaded"

        # Cluster panel: every datanode live.
        dn_rows = page.locator('[data-testid="datanode-row"]')
        expect(dn_rows).to_have_count(datanodes)
        expect(page.locator('[data-testid="datanode-row"][data-state="live"]')).to_have_count(datanodes)

        page.screenshot(path=shot, full_page=True)

        # Delete the second (accepting the confirmation); it leaves the list.
        _, _, digest2 = files["sëcond.txt"]
        page.once("dialog", lambda d: d.accept())
        page.locator(f'[data-testid="file-row"][data-hash="{digest2}"] [data-testid="delete-button"]').click()
        expect(page.locator(f'[data-testid="file-row"][data-hash="{digest2}"]')).to_have_count(0)
        expect(page.locator(f'[data-testid="file-row"][data-hash="{digest}"]')).to_have_count(1)

        # Phone width still shows the essentials.
        page.set_viewport_size({"width": 390, "height": 844})
        expect(page.locator("#file-input + label")).to_be_visible()
        page.screenshot(path=shot.replace(".png", "-phone.png"), full_page=True)

        assert not errors, f"JavaScript errors: {errors}"
        browser.close()
    print(f"browser test passed; screenshot {shot}")


if __name__ == "__main__":
    main()
