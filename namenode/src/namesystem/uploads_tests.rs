use std::time::Duration;

use super::super::test_fixtures::*;
use super::{CommittedBlock, FileToCommit};
use crate::Error;
use crate::cluster::{Load, Registration};

/// Placement sees a commit's bytes before the next heartbeat: a node the estimate
/// says is full gets no pipeline, one with room for a smaller block still does.
#[tokio::test(start_paused = true)]
async fn placement_counts_committed_bytes_before_the_next_heartbeat() {
    let mut sim = Sim::new(&[]).with_nodes(2);
    let small = Load {
        capacity: 100,
        available: 100,
        ..Load::default()
    };
    let tiny = sim.register_as(Registration {
        address: "127.0.0.1:1002".into(),
        load: small,
        ..Registration::default()
    });
    sim.tick();
    let lease = sim.ns.begin_upload("next", "", 0).await.unwrap();
    let pick = |room: u64| {
        let p = sim.ns.allocate(&lease.id, &[sim.nodes[0]], 0, room);
        p.map(|p| p.iter().map(|l| l.id).collect::<Vec<_>>())
    };
    assert!(pick(50).unwrap().contains(&tiny));

    sim.upload(&[7; 80], &[0, 2]).await;
    assert!(
        matches!(pick(50), Err(Error::ResourceExhausted(_))),
        "20 bytes left on the small node: {:?}",
        pick(50)
    );
    assert!(pick(20).unwrap().contains(&tiny), "a block that fits");
    // Its heartbeat says the room is back (say the replica was deleted).
    sim.ns.heartbeat(&tiny, small).unwrap();
    assert!(pick(50).unwrap().contains(&tiny));
}

