"""Browser test of the gateway's page in real headless Chromium (Debian's package).

Starts the built `kdfs local` (target/debug/kdfs) on a free port in a temp dir, then as a
person would: uploads two files through the file input, waits for both progress rows to
finish and checks each shown hash against sha256 of the file, finds both in the list,
downloads one through its link and compares bytes, deletes the other (accepting the
confirmation), and checks the cluster panel lists every datanode as live. Then buckets:
creates one on the page, another through the S3 port (boto3, with the key pair `kdfs
local` prints) holding a key at its root, opens a folder on the page, uploads two files
into it, browses back up and into the folder, downloads one (SHA-256 compared, and the
same bytes through the S3 port) and deletes the other (gone for S3 too). Saves
screenshots to target/browser/ (page.png, page-buckets.png, page-phone.png; the CI
artefacts).

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
            url = line.split(" ", 1)[1].strip()
        elif line.startswith("s3: "):
            s3_url = line.split(" ", 1)[1].strip()
        elif line.startswith("aws: "):
            # AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… …
            env = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w and w.startswith("AWS_"))
            return proc, url, s3_client(s3_url, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"kdfs local did not start within {START_TIMEOUT}s")


def s3_client(url, access_key, secret_key):
    import boto3
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, region_name="us-east-1")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, s3 = start_local(os.path.join(tmp, "data"))
        try:
            run(url, tmp, s3)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def run(url, tmp, s3):
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

        buckets(page, tmp, s3)

        # Phone width still shows the page without horizontal overflow of the body.
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=os.path.join(SHOTS, "page-phone.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
        assert not overflow, "page overflows horizontally at phone width"
        browser.close()


def buckets(page, tmp, s3):
    """The bucket browser: create, upload into a folder, browse, download, delete."""
    g = os.path.join(tmp, "gamma.bin")
    d = os.path.join(tmp, "delta notes.txt")
    with open(g, "wb") as f:
        f.write(os.urandom(600_000))
    with open(d, "wb") as f:
        f.write(b"delta " * 500)
    want = {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (g, d)}

    # A bucket made on the page is selected at once.
    page.get_by_test_id("new-bucket").fill("made-on-the-page")
    page.get_by_test_id("create-bucket").click()
    expect(page.get_by_test_id("bucket-select")).to_have_value("made-on-the-page", timeout=15_000)
    expect(page.get_by_test_id("objects-table")).to_contain_text("Nothing here yet")

    # One made through the S3 port, with a key at its root.
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="readme.txt", Body=b"hello from boto3")
    page.locator("#refresh-objects").click()
    expect(page.locator("#bucket-select option[value=photos]")).to_have_count(1, timeout=15_000)
    page.get_by_test_id("bucket-select").select_option("photos")
    expect(page.get_by_test_id("object-row")).to_have_count(1, timeout=15_000)
    expect(page.get_by_test_id("objects-table")).to_contain_text("readme.txt")

    # Open a folder "2026/summer" and upload both files into it.
    page.get_by_test_id("new-folder").fill("2026/summer")
    page.get_by_test_id("open-folder").click()
    expect(page.get_by_test_id("crumbs")).to_contain_text("summer")
    page.set_input_files("#object-input", [g, d])
    done = page.locator("[data-testid=object-upload-row][data-state=done]")
    expect(done).to_have_count(2, timeout=60_000)
    shown = sorted(done.evaluate_all("rows => rows.map(r => r.dataset.hash)"))
    assert shown == sorted(want.values()), f"page stored {shown}, sha256 says {want}"
    rows = page.get_by_test_id("object-row")
    expect(rows).to_have_count(2, timeout=15_000)

    # Back to the bucket's root: the folder "2026/" and readme.txt; then into the folder.
    page.get_by_test_id("crumb").first.click()
    expect(page.get_by_test_id("folder-row")).to_have_count(1, timeout=15_000)
    expect(page.get_by_test_id("folder-link")).to_have_text("2026/")
    expect(rows).to_have_count(1)
    page.get_by_test_id("folder-link").click()
    expect(page.get_by_test_id("folder-link")).to_have_text("summer/", timeout=15_000)
    page.get_by_test_id("folder-link").click()
    expect(rows).to_have_count(2, timeout=15_000)
    page.screenshot(path=os.path.join(SHOTS, "page-buckets.png"), full_page=True)

    # Download gamma through its link: the same SHA-256, and the same bytes by S3.
    with page.expect_download() as dl:
        page.get_by_test_id("object-link").filter(has_text="gamma.bin").click()
    got = hashlib.sha256(open(dl.value.path(), "rb").read()).hexdigest()
    assert got == want["gamma.bin"], f"downloaded sha256 {got}, want {want['gamma.bin']}"
    by_s3 = s3.get_object(Bucket="photos", Key="2026/summer/gamma.bin")["Body"].read()
    assert hashlib.sha256(by_s3).hexdigest() == want["gamma.bin"], "S3 serves other bytes"

    # Delete "delta notes.txt", accepting the confirmation: gone here and for S3.
    page.once("dialog", lambda dialog: dialog.accept())
    rows.filter(has_text="delta notes.txt").get_by_test_id("object-delete").click()
    expect(rows).to_have_count(1, timeout=15_000)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="photos").get("Contents", [])]
    assert keys == ["2026/summer/gamma.bin", "readme.txt"], keys
    expect(page.get_by_test_id("error")).not_to_be_visible()


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"browser: FAILED: {e}")
        print("browser: 0 passed, 1 failed")
        sys.exit(1)
    print("browser: 1 passed, 0 failed")
