//! The S3 key pair of `kdfs local`: made on the first start, kept in
//! `<data-dir>/s3-credentials` (one `ACCESS_KEY SECRET_KEY` line, mode 0600, the
//! gateway's `--s3-credentials-file` format) and reused after, so scripts and
//! `~/.aws` profiles set up once keep working. The gateway re-reads the file: a pair
//! added by hand is accepted within seconds.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::Rng;
use rand::distr::Alphanumeric;

/// The file's name under the data directory.
pub(crate) const FILE: &str = "s3-credentials";

/// The first pair of the credentials file, and the file.
pub(crate) struct S3Keys {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) path: PathBuf,
}

fn random(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Reads `<data_dir>/s3-credentials`, or makes it with a fresh random pair.
pub(crate) fn ensure(data_dir: &Path) -> anyhow::Result<S3Keys> {
    let path = data_dir.join(FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let pair = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .find_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_owned(), w.next()?.to_owned()))
            });
        let (access_key, secret_key) = pair.with_context(|| {
            format!(
                "{} holds no `ACCESS_KEY SECRET_KEY` line (delete it to get a new pair)",
                path.display()
            )
        })?;
        return Ok(S3Keys {
            access_key,
            secret_key,
            path,
        });
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let access_key = format!("KDFS{}", random(16).to_ascii_uppercase());
    let secret_key = random(40);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(
        f,
        "# kdfs local's S3 key pairs: ACCESS_KEY SECRET_KEY per line (re-read while it runs)\n{access_key} {secret_key}"
    )?;
    f.sync_all()?;
    Ok(S3Keys {
        access_key,
        secret_key,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path()).unwrap();
        assert!(first.access_key.starts_with("KDFS") && first.access_key.len() == 20);
        assert_eq!(first.secret_key.len(), 40);
        let again = ensure(dir.path()).unwrap();
        assert_eq!(
            (again.access_key, again.secret_key),
            (first.access_key, first.secret_key)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