/// A squatted id is refused by a single commit and by one file of a batch, and
/// nothing is written for it; the content's real upload then makes the record.
#[tokio::test(start_paused = true)]
async fn a_commit_claiming_another_contents_id_is_refused() {
    let sim = Sim::new(&[]).with_nodes(2);
    sim.tick();
    let on = vec![sim.nodes[0], sim.nodes[1]];
    let mine = |len| CommittedBlock {
        id: block(b"attacker"),
        length: len,
        replicas: on.clone(),
    };
    let lease = sim.ns.begin_upload("squat", "", 0).await.unwrap();
    let e = sim
        .ns
        .commit(&lease.id, file(b"victim"), 8, vec![mine(8)])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("not its only block's id")),
        "{e:?}"
    );
    let e = sim
        .ns
        .commit(&lease.id, file(b"victim"), 0, vec![])
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(_)), "{e:?}");
    assert_eq!(sim.ns.lease_count(), 1, "the lease stays open");

    let mut squat = sim.batched("squat", "", b"attacker", &[0, 1]);
    squat.id = file(b"victim");
    let files = vec![squat, sim.batched("honest", "", b"honest", &[0, 1])];
    let results = sim.ns.commit_files(&lease.id, files).await.unwrap();
    assert!(
        matches!(&results[0], Err(Error::InvalidArgument(m)) if m.contains("not its only block's id")),
        "{:?}",
        results[0]
    );
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert!(matches!(
        sim.ns.get_file(&file(b"victim")).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(sim.ns.store_counts().unwrap(), (1, 0));

    sim.upload(b"victim", &[0, 1]).await;
    assert_eq!(
        sim.record(b"victim").await.blocks,
        vec![(block(b"victim"), 6)]
    );
}

/// A file of several blocks committed under another content's id (which the
/// namenode cannot check) is a conflict for the content's real upload, not
/// `existed`; that upload replaces it only by naming its blocks exactly
/// (compare-and-swap), and the squatter's blocks lose their references.
#[tokio::test(start_paused = true)]
async fn a_record_of_other_blocks_is_a_conflict_and_replaced_only_by_name() {
    let sim = Sim::new(&["--block-size", "8B"]).with_nodes(2);
    sim.tick();
    let blocks = |parts: &[&[u8]]| -> Vec<CommittedBlock> {
        parts
            .iter()
            .map(|c| CommittedBlock {
                id: block(c),
                length: c.len() as u64,
                replicas: vec![sim.nodes[0], sim.nodes[1]],
            })
            .collect()
    };
    let entries = |b: &[CommittedBlock]| b.iter().map(|b| (b.id, b.length)).collect::<Vec<_>>();
    let victim = file(b"victim's fifteen");
    let squat = blocks(&[b"squatter", b"!"]);
    let lease = sim.ns.begin_upload("squat", "", 0).await.unwrap();
    sim.ns
        .commit(&lease.id, victim, 9, squat.clone())
        .await
        .unwrap();

    let real = blocks(&[b"victim's", b" fifteen"]);
    let lease = sim.ns.begin_upload("victim", "", 0).await.unwrap();
    let conflict = |e: Error| match e {
        Error::Conflict(r) => r.blocks,
        e => panic!("a conflict: {e:?}"),
    };
    let e = sim
        .ns
        .commit(&lease.id, victim, 16, real.clone())
        .await
        .unwrap_err();
    assert_eq!(
        conflict(e),
        entries(&squat),
        "the conflict names the record's blocks"
    );
    assert_eq!(sim.ns.lease_count(), 1, "the lease stays open");
    // Naming other blocks than the record's replaces nothing.
    let e = sim
        .ns
        .commit_replacing(
            &lease.id,
            victim,
            16,
            real.clone(),
            Some(entries(&real)),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(conflict(e), entries(&squat));
    let (rec, existed) = sim
        .ns
        .commit_replacing(
            &lease.id,
            victim,
            16,
            real.clone(),
            Some(entries(&squat)),
            false,
        )
        .await
        .unwrap();
    assert!(!existed);
    assert_eq!((rec.size, rec.blocks.clone()), (16, entries(&real)));
    assert_eq!(sim.record(b"victim's fifteen").await.blocks, entries(&real));
    assert_eq!(sim.ns.lease_count(), 0);
    assert_eq!(sim.ns.store_counts().unwrap(), (1, 0));
    assert_eq!(sim.ns.status().files, 1);
    assert!(
        sim.ns.blocks().get(&block(b"squatter")).is_none(),
        "released"
    );
    assert_eq!(sim.ns.blocks().get(&block(b"victim's")).unwrap().refs, 1);
    // The same blocks again are `existed`, as before.
    let lease = sim.ns.begin_upload("again", "", 0).await.unwrap();
    let (_, existed) = sim.ns.commit(&lease.id, victim, 16, real).await.unwrap();
    assert!(existed);
}

#[tokio::test(start_paused = true)]
async fn a_batch_commits_every_file_durably_and_ends_its_lease() {
    // Blocks of 8 bytes, so that a file of two is short.
    let sim = Sim::new(&["--block-size", "8B"]).with_nodes(3);
    sim.tick();
    let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
    let two_blocks = FileToCommit {
        name: "two.bin".into(),
        content_type: "application/x-two".into(),
        id: file(b"one two two"),
        size: 11,
        blocks: [&b"one two "[..], b"two"]
            .iter()
            .map(|c| CommittedBlock {
                id: block(c),
                length: c.len() as u64,
                replicas: vec![sim.nodes[1], sim.nodes[2]],
            })
            .collect(),
        object_content: false,
    };
    let files = vec![
        sim.batched("a.txt", "text/plain", b"alpha", &[0, 1]),
        sim.batched("b", "", b"bravo!", &[1, 2]),
        two_blocks,
    ];
    let results = sim.ns.commit_files(&lease.id, files).await.unwrap();
    assert_eq!(results.len(), 3);
    for r in &results {
        let (rec, existed) = r.as_ref().unwrap();
        assert!(!existed, "{rec:?}");
        assert_eq!(rec.replication, 2, "the lease's replication");
    }
    assert_eq!(sim.ns.lease_count(), 0);
    assert_eq!(sim.ns.store_counts().unwrap(), (3, 0));
    assert_eq!(sim.ns.status().files, 3);

    let a = sim.record(b"alpha").await;
    assert_eq!(
        (a.name.as_str(), a.content_type.as_str(), a.size),
        ("a.txt", "text/plain", 5)
    );
    assert_eq!(a.blocks, vec![(block(b"alpha"), 5)]);
    let b = sim.record(b"bravo!").await;
    assert_eq!(
        (b.name.as_str(), b.content_type.as_str(), b.size),
        ("b", "application/octet-stream", 6)
    );
    let two = sim.record(b"one two two").await;
    assert_eq!((two.name.as_str(), two.size), ("two.bin", 11));
    assert_eq!(
        two.blocks,
        vec![(block(b"one two "), 8), (block(b"two"), 3)]
    );
    // The pipeline acks are located at once, as for a single commit.
    let mut on = sim.locations(b"alpha").await;
    on.sort();
    let mut want = vec![sim.nodes[0], sim.nodes[1]];
    want.sort();
    assert_eq!(on, want);

    // The lease ended with the call.
    let again = sim
        .ns
        .commit_files(&lease.id, vec![sim.batched("c", "", b"charlie", &[0, 1])])
        .await
        .unwrap_err();
    assert!(matches!(again, Error::FailedPrecondition(_)), "{again:?}");
    assert_eq!(sim.ns.store_counts().unwrap(), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn a_file_that_fails_in_a_batch_fails_alone() {
    let sim = Sim::new(&[]).with_nodes(2);
    sim.tick();
    let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
    let mut wrong_size = sim.batched("wrong-size", "", b"wrong size", &[0, 1]);
    wrong_size.size += 1;
    let files = vec![
        sim.batched("first", "", b"first", &[0, 1]),
        wrong_size,
        sim.batched("one-replica", "", b"one replica", &[0]),
        sim.batched("bad\nname", "", b"bad name", &[0, 1]),
        sim.batched("bad-type", "text/\u{7}", b"bad type", &[0, 1]),
        sim.batched("last", "", b"last", &[1, 0]),
    ];
    let results = sim.ns.commit_files(&lease.id, files).await.unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0].as_ref().unwrap().0.name, "first");
    assert!(
        matches!(&results[1], Err(Error::InvalidArgument(m)) if m.contains("sum of the block lengths")),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(&results[2], Err(Error::FailedPrecondition(m)) if m.contains("1 confirmed replicas, 2 needed")),
        "{:?}",
        results[2]
    );
    assert!(matches!(&results[3], Err(Error::InvalidArgument(_))));
    assert!(matches!(&results[4], Err(Error::InvalidArgument(_))));
    assert_eq!(results[5].as_ref().unwrap().0.name, "last");
    assert_eq!(sim.ns.store_counts().unwrap(), (2, 0));
    for failed in [&b"wrong size"[..], b"one replica", b"bad name", b"bad type"] {
        assert!(matches!(
            sim.ns.get_file(&file(failed)).await,
            Err(Error::NotFound(_))
        ));
    }
    assert_eq!(sim.ns.lease_count(), 0);

    // A batch whose every file fails ends its lease all the same.
    let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
    let results = sim
        .ns
        .commit_files(&lease.id, vec![sim.batched("x", "", b"x", &[0])])
        .await
        .unwrap();
    assert!(matches!(results[0], Err(Error::FailedPrecondition(_))));
    assert_eq!(sim.ns.lease_count(), 0);
    assert_eq!(sim.ns.store_counts().unwrap(), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn the_same_content_twice_in_a_batch_is_committed_once() {
    let sim = Sim::new(&[]).with_nodes(3);
    sim.tick();
    sim.upload(b"earlier", &[0, 1]).await;
    let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
    let files = vec![
        sim.batched("copy 1", "", b"twice", &[0, 1]),
        sim.batched("copy 2", "", b"twice", &[1, 2]),
        sim.batched("again", "", b"earlier", &[2, 1]),
    ];
    let results = sim.ns.commit_files(&lease.id, files).await.unwrap();
    let (first, first_existed) = results[0].as_ref().unwrap();
    let (second, second_existed) = results[1].as_ref().unwrap();
    assert!(!first_existed);
    assert!(second_existed, "the second finds the first");
    assert_eq!(first, second, "both answer with the first record");
    assert_eq!(second.name, "copy 1");
    let (earlier, existed) = results[2].as_ref().unwrap();
    assert!(existed);
    assert_eq!(earlier.name, "f");
    assert_eq!(sim.ns.store_counts().unwrap(), (2, 0));
    assert_eq!(sim.ns.status().files, 2);
    // Every ack counts, as for commits of existing content one by one.
    assert_eq!(sim.locations(b"twice").await.len(), 3);
    assert_eq!(sim.locations(b"earlier").await.len(), 3);
    assert_eq!(sim.ns.blocks().get(&block(b"twice")).unwrap().refs, 1);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_batch_commits_nothing() {
    let sim = Sim::new(&["--lease-ttl", "10s"]).with_nodes(2);
    sim.tick();
    let lease = sim.ns.begin_upload("batch", "", 0).await.unwrap();
    let max = kdfs_proto::transport::MAX_BATCH_FILES;
    let too_many: Vec<FileToCommit> = (0..=max)
        .map(|i| sim.batched("n", "", format!("file {i}").as_bytes(), &[0, 1]))
        .collect();
    let e = sim.ns.commit_files(&lease.id, too_many).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert_eq!(sim.ns.store_counts().unwrap(), (0, 0));
    assert_eq!(sim.ns.lease_count(), 1, "the lease stays open");
    // The largest batch allowed goes through, under the same lease.
    let most: Vec<FileToCommit> = (0..max)
        .map(|i| sim.batched("n", "", format!("file {i}").as_bytes(), &[0, 1]))
        .collect();
    let results = sim.ns.commit_files(&lease.id, most).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(sim.ns.store_counts().unwrap(), (max as u64, 0));

    let unknown = sim
        .ns
        .commit_files(
            "00000000-0000-0000-0000-000000000000",
            vec![sim.batched("u", "", b"u", &[0, 1])],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, Error::FailedPrecondition(_)),
        "{unknown:?}"
    );
    let late = sim.ns.begin_upload("late", "", 0).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    let expired = sim
        .ns
        .commit_files(&late.id, vec![sim.batched("l", "", b"l", &[0, 1])])
        .await
        .unwrap_err();
    assert!(
        matches!(expired, Error::FailedPrecondition(_)),
        "{expired:?}"
    );
    assert_eq!(sim.ns.store_counts().unwrap(), (max as u64, 0));
}
