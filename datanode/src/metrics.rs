//! Counters of one datanode and their Prometheus text rendering for `/metrics`.
//!
//! The counters are plain atomics owned by the datanode instance rather than the
//! `metrics` crate's process-global recorder: tests and `kdfs local` run several
//! datanodes (and a namenode and a gateway) in one process, and a global recorder would
//! add their figures together. Rendering the text format by hand is a few lines.

use std::fmt::Write;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::scanner::ScannerStats;
use crate::store::Store;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket latency histogram (Prometheus cumulative buckets when rendered).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP kdfs_datanode_{name} {help}");
        let _ = writeln!(out, "# TYPE kdfs_datanode_{name} histogram");
        let mut cumulative = 0;
        for (b, c) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "kdfs_datanode_{name}_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "kdfs_datanode_{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "kdfs_datanode_{name}_sum {sum}");
        let _ = writeln!(out, "kdfs_datanode_{name}_count {count}");
    }
}

/// Counters of the gRPC service.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Block bytes received by `WriteBlock` and `WriteBlocks` (before dedup).
    pub bytes_received: AtomicU64,
    /// Block bytes sent by `ReadBlock`.
    pub bytes_served: AtomicU64,
    /// Block bytes sent to other datanodes by replication transfers.
    pub bytes_replicated: AtomicU64,
    pub writes_committed: AtomicU64,
    pub writes_failed: AtomicU64,
    /// Pipeline writes whose downstream failed while this node carried on.
    pub downstream_failures: AtomicU64,
    pub transfers_completed: AtomicU64,
    pub transfers_failed: AtomicU64,
    /// Writes, reads and transfers refused for their block access token.
    pub token_refusals: AtomicU64,
    /// Namenode commands not run because their reply came from a deposed leader (a
    /// lower `leader_term` than this datanode has seen).
    pub fenced_commands: AtomicU64,
    /// Block transfers (writes, reads, replications) running now.
    pub in_flight: AtomicU32,
    /// Whole `WriteBlock` calls at this node, header to reply.
    pub write_seconds: Histogram,
    /// Whole `WriteBlocks` calls (batches) at this node, header to reply.
    pub write_batch_seconds: Histogram,
    /// Per hop: from forwarding the trailer (a batch's last) to the successor's reply
    /// (its verify, commit and everything after it).
    pub downstream_ack_seconds: Histogram,
}

/// Counts one transfer in [`Metrics::in_flight`] for as long as it lives.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    pub fn new(m: &'a Metrics) -> Self {
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(&m.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP kdfs_datanode_{name} {help}");
    let _ = writeln!(out, "# TYPE kdfs_datanode_{name} {kind}");
    let _ = writeln!(out, "kdfs_datanode_{name} {value}");
}

