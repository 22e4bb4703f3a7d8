//! [`PodTracker`]: turns the watcher's stream (including relists after a broken watch)
//! into "this pod was applied / deleted", inferring the deletions that happened while
//! the watch was down. Pure and synchronous.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use super::pod_events::Watched;

/// Turns the watcher's events into applied/deleted pods, and remembers the pods it saw
/// so that a relist (after the watch broke) reports the pods that vanished meanwhile.
#[derive(Debug, Default)]
pub struct PodTracker {
    known: HashMap<String, Pod>,
    relist: Option<HashMap<String, Pod>>,
}

impl PodTracker {
    /// What one watcher event says about which pods exist.
    pub fn observe(&mut self, event: watcher::Event<Pod>) -> Vec<(Pod, Watched)> {
        match event {
            watcher::Event::Apply(pod) => {
                if let Some(name) = pod.metadata.name.clone() {
                    self.known.insert(name, pod.clone());
                }
                vec![(pod, Watched::Applied)]
            }
            watcher::Event::Delete(pod) => {
                if let Some(name) = &pod.metadata.name {
                    self.known.remove(name);
                }
                vec![(pod, Watched::Deleted)]
            }
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(pod) => {
                if let Some(name) = pod.metadata.name.clone() {
                    self.relist
                        .get_or_insert_with(HashMap::new)
                        .insert(name, pod.clone());
                }
                vec![(pod, Watched::Applied)]
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.known, fresh);
                old.into_iter()
                    .filter(|(name, _)| !self.known.contains_key(name))
                    .map(|(_, pod)| (pod, Watched::Deleted))
                    .collect()
            }
        }
    }

    /// Forgets a relist cut short by an error: the watcher starts the next one afresh.
    pub fn abort_relist(&mut self) {
        self.relist = None;
    }

    /// The pods currently known to exist.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.known.values()
    }
}

#[cfg(test)]
mod tests {
    use super::super::pod_events::test_pod as pod;
    use super::*;

    #[test]
    fn a_relist_reports_pods_that_vanished_while_the_watch_was_down() {
        let mut t = PodTracker::default();
        let names = |v: Vec<(Pod, Watched)>| -> Vec<(String, Watched)> {
            let mut v: Vec<_> = v
                .into_iter()
                .map(|(p, w)| (p.metadata.name.unwrap(), w))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert!(t.observe(watcher::Event::Init).is_empty());
        for n in ["datanode-0", "datanode-1", "datanode-2"] {
            t.observe(watcher::Event::InitApply(pod(n, "a", false)));
        }
        assert!(t.observe(watcher::Event::InitDone).is_empty());
        assert_eq!(
            names(t.observe(watcher::Event::Delete(pod("datanode-2", "a", false)))),
            vec![("datanode-2".into(), Watched::Deleted)]
        );
        assert_eq!(t.pods().count(), 2);
        // The watch broke; datanode-1 went away meanwhile, datanode-3 appeared.
        t.observe(watcher::Event::Init);
        t.observe(watcher::Event::InitApply(pod("datanode-0", "a", false)));
        t.observe(watcher::Event::InitApply(pod("datanode-3", "a", false)));
        assert_eq!(
            names(t.observe(watcher::Event::InitDone)),
            vec![("datanode-1".into(), Watched::Deleted)]
        );
        assert_eq!(t.pods().count(), 2);

        // As the worker sees it (no `Init`): a relist cut short by an error is
        // forgotten, and an empty list means every known pod is gone.
        t.observe(watcher::Event::InitApply(pod("datanode-0", "a", false)));
        t.abort_relist();
        assert_eq!(
            names(t.observe(watcher::Event::InitDone)),
            vec![
                ("datanode-0".into(), Watched::Deleted),
                ("datanode-3".into(), Watched::Deleted)
            ]
        );
        assert_eq!(t.pods().count(), 0);
    }
}
