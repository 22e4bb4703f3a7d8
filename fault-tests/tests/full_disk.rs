//! Scenario 7 (issue 7): datanodes run out of disk (a tmpfs of a few MiB mounted on their
//! data dir when the test may mount, else the datanode's `--fixed-capacity`). While some
//! nodes have room, writes go there; once fewer than min_replicas have room, uploads fail
//! with 507. Nothing half-written stays: no file record for a failed upload, no partial
//! block on any disk, and the failed upload's blocks are collected after its lease.

use std::collections::BTreeSet;
use std::time::Duration;

use kdfs_testkit::{
    HttpFailure, Options, ProcessCluster, Stored, datanode_entry, random_bytes, sha256_hex,
};

const MIB: u64 = 1 << 20;

fn full_cluster() -> ProcessCluster {
    ProcessCluster::start(
        Options::default()
            .datanodes(4)
            .small_disk(3, 2 * MIB)
            .small_disk(0, 8 * MIB)
            .small_disk(1, 8 * MIB)
            .small_disk(2, 8 * MIB)
            .namenode_arg("--lease-ttl", "3s"),
    )
}

/// Whether a failed upload says it ran out of space (whatever its status).
fn out_of_space(e: &HttpFailure) -> bool {
    e.body.contains("out of space")
}

/// Uploads 1 MiB files until the small node is full, then until an upload fails.
/// Returns the stored files, and the failure with the hash of its content.
fn fill(c: &ProcessCluster) -> (Vec<Stored>, HttpFailure, String) {
    let mut files: Vec<Stored> = Vec::new();
    let mut k = 0u64;
    // Phase 1: the small node fills up; every upload still succeeds on the others.
    let mut small_full_at = None;
    while small_full_at.is_none() {
        files.push(c.upload(&random_bytes(MIB as usize - 1000, 700 + k)));
        k += 1;
        let info = c.info();
        let small = datanode_entry(&info, &c.datanode_addrs[3])
            .expect("small datanode in /info")
            .clone();
        if small["available"].as_u64().unwrap_or(u64::MAX) < c.opts.block_size {
            small_full_at = Some(files.len());
        }
        assert!(k < 20, "the 2 MiB datanode never filled: {small}");
    }
    // Phase 2: upload until the cluster is out of space.
    loop {
        let data = random_bytes(MIB as usize - 1000, 700 + k);
        let hash = sha256_hex(&data);
        k += 1;
        match c.try_upload_named(&format!("fill-{k}"), data.clone()) {
            Ok(_) => files.push(Stored {
                hash,
                len: data.len(),
            }),
            Err(e) => {
                eprintln!(
                    "scenario 7: small node full after {} uploads, cluster full after {}; \
                     then {e}",
                    small_full_at.unwrap_or(0),
                    files.len()
                );
                return (files, e, hash);
            }
        }
        assert!(k < 60, "8 MiB datanodes never filled");
    }
}

/// The whole scenario. Every out-of-space refusal is a 507: the first one too, which
/// may come from datanodes refusing a block for room the namenode's heartbeat-old view
/// still showed (the gateway answers 507 when every pipeline attempt was refused for
/// lack of room). Then nothing may be left behind. (A smaller file may still fit
/// right after the refusal: the refused pipelines and failed copies release their
/// reservations, so the cluster is not asserted full at that moment.)
#[test]
fn full_disks_send_writes_elsewhere_then_fail_with_507() {
    let c = full_cluster();
    let (mut files, refused, failed_hash) = fill(&c);
    assert_eq!(refused.status, 507, "upload into a full cluster: {refused}");
    assert!(
        out_of_space(&refused),
        "upload into a full cluster: {refused}"
    );
    assert!(
        refused.body.contains("\"error\""),
        "not a JSON error: {refused}"
    );
    assert!(
        c.file(&failed_hash).expect("GET /files").is_none(),
        "the refused upload has a file record"
    );
    // Nothing half-written: every block file intact, and no temp file once the writes
    // in flight (the refused pipeline's tail, re-replication of the files stored with
    // fewer than 3 replicas) have ended. A temp file that stays is a leak.
    for i in 0..4 {
        assert!(
            c.corrupt_blocks_on_disk(i).is_empty(),
            "datanode {i} holds a partial block"
        );
    }
    c.wait_until(
        "no temp file on any datanode",
        Duration::from_secs(15),
        || (0..4).all(|i| c.temp_files(i).is_empty()),
    );
    // The refused uploads' blocks (if any landed) are collected after their lease.
    let referenced: BTreeSet<String> = files.iter().flat_map(|f| c.block_ids(&f.hash)).collect();
    let orphans_took = c.wait_until(
        "disks hold only blocks of stored files",
        Duration::from_secs(60),
        || (0..4).all(|i| c.blocks_on_disk(i).is_subset(&referenced)),
    );
    c.verify_all(&files);
    // Space comes back after a delete, and uploads work again.
    let removed = files.remove(0);
    c.delete(&removed.hash);
    let removed_blocks: BTreeSet<String> = c_blocks_only_in(&c, &referenced, &files);
    assert!(
        !removed_blocks.is_empty(),
        "{} shared every block",
        removed.hash
    );
    let delete_took = c.wait_until("deleted blocks gone", Duration::from_secs(30), || {
        (0..4).all(|i| c.blocks_on_disk(i).is_disjoint(&removed_blocks))
    });
    let fits_took = c.wait_until("an upload fits again", Duration::from_secs(30), || match c
        .try_upload_named("after-delete", random_bytes(300 << 10, 9_999))
    {
        Ok(_) => true,
        Err(e) if out_of_space(&e) => false,
        Err(e) => panic!("upload after freeing space: {e}"),
    });
    eprintln!(
        "scenario 7: refused uploads' blocks collected in {:.2}s; a delete freed space in \
         {:.2}s; uploads fit again {:.2}s later",
        orphans_took.as_secs_f64(),
        delete_took.as_secs_f64(),
        fits_took.as_secs_f64()
    );
    c.verify_all(&files);
}

/// Blocks of `referenced` no file of `files` uses.
fn c_blocks_only_in(
    c: &ProcessCluster,
    referenced: &BTreeSet<String>,
    files: &[Stored],
) -> BTreeSet<String> {
    let still: BTreeSet<String> = files.iter().flat_map(|f| c.block_ids(&f.hash)).collect();
    referenced.difference(&still).cloned().collect()
}
