//! Scenario 12 (issue 7), CI-sized: 32 concurrent clients mix uploads (1 KiB to 2 MiB),
//! downloads and deletes for a bounded time. No error other than documented ones
//! (503/507 for uploads, 409 from the delete fence, 404/410 for a file being deleted);
//! every surviving file verifies; the peak RSS of every process is reported and bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdfs_testkit::{Api, Options, ProcessCluster, Stored, random_bytes, sha256_hex};

const CLIENTS: u64 = 32;
const RUN_FOR: Duration = Duration::from_secs(10);
const MAX_SIZE: usize = 2 << 20;
/// No process may exceed this peak RSS (debug builds, 256 KiB blocks).
const RSS_BOUND_KIB: u64 = 1 << 20;

#[derive(Default)]
struct Shared {
    live: Vec<Stored>,
    deleting: BTreeSet<String>,
    ops: BTreeMap<&'static str, usize>,
    errors: BTreeMap<String, usize>,
}

fn client(api: Api, id: u64, until: Instant, shared: Arc<Mutex<Shared>>) {
    let mut mine: Vec<Stored> = Vec::new();
    let mut k = 0u64;
    let mut rng = random_bytes(8 * 4096, 77 + id).into_iter();
    let mut next = move || {
        let b: Vec<u8> = (&mut rng).take(8).collect();
        u64::from_le_bytes(b.try_into().expect("8 bytes"))
    };
    while Instant::now() < until {
        let roll = next() % 100;
        k += 1;
        if roll < 50 || mine.is_empty() {
            // Sizes spread over orders of magnitude: 1 KiB .. 2 MiB.
            let shift = 10 + next() % 12;
            let len = (1usize << shift).min(MAX_SIZE) + (next() % 1000) as usize;
            let data = random_bytes(len, (id << 32) + k);
            let hash = sha256_hex(&data);
            match api.try_upload_named(&format!("load-{id}-{k}"), data) {
                Ok(v) => {
                    assert_eq!(v["hash"].as_str(), Some(hash.as_str()), "{v}");
                    let s = Stored { hash, len };
                    mine.push(s.clone());
                    let mut sh = shared.lock().expect("shared");
                    sh.live.push(s);
                    *sh.ops.entry("upload").or_default() += 1;
                }
                Err(e) => {
                    assert!(
                        matches!(e.status, 503 | 507 | 409),
                        "upload failed with an undocumented error: {e}"
                    );
                    *shared
                        .lock()
                        .expect("shared")
                        .errors
                        .entry(format!("upload {}", e.status))
                        .or_default() += 1;
                }
            }
        } else if roll < 85 {
            let pick = {
                let sh = shared.lock().expect("shared");
                sh.live[(next() % sh.live.len() as u64) as usize].clone()
            };
            match api.try_download(&pick.hash) {
                Ok(d) => {
                    assert_eq!(d.len(), pick.len, "download of {}", pick.hash);
                    assert_eq!(sha256_hex(&d), pick.hash, "CORRUPT download");
                    *shared
                        .lock()
                        .expect("shared")
                        .ops
                        .entry("download")
                        .or_default() += 1;
                }
                Err(e) => {
                    let mut sh = shared.lock().expect("shared");
                    if !(matches!(e.status, 404 | 410) && sh.deleting.contains(&pick.hash)) {
                        // What the namenode says of the file and of the datanodes now,
                        // so that a failure seen once is understood from its report.
                        let file = api.file(&pick.hash);
                        let nodes = api.try_info().map(|v| v["datanodes"].clone());
                        drop(sh);
                        panic!(
                            "download of {} failed: {e}\nthe file now: {file:?}\nthe datanodes now: {nodes:?}",
                            pick.hash
                        );
                    }
                    *sh.errors
                        .entry(format!("download {} (deleted)", e.status))
                        .or_default() += 1;
                }
            }
        } else {
            let victim = mine.swap_remove((next() % mine.len() as u64) as usize);
            shared
                .lock()
                .expect("shared")
                .deleting
                .insert(victim.hash.clone());
            let r = api
                .http()
                .delete(format!("{}/files/{}", api.base, victim.hash))
                .send()
                .map(|r| r.status().as_u16());
            assert_eq!(r.ok(), Some(200), "delete of {}", victim.hash);
            let mut sh = shared.lock().expect("shared");
            sh.live.retain(|s| s.hash != victim.hash);
            *sh.ops.entry("delete").or_default() += 1;
        }
    }
}

#[test]
fn thirty_two_clients_mixing_uploads_downloads_and_deletes() {
    let c = ProcessCluster::start(Options::default());
    let shared = Arc::new(Mutex::new(Shared::default()));
    // A first file so downloads always have something to read.
    shared
        .lock()
        .expect("shared")
        .live
        .push(c.upload(&random_bytes(100 << 10, 1)));
    let until = Instant::now() + RUN_FOR;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (api, shared) = (c.api.clone(), shared.clone());
            std::thread::spawn(move || client(api, id, until, shared))
        })
        .collect();
    for w in workers {
        if let Err(panic) = w.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let sh = shared.lock().expect("shared");
    let rss: Vec<(String, u64)> = c
        .procs()
        .map(|p| (p.name.clone(), p.peak_rss_kib().unwrap_or(0)))
        .collect();
    eprintln!(
        "scenario 12: {CLIENTS} clients for {RUN_FOR:?}: ops {:?}, documented errors {:?}; \
         {} files survive; peak RSS (MiB) {:?}",
        sh.ops,
        sh.errors,
        sh.live.len(),
        rss.iter()
            .map(|(n, k)| (n.as_str(), k / 1024))
            .collect::<Vec<_>>()
    );
    for (name, kib) in &rss {
        assert!(*kib < RSS_BOUND_KIB, "{name} peaked at {} MiB", kib / 1024);
    }
    assert!(
        sh.ops.get("upload").copied().unwrap_or(0) > CLIENTS as usize,
        "too few uploads"
    );
    // Everything that survives reads back; nothing deleted is listed.
    let verify = Instant::now();
    c.verify_all(&sh.live);
    eprintln!(
        "scenario 12: {} surviving files verified in {:.2}s",
        sh.live.len(),
        verify.elapsed().as_secs_f64()
    );
    let listed: BTreeSet<String> = c.listed_hashes().into_iter().collect();
    let live: BTreeSet<String> = sh.live.iter().map(|s| s.hash.clone()).collect();
    assert_eq!(
        listed, live,
        "the listing differs from the files that survive"
    );
}
