//! Who may upload and delete (and read, with `--auth-reads`: [`read_needs_token`]):
//! bearer tokens (from `--auth-token` and a reloadable `--auth-token-file`), checked in
//! constant time, and a per-client limit on failed attempts.
//!
//! Tokens are kept only as SHA-256 digests. A presented token is hashed and its digest
//! compared with every accepted digest with `subtle` (no early exit, and equal lengths
//! whatever the tokens' lengths), so neither a token's content nor its length leaks
//! through timing. A token is named in logs by its [`TokenId`], `token:` and the first
//! 8 hex digits of its digest, never by itself.
//!
//! The failure limit ([`FailureLimiter`]) counts in windows of `--auth-failure-window`
//! opened by a key's first failure, at two levels, so that one client failing cannot
//! lock out another behind the same address (a proxy, a port-forward, a NAT):
//!
//! - per client **and presented token** ([`TokenKey`]: a digest prefix, or none): after
//!   `--auth-max-failures` failures with the same token (or without one), that token is
//!   answered 429 until the window ends. A misconfigured script with a stale token locks
//!   out only itself; a client with the right token is still let in.
//! - per client ([`ClientKey`], IP address, IPv6 by its /64): after
//!   [`CLIENT_FAILURES_FACTOR`] × `--auth-max-failures` failures with any tokens,
//!   every guarded request from it is answered 429 until the window ends, even with a
//!   correct token, so a client guessing tokens gets a bounded number of guesses.
//!
//! The client is the connection's peer, or, when that peer is one of
//! `--trusted-proxies`, the address its `X-Forwarded-For` names ([`client_ip`]). Each
//! table is bounded ([`MAX_TRACKED_CLIENTS`]): expired windows are dropped first, then
//! the oldest window, so a flood from many addresses cannot grow memory.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::gateway::config::Config;
use crate::gateway::ip_range::IpRange;

/// Most clients whose failed attempts are remembered at once (about 100 bytes each).
pub const MAX_TRACKED_CLIENTS: usize = 16_384;
/// A client may fail this many times `--auth-max-failures` in a window, across all the
/// tokens it presents, before all its guarded requests are refused.
pub const CLIENT_FAILURES_FACTOR: u32 = 10;

/// A token's public name: `token:` and the first 8 hex digits of its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenId(String);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One accepted token, as its digest.
#[derive(Clone, PartialEq, Eq)]
struct Accepted([u8; 32]);

/// Shows the id only: even a digest is not printed whole.
impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Accepted({})", self.id())
    }
}

impl Accepted {
    fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn id(&self) -> TokenId {
        TokenId(format!("token:{}", hex::encode(&self.0[..4])))
    }
}

/// The tokens of a token file: one per line, surrounding whitespace trimmed, blank lines
/// and lines starting with `#` skipped.
fn parse_tokens(text: &str) -> Vec<Accepted> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Accepted::of)
        .collect()
}

/// Who made a request, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// No token is configured: everyone may upload and delete.
    Anonymous,
    /// The request carried this accepted token.
    Token(TokenId),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Anonymous => f.write_str("anonymous"),
            Who::Token(id) => id.fmt(f),
        }
    }
}

/// The answer to one guarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed(Who),
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not accepted.
    BadToken,
    /// Too many failures from this client (with this token, or with any): refused
    /// without looking at the token.
    /// `first` is true for the first refusal of the window (the one the audit log shows).
    Limited {
        retry_after: Duration,
        first: bool,
    },
}

/// The bearer tokens and the failure limit.
pub struct Auth {
    /// From `--auth-token`.
    fixed: Vec<Accepted>,
    file: Option<TokenFile>,
    limiter: Mutex<Limiters>,
}

/// The two levels of the failure limit (see the [module docs](self)).
struct Limiters {
    per_token: FailureLimiter<(ClientKey, TokenKey)>,
    per_client: FailureLimiter<ClientKey>,
}

