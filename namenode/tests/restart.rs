//! Durability across restarts: graceful, abrupt (the runtime dropped without a
//! shutdown), and a real SIGKILL of the built binary. Also safe mode after a restart.

mod common;

use std::time::Duration;

use common::*;
use kdfs_proto::pb;

/// Commits "kept" and "deleted" (then deletes the latter) on a fresh namenode.
async fn populate(c: &mut Client) {
    let mut dns = Vec::new();
    for p in 0..2 {
        let mut d = FakeDatanode::new(c.clone(), 30000 + p);
        d.register("").await.unwrap();
        dns.push(d);
    }
    upload(c, "kept.txt", b"kept", &[&dns[0], &dns[1]])
        .await
        .unwrap();
    upload(c, "deleted.txt", b"deleted", &[&dns[0], &dns[1]])
        .await
        .unwrap();
    let r = c
        .delete_file(pb::DeleteFileRequest {
            file_id: raw(file(b"deleted").as_bytes()),
        })
        .await
        .unwrap();
    assert!(r.into_inner().deleted);
}

/// Asserts the committed file and the tombstone are both still there.
async fn assert_survived(c: &mut Client) {
    let kept = get(c, b"kept").await.unwrap();
    assert_eq!(kept.state, pb::FileState::Live as i32);
    assert_eq!(kept.file.unwrap().name, "kept.txt");
    let deleted = get(c, b"deleted").await.unwrap();
    assert_eq!(deleted.state, pb::FileState::Deleted as i32);
    assert_eq!(info(c).await.files, 1);
}

#[tokio::test]
async fn graceful_restart_keeps_files_tombstones_and_cluster_id() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    populate(&mut c).await;
    let cluster_id = info(&mut c).await.cluster_id;
    nn.stop().await;

    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    assert_survived(&mut c).await;
    assert_eq!(info(&mut c).await.cluster_id, cluster_id);
    nn.stop().await;
}

#[test]
fn abrupt_stop_keeps_every_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let args = fast_args(dir.path());
    {
        // A runtime of its own, dropped without cancelling the namenode: no graceful
        // shutdown runs.
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let nn = TestNamenode::start(&args).await;
            let mut c = nn.client().await;
            populate(&mut c).await;
            std::mem::forget(nn.shutdown);
        });
        rt.shutdown_background();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The old writer thread lets go of the database file as soon as it sees its
        // queue closed; retry until it has.
        let mut attempt = 0;
        let nn = loop {
            let nn = TestNamenode::start(&args).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !nn.task.is_finished() {
                break nn;
            }
            attempt += 1;
            assert!(attempt < 50, "database never released: {:?}", nn.task.await);
        };
        let mut c = nn.client().await;
        assert_survived(&mut c).await;
        nn.stop().await;
    });
}

#[tokio::test]
async fn sigkill_of_the_binary_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (grpc, http) = (free_port(), free_port());
    let spawn = || {
        let mut args = fast_args(dir.path());
        args.remove(0);
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kdfs-namenode"))
            .args(&args)
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let mut c = connect(&format!("127.0.0.1:{grpc}")).await;
    populate(&mut c).await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    drop(c);

    let mut child = spawn();
    let mut c = connect(&format!("127.0.0.1:{grpc}")).await;
    assert_survived(&mut c).await;

    // SIGTERM: graceful shutdown, exit status 0.
    let pid = child.id().unwrap() as i32;
    // SAFETY: `kill` has no memory-safety preconditions; the pid is our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("namenode exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn safe_mode_until_the_known_blocks_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    assert!(
        !info(&mut c).await.safe_mode,
        "no known blocks: safe mode ends at once"
    );
    populate(&mut c).await;
    nn.stop().await;

    // Restarted: one known block ("kept"), nothing reported yet.
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let i = info(&mut c).await;
    assert!(i.safe_mode);
    assert_eq!(i.reported_fraction, 0.0);
    // Reads work in safe mode.
    assert_eq!(
        get(&mut c, b"kept").await.unwrap().state,
        pb::FileState::Live as i32
    );

    // A returning node still holding the deleted block: no delete during safe mode.
    let mut d = FakeDatanode::new(c.clone(), 31000);
    d.register("").await.unwrap();
    let r = d.full_report(&[(block(b"deleted"), 7)]).await;
    assert!(r.commands.is_empty(), "no deletes in safe mode");
    d.heartbeat().await;
    assert!(d.deletes().is_empty());

    // The known block is reported: safe mode ends, and the delete goes out.
    d.full_report(&[(block(b"deleted"), 7), (block(b"kept"), 4)])
        .await;
    wait_until("safe mode to end", Duration::from_secs(5), || {
        let mut c = c.clone();
        async move { !info(&mut c).await.safe_mode }
    })
    .await;
    assert_eq!(info(&mut c).await.reported_fraction, 1.0);
    d.heartbeat().await;
    assert_eq!(d.deletes(), vec![block(b"deleted")]);
    nn.stop().await;
}

#[tokio::test]
async fn safe_mode_ends_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    populate(&mut c).await;
    nn.stop().await;
    let mut args = fast_args(dir.path());
    let i = args
        .iter()
        .position(|a| a == "--safe-mode-timeout")
        .unwrap();
    args[i + 1] = "500ms".into();
    let nn = TestNamenode::start(&args).await;
    let mut c = nn.client().await;
    assert!(info(&mut c).await.safe_mode);
    wait_until("safe mode timeout", Duration::from_secs(5), || {
        let mut c = c.clone();
        async move { !info(&mut c).await.safe_mode }
    })
    .await;
    nn.stop().await;
}

#[tokio::test]
async fn an_upload_survives_a_namenode_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let lease = c
        .begin_upload(pb::BeginUploadRequest {
            name: "across.bin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    nn.stop().await;

    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let dns = datanodes(&nn, 2).await;
    let done = commit(&mut c, &lease.upload_id, b"across", &[&dns[0], &dns[1]])
        .await
        .unwrap();
    assert_eq!(done.file.unwrap().name, "across.bin");
    nn.stop().await;
}

#[tokio::test]
async fn files_committed_in_a_batch_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let dns = datanodes(&nn, 2).await;
    let acks = [&dns[0], &dns[1]];
    let (upload_id, r) = commit_batch(
        &mut c,
        vec![
            batched("one.txt", b"one", &acks),
            batched("two.txt", b"two", &acks),
        ],
    )
    .await
    .unwrap();
    assert!(r.results.iter().all(|f| f.code == 0), "{:?}", r.results);
    nn.stop().await;

    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    for (content, name) in [(&b"one"[..], "one.txt"), (b"two", "two.txt")] {
        let got = get(&mut c, content).await.unwrap();
        assert_eq!(got.state, pb::FileState::Live as i32);
        assert_eq!(got.file.unwrap().name, name);
    }
    assert_eq!(info(&mut c).await.files, 2);
    // The lease's row ended with the batch: it did not come back.
    let e = c
        .commit_files(pb::CommitFilesRequest {
            upload_id,
            files: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    nn.stop().await;
}
