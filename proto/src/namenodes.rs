//! Following the namenode leader (DESIGN.md §5, high availability): the namenodes a
//! datanode or gateway was given (`--namenode URL[,URL...]`), the one believed to lead,
//! and [`Namenodes::call`], which runs one rpc there and follows the group when it
//! answers that it does not lead ([`crate::leader`]), or cannot be reached.
//!
//! - A "not the leader" refusal naming the leader: call the leader (a configured one,
//!   or the address as named, dialed through a small bounded pool).
//! - A refusal naming no leader, a namenode that cannot be reached, or one that answers
//!   a plain UNAVAILABLE: try the next configured namenode, pausing briefly after every
//!   round, until the deadline; then fail UNAVAILABLE saying which were tried (marked
//!   as a refusal naming no leader, [`crate::leader::leader_hint`] `Some(None)`). A plain
//!   UNAVAILABLE is the answer after all (e.g. "not enough live datanodes") once another
//!   namenode points back to the one that gave it, or when it is the only namenode.
//! - A call that may have run before it failed (its namenode answered a plain
//!   UNAVAILABLE, timed out, or dropped the connection) is repeated only if it is
//!   [`Retry::Idempotent`]; a refusal or a failed dial proves it did not run.
//!
//! One URL costs nothing extra: the call goes straight to it, and a failure is returned
//! at once, as before HA; only a leader hint (the URL names one member of an HA group)
//! is followed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::leader;
use crate::pb::namenode_client::NamenodeClient;
use crate::pb::object_namespace_client::ObjectNamespaceClient;
use crate::pool::ChannelPool;
use crate::tls::{self, Tls};
use crate::transport;

/// How long a call keeps looking for a leader by default (elections take a few
/// seconds; the gateway answers 503 after this).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// The pause after a round of namenodes that all failed: from the first to the cap,
/// doubling.
pub const RETRY_PAUSE_MIN: Duration = Duration::from_millis(50);
pub const RETRY_PAUSE_MAX: Duration = Duration::from_millis(1000);
/// Leader addresses learned from refusals that match no configured URL, dialed at
/// most: the leader of a group moves among a handful of namenodes.
const LEARNED_CHANNELS: usize = 4;

/// A `--namenode` value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--namenode {value:?}: {reason}")]
pub struct BadNamenodes {
    pub value: String,
    pub reason: String,
}

/// Whether a call may be sent again after it may have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Running it twice leaves the same state (reads, reports, a commit of the same
    /// record, a delete of a tombstoned file).
    Idempotent,
    /// A second run could answer differently (completing a multipart upload): repeated
    /// only when it certainly did not run.
    AtMostOnce,
}

/// One configured namenode.
#[derive(Debug)]
struct Member {
    /// As configured (`http://host:port` or `host:port`).
    url: String,
    /// `host:port`, lowercase: what leader hints are compared with.
    authority: String,
    channel: Channel,
}

/// Where calls go now.
#[derive(Debug, Clone)]
struct Target {
    /// `host:port` of the namenode.
    authority: String,
    channel: Channel,
    /// Its place in the configured list, `None` for a leader learned from a hint.
    member: Option<usize>,
}

#[derive(Debug)]
struct Inner {
    members: Vec<Member>,
    target: Mutex<Target>,
    /// Bumped whenever the target changes.
    switches: AtomicU64,
    learned: ChannelPool,
    deadline: Duration,
}

/// The namenodes of a cluster and the one believed to lead. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Namenodes {
    inner: Arc<Inner>,
}

/// The URLs of a `--namenode` value: comma-separated, blanks around each ignored, each a
/// `host:port` or an `http(s)://host:port` URI; at least one, no duplicates.
pub fn parse_urls(value: &str) -> Result<Vec<String>, BadNamenodes> {
    let bad = |reason: String| BadNamenodes {
        value: value.to_owned(),
        reason,
    };
    let mut urls: Vec<String> = Vec::new();
    let mut authorities: Vec<String> = Vec::new();
    for part in value.split(',') {
        let url = part.trim();
        if url.is_empty() {
            return Err(bad("an empty entry (a URL was expected)".into()));
        }
        let authority = authority_of(url).map_err(|e| bad(format!("{url:?}: {e}")))?;
        if authorities.contains(&authority) {
            return Err(bad(format!("{authority} is listed twice")));
        }
        authorities.push(authority);
        urls.push(url.to_owned());
    }
    Ok(urls)
}