/// `--auth-token-file`: its path and the last good set of tokens read from it.
struct TokenFile {
    path: PathBuf,
    tokens: RwLock<Arc<Vec<Accepted>>>,
    /// SHA-256 of the contents last read (good or not), to log a change once.
    seen: Mutex<[u8; 32]>,
}

impl Auth {
    /// Reads the configured tokens. An unreadable token file, or one without a token,
    /// is an error: a gateway meant to be guarded must not start open.
    pub async fn from_config(config: &Config) -> Result<Self> {
        if token_on_command_line(config, std::env::var("KDFS_AUTH_TOKEN").ok().as_deref()) {
            warn!(
                "--auth-token was given on the command line, where every local user can read it (ps); \
                 use KDFS_AUTH_TOKEN or --auth-token-file instead"
            );
        }
        let fixed: Vec<Accepted> = config.auth_token().map(Accepted::of).into_iter().collect();
        let file = match &config.auth_token_file {
            None => None,
            Some(path) => {
                let text = tokio::fs::read(path).await.map_err(|e| {
                    Error::Config(format!(
                        "cannot read --auth-token-file {}: {e}",
                        path.display()
                    ))
                })?;
                let tokens = parse_tokens(&String::from_utf8_lossy(&text));
                if tokens.is_empty() {
                    return Err(Error::Config(format!(
                        "--auth-token-file {} holds no token (one per line; # starts a comment)",
                        path.display()
                    )));
                }
                Some(TokenFile {
                    path: path.clone(),
                    tokens: RwLock::new(Arc::new(tokens)),
                    seen: Mutex::new(Sha256::digest(&text).into()),
                })
            }
        };
        Ok(Self {
            fixed,
            file,
            limiter: Mutex::new(Limiters {
                per_token: FailureLimiter::new(
                    config.auth_max_failures,
                    config.auth_failure_window.get(),
                    MAX_TRACKED_CLIENTS,
                ),
                per_client: FailureLimiter::new(
                    config
                        .auth_max_failures
                        .saturating_mul(CLIENT_FAILURES_FACTOR),
                    config.auth_failure_window.get(),
                    MAX_TRACKED_CLIENTS,
                ),
            }),
        })
    }

    /// Whether upload and delete need a token.
    pub fn enabled(&self) -> bool {
        !self.fixed.is_empty() || self.file.is_some()
    }

    /// The ids of every accepted token (for the startup log line).
    pub fn token_ids(&self) -> Vec<TokenId> {
        let mut ids: Vec<TokenId> = self.fixed.iter().map(Accepted::id).collect();
        if let Some(f) = &self.file {
            ids.extend(f.current().iter().map(Accepted::id));
        }
        ids
    }

    /// Decides a guarded request from `client` that presented `authorization` (the raw
    /// header value). Records a failure against the client when there is one.
    pub fn check(&self, authorization: Option<&[u8]>, client: IpAddr, now: Instant) -> Verdict {
        if !self.enabled() {
            return Verdict::Allowed(Who::Anonymous);
        }
        let client = ClientKey::of(client);
        let presented = authorization.and_then(bearer).map(Accepted::of);
        let key = (client, TokenKey::of(presented.as_ref()));
        let mut limiter = self.limiter.lock().expect("limiter lock is never poisoned");
        let refused = match limiter.per_client.refuse(client, now) {
            Some(r) => Some(r),
            None => limiter.per_token.refuse(key, now),
        };
        if let Some((retry_after, first)) = refused {
            return Verdict::Limited { retry_after, first };
        }
        let verdict = match &presented {
            None => Verdict::Missing,
            Some(digest) => match self.find(digest) {
                Some(id) => Verdict::Allowed(Who::Token(id)),
                None => Verdict::BadToken,
            },
        };
        if !matches!(verdict, Verdict::Allowed(_)) {
            limiter.per_token.fail(key, now);
            limiter.per_client.fail(client, now);
        }
        verdict
    }

