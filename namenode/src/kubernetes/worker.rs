//! The `kubernetes` worker: watches the datanode pods, looks up what each needs
//! (`lookups.rs`), turns them into events (`pod_events.rs`, `tracker.rs`) and applies
//! those (`apply.rs`). API errors are logged and retried with backoff; the worker never
//! stops the namenode. Tested against a mock API service (`namesystem/kubernetes_hooks/pod_watch_tests.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::apply::apply;
use super::lookups::Lookups;
use super::mode::{Decision, decide};
use super::pod_events::Watched;
use super::tracker::PodTracker;
use crate::NameSystem;

/// How often the known pods are applied again, so that a datanode registering after
/// its pod was seen still gets its zone, and a look-up that failed is retried.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);

/// What the worker watches, and through which client.
#[derive(Clone)]
pub struct Watch {
    pub client: Client,
    /// The datanodes' namespace.
    pub namespace: String,
    /// Label selector of the datanode pods.
    pub selector: String,
}

impl Watch {
    /// Watches `selector` in the client's default namespace (tests bring their own
    /// client; `connect` builds the real one).
    #[cfg(test)]
    pub fn new(client: Client, selector: &str) -> Self {
        let namespace = client.default_namespace().to_owned();
        Self {
            client,
            namespace,
            selector: selector.to_owned(),
        }
    }
}

/// Builds a client if Kubernetes awareness is wanted (`config.kubernetes`), and logs
/// the one line that says whether it is on (and in which namespace) or off (and why).
/// Never fails: without a usable configuration the namenode runs without Kubernetes.
pub async fn connect(config: &crate::Config) -> Option<Watch> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
    match decide(config.kubernetes, host.as_deref()) {
        Decision::Disabled(reason) => {
            tracing::info!(reason, "Kubernetes awareness off");
            None
        }
        Decision::Enabled => match Client::try_default().await {
            Ok(client) => {
                let namespace = config
                    .kubernetes_namespace
                    .clone()
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| namespace(&client));
                tracing::info!(
                    namespace = %namespace,
                    selector = %config.kubernetes_selector,
                    "Kubernetes awareness on: watching datanode pods"
                );
                Some(Watch {
                    client,
                    namespace,
                    selector: config.kubernetes_selector.clone(),
                })
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "Kubernetes awareness off: no usable Kubernetes client configuration"
                );
                None
            }
        },
    }
}

/// `POD_NAMESPACE` (downward API), else the client's default namespace.
pub fn namespace(client: &Client) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| client.default_namespace().to_owned())
}

/// The `kubernetes` worker: watches the datanode pods until `token` is cancelled,
/// applying what it learns to `ns` and kicking `kick` (the replication worker) when a
/// datanode dies. Errors are logged and retried with backoff.
pub async fn worker(
    Watch {
        client,
        namespace,
        selector,
    }: Watch,
    ns: Arc<NameSystem>,
    kick: Arc<Notify>,
    token: CancellationToken,
) {
    ns.set_pods_watched(true);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut lookups = Lookups::new(client, &namespace);
    let mut tracker = PodTracker::default();
    // `Init` only marks the start of a (re)list. It is dropped before the backoff,
    // which resets on every `Ok` item: otherwise a failing list would be retried at
    // the initial delay forever instead of backing off. The tracker starts a relist at
    // its first `InitApply` (or an empty one at `InitDone`) instead.
    let watch = watcher(pods, watcher::Config::default().labels(&selector))
        .filter(|e| std::future::ready(!matches!(e, Ok(watcher::Event::Init))))
        .default_backoff();
    let mut watch = std::pin::pin!(watch);
    let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let pods: Vec<(Pod, Watched)> = tokio::select! {
            _ = token.cancelled() => {
                ns.set_pods_watched(false);
                return;
            }
            item = watch.next() => match item {
                Some(Ok(event)) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("pod watch recovered");
                    }
                    tracker.observe(event)
                }
                Some(Err(e)) => {
                    tracker.abort_relist();
                    // Logged once per outage; the stream backs off before retrying.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "pod watch failed; retrying with backoff");
                    } else {
                        tracing::debug!(error = %e, "pod watch still failing");
                    }
                    metrics::gauge!("kdfs_namenode_kubernetes_watch_up").set(0.0);
                    continue;
                }
                None => {
                    tracing::warn!("pod watch ended");
                    ns.set_pods_watched(false);
                    return;
                }
            },
            _ = reconcile.tick() => tracker
                .pods()
                .map(|p| (p.clone(), Watched::Applied))
                .collect(),
        };
        let mut events = Vec::new();
        for (pod, watched) in pods {
            events.extend(lookups.events(&pod, watched).await);
        }
        let ns2 = ns.clone();
        // The hooks take the namesystem's locks: keep them off the async threads.
        let died = !events.is_empty()
            && tokio::task::spawn_blocking(move || {
                events.iter().fold(false, |d, e| apply(&ns2, e) | d)
            })
            .await
            .unwrap_or(false);
        if died {
            kick.notify_one();
        }
        // The worker's state, for /metrics: whether the watch works, and what it sees.
        metrics::gauge!("kdfs_namenode_kubernetes_watch_up").set(if failing { 0.0 } else { 1.0 });
        metrics::gauge!("kdfs_namenode_kubernetes_datanode_pods")
            .set(tracker.pods().count() as f64);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[tokio::test]
    async fn off_means_no_client() {
        let config = crate::Config::parse_from(["kdfs-namenode", "--kubernetes", "off"]);
        assert!(connect(&config).await.is_none());
    }
}