/// `host:port` of a namenode URL, lowercase; an error says what is wrong with it.
fn authority_of(url: &str) -> Result<String, String> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let uri: http::Uri = with_scheme.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        other => return Err(format!("scheme {other:?} (http or https expected)")),
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("a namenode URL has no path".into());
    }
    let authority = uri.authority().ok_or("no host")?;
    if authority.port_u16().is_none() {
        return Err("no port (e.g. http://namenode:8020)".into());
    }
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err("no usable host".into());
    }
    Ok(authority.as_str().to_ascii_lowercase())
}

/// What one attempt's failure tells the follower.
#[derive(Debug)]
enum Verdict {
    /// The namenode's own answer: return it.
    Answer(Status),
    /// Not the leader; the leader is at this `host:port`.
    Redirect(String),
    /// Not the leader, leader unknown (an election): the call did not run.
    NoLeader(Status),
    /// Never reached a namenode (the dial failed): the call did not run.
    Unreached(Status),
    /// Reached a namenode that may have run the call (a plain UNAVAILABLE, a dropped
    /// connection or a timeout).
    Maybe(Status),
}

fn classify(status: Status) -> Verdict {
    if let Some(hint) = leader::leader_hint(&status) {
        return match hint.and_then(|h| authority_of(&h).ok()) {
            Some(authority) => Verdict::Redirect(authority),
            None => Verdict::NoLeader(status),
        };
    }
    if never_sent(&status) {
        return Verdict::Unreached(status);
    }
    let local = std::error::Error::source(&status).is_some();
    match status.code() {
        Code::Unavailable => Verdict::Maybe(status),
        Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Internal if local => {
            Verdict::Maybe(status)
        }
        _ => Verdict::Answer(status),
    }
}

/// Whether a status is the client's failure to connect (refused, unresolvable, timed
/// out dialing), so the request never left this process.
fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        let text = e.to_string();
        if text.contains("tcp connect error")
            || text.contains("dns error")
            || text.contains("error trying to connect")
        {
            return true;
        }
        source = e.source();
    }
    false
}

impl Namenodes {
    /// The namenodes of a `--namenode` value, calls going to the first until one says
    /// otherwise; connects lazily (a namenode that is down is an error only when used).
    /// `tls`: mutual TLS towards every namenode (their certificates must name the hosts).
    pub fn new(value: &str, tls: Option<Arc<Tls>>) -> Result<Self, BadNamenodes> {
        Self::with_deadline(value, tls, DEFAULT_DEADLINE)
    }

