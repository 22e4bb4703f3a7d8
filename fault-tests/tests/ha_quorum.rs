//! Issue 27: two of three namenodes down. The leader left alone has no majority: it
//! stops serving, and uploads and deletes fail with 503 within the gateway's deadline
//! (no hang); a download of a file stored before is answered either with its bytes or
//! with 503, never with wrong bytes (which of the two is printed). Once one namenode
//! returns, the group elects a leader by itself and uploads and deletes succeed again;
//! nothing acknowledged before the outage is lost. (A call that failed during the
//! outage may still take effect once a majority is back: the lone leader may have
//! logged it, and a 503 promises nothing either way. So that delete targets a file of
//! its own.)

mod common;

use std::time::{Duration, Instant};

use common::ha::FAILOVER_PATIENCE;
use kdfs_testkit::{Options, ProcessCluster, Stored, random_bytes, sha256_hex};

/// A call with no majority must fail within this, never hang up to the client's own
/// timeout: a small upload asks for a leader twice (its batch, then alone), each
/// within the gateway's ~10 s deadline.
const FAIL_FAST: Duration = Duration::from_secs(25);

#[test]
fn two_of_three_down_writes_fail_fast_and_the_group_recovers_when_one_returns() {
    let mut c = ProcessCluster::start(Options::default().namenodes(3));
    let files: Vec<Stored> = (0..3)
        .map(|i| c.upload(&random_bytes(100_000 * (i + 1), 2_700 + i as u64)))
        .collect();
    let doomed = c.upload(&random_bytes(3_000, 2_720));
    let leader = c.wait_leader("a leader", FAILOVER_PATIENCE);
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &f in &followers {
        c.kill_namenode_at(f);
    }
    let lost = Instant::now();
    c.wait_until("the lone leader stops serving", FAILOVER_PATIENCE, || {
        c.leader().is_none()
    });
    eprintln!(
        "ha quorum: namenode {leader} stopped leading {:.2}s after losing its majority",
        lost.elapsed().as_secs_f64()
    );

    // One of each: every call waits out the gateway's deadline.
    let t = Instant::now();
    let up = c
        .try_upload_named("no-majority", random_bytes(5_000, 2_750))
        .expect_err("an upload succeeded without a majority");
    let upload_took = t.elapsed();
    assert_eq!(up.status, 503, "upload without a majority: {up}");
    assert!(
        upload_took <= FAIL_FAST,
        "the upload took {upload_took:?} to fail"
    );
    let t = Instant::now();
    let del = c
        .try_delete(&doomed.hash)
        .expect_err("a delete succeeded without a majority");
    let delete_took = t.elapsed();
    assert_eq!(del.status, 503, "delete without a majority: {del}");
    assert!(
        delete_took <= FAIL_FAST,
        "the delete took {delete_took:?} to fail"
    );
    let download = match c.try_download(&files[1].hash) {
        Ok(data) => {
            assert_eq!(
                sha256_hex(&data),
                files[1].hash,
                "wrong bytes without a majority"
            );
            "served".to_owned()
        }
        Err(e) => {
            assert_eq!(e.status, 503, "download without a majority: {e}");
            "refused with 503".to_owned()
        }
    };
    eprintln!(
        "ha quorum: without a majority an upload failed with 503 after {:.2}s, a delete \
         after {:.2}s; a download of a stored file was {download}",
        upload_took.as_secs_f64(),
        delete_took.as_secs_f64()
    );

    let back = Instant::now();
    c.start_namenode_at(followers[0]);
    let leader = c.wait_leader("a leader once one namenode returned", FAILOVER_PATIENCE);
    let during = c.upload(&random_bytes(700_000, 2_760));
    c.delete(&files[0].hash);
    eprintln!(
        "ha quorum: namenode {} returned; {leader} leads and uploads and deletes succeed \
         {:.2}s later",
        followers[0],
        back.elapsed().as_secs_f64()
    );
    assert!(c.file(&files[0].hash).expect("GET /files").is_none());
    let mut present = files[1..].to_vec();
    present.push(during);
    c.verify_all(&present);
}
