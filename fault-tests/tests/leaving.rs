//! Issue 25: ordinary life is not failure. A datanode restarted gracefully (SIGTERM)
//! under upload load enters maintenance: no upload fails, it is not declared dead
//! however long it stays away within --maintenance-timeout, and nothing is copied
//! beyond the blocks written while it was away. A decommissioned datanode told to stop
//! serves until its blocks are at full replication elsewhere, and only then exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdfs_testkit::{Api, Options, ProcessCluster, Stored, random_bytes};

/// Re-replications the namenode scheduled so far (blocks).
const COPIES: &str = "kdfs_namenode_replications_scheduled_total";
/// Each upload of the load: two blocks of the fault clusters' 256 KiB.
const LOAD_FILE: usize = 300 << 10;
const LOAD_BLOCKS: usize = 2;

#[derive(Default)]
struct Load {
    acked: Vec<Stored>,
    failures: Vec<String>,
}

/// Uploads until `stop`, recording every acknowledged file and every failure.
fn uploader(api: Api, stop: Arc<AtomicBool>, load: Arc<Mutex<Load>>) {
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let data = random_bytes(LOAD_FILE, 25_000 + k);
        match api.try_upload_named(&format!("load-{k}"), data.clone()) {
            Ok(v) => {
                let hash = v["hash"].as_str().expect("a hash").to_owned();
                load.lock().unwrap().acked.push(Stored {
                    hash,
                    len: data.len(),
                });
            }
            Err(e) => load.lock().unwrap().failures.push(format!("{e:?}")),
        }
        k += 1;
    }
}

fn acked(load: &Mutex<Load>) -> usize {
    load.lock().unwrap().acked.len()
}

#[test]
fn a_graceful_restart_under_upload_load_copies_only_what_was_written_meanwhile() {
    let mut c = ProcessCluster::start(Options::default().datanodes(4).replication(3));
    let seed: Vec<Stored> = (0..12)
        .map(|i| c.upload(&random_bytes((600 << 10) + i, 2_500 + i as u64)))
        .collect();
    c.wait_replicated("seed replicated", Duration::from_secs(30), &seed, &[]);
    let victim = (0..4)
        .max_by_key(|&i| c.blocks_on_disk(i).len())
        .expect("four datanodes");
    let held = c.blocks_on_disk(victim).len();

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Mutex::new(Load::default()));
    let worker = {
        let (api, stop, load) = (c.api.clone(), stop.clone(), load.clone());
        std::thread::spawn(move || uploader(api, stop, load))
    };
    c.wait_until("uploads under way", Duration::from_secs(30), || {
        acked(&load) >= 3
    });
    let copies_before = c.namenode_metric(COPIES).expect("namenode /metrics");
    let acked_before = acked(&load);

    let t0 = Instant::now();
    let status = c.stop_datanode(victim);
    assert!(status.success(), "datanode {victim} exited with {status}");
    assert_eq!(
        c.datanode_state(victim).as_deref(),
        Some("maintenance"),
        "a SIGTERM'd datanode is restarting, not leaving"
    );
    // Away for three times --dead-after (2 s) while uploads go on.
    c.wait_until(
        "uploads while the datanode is away past --dead-after",
        Duration::from_secs(60),
        || t0.elapsed() >= Duration::from_secs(6) && acked(&load) >= acked_before + 5,
    );
    assert_eq!(
        c.datanode_state(victim).as_deref(),
        Some("maintenance"),
        "not dead before --maintenance-timeout"
    );
    c.datanodes[victim].start();
    c.wait_until("the datanode live again", Duration::from_secs(30), || {
        c.datanode_state(victim).as_deref() == Some("live")
    });
    // One upload in flight at each edge of the restart may have lost the victim.
    let written_meanwhile = (acked(&load) - acked_before + 2) * LOAD_BLOCKS;
    c.wait_until(
        "more uploads after the return",
        Duration::from_secs(30),
        || acked(&load) >= acked_before + 8,
    );
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("uploader");

    let load = load.lock().unwrap();
    assert!(
        load.failures.is_empty(),
        "uploads failed during a graceful restart: {:#?}",
        load.failures
    );
    let files: Vec<Stored> = seed.iter().chain(load.acked.iter()).cloned().collect();
    c.wait_replicated("all files replicated", Duration::from_secs(60), &files, &[]);
    let copies = c.namenode_metric(COPIES).expect("namenode /metrics") - copies_before;
    eprintln!(
        "graceful restart: datanode {victim} held {held} blocks, away {:.1}s; {} uploads \
         acknowledged; {copies} blocks copied (at most {written_meanwhile} written meanwhile)",
        t0.elapsed().as_secs_f64(),
        load.acked.len()
    );
    assert!(
        copies <= written_meanwhile as f64,
        "{copies} copies, more than the {written_meanwhile} blocks written during the restart"
    );
    c.verify_all(&files);
}