    /// The id of the accepted token with `digest`, comparing with every one of them.
    fn find(&self, presented: &Accepted) -> Option<TokenId> {
        let from_file = self.file.as_ref().map(TokenFile::current);
        let all = self
            .fixed
            .iter()
            .chain(from_file.iter().flat_map(|t| t.iter()));
        let mut found = None;
        for accepted in all {
            if bool::from(accepted.0.ct_eq(&presented.0)) {
                found = Some(accepted.id());
            }
        }
        found
    }

    /// Re-reads the token file if there is one. Keeps the last good set (and warns) if the
    /// file cannot be read or holds no token; logs the new token ids when it changed.
    pub async fn reload(&self) {
        let Some(file) = &self.file else { return };
        let text = match tokio::fs::read(&file.path).await {
            Ok(t) => t,
            Err(e) => {
                warn!(path = %file.path.display(), error = %e, "cannot re-read the auth token file; keeping the tokens read before");
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
        let tokens = parse_tokens(&String::from_utf8_lossy(&text));
        if tokens.is_empty() {
            warn!(path = %file.path.display(), "the auth token file now holds no token; keeping the tokens read before");
            return;
        }
        let ids: Vec<String> = tokens.iter().map(|t| t.id().to_string()).collect();
        *file.tokens.write().expect("token lock is never poisoned") = Arc::new(tokens);
        info!(path = %file.path.display(), tokens = ?ids, "auth token file reloaded");
    }

    /// Re-reads the token file every `every` until `stop` (worker `auth-token-file`).
    pub fn watch(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        if self.file.is_none() {
            return;
        }
        let auth = Arc::clone(self);
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => auth.reload().await,
                }
            }
        });
    }

    /// The file path, for logs.
    pub fn token_file(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }
}

impl TokenFile {
    fn current(&self) -> Arc<Vec<Accepted>> {
        Arc::clone(&self.tokens.read().expect("token lock is never poisoned"))
    }
}

/// Whether `config`'s `--auth-token` came from the command line rather than from the
/// environment variable `env` (`KDFS_AUTH_TOKEN`): clap takes the flag over the
/// variable, so a token that differs from the variable's came from the flag.
fn token_on_command_line(config: &Config, env: Option<&str>) -> bool {
    config.auth_token().is_some() && config.auth_token.as_deref() != env
}

/// Whether a `GET` or `HEAD` of `path` needs the token under `--auth-reads`: every read
/// of files, the cluster and metrics; not the page (`/`, which holds no data) nor the
/// probes `/healthz` and `/readyz` (Kubernetes sends no token). Unknown paths answer
/// 404 without it.
pub fn read_needs_token(path: &str) -> bool {
    matches!(
        path,
        "/download" | "/files" | "/info" | "/metrics" | "/buckets"
    ) || path.starts_with("/files/")
        || path.starts_with("/buckets/")
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The client a request comes from ([`client_ip`] of its connection's peer and its
/// `X-Forwarded-For`): what the failure limiter and audit lines of both ports name.
pub(crate) fn request_client(req: &axum::extract::Request, trusted: &[IpRange]) -> IpAddr {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::gateway::server::ClientAddr>>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| c.0.0.ip());
    client_ip(
        peer,
        req.headers()
            .get("x-forwarded-for")
            .map(axum::http::HeaderValue::as_bytes),
        trusted,
    )
}

/// The client a request counts against: the connection's `peer`, or, when `peer` is
/// one of `trusted` proxies, the last address of `forwarded_for` (`X-Forwarded-For`)
/// that is not itself a trusted proxy (the one the nearest untrusted hop gave).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&[u8]>, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|t| t.contains(*ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(list) = forwarded_for.and_then(|v| std::str::from_utf8(v).ok()) else {
        return peer;
    };
    let mut last = peer;
    for hop in list.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Junk from an untrusted hop: trust nothing before it.
            return last;
        };
        last = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    last
}

