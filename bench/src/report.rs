//! What `kdfs bench` prints: progress lines on stderr, and on stdout either one JSON
//! object per scenario (`--json`, the scenario's result as it is) or this table.

use kdfs_core::ByteSize;
use serde_json::Value;

use crate::disk::COMMIT_THREADS;
use crate::floor::LOCAL_REPLICATION;

/// A progress line on stderr, so stdout holds only results.
pub(crate) fn progress(msg: impl std::fmt::Display) {
    eprintln!("bench: {msg}");
}

/// The per-process CPU maps `upload_cpu_<key>` and `download_cpu_<key>` of a result.
fn print_cpu(r: &Value, key: &str, unit: &str, decimals: usize) {
    for dir in ["upload", "download"] {
        if let Some(m) = r[format!("{dir}_cpu_{key}")].as_object() {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k} {:.*}", decimals, v.as_f64().unwrap_or(0.0)))
                .collect();
            println!("          {dir} CPU {unit}: {}", parts.join(", "));
        }
    }
}

/// `r[key]` with two decimals, or `-`.
fn f2(r: &Value, key: &str) -> String {
    r[key]
        .as_f64()
        .map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// One result as the lines of the table `kdfs bench` prints without `--json`.
pub(crate) fn print_human(r: &Value) {
    let f = |k: &str| {
        r[k].as_f64()
            .map(|v| format!("{v:.1}"))
            .unwrap_or_else(|| "-".into())
    };
    match r["scenario"].as_str().unwrap_or("") {
        "ceiling" => println!(
            "ceiling   sha256 {} MB/s (SHA-NI: {})   one gRPC stream {} MB/s   disk write+fsync {} MB/s   durable 4 KiB commits {}/s ({} µs CPU each); by {} threads {}/s ({} µs machine CPU each)",
            f("sha256_mb_s"),
            r["sha_ni"],
            f("grpc_stream_mb_s"),
            f("disk_fsync_write_mb_s"),
            f("durable_small_commits_s"),
            f("durable_small_commit_cpu_us"),
            COMMIT_THREADS,
            f("parallel_durable_commits_s"),
            f("parallel_durable_commit_machine_cpu_us")
        ),
        "large" => {
            println!(
                "large     {} x{}: upload {} MB/s, download {} MB/s (medians)",
                ByteSize(r["size_bytes"].as_u64().unwrap_or(0)),
                r["runs"],
                f("upload_mb_s"),
                f("download_mb_s")
            );
            print_cpu(r, "ns_per_byte", "ns/byte", 2);
            if let Some(m) = r["peak_rss_bytes"].as_object() {
                for (k, v) in m {
                    println!(
                        "          peak RSS {k:<12} {:.1} MiB",
                        v.as_f64().unwrap_or(0.0) / (1 << 20) as f64
                    );
                }
            }
        }
        "small" => {
            println!(
                "small     {} x {} by {} clients: upload {} ops/s (p50 {} ms, p99 {} ms), download {} ops/s (p50 {} ms, p99 {} ms)",
                r["count"],
                ByteSize(r["file_size_bytes"].as_u64().unwrap_or(0)),
                r["concurrency"],
                f("upload_ops_s"),
                f("upload_p50_ms"),
                f("upload_p99_ms"),
                f("download_ops_s"),
                f("download_p50_ms"),
                f("download_p99_ms")
            );
            print_cpu(r, "us_per_op", "µs/op", 0);
            if r["same_state_parallel_commits_s"].is_number() {
                println!(
                    "          the disk just before: {} durable commits/s by {COMMIT_THREADS} threads ({} µs machine CPU each), so at most {} uploads/s at replication {LOCAL_REPLICATION}",
                    f("same_state_parallel_commits_s"),
                    f("same_state_commit_machine_cpu_us"),
                    f("upload_bound_by_commits_s"),
                );
                println!(
                    "          ... each into a new shard directory, as in a new store: {} durable commits/s ({} µs machine CPU each)",
                    f("new_store_parallel_commits_s"),
                    f("new_store_commit_machine_cpu_us"),
                );
            }
            let fl = &r["floor"];
            if fl.is_object() {
                let g = |k: &str| fl[k].as_f64().map_or("-".into(), |v| format!("{v:.0}"));
                println!(
                    "          least machine CPU per upload, each part alone just before: HTTP {} + 2 x gRPC call {} + file record commit {} + 4 x SHA-256 {} + 3 x WriteBlock stream {} + 3 x durable commit {} = {} µs, so at most {} uploads/s on {} cores",
                    g("http_us"),
                    g("unary_us"),
                    g("meta_commit_us"),
                    g("sha256_us"),
                    g("stream_us"),
                    g("commit_us"),
                    g("upload_total_us"),
                    g("uploads_s"),
                    fl["cores"],
                );
                println!(
                    "          ... with the new store's commits ({} µs): {} µs, so at most {} uploads/s",
                    g("new_store_commit_us"),
                    g("new_store_upload_total_us"),
                    g("new_store_uploads_s"),
                );
                println!(
                    "          least machine CPU per download: HTTP GET {} + gRPC call {} + ReadBlock stream {} + 2 x SHA-256 {} = {} µs, so at most {} downloads/s",
                    g("http_get_us"),
                    g("unary_us"),
                    g("read_stream_us"),
                    g("sha256_us"),
                    g("download_total_us"),
                    g("downloads_s"),
                );
            }
        }
        "heal" => println!(
            "heal      {} on {} datanodes, dead-after {}: declared dead after {} s, healed after {} s (re-replication {} s)",
            ByteSize(r["size_bytes"].as_u64().unwrap_or(0)),
            r["datanodes"],
            r["dead_after"].as_str().unwrap_or(""),
            f("declared_dead_s"),
            f("healed_s"),
            f("re_replication_s")
        ),
        "namenode" => {
            println!(
                "namenode  {} blocks x {}: {} bytes per replica entry; full report into the map {} ms (new holder), {} ms (mapped holder)",
                r["blocks"],
                r["replicas"],
                f("bytes_per_replica_entry"),
                f("report_map_new_holder_ms"),
                f("report_map_mapped_holder_ms")
            );
            println!(
                "          full report over gRPC {} ms (new holder), {} ms (mapped holder); committing those blocks took {} s",
                f("report_grpc_new_holder_ms"),
                f("report_grpc_mapped_holder_ms"),
                f("commit_blocks_s")
            );
            println!(
                "          durable creates: {} by {} clients: {} creates/s (p50 {} ms, p99 {} ms), {} creates per fsync, {} µs CPU per create (client and namenode; {} in the metadata writer); GetFile {} /s",
                r["creates"],
                r["concurrency"],
                f("creates_s"),
                f("create_p50_ms"),
                f("create_p99_ms"),
                f("creates_per_group_commit"),
                f("create_cpu_us"),
                f("create_writer_cpu_us"),
                f("get_file_s")
            );
            if r["ha_creates_s"].is_number() {
                println!(
                    "          the same creates through {} namenodes (Raft, a majority's log before each answer): {} creates/s (p50 {} ms, p99 {} ms), {:.2} of one namenode's; first election {} s",
                    r["ha_namenodes"],
                    f("ha_creates_s"),
                    f("ha_create_p50_ms"),
                    f("ha_create_p99_ms"),
                    r["ha_creates_ratio"].as_f64().unwrap_or(0.0),
                    f("ha_first_election_s")
                );
            }
        }
        "failover" => println!(
            "failover  3 namenodes, leader SIGKILLed {} times under upload load: uploads back after {} s min, {} s median, {} s max; {} files present and verified, {} calls failed meanwhile",
            r["kills"],
            f2(r, "failover_min_s"),
            f2(r, "failover_median_s"),
            f2(r, "failover_max_s"),
            r["files_present"],
            r["calls_failed"]
        ),
        "store" => {
            println!(
                "store     {} blocks x{}: write {} MB/s, AsyncBlockWriter {} MB/s, verified read {} MB/s (page cache warm); disk write+fsync {} MB/s (medians)",
                ByteSize(r["block_bytes"].as_u64().unwrap_or(0)),
                r["runs"],
                f("write_mb_s"),
                f("async_write_mb_s"),
                f("read_mb_s"),
                f("disk_fsync_write_mb_s")
            );
            println!(
                "          gRPC write chain: 1 node {} MB/s (read {} MB/s), 3 nodes {} MB/s (read from the last {} MB/s)",
                f("chain_1_write_mb_s"),
                f("chain_1_read_mb_s"),
                f("chain_3_write_mb_s"),
                f("chain_3_read_mb_s")
            );
            println!(
                "          startup scan of {} blocks: warm {} s, cold {} s (populated in {} s)",
                r["scan_blocks"],
                r["scan_warm_s"]
                    .as_f64()
                    .map_or("-".into(), |v| format!("{v:.3}")),
                r["scan_cold_s"]
                    .as_f64()
                    .map_or("- (cannot drop caches)".into(), |v| format!("{v:.2}")),
                f("scan_populate_s")
            );
        }
        "s3" => {
            let (l, s) = (&r["large"], &r["small"]);
            let g = |v: &Value, k: &str| {
                v[k].as_f64()
                    .map(|x| format!("{x:.1}"))
                    .unwrap_or_else(|| "-".into())
            };
            let ratio = |v: &Value, k: &str| {
                v[k].as_f64()
                    .map(|x| format!("{:.0}%", 100.0 * x))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "s3        {} x{} by boto3: PutObject {} MB/s ({} of /upload {}), multipart {} MB/s ({}), GetObject {} MB/s ({} of /download {})",
                ByteSize(l["size_bytes"].as_u64().unwrap_or(0)),
                l["runs"],
                g(l, "s3_put_mb_s"),
                ratio(l, "put_ratio"),
                g(l, "http_upload_mb_s"),
                g(l, "s3_multipart_put_mb_s"),
                ratio(l, "multipart_put_ratio"),
                g(l, "s3_get_mb_s"),
                ratio(l, "get_ratio"),
                g(l, "http_download_mb_s"),
            );
            println!(
                "          {} x {} by {} clients: PUT {} ops/s ({} of /upload {}), GET {} ops/s ({} of /download {}); client CPU {} µs/PUT, {} µs/GET",
                s["count"],
                ByteSize(s["file_size_bytes"].as_u64().unwrap_or(0)),
                s["clients"],
                g(s, "s3_put_ops_s"),
                ratio(s, "put_ratio"),
                g(s, "http_upload_ops_s"),
                g(s, "s3_get_ops_s"),
                ratio(s, "get_ratio"),
                g(s, "http_download_ops_s"),
                g(s, "s3_client_cpu_us_per_put"),
                g(s, "s3_client_cpu_us_per_get"),
            );
        }
        _ => println!("{r}"),
    }
}