/// The Prometheus text exposition of everything a datanode counts.
pub fn render(store: &Store, scanner: &ScannerStats, m: &Metrics, registered: bool) -> String {
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let s = store.stats();
    let mut out = String::with_capacity(4096);
    let c = "counter";
    let g = "gauge";
    metric(
        &mut out,
        "bytes_received_total",
        c,
        "Block bytes received by WriteBlock and WriteBlocks.",
        r(&m.bytes_received),
    );
    metric(
        &mut out,
        "journal_bytes",
        g,
        "Bytes of batched blocks in the active journal file, until the next checkpoint.",
        store.journal_bytes(),
    );
    metric(
        &mut out,
        "journal_checkpoints_total",
        c,
        "Journal checkpoints (one syncfs each) since the datanode started.",
        store.journal_checkpoints(),
    );
    metric(
        &mut out,
        "bytes_written_total",
        c,
        "Bytes of new replicas committed to disk.",
        r(&s.bytes_written),
    );
    metric(
        &mut out,
        "bytes_read_total",
        c,
        "Verified block bytes read from disk (reads, scans, transfers).",
        r(&s.bytes_read),
    );
    metric(
        &mut out,
        "bytes_served_total",
        c,
        "Block bytes sent by ReadBlock.",
        r(&m.bytes_served),
    );
    metric(
        &mut out,
        "bytes_replicated_total",
        c,
        "Block bytes sent to other datanodes by replication.",
        r(&m.bytes_replicated),
    );
    metric(
        &mut out,
        "blocks_committed_total",
        c,
        "New replicas committed.",
        r(&s.blocks_committed),
    );
    metric(
        &mut out,
        "writes_committed_total",
        c,
        "Blocks written by WriteBlock or WriteBlocks that committed locally.",
        r(&m.writes_committed),
    );
    metric(
        &mut out,
        "writes_failed_total",
        c,
        "Blocks written by WriteBlock or WriteBlocks that did not commit locally.",
        r(&m.writes_failed),
    );
    metric(
        &mut out,
        "downstream_failures_total",
        c,
        "Pipeline block writes whose downstream failed.",
        r(&m.downstream_failures),
    );
    metric(
        &mut out,
        "token_refusals_total",
        c,
        "Writes, reads and transfers refused for their block access token.",
        r(&m.token_refusals),
    );
    metric(
        &mut out,
        "transfers_completed_total",
        c,
        "Replication transfers that reached a target.",
        r(&m.transfers_completed),
    );
    metric(
        &mut out,
        "transfers_failed_total",
        c,
        "Replication transfers that failed.",
        r(&m.transfers_failed),
    );
    metric(
        &mut out,
        "fenced_commands_total",
        c,
        "Namenode commands ignored: their reply came from a deposed leader (a lower term).",
        r(&m.fenced_commands),
    );
    metric(
        &mut out,
        "corrupt_replicas_total",
        c,
        "Replicas found corrupt and quarantined.",
        r(&s.corrupt_found),
    );
    metric(
        &mut out,
        "in_flight",
        g,
        "Block transfers running now.",
        u64::from(m.in_flight.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "blocks",
        g,
        "Blocks stored.",
        store.block_count() as u64,
    );
    if let Ok(space) = store.space() {
        metric(
            &mut out,
            "capacity_bytes",
            g,
            "Bytes usable for blocks (after the reserve).",
            space.capacity,
        );
        metric(
            &mut out,
            "used_bytes",
            g,
            "Bytes of stored blocks.",
            space.used,
        );
        metric(
            &mut out,
            "available_bytes",
            g,
            "Bytes available for new blocks.",
            space.available,
        );
    }
    metric(
        &mut out,
        "scanner_passes_total",
        c,
        "Completed block scanner passes.",
        r(&scanner.passes_completed),
    );
    metric(
        &mut out,
        "scanner_bytes_total",
        c,
        "Bytes verified by the block scanner.",
        r(&scanner.bytes_scanned),
    );
    metric(
        &mut out,
        "scanner_blocks_total",
        c,
        "Blocks verified by the block scanner.",
        r(&scanner.blocks_scanned),
    );
    metric(
        &mut out,
        "scanner_corrupt_total",
        c,
        "Corrupt blocks found by the block scanner.",
        r(&scanner.corrupt_found),
    );
    metric(
        &mut out,
        "scanner_pass_done",
        g,
        "Blocks verified in the current pass.",
        r(&scanner.pass_done),
    );
    metric(
        &mut out,
        "scanner_pass_total",
        g,
        "Blocks in the current pass.",
        r(&scanner.pass_total),
    );
    m.write_seconds.render(
        &mut out,
        "write_block_seconds",
        "WriteBlock calls at this node, header to reply.",
    );
    m.write_batch_seconds.render(
        &mut out,
        "write_blocks_seconds",
        "WriteBlocks calls (batches) at this node, header to reply.",
    );
    m.downstream_ack_seconds.render(
        &mut out,
        "downstream_ack_seconds",
        "Per pipeline hop: trailer forwarded to successor's reply.",
    );
    metric(
        &mut out,
        "registered",
        g,
        "1 once registered with the namenode.",
        u64::from(registered),
    );
    out
}
