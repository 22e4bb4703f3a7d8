"""Browser test of the gateway's page in real headless Chromium (Debian's package).

Starts the built `kdfs local` (target/debug/kdfs) on a free port in a temp dir, then as a
person would: uploads two files through the file input, waits for both progress rows to
finish and checks each shown hash against sha256 of the file, finds both in the list,
downloads one through its link and compares bytes, deletes the other (accepting the
confirmation), and checks the cluster panel lists every datanode as live. Saves a
screenshot to target/browser/page.png (the CI artefact).

Run:  python tests/browser/test_page.py   (after `cargo build -p kdfs`)
"""

import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from playwright.sync_api import expect, sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KDFS = os.environ.get("KDFS_BIN", os.path.join(ROOT, "target", "debug", "kdfs"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = os.path.join(ROOT, "target", "browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT = 90


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local(data_dir):
    port = free_port()
    proc = subprocess.Popen(
        [KDFS, "local", "--data-dir", data_dir, "--http", f"127.0.0.1:{port}",
         "--s3", "127.0.0.1:0", "--datanodes", "3", "--reserved", "0", "--block-size", "256KiB"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("gateway: "):
            return proc, line.split(" ", 1)[1].strip()
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"kdfs local did not start within {START_TIMEOUT}s")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_local(os.path.join(tmp, "data"))
        try:
            run(url, tmp)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def run(url, tmp):
    a = os.path.join(tmp, "alpha report.txt")
    b = os.path.join(tmp, "beta.bin")
    with open(a, "wb") as f:
        f.write(b"alpha " * 1000)
    with open(b, "wb") as f:
        f.write(os.urandom(700_000))  # several 256 KiB blocks
    want = {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (a, b)}

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page.goto(url + "/")
        expect(page.locator("h1")).to_be_visible()

        # Upload both through the file input; both rows finish with the right hashes.
        page.set_input_files("#file-input", [a, b])
        hashes = page.get_by_test_id("upload-hash")
        expect(hashes).to_have_count(2, timeout=60_000)
        shown = sorted(hashes.all_text_contents())
        assert shown == sorted(want.values()), f"page shows {shown}, sha256 says {want}"
        expect(page.get_by_test_id("upload-error")).to_have_count(0)

        # Both are listed.
        rows = page.get_by_test_id("file-row")
        expect(rows).to_have_count(2, timeout=15_000)
        for name in want:
            expect(page.get_by_test_id("files-table")).to_contain_text(name)

        # Download beta through its link; bytes equal the source.
        link = page.get_by_test_id("download-link").filter(has_text="beta.bin")
        with page.expect_download() as dl:
            link.click()
        path = dl.value.path()
        assert open(path, "rb").read() == open(b, "rb").read(), "downloaded bytes differ"

        # Cluster panel: every datanode live.
        states = page.get_by_test_id("datanode-state")
        expect(states).to_have_count(3, timeout=15_000)
        assert states.all_text_contents() == ["live"] * 3, states.all_text_contents()

        page.screenshot(path=os.path.join(SHOTS, "page.png"), full_page=True)

        # Delete alpha, accepting the confirmation; it leaves the list.
        page.once("dialog", lambda d: d.accept())
        row = rows.filter(has_text="alpha report.txt")
        row.get_by_test_id("delete-button").click()
        expect(rows).to_have_count(1, timeout=15_000)
        expect(page.get_by_test_id("files-table")).not_to_contain_text("alpha report.txt")

        # Phone width still shows the page without horizontal overflow of the body.
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=os.path.join(SHOTS, "page-phone.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
        assert not overflow, "page overflows horizontally at phone width"
        browser.close()


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"browser: FAILED: {e}")
        print("browser: 0 passed, 1 failed")
        sys.exit(1)
    print("browser: 1 passed, 0 failed")
