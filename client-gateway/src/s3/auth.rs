//! Who may use the S3 port: the key pairs of `--s3-access-key`/`--s3-secret-key` and of
//! a reloadable `--s3-credentials-file`, handed to s3s, which checks every request's
//! SigV4 (or SigV2) signature with them ([`S3Auth`]); and the checks s3s leaves to us
//! once a signature is good ([`S3Access`]): no anonymous request, the right region.
//!
//! With no key pair configured the port refuses every request with `AccessDenied` and a
//! message that says how to configure one (and the gateway says so when it starts): an
//! S3 port must never be open by accident. A secret is never logged; a key pair is
//! named by its access key id, which is public in every signed request anyway.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::S3Args;
use super::observe;
use crate::error::{Error, Result};

/// The refusal every request gets when no key pair is configured.
pub const NO_CREDENTIALS: &str = "this kdfs gateway has no S3 credentials configured, so its S3 port refuses every request: \
     start it with --s3-access-key and --s3-secret-key (or KDFS_S3_ACCESS_KEY and KDFS_S3_SECRET_KEY) \
     or --s3-credentials-file";

/// Longest access key id accepted (AWS's own are 16 to 128 characters).
pub const MAX_ACCESS_KEY_LEN: usize = 128;

/// Accepted key pairs: access key id → secret.
type Pairs = HashMap<String, SecretKey>;

/// The accepted key pairs and the region; cheap to share (`Arc`).
pub struct S3Keys {
    fixed: Option<(String, SecretKey)>,
    file: Option<KeysFile>,
    region: String,
}

/// `--s3-credentials-file`: its path and the last good set of pairs read from it.
struct KeysFile {
    path: PathBuf,
    pairs: RwLock<Arc<Pairs>>,
    /// SHA-256 of the contents last read (good or not), to log a change once.
    seen: Mutex<[u8; 32]>,
}

/// Whether `key` is a plausible access key id: 1 to [`MAX_ACCESS_KEY_LEN`] printable
/// ASCII characters other than space, `/` and `,` (which would break a SigV4
/// `Credential=` scope).
pub fn valid_access_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_ACCESS_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b',')
}

/// The pairs of a credentials file: `ACCESS_KEY SECRET_KEY` per line (any whitespace
/// between), blank lines and `#` comments skipped. An error names the line, never its
/// secret.
fn parse_pairs(text: &str) -> std::result::Result<Pairs, String> {
    let mut pairs = Pairs::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(access), Some(secret), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "line {}: expected `ACCESS_KEY SECRET_KEY` (two words)",
                n + 1
            ));
        };
        if !valid_access_key(access) {
            return Err(format!(
                "line {}: the access key id must be 1 to {MAX_ACCESS_KEY_LEN} printable characters without `/` or `,`",
                n + 1
            ));
        }
        if pairs
            .insert(access.to_owned(), SecretKey::from(secret))
            .is_some()
        {
            return Err(format!("line {}: access key {access} appears twice", n + 1));
        }
    }
    Ok(pairs)
}

impl S3Keys {
    /// Reads the configured key pairs. An unreadable or malformed credentials file is an
    /// error: a gateway meant to be guarded by it must not start with other keys.
    pub async fn from_args(args: &S3Args) -> Result<Self> {
        let fixed = match (&args.s3_access_key, &args.s3_secret_key) {
            (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => {
                if !valid_access_key(a) {
                    return Err(Error::Config(format!(
                        "--s3-access-key must be 1 to {MAX_ACCESS_KEY_LEN} printable characters without `/` or `,`"
                    )));
                }
                Some((a.clone(), SecretKey::from(s.as_str())))
            }
            _ => None,
        };
        let file = match &args.s3_credentials_file {
            None => None,
            Some(path) => {
                let text = tokio::fs::read(path).await.map_err(|e| {
                    Error::Config(format!(
                        "cannot read --s3-credentials-file {}: {e}",
                        path.display()
                    ))
                })?;
                let pairs = parse_pairs(&String::from_utf8_lossy(&text)).map_err(|e| {
                    Error::Config(format!("--s3-credentials-file {}: {e}", path.display()))
                })?;
                Some(KeysFile {
                    path: path.clone(),
                    pairs: RwLock::new(Arc::new(pairs)),
                    seen: Mutex::new(Sha256::digest(&text).into()),
                })
            }
        };
        Ok(Self {
            fixed,
            file,
            region: args.s3_region.clone(),
        })
    }

    /// Whether any key pair is configured (a credentials file may be empty for now and
    /// filled later: then requests are refused until it is).
    pub fn configured(&self) -> bool {
        self.fixed.is_some() || self.file.is_some()
    }

    /// The access key ids accepted now (for the startup line).
    pub fn access_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.fixed.iter().map(|(a, _)| a.clone()).collect();
        if let Some(f) = &self.file {
            let mut from_file: Vec<String> = f.current().keys().cloned().collect();
            from_file.sort();
            keys.extend(from_file);
        }
        keys
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    fn secret_of(&self, access_key: &str) -> Option<SecretKey> {
        if let Some((a, s)) = &self.fixed
            && a == access_key
        {
            return Some(s.clone());
        }
        self.file
            .as_ref()
            .and_then(|f| f.current().get(access_key).cloned())
    }

    /// Re-reads the credentials file if there is one. Keeps the last good set (and warns)
    /// if it cannot be read or parsed; logs the new access key ids when it changed.
    pub async fn reload(&self) {
        let Some(file) = &self.file else { return };
        let text = match tokio::fs::read(&file.path).await {
            Ok(t) => t,
            Err(e) => {
                warn!(path = %file.path.display(), error = %e, "cannot re-read the S3 credentials file; keeping the key pairs read before");
                count_reload("unreadable");
                return;
            }
        };
        let digest: [u8; 32] = Sha256::digest(&text).into();
        {
            let mut seen = file.seen.lock().expect("seen lock is never poisoned");
            if *seen == digest {
                return;
            }
            *seen = digest;
        }
        match parse_pairs(&String::from_utf8_lossy(&text)) {
            Ok(pairs) => {
                let mut ids: Vec<&String> = pairs.keys().collect();
                ids.sort();
                info!(path = %file.path.display(), access_keys = ?ids, "S3 credentials file reloaded");
                *file.pairs.write().expect("pairs lock is never poisoned") = Arc::new(pairs);
                count_reload("reloaded");
            }
            Err(e) => {
                warn!(path = %file.path.display(), error = %e, "the S3 credentials file is malformed; keeping the key pairs read before");
                count_reload("malformed");
            }
        }
    }

    /// Re-reads the credentials file every `every` until `stop` (worker
    /// `s3-credentials-file`).
    pub fn watch(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        if self.file.is_none() {
            return;
        }
        let keys = Arc::clone(self);
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => keys.reload().await,
                }
            }
        });
    }

    /// The file path, for logs.
    pub fn credentials_file(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }
}