    /// As [`Namenodes::new`], looking for a leader for at most `deadline` per call.
    pub fn with_deadline(
        value: &str,
        tls: Option<Arc<Tls>>,
        deadline: Duration,
    ) -> Result<Self, BadNamenodes> {
        let mut members = Vec::new();
        for url in parse_urls(value)? {
            let channel = tls::channel(&url, tls.as_ref()).map_err(|e| BadNamenodes {
                value: value.to_owned(),
                reason: format!("{url:?}: {e}"),
            })?;
            let authority = authority_of(&url).expect("parse_urls checked it");
            members.push(Member {
                url,
                authority,
                channel,
            });
        }
        let first = Target {
            authority: members[0].authority.clone(),
            channel: members[0].channel.clone(),
            member: Some(0),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                members,
                target: Mutex::new(first),
                switches: AtomicU64::new(0),
                learned: ChannelPool::with_capacity(tls, LEARNED_CHANNELS),
                deadline,
            }),
        })
    }

    /// The configured URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        self.inner.members.iter().map(|m| m.url.clone()).collect()
    }

    /// Whether more than one namenode was configured.
    pub fn is_group(&self) -> bool {
        self.inner.members.len() > 1
    }

    /// Each configured namenode's `host:port` (lowercase) and channel, in order (to ask
    /// each its role).
    pub fn members(&self) -> Vec<(String, Channel)> {
        self.inner
            .members
            .iter()
            .map(|m| (m.authority.clone(), m.channel.clone()))
            .collect()
    }

    /// `host:port` of the namenode calls go to now (the believed leader).
    pub fn leader(&self) -> String {
        self.target().authority
    }

    /// How often the target changed: a new value means calls go elsewhere now.
    pub fn switches(&self) -> u64 {
        self.inner.switches.load(Ordering::Relaxed)
    }

    /// The channel to the believed leader, for a call that follows no leader itself.
    pub fn channel(&self) -> Channel {
        self.target().channel
    }

    fn target(&self) -> Target {
        self.inner
            .target
            .lock()
            .expect("namenode target lock is never poisoned")
            .clone()
    }

    /// Calls go to `next` from now on, unless another call moved them already (the
    /// target is still `from`).
    fn switch(&self, from: &Target, next: Target) {
        let mut target = self
            .inner
            .target
            .lock()
            .expect("namenode target lock is never poisoned");
        if target.authority == from.authority && target.authority != next.authority {
            tracing::info!(from = %from.authority, to = %next.authority, "following the namenode leader");
            *target = next;
            self.inner.switches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls stop going to `authority` if they still do (it answered as a deposed
    /// leader): the next configured namenode is asked, and points to the leader.
    pub fn pass_over(&self, authority: &str) {
        let target = self.target();
        if target.authority == authority {
            let next = self.next_after(&target);
            self.switch(&target, next);
        }
    }

    /// The target for a leader at `authority`: a configured member, or dialed as named.
    fn target_at(&self, authority: &str) -> Result<Target, Status> {
        if let Some((i, m)) = self
            .inner
            .members
            .iter()
            .enumerate()
            .find(|(_, m)| m.authority == authority)
        {
            return Ok(Target {
                authority: m.authority.clone(),
                channel: m.channel.clone(),
                member: Some(i),
            });
        }
        let channel = self.inner.learned.channel(authority).map_err(|e| {
            Status::unavailable(format!("the namenode leader's address is unusable: {e}"))
        })?;
        Ok(Target {
            authority: authority.to_owned(),
            channel,
            member: None,
        })
    }

    /// The configured member after `target` (the first after a learned leader).
    fn next_after(&self, target: &Target) -> Target {
        let n = self.inner.members.len();
        let i = target.member.map_or(0, |i| (i + 1) % n);
        let m = &self.inner.members[i];
        Target {
            authority: m.authority.clone(),
            channel: m.channel.clone(),
            member: Some(i),
        }
    }

    /// Runs `call` on the leader's channel and returns its reply, following the leader
    /// as the module docs say, for at most the deadline. `call` builds the rpc afresh
    /// for each attempt (set per-attempt timeouts on its request).
    pub async fn call<T, F, Fut>(&self, retry: Retry, call: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_from(retry, call).await.map(|(reply, _)| reply)
    }

    /// As [`Namenodes::call`], also naming the namenode (`host:port`) that answered.
    pub async fn call_from<T, F, Fut>(
        &self,
        retry: Retry,
        mut call: F,
    ) -> Result<(T, String), Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = tokio::time::Instant::now();
        let single = !self.is_group();
        let mut pause = RETRY_PAUSE_MIN;
        let mut failures_in_round = 0usize;
        // Plain UNAVAILABLE answers of this call, by namenode: one a redirect points
        // back to is the leader's own answer.
        let mut plain: Vec<(String, Status)> = Vec::new();
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<Status> = None;
        loop {
            let target = self.target();
            let status = match call(target.channel.clone()).await {
                Ok(reply) => return Ok((reply.into_inner(), target.authority)),
                Err(status) => status,
            };
            if !tried.contains(&target.authority) {
                tried.push(target.authority.clone());
            }
            match classify(status) {
                Verdict::Answer(status) => return Err(status),
                Verdict::Redirect(leader) => {
                    if let Some((_, answer)) = plain.iter().find(|(a, _)| *a == leader) {
                        return Err(answer.clone());
                    }
                    if leader == target.authority {
                        // It names itself: a new leader not serving yet; ask again.
                        failures_in_round = usize::MAX;
                        last = Some(Status::unavailable(format!(
                            "the namenode leader {leader} is not serving yet"
                        )));
                    } else {
                        let next = self.target_at(&leader)?;
                        self.switch(&target, next);
                        failures_in_round += 1;
                    }
                }
                Verdict::NoLeader(status) => {
                    let next = self.next_after(&target);
                    self.switch(&target, next);
                    failures_in_round += 1;
                    last = Some(status);
                }
                Verdict::Unreached(status) => {
                    if single && target.member.is_some() {
                        return Err(status);
                    }
                    let next = self.next_after(&target);
                    self.switch(&target, next);
                    failures_in_round += 1;
                    last = Some(status);
                }
                Verdict::Maybe(status) => {
                    if (single && target.member.is_some()) || retry == Retry::AtMostOnce {
                        return Err(status);
                    }
                    if status.code() == Code::Unavailable
                        && std::error::Error::source(&status).is_none()
                    {
                        plain.push((target.authority.clone(), status.clone()));
                    }
                    let next = self.next_after(&target);
                    self.switch(&target, next);
                    failures_in_round += 1;
                    last = Some(status);
                }
            }
            // Every namenode had its turn (a learned leader counts as one more): pause.
            if failures_in_round > self.inner.members.len() {
                failures_in_round = 0;
                let left = self.inner.deadline.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(self.no_leader(&tried, plain, last));
                }
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
            if started.elapsed() >= self.inner.deadline {
                return Err(self.no_leader(&tried, plain, last));
            }
        }
    }

    /// The error of a call that found no leader in time: a namenode's own plain
    /// UNAVAILABLE if one gave it, else UNAVAILABLE naming what was tried.
    fn no_leader(
        &self,
        tried: &[String],
        plain: Vec<(String, Status)>,
        last: Option<Status>,
    ) -> Status {
        if let Some((_, answer)) = plain.into_iter().last() {
            return answer;
        }
        let last = last.map(|s| s.message().to_owned()).unwrap_or_default();
        let mut status = Status::unavailable(format!(
            "no namenode leader answered within {:?} (tried {}): {last}",
            self.inner.deadline,
            tried.join(", ")
        ));
        // Marked as a refusal naming no leader, so callers tell it from a busy leader.
        status.metadata_mut().insert(
            leader::NOT_LEADER_KEY,
            tonic::metadata::MetadataValue::from_static(leader::UNKNOWN_LEADER),
        );
        status
    }
}

/// A `Namenode` client over `channel` with kdfs's message size limits.
pub fn namenode_client(channel: Channel) -> NamenodeClient<Channel> {
    NamenodeClient::new(channel)
        .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(transport::MAX_MESSAGE_SIZE)
}

/// An `ObjectNamespace` client over `channel` with kdfs's message size limits.
pub fn objects_client(channel: Channel) -> ObjectNamespaceClient<Channel> {
    ObjectNamespaceClient::new(channel)
        .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(transport::MAX_MESSAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_one_by_one() {
        let ok = |v: &str| parse_urls(v).unwrap();
        assert_eq!(ok("http://nn:8020"), ["http://nn:8020"]);
        assert_eq!(
            ok(" http://nn-0:8020, nn-1:8020 ,https://nn-2:8020"),
            ["http://nn-0:8020", "nn-1:8020", "https://nn-2:8020"]
        );
        for bad in [
            "",
            "http://nn:8020,",
            "http://nn:8020,,http://nn-1:8020",
            "http://nn",
            "ftp://nn:8020",
            "http://nn:8020/path",
            "http://nn:8020,HTTP://NN:8020",
            "http://user@nn:8020",
            "http://:8020",
        ] {
            let e = parse_urls(bad).expect_err(bad);
            assert!(e.to_string().contains("--namenode"), "{e}");
        }
    }

    #[test]
    fn failures_are_classified_by_what_they_prove() {
        let redirect = classify(leader::not_leader(Some("NN-1:8020")));
        assert!(matches!(redirect, Verdict::Redirect(a) if a == "nn-1:8020"));
        assert!(matches!(
            classify(leader::not_leader(None)),
            Verdict::NoLeader(_)
        ));
        // A hint that is no address counts as no hint.
        assert!(matches!(
            classify(leader::not_leader(Some("not an address"))),
            Verdict::NoLeader(_)
        ));
        assert!(matches!(
            classify(Status::unavailable("not enough live datanodes")),
            Verdict::Maybe(_)
        ));
        assert!(matches!(
            classify(Status::not_found("no such file")),
            Verdict::Answer(_)
        ));
        assert!(matches!(
            classify(Status::deadline_exceeded("the namenode's own deadline")),
            Verdict::Answer(_)
        ));
        let mut refused = Status::unavailable("transport error");
        refused.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(classify(refused), Verdict::Unreached(_)));
        let mut reset = Status::unknown("connection reset");
        reset.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(matches!(classify(reset), Verdict::Maybe(_)));
    }

    #[tokio::test]
    async fn a_refused_dial_proves_the_call_did_not_run_and_one_url_fails_at_once() {
        let nodes = Namenodes::new("http://127.0.0.1:1", None).unwrap();
        let status = namenode_client(nodes.channel())
            .namenode_role(crate::pb::NamenodeRoleRequest {})
            .await
            .unwrap_err();
        assert!(matches!(classify(status), Verdict::Unreached(_)));
        let started = std::time::Instant::now();
        let e = nodes
            .call(Retry::Idempotent, |c| async move {
                namenode_client(c)
                    .namenode_role(crate::pb::NamenodeRoleRequest {})
                    .await
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no retry with one URL"
        );
        assert_eq!(nodes.switches(), 0);
    }

    #[tokio::test]
    async fn a_group_nobody_answers_for_fails_unavailable_at_its_deadline_naming_them() {
        let nodes = Namenodes::with_deadline(
            "http://127.0.0.1:1,127.0.0.1:2",
            None,
            Duration::from_millis(300),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = nodes
            .call(Retry::Idempotent, |c| async move {
                namenode_client(c)
                    .namenode_role(crate::pb::NamenodeRoleRequest {})
                    .await
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(leader::leader_hint(&e), Some(None), "marked as no leader");
        assert!(
            e.message().contains("127.0.0.1:1") && e.message().contains("127.0.0.1:2"),
            "{e:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }
}