#[test]
fn a_decommissioned_datanode_exits_only_once_its_blocks_are_fully_replicated_elsewhere() {
    let mut c = ProcessCluster::start(Options::default().datanodes(4).replication(3));
    let sizes = [1, 100 << 10, 256 << 10, (1 << 20) + 7, 3 << 20, 700 << 10];
    let files: Vec<Stored> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| c.upload(&random_bytes(n, 2_600 + i as u64)))
        .collect();
    c.wait_replicated("initial replication", Duration::from_secs(30), &files, &[]);
    let victim = (0..4)
        .max_by_key(|&i| c.blocks_on_disk(i).len())
        .expect("four datanodes");
    let held = c.blocks_on_disk(victim).len();
    let id = c.datanode_id(victim).expect("its id");

    let r: serde_json::Value = c
        .api
        .http()
        .post(format!("{}/datanodes/{id}/decommission", c.gateway_url()))
        .send()
        .expect("the gateway answers")
        .json()
        .expect("JSON");
    assert_eq!(r["state"], "decommissioning", "{r}");
    let t0 = Instant::now();
    let status = c.stop_datanode(victim);
    let drained_in = t0.elapsed();
    assert!(status.success(), "datanode {victim} exited with {status}");

    // At its exit, before silence could make it dead: every block already has its
    // three replicas on the other nodes.
    let addr = c.datanode_addrs[victim].clone();
    assert_eq!(c.datanode_state(victim).as_deref(), Some("decommissioning"));
    for f in &files {
        let blocks = c.replicas(&f.hash).expect("located");
        for (b, replicas) in blocks.iter().enumerate() {
            let elsewhere = replicas.iter().filter(|a| **a != addr).count();
            assert!(
                elsewhere >= 3,
                "block {b} of {} has {elsewhere} replicas besides datanode {victim}: {replicas:?}",
                f.hash
            );
        }
    }
    eprintln!(
        "decommission: datanode {victim} held {held} blocks; SIGTERM to exit {:.2}s",
        drained_in.as_secs_f64()
    );
    c.verify_all(&files);
}

/// How long a drain takes per GiB (README's figure: run by hand with `--ignored
/// --nocapture`; `KDFS_DRAIN_MIB` sets how much the drained node holds). `.ci/run` runs
/// it small, so the measurement keeps working and its files still verify.
#[test]
#[ignore = "a measurement (512 MiB by default); .ci/run runs it with KDFS_DRAIN_MIB=64"]
fn measure_a_decommission_drain() {
    let mib: usize = std::env::var("KDFS_DRAIN_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    // Three nodes, replication 2: the drained node holds about 2/3 of what is uploaded.
    let mut c = ProcessCluster::start(
        Options::default()
            .datanodes(3)
            .replication(2)
            .block_size(64 << 20),
    );
    let file = 96 << 20;
    let files: Vec<Stored> = (0..(mib * 3 / 2).div_ceil(96))
        .map(|i| c.upload(&random_bytes(file, 2_700 + i as u64)))
        .collect();
    c.wait_replicated("uploaded", Duration::from_secs(300), &files, &[]);
    let victim = 0;
    let bytes = c.block_bytes_on_disk(victim);
    let id = c.datanode_id(victim).expect("its id");
    let url = format!("{}/datanodes/{id}/decommission", c.gateway_url());
    let t0 = Instant::now();
    c.wait_until("drained", Duration::from_secs(1800), || {
        c.api
            .http()
            .post(&url)
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .is_some_and(|r| r["drained"] == true)
    });
    let took = t0.elapsed().as_secs_f64();
    let gib = bytes as f64 / f64::from(1 << 30);
    eprintln!(
        "drain: {:.0} MiB held, drained in {took:.1}s: {:.1}s per GiB ({:.0} MiB/s)",
        bytes as f64 / f64::from(1 << 20),
        took / gib,
        bytes as f64 / f64::from(1 << 20) / took
    );
    assert!(c.stop_datanode(victim).success());
    c.verify_all(&files);
}
