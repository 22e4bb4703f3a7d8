//! Kubernetes awareness: when the namenode runs in a cluster it watches the datanode
//! pods so that it learns each datanode's zone (from its node's
//! `topology.kubernetes.io/zone` label) and hears at once when a pod is terminating,
//! scaled away or deleted, rather than after `--dead-after` of silence.
//!
//! Layered so that almost all of it is tested without a cluster, each part depending
//! only on those above it:
//! - `mode.rs`: whether awareness is on ([`decide`](mode::decide)).
//! - `pod_events.rs`: the pure core, [`pod_events`](pod_events::pod_events), from a
//!   watched pod (and the node it runs on, and its StatefulSet's replica count) to
//!   [`ClusterEvent`](pod_events::ClusterEvent)s.
//! - `tracker.rs`: [`PodTracker`](tracker::PodTracker), the watcher's stream
//!   (including relists after a broken watch) as "this pod was applied / deleted",
//!   inferring deletions that happened while the watch was down. Pure and synchronous.
//! - `apply.rs`: [`apply`](apply::apply), an event through the
//!   [`NameSystem`](crate::NameSystem) hooks.
//! - `lookups.rs`: the node and StatefulSet look-ups, cached.
//! - `worker.rs`: the named background worker `kubernetes` ([`worker`]).
//!
//! A pod is matched to datanodes by the `pod_name` it registered with, or by an
//! advertise address starting with `<pod>.` (the headless-service DNS name). News of a
//! pod leaving never touches a datanode that registered after that pod's deletion
//! began (the StatefulSet's next pod of the same name, on the same volume).

mod apply;
mod lookups;
mod mode;
mod pod_events;
mod tracker;
mod worker;

#[cfg(test)]
pub use worker::Watch;
pub use worker::{connect, worker};
