//! `kdfs download` without `-o` against a real `kdfs local` cluster: an uploader's
//! name never puts a file outside the current directory or makes a dotfile, and an
//! existing file is replaced only with `--force`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use sha2::{Digest, Sha256};

use common::{Local, ok};

/// Stores `body` under `name` with a raw `PUT /upload?name=…` (the CLI itself only
/// sends a file's base name); returns its hash.
fn put(local: &Local, name: &str, body: &[u8]) -> String {
    let addr = local.gateway.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let query: String = name
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect::<Vec<_>>()
        .concat();
    write!(
        s,
        "PUT /upload?name={query} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 20"),
        "upload of {name:?}: {reply}"
    );
    let hash = hex::encode(Sha256::digest(body));
    assert!(reply.contains(&hash), "upload of {name:?}: {reply}");
    hash
}

/// Every entry under `dir`, relative, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn uploader_names_never_escape_the_cwd_or_make_dotfiles() {
    let local = Local::start("1MiB");
    let outer = tempfile::tempdir().unwrap();
    let cwd = outer.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    for (name, body, lands) in [
        ("../evil", &b"evil\n"[..], "evil"),
        (".bashrc", b"rm -rf ~\n", "_.bashrc"),
        ("a/b.txt", b"nested\n", "b.txt"),
        ("...", b"dots only\n", ""),
    ] {
        let hash = put(&local, name, body);
        let out = ok(&local.kdfs(&["download", "-q", &hash], &cwd));
        let lands = if lands.is_empty() {
            hash.as_str()
        } else {
            lands
        };
        assert!(out.contains(lands), "{name:?}: kdfs printed {out}");
        assert_eq!(
            std::fs::read(cwd.join(lands)).unwrap(),
            body,
            "{name:?} did not land at {lands}"
        );
    }
    let mut want = vec!["_.bashrc".to_owned(), "b.txt".to_owned(), "evil".to_owned()];
    want.push(hex::encode(Sha256::digest(b"dots only\n")));
    want.sort();
    assert_eq!(entries(&cwd), want, "what the downloads wrote");
    assert_eq!(entries(outer.path()), ["cwd"], "nothing outside the cwd");
}

#[test]
fn an_existing_file_is_replaced_only_with_force() {
    let local = Local::start("1MiB");
    let cwd = tempfile::tempdir().unwrap();
    let hash = put(&local, "notes.txt", b"from the cluster\n");
    std::fs::write(cwd.path().join("notes.txt"), b"mine\n").unwrap();
    std::fs::write(cwd.path().join("keep.bin"), b"mine too\n").unwrap();

    for args in [
        vec!["download", "-q", &hash],
        vec!["download", "-q", &hash, "-o", "keep.bin"],
    ] {
        let out = local.kdfs(&args, cwd.path());
        assert!(!out.status.success(), "{args:?} replaced an existing file");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("exists") && err.contains("--force"), "{err}");
    }
    assert_eq!(
        std::fs::read(cwd.path().join("notes.txt")).unwrap(),
        b"mine\n"
    );
    assert_eq!(
        std::fs::read(cwd.path().join("keep.bin")).unwrap(),
        b"mine too\n"
    );
    assert_eq!(
        entries(cwd.path()),
        ["keep.bin", "notes.txt"],
        "no leftovers"
    );

    ok(&local.kdfs(&["download", "-q", "--force", &hash], cwd.path()));
    ok(&local.kdfs(
        &["download", "-q", &hash, "-o", "keep.bin", "--force"],
        cwd.path(),
    ));
    for f in ["notes.txt", "keep.bin"] {
        assert_eq!(
            std::fs::read(cwd.path().join(f)).unwrap(),
            b"from the cluster\n",
            "{f} with --force"
        );
    }
    assert_eq!(
        entries(cwd.path()),
        ["keep.bin", "notes.txt"],
        "no leftovers"
    );
}
