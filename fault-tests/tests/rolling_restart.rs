//! Scenario 8 (issue 7): restart every datanode one at a time (SIGTERM, wait, start, wait
//! until healthy) while a client keeps uploading and downloading. Zero downloads may fail;
//! uploads succeed or fail with a retryable 503; nothing read back is ever corrupt.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kdfs_testkit::{Api, Options, ProcessCluster, Stored, random_bytes, sha256_hex};

#[derive(Default)]
struct Tally {
    acked: Vec<Stored>,
    upload_failures: BTreeMap<u16, usize>,
    downloads_ok: usize,
    download_failures: Vec<String>,
    rounds: usize,
}

fn client(api: Api, seed: Vec<Stored>, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let mut k = 0u64;
    let mut known = seed;
    while !stop.load(Ordering::Relaxed) {
        let len = (128 << 10) + (k as usize % 5) * (200 << 10);
        let data = random_bytes(len, 8_000 + k);
        let hash = sha256_hex(&data);
        match api.try_upload_named(&format!("roll-{k}"), data) {
            Ok(v) => {
                assert_eq!(
                    v["hash"].as_str(),
                    Some(hash.as_str()),
                    "upload answered {v}"
                );
                let s = Stored { hash, len };
                known.push(s.clone());
                tally.lock().expect("tally").acked.push(s);
            }
            Err(e) => {
                *tally
                    .lock()
                    .expect("tally")
                    .upload_failures
                    .entry(e.status)
                    .or_default() += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Read back two earlier files (a rotating pick) and the newest.
        for idx in [
            k as usize % known.len(),
            (k as usize * 7) % known.len(),
            known.len() - 1,
        ] {
            let f = &known[idx];
            let outcome = match api.try_download(&f.hash) {
                Ok(d) if d.len() == f.len && sha256_hex(&d) == f.hash => Ok(()),
                Ok(d) => panic!("CORRUPT download of {}: {} bytes", f.hash, d.len()),
                Err(e) => Err(format!("{}: {e}", f.hash)),
            };
            let mut t = tally.lock().expect("tally");
            match outcome {
                Ok(()) => t.downloads_ok += 1,
                Err(e) => t.download_failures.push(e),
            }
        }
        tally.lock().expect("tally").rounds += 1;
        k += 1;
    }
}

#[test]
fn rolling_restart_under_load_fails_no_download() {
    let mut c = ProcessCluster::start(Options::default());
    let seed: Vec<Stored> = (0..4)
        .map(|i| c.upload(&random_bytes((400 << 10) + i, 80 + i as u64)))
        .collect();
    c.wait_replicated("seed replicated", Duration::from_secs(30), &seed, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let worker = {
        let (api, seed, stop, tally) = (c.api.clone(), seed.clone(), stop.clone(), tally.clone());
        std::thread::spawn(move || client(api, seed, stop, tally))
    };

    for i in 0..3 {
        let rounds = |t: &Mutex<Tally>| t.lock().expect("tally").rounds;
        let before = rounds(&tally);
        let t0 = std::time::Instant::now();
        let status = c.stop_datanode(i);
        let stopped = t0.elapsed();
        assert!(
            status.success(),
            "datanode {i} exited with {status} on SIGTERM"
        );
        // The client keeps going while the node is away: three rounds of an upload and
        // three downloads each.
        c.wait_until(
            &format!("3 client rounds while datanode {i} is down"),
            Duration::from_secs(60),
            || rounds(&tally) >= before + 3,
        );
        c.datanodes[i].start();
        c.wait_until(
            &format!("datanode {i} live"),
            Duration::from_secs(30),
            || c.datanode_state(i).as_deref() == Some("live"),
        );
        // A careful operator waits for the cluster to heal before the next node.
        let files: Vec<Stored> = {
            let t = tally.lock().expect("tally");
            seed.iter().chain(t.acked.iter()).cloned().collect()
        };
        let healed = c.wait_replicated(
            &format!("healed after restarting datanode {i}"),
            Duration::from_secs(60),
            &files,
            &[],
        );
        eprintln!(
            "scenario 8: datanode {i} stopped in {:.2}s, back and healed {:.2}s after the stop \
             ({:.2}s waiting for replication of {} files)",
            stopped.as_secs_f64(),
            t0.elapsed().as_secs_f64(),
            healed.as_secs_f64(),
            files.len()
        );
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("client thread");

    let t = tally.lock().expect("tally");
    eprintln!(
        "scenario 8: {} uploads acknowledged, upload failures by status {:?}, {} downloads \
         verified, {} failed",
        t.acked.len(),
        t.upload_failures,
        t.downloads_ok,
        t.download_failures.len()
    );
    assert!(
        t.download_failures.is_empty(),
        "downloads failed during the rolling restart: {:#?}",
        t.download_failures
    );
    for status in t.upload_failures.keys() {
        assert_eq!(
            *status, 503,
            "an upload failed with {status}, not a retryable 503"
        );
    }
    assert!(
        !t.acked.is_empty(),
        "no upload succeeded during the restart"
    );
    let all: Vec<Stored> = seed.iter().chain(t.acked.iter()).cloned().collect();
    c.verify_all(&all);
}
