//! What the namenode says about the cluster, read through the gateway's `/info` and
//! `/files/{hash}`: live datanodes, safe mode, each datanode's state, where each
//! block's replicas are, and whether every file is back at full replication.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::Stored;
use crate::cluster::ProcessCluster;
use crate::wait::BLOCKING_POLL;

impl ProcessCluster {
    /// Index of the datanode advertising `addr`.
    pub fn datanode_index(&self, addr: &str) -> Option<usize> {
        self.datanode_addrs.iter().position(|a| a == addr)
    }

    /// Datanodes the namenode considers live (0 if /info fails).
    pub fn live_datanodes(&self) -> usize {
        self.try_info()
            .ok()
            .and_then(|v| v["live_datanodes"].as_u64())
            .unwrap_or(0) as usize
    }

    /// Whether the namenode is in safe mode (None if /info fails).
    pub fn safe_mode(&self) -> Option<bool> {
        self.try_info().ok().and_then(|v| v["safe_mode"].as_bool())
    }

    /// Datanode `i`'s state as the namenode reports it (`live`, `stale`, `dead`...).
    pub fn datanode_state(&self, i: usize) -> Option<String> {
        let info = self.try_info().ok()?;
        datanode_entry(&info, &self.datanode_addrs[i])
            .and_then(|d| d["state"].as_str().map(str::to_owned))
    }

    /// Datanode `i`'s id as the namenode reports it.
    pub fn datanode_id(&self, i: usize) -> Option<String> {
        let info = self.try_info().ok()?;
        datanode_entry(&info, &self.datanode_addrs[i])
            .and_then(|d| d["id"].as_str().map(str::to_owned))
    }

    /// The sum of every sample of `metric` (any labels) on the namenode's `/metrics`
    /// (the leader's in an HA group); None if it cannot be read. A counter never
    /// incremented reads 0.
    pub fn namenode_metric(&self, metric: &str) -> Option<f64> {
        let i = match self.namenode_count() {
            1 => 0,
            _ => self.leader()?,
        };
        self.namenode_metric_at(i, metric)
    }

    /// Replica addresses of each block of `hash` (None if unknown or unreachable).
    pub fn replicas(&self, hash: &str) -> Option<Vec<Vec<String>>> {
        let v = self.file(hash).ok()??;
        let blocks = v["blocks"].as_array()?;
        Some(
            blocks
                .iter()
                .map(|b| {
                    b["replicas"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(|l| l["address"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect(),
        )
    }

    /// Block ids of `hash`, in order.
    pub fn block_ids(&self, hash: &str) -> Vec<String> {
        let v = self
            .file(hash)
            .unwrap_or_else(|e| panic!("GET /files/{hash}: {e}"))
            .unwrap_or_else(|| panic!("file {hash} not found"));
        v["blocks"]
            .as_array()
            .expect("blocks array")
            .iter()
            .map(|b| b["id"].as_str().expect("block id").to_owned())
            .collect()
    }

    /// Whether every block of every file has exactly `replication` live replicas on
    /// distinct nodes, none of them in `excluded`, and /info shows nothing under-replicated
    /// or missing.
    pub fn fully_replicated(&self, files: &[Stored], excluded: &[usize]) -> bool {
        let Ok(info) = self.try_info() else {
            return false;
        };
        if info["under_replicated"].as_u64() != Some(0) || info["missing"].as_u64() != Some(0) {
            return false;
        }
        let want = self
            .opts
            .replication
            .expect("a cluster started with Options::replication") as usize;
        let excluded: Vec<&str> = excluded
            .iter()
            .map(|&i| self.datanode_addrs[i].as_str())
            .collect();
        files.iter().all(|f| {
            self.replicas(&f.hash).is_some_and(|blocks| {
                blocks.iter().all(|r| {
                    let distinct: BTreeSet<&String> = r.iter().collect();
                    distinct.len() == want
                        && r.len() == want
                        && !r.iter().any(|a| excluded.contains(&a.as_str()))
                })
            })
        })
    }

    /// Waits until [`Self::fully_replicated`] holds; on timeout the panic message says
    /// where each file stands. Returns how long it took.
    pub fn wait_replicated(
        &self,
        what: &str,
        deadline: Duration,
        files: &[Stored],
        excluded: &[usize],
    ) -> Duration {
        let start = Instant::now();
        loop {
            if self.fully_replicated(files, excluded) {
                return start.elapsed();
            }
            if let Some(dead) = self.exited_unexpectedly() {
                panic!("{dead} exited on its own while waiting for: {what}");
            }
            if start.elapsed() >= deadline {
                panic!(
                    "timed out after {deadline:?} waiting for: {what}; now {}",
                    self.replication_summary(files)
                );
            }
            std::thread::sleep(BLOCKING_POLL);
        }
    }

    /// A one-line summary of replica counts for failure messages.
    pub fn replication_summary(&self, files: &[Stored]) -> String {
        let info = self.try_info().map(|v| {
            format!(
                "under_replicated={} missing={} live={}",
                v["under_replicated"], v["missing"], v["live_datanodes"]
            )
        });
        let counts: Vec<String> = files
            .iter()
            .map(|f| match self.replicas(&f.hash) {
                Some(b) => format!(
                    "{}:{:?}",
                    &f.hash[..8],
                    b.iter().map(Vec::len).collect::<Vec<_>>()
                ),
                None => format!("{}:?", &f.hash[..8]),
            })
            .collect();
        format!("{info:?} {}", counts.join(" "))
    }
}

/// The `/info` entry of the datanode advertising `addr`.
pub fn datanode_entry<'a>(info: &'a Value, addr: &str) -> Option<&'a Value> {
    info["datanodes"]
        .as_array()?
        .iter()
        .find(|d| d["address"].as_str() == Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datanode_entry_is_found_by_address() {
        let info = serde_json::json!({"datanodes": [
            {"address": "127.0.0.1:1", "state": "live"},
            {"address": "127.0.0.1:2", "state": "dead"},
        ]});
        let e = datanode_entry(&info, "127.0.0.1:2").expect("present");
        assert_eq!(e["state"], "dead");
        assert!(datanode_entry(&info, "127.0.0.1:3").is_none());
        assert!(datanode_entry(&serde_json::json!({}), "127.0.0.1:1").is_none());
    }
}