/// What the per-token failure limit counts a request's token by: the first 8 bytes of
/// its digest (never the token), or none when it presented none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey(Option<[u8; 8]>);

impl TokenKey {
    fn of(presented: Option<&Accepted>) -> Self {
        Self(presented.map(|a| a.0[..8].try_into().expect("a digest has 32 bytes")))
    }
}

/// What the failure limit counts by: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

/// One client's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Instant,
    failures: u32,
    /// Requests refused with 429 in this window.
    refused: u64,
}

/// Failed attempts per client in fixed windows, in a bounded table.
///
/// `order` lists the table's windows by start time (windows only ever start at "now",
/// so appending keeps it sorted): expired windows are dropped from its front, and when
/// the table is full the front (oldest) window makes room.
#[derive(Debug)]
pub struct FailureLimiter<K = ClientKey> {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    clients: HashMap<K, Window>,
    order: VecDeque<(K, Instant)>,
}

impl<K: Copy + Eq + std::hash::Hash> FailureLimiter<K> {
    /// `max_failures` 0 turns the limit off.
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> Self {
        Self {
            max_failures,
            window,
            capacity: capacity.max(1),
            clients: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Clients currently remembered.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Drops every window that has ended.
    fn expire(&mut self, now: Instant) {
        while let Some(&(key, since)) = self.order.front() {
            if now.saturating_duration_since(since) < self.window {
                break;
            }
            self.order.pop_front();
            self.clients.remove(&key);
        }
    }

    /// If `key` is over the limit: how long until its window ends, and whether this is
    /// the window's first refusal.
    pub fn refuse(&mut self, key: K, now: Instant) -> Option<(Duration, bool)> {
        if self.max_failures == 0 {
            return None;
        }
        self.expire(now);
        let w = self.clients.get_mut(&key)?;
        if w.failures < self.max_failures {
            return None;
        }
        w.refused += 1;
        let left = self
            .window
            .saturating_sub(now.saturating_duration_since(w.since));
        Some((left, w.refused == 1))
    }

    /// Counts one failed attempt of `key`.
    pub fn fail(&mut self, key: K, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        self.expire(now);
        if let Some(w) = self.clients.get_mut(&key) {
            w.failures = w.failures.saturating_add(1);
            return;
        }
        if self.clients.len() >= self.capacity
            && let Some((oldest, _)) = self.order.pop_front()
        {
            self.clients.remove(&oldest);
        }
        self.clients.insert(
            key,
            Window {
                since: now,
                failures: 1,
                refused: 0,
            },
        );
        self.order.push_back((key, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn token_files_are_parsed_line_by_line() {
        let t = parse_tokens("# rotation in progress\n  new-token \n\nold-token\r\n#x\n");
        assert_eq!(
            t,
            vec![Accepted::of("new-token"), Accepted::of("old-token")]
        );
        assert!(parse_tokens("\n# only a comment\n   \n").is_empty());
    }

    fn config(args: &[&str]) -> Config {
        use clap::Parser;
        Config::parse_from(std::iter::once("kdfs-gateway").chain(args.iter().copied()))
    }

    fn allowed(auth: &Auth, token: &str) -> bool {
        let header = format!("Bearer {token}");
        let v = auth.check(Some(header.as_bytes()), ip("127.0.0.1"), Instant::now());
        matches!(v, Verdict::Allowed(Who::Token(_)))
    }

    #[tokio::test]
    async fn a_reload_keeps_the_last_good_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "one\n").unwrap();
        let arg = format!("--auth-token-file={}", path.display());
        let auth = Auth::from_config(&config(&[&arg, "--auth-max-failures=0"]))
            .await
            .unwrap();
        assert!(auth.enabled() && allowed(&auth, "one") && !allowed(&auth, "two"));

        std::fs::write(&path, "two\n").unwrap();
        auth.reload().await;
        assert!(allowed(&auth, "two") && !allowed(&auth, "one"));

        std::fs::remove_file(&path).unwrap();
        auth.reload().await;
        assert!(
            allowed(&auth, "two"),
            "an unreadable file keeps the last set"
        );

        std::fs::write(&path, "# nothing\n\n").unwrap();
        auth.reload().await;
        assert!(
            allowed(&auth, "two"),
            "a file without tokens keeps the last set"
        );

        std::fs::write(&path, "three\n  \n").unwrap();
        auth.reload().await;
        assert!(allowed(&auth, "three") && !allowed(&auth, "two"));
        assert_eq!(auth.token_ids(), vec![Accepted::of("three").id()]);
    }

    #[tokio::test]
    async fn without_tokens_everyone_is_anonymous() {
        let auth = Auth::from_config(&config(&["--auth-token="]))
            .await
            .unwrap();
        assert!(!auth.enabled());
        for _ in 0..20 {
            let v = auth.check(None, ip("127.0.0.1"), Instant::now());
            assert_eq!(v, Verdict::Allowed(Who::Anonymous));
        }
    }

    #[test]
    fn reads_that_need_the_token() {
        for (path, want) in [
            ("/download", true),
            ("/files", true),
            ("/files/abc", true),
            ("/info", true),
            ("/metrics", true),
            ("/", false),
            ("/healthz", false),
            ("/readyz", false),
            ("/nope", false),
        ] {
            assert_eq!(read_needs_token(path), want, "{path}");
        }
    }

    #[test]
    fn a_token_flag_is_told_from_the_environment() {
        for (args, env, want) in [
            (&["--auth-token=t"][..], None, true),
            (&["--auth-token=t"], Some("other"), true),
            (&["--auth-token=t"], Some("t"), false),
            (&[], None, false),
            (&["--auth-token="], None, false),
        ] {
            assert_eq!(
                token_on_command_line(&config(args), env),
                want,
                "{args:?} {env:?}"
            );
        }
    }

    #[test]
    fn token_ids_are_a_digest_prefix() {
        // SHA-256("s3cret") = 1ec1c26b…
        let id = Accepted::of("s3cret").id().to_string();
        assert_eq!(id, "token:1ec1c26b");
        assert!(!id.contains("s3cret"));
    }

    #[test]
    fn bearer_values() {
        for (raw, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER   abc  ", Some("abc")),
            ("Bearer ", None),
            ("Basic abc", None),
            ("abc", None),
            ("", None),
        ] {
            assert_eq!(bearer(raw.as_bytes()), want, "{raw:?}");
        }
        assert_eq!(bearer(b"Bearer \xff"), None);
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted: Vec<IpRange> = ["10.0.0.1", "10.0.0.2", "10.42.0.0/16"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        for (peer, xff, want) in [
            // Not a proxy: its header is ignored.
            ("192.0.2.9", Some("203.0.113.5"), "192.0.2.9"),
            ("10.0.0.1", Some("203.0.113.5"), "203.0.113.5"),
            ("::ffff:10.0.0.1", Some("203.0.113.5"), "203.0.113.5"),
            // The client may send its own header: only the hop the proxy added counts.
            ("10.0.0.1", Some("198.51.100.1, 203.0.113.5"), "203.0.113.5"),
            // Through two trusted proxies.
            ("10.0.0.1", Some("203.0.113.5, 10.0.0.2"), "203.0.113.5"),
            ("10.0.0.1", None, "10.0.0.1"),
            ("10.0.0.1", Some("junk"), "10.0.0.1"),
            // A proxy trusted by its network (an ingress controller's pod).
            ("10.42.7.3", Some("203.0.113.5"), "203.0.113.5"),
            ("10.42.7.3", Some("203.0.113.5, 10.42.1.1"), "203.0.113.5"),
            ("10.43.0.1", Some("203.0.113.5"), "10.43.0.1"),
        ] {
            let got = client_ip(ip(peer), xff.map(str::as_bytes), &trusted);
            assert_eq!(got, ip(want), "{peer} {xff:?}");
        }
    }

    #[tokio::test]
    async fn one_token_failing_does_not_lock_out_another() {
        let auth = Auth::from_config(&config(&["--auth-token=right", "--auth-max-failures=3"]))
            .await
            .unwrap();
        let check = |token: &str| {
            let header = format!("Bearer {token}");
            auth.check(Some(header.as_bytes()), ip("127.0.0.1"), Instant::now())
        };
        for _ in 0..3 {
            assert_eq!(check("stale"), Verdict::BadToken);
        }
        assert!(matches!(check("stale"), Verdict::Limited { .. }));
        assert!(matches!(check("right"), Verdict::Allowed(Who::Token(_))));
        // A client guessing many tokens is stopped altogether.
        for i in 0..(3 * CLIENT_FAILURES_FACTOR) {
            let _ = check(&format!("guess-{i}"));
        }
        assert!(matches!(check("right"), Verdict::Limited { .. }));
    }

    #[test]
    fn clients_are_keyed_by_ipv4_or_ipv6_64() {
        for (a, b, same) in [
            ("10.0.0.1", "10.0.0.1", true),
            ("10.0.0.1", "10.0.0.2", false),
            ("::ffff:10.0.0.1", "10.0.0.1", true),
            ("2001:db8::1", "2001:db8::ffff:1", true),
            ("2001:db8:0:1::1", "2001:db8:0:2::1", false),
        ] {
            assert_eq!(
                ClientKey::of(ip(a)) == ClientKey::of(ip(b)),
                same,
                "{a} {b}"
            );
        }
    }

    #[test]
    fn failures_block_until_the_window_ends() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(3, Duration::from_secs(60), 100);
        let a = ClientKey::of(ip("10.0.0.1"));
        let b = ClientKey::of(ip("10.0.0.2"));
        for i in 0..3 {
            assert_eq!(l.refuse(a, t0), None, "failure {i} is still answered");
            l.fail(a, t0 + Duration::from_secs(i));
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(l.refuse(a, at), Some((Duration::from_secs(50), true)));
        assert_eq!(l.refuse(a, at), Some((Duration::from_secs(50), false)));
        assert_eq!(l.refuse(b, at), None, "another client is not affected");
        let end = t0 + Duration::from_secs(60);
        assert_eq!(l.refuse(a, end), None, "the window has ended");
        assert!(l.is_empty());
    }

    #[test]
    fn zero_max_failures_turns_the_limit_off() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(0, Duration::from_secs(60), 100);
        let a = ClientKey::of(ip("10.0.0.1"));
        for _ in 0..100 {
            l.fail(a, t0);
        }
        assert_eq!(l.refuse(a, t0), None);
        assert!(l.is_empty());
    }

    #[test]
    fn the_table_stays_bounded_under_many_clients() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(2, Duration::from_secs(60), 4);
        let victim = ClientKey::of(ip("192.0.2.1"));
        l.fail(victim, t0);
        l.fail(victim, t0);
        for i in 0..10_000u32 {
            let k = ClientKey::of(IpAddr::from(i.to_be_bytes()));
            l.fail(k, t0 + Duration::from_millis(u64::from(i)));
            assert!(l.len() <= 4);
            assert!(l.order.len() <= 4);
        }
        // The oldest window made room: the cost of bounded memory.
        assert_eq!(l.refuse(victim, t0 + Duration::from_secs(11)), None);
        // Expired windows go first, so a later burst does not evict live windows early.
        let later = t0 + Duration::from_secs(200);
        let k = ClientKey::of(ip("198.51.100.7"));
        l.fail(k, later);
        l.fail(k, later);
        assert_eq!(l.len(), 1);
        assert!(l.refuse(k, later).is_some());
    }
}