impl KeysFile {
    fn current(&self) -> Arc<Pairs> {
        Arc::clone(&self.pairs.read().expect("pairs lock is never poisoned"))
    }
}

/// The secrets s3s verifies signatures with.
#[derive(Clone)]
pub struct Secrets(pub Arc<S3Keys>);

#[async_trait::async_trait]
impl S3Auth for Secrets {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if !self.0.configured() {
            return Err(s3_error!(AccessDenied, "{NO_CREDENTIALS}"));
        }
        self.0.secret_of(access_key).ok_or_else(|| {
            s3_error!(
                InvalidAccessKeyId,
                "the access key id you provided is not known to this gateway"
            )
        })
    }
}

/// What a signed request must also satisfy before its operation runs; notes the
/// operation and the caller for the metrics and audit line ([`observe`]).
#[derive(Clone)]
pub struct Access(pub Arc<S3Keys>);

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = observe::operation_label(cx.s3_op().name());
        let access_key = cx.credentials().map(|c| c.access_key.clone());
        let (bucket, key) = match cx.s3_path() {
            s3s::path::S3Path::Root => (None, None),
            s3s::path::S3Path::Bucket { bucket } => (Some(bucket.to_string()), None),
            s3s::path::S3Path::Object { bucket, key } => {
                (Some(bucket.to_string()), Some(key.to_string()))
            }
        };
        if let Some(note) = cx.extensions_mut().get::<observe::Note>() {
            note.set(op, access_key.clone(), bucket, key);
        }
        if !self.0.configured() {
            return Err(s3_error!(AccessDenied, "{NO_CREDENTIALS}"));
        }
        if access_key.is_none() {
            return Err(s3_error!(
                AccessDenied,
                "anonymous requests are refused: sign them (AWS Signature Version 4) with an access key of this gateway"
            ));
        }
        let region = observe::signed_region(cx.headers(), cx.uri());
        if let Some(region) = region
            && region != self.0.region
        {
            return Err(s3_error!(
                AuthorizationHeaderMalformed,
                "the request is signed for region {region:?}; this gateway's region is {:?} (--s3-region)",
                self.0.region
            ));
        }
        Ok(())
    }
}

/// Counts a re-read of the credentials file that found it changed, by outcome
/// (`reloaded`, `malformed`, `unreadable`), so an operator sees a rotation that did not
/// take.
fn count_reload(result: &'static str) {
    metrics::counter!("kdfs_gateway_s3_credentials_reloads_total", "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_parse_pairs_per_line() {
        let p = parse_pairs("# comment\n\nAK1 secret1\n  AK2\tsecret2  \n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["AK1"].expose(), "secret1");
        assert_eq!(p["AK2"].expose(), "secret2");
        for (text, want) in [
            ("AK1\n", "line 1"),
            ("AK1 s extra\n", "line 1"),
            ("# c\nA/K s\n", "line 2"),
            ("AK s\nAK t\n", "appears twice"),
        ] {
            let e = parse_pairs(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains(" s"), "the secret never shows: {e}");
        }
        assert!(parse_pairs("").unwrap().is_empty());
    }

    #[test]
    fn access_key_ids_are_bounded_printable_words() {
        assert!(valid_access_key("AKIAIOSFODNN7EXAMPLE"));
        assert!(valid_access_key("kdfs-local_1"));
        for bad in ["", "a b", "a/b", "a,b", "é", &"x".repeat(129)] {
            assert!(!valid_access_key(bad), "{bad:?}");
        }
    }
}
