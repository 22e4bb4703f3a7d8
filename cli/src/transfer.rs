//! `kdfs upload` and `kdfs download`: streaming transfers with progress bars.
//!
//! Neither holds a file in memory. A download is written to a temporary file beside its
//! destination, hashed as it streams, and renamed into place only when its SHA-256
//! equals the requested hash, so a partial or corrupt download never looks complete.
//! The server's file name is reduced to a plain name (never a path or a dotfile), and an
//! existing file is replaced only with `--force`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

use crate::gateway::{Gateway, check, parse_hash};

const BAR_TEMPLATE: &str = "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

fn bar(len: Option<u64>, msg: String, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(l) => ProgressBar::new(l),
        None => ProgressBar::no_length(),
    };
    pb.set_style(
        ProgressStyle::with_template(BAR_TEMPLATE)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// A content type from the file extension; the gateway stores it and serves it back.
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "log" | "md" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "json" => "application/json",
        "js" => "text/javascript",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

pub async fn upload(gw: &Gateway, files: &[PathBuf], quiet: bool) -> anyhow::Result<()> {
    for path in files {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let meta = file.metadata().await?;
        if !meta.is_file() {
            bail!("{} is not a regular file", path.display());
        }
        let len = meta.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload".into());
        let pb = bar(
            Some(len),
            name.clone(),
            quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
        );
        let counted = {
            let pb = pb.clone();
            ReaderStream::with_capacity(file, 1 << 20).inspect_ok(move |b| pb.inc(b.len() as u64))
        };
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(counted), len)
                .file_name(name.clone())
                .mime_str(content_type(path))?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let resp = gw
            .send(gw.authed(gw.http.post(gw.url("/upload")).multipart(form)))
            .await
            .with_context(|| format!("uploading {}", path.display()))?;
        let v: serde_json::Value = resp.json().await.context("reading the upload reply")?;
        pb.finish_and_clear();
        let hash = v["hash"].as_str().unwrap_or_default();
        println!("{hash}  {name}");
    }
    Ok(())
}

/// The raw `filename="…"` of a `Content-Disposition` value, quoted-pair escapes undone.
fn disposition_filename(resp: &reqwest::Response) -> Option<String> {
    let cd = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)?
        .to_str()
        .ok()?;
    let start = cd.find("filename=\"")? + "filename=\"".len();
    let mut name = String::new();
    let mut chars = cd[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => name.extend(chars.next()),
            c => name.push(c),
        }
    }
    Some(name)
}

/// Longest local name used, in bytes (a common file-system limit).
const MAX_LOCAL_NAME: usize = 255;

/// The server's name for a file, reduced to a plain name in the current directory:
/// the last `/` or `\` component, control characters dropped, a leading dot prefixed
/// with `_` (never a dotfile such as `.bashrc`); None when nothing usable is left. The
/// server is not trusted with where a download lands.
fn local_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.is_empty() || clean.chars().all(|c| c == '.') || clean.len() > MAX_LOCAL_NAME {
        return None;
    }
    Some(if clean.starts_with('.') {
        format!("_{clean}")
    } else {
        clean.to_owned()
    })
}

/// Whether anything (a file, a directory, a dangling symlink) is at `path`.
fn occupied(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

pub async fn download(
    gw: &Gateway,
    hash: &str,
    output: Option<&Path>,
    force: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let id = parse_hash(hash)?;
    if let Some(p) = output
        && !force
        && occupied(p)
    {
        bail!("{} exists; pass --force to replace it", p.display());
    }
    let resp = gw
        .http
        .get(gw.url("/download"))
        .query(&[("hash", id.to_string())]);
    let resp = gw
        .authed(resp)
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {}", gw.base))?;
    let resp = check(resp).await?;
    let dest = match output {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(
            disposition_filename(&resp)
                .and_then(|n| local_name(&n))
                .unwrap_or_else(|| id.to_string()),
        ),
    };
    if !force && occupied(&dest) {
        bail!("{} exists; pass --force to replace it", dest.display());
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kdfs-download-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let pb = bar(
        resp.content_length(),
        dest.display().to_string(),
        quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let mut hasher = Sha256::new();
    let mut stream = resp.bytes_stream();
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("the download was interrupted")?;
            hasher.update(&chunk);
            w.write_all(&chunk).context("writing the download")?;
            pb.inc(chunk.len() as u64);
        }
        w.flush()?;
    }
    let got = hex::encode(hasher.finalize());
    if got != id.to_string() {
        bail!("downloaded content has SHA-256 {got}, expected {id}: nothing was written");
    }
    tmp.as_file().sync_all()?;
    // Without --force the move itself refuses an existing file, so one that appeared
    // during the download is not replaced either.
    let placed = if force {
        tmp.persist(&dest).map(drop)
    } else {
        tmp.persist_noclobber(&dest).map(drop)
    };
    placed.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} exists; pass --force to replace it", dest.display())
        } else {
            anyhow::Error::new(e.error)
                .context(format!("cannot move the download to {}", dest.display()))
        }
    })?;
    pb.finish_and_clear();
    println!("{}  {}", id, dest.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type(Path::new("a.PNG")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }

    fn check(raw: &str, want: Option<&str>) {
        assert_eq!(local_name(raw).as_deref(), want, "{raw:?}");
    }

    #[test]
    fn server_names_become_plain_local_names() {
        check("report.pdf", Some("report.pdf"));
        check("../evil", Some("evil"));
        check("a/b.txt", Some("b.txt"));
        check("/etc/passwd", Some("passwd"));
        check("C:\\x\\a.txt", Some("a.txt"));
        check(".bashrc", Some("_.bashrc"));
        check("../.ssh/..authorized_keys", Some("_..authorized_keys"));
        check("a\r\nb.txt", Some("ab.txt"));
        check("\u{1b}[31mred", Some("[31mred"));
        check("..", None);
        check("dir/", None);
        check("", None);
        check("  ", None);
        check(&"x".repeat(256), None);
    }
}
