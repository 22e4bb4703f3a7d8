use super::*;

const NOW: u64 = 1_000_000;

fn key(id: u64) -> BlockKey {
    BlockKey::new(id, [id as u8; SECRET_LEN], NOW + 60_000)
}

fn ring(keys: &[BlockKey]) -> KeyRing {
    let r = KeyRing::default();
    r.learn(&keys.iter().map(BlockKey::to_wire).collect::<Vec<_>>(), NOW);
    r
}

fn loc(n: u8) -> Location {
    Location {
        id: DatanodeId::random(),
        address: format!("10.0.0.{n}:9866"),
    }
}

fn block() -> BlockId {
    BlockId::of(b"block")
}

/// A token with its MAC or grant changed by `f`.
fn tampered(f: impl FnOnce(&mut pb::BlockToken)) -> pb::BlockToken {
    let mut t = Grant::read(block(), NOW + 1).sign(&key(1));
    f(&mut t);
    t
}

/// A case of `sign_and_verify`: its name, the keys the ring holds, the token, and
/// what verifying it gives.
type VerifyCase = (
    &'static str,
    Vec<BlockKey>,
    Option<pb::BlockToken>,
    Result<Grant, TokenError>,
);

#[test]
fn sign_and_verify() {
    let write = Grant::write("u", &[loc(1), loc(2)], 64 << 20, NOW + 1);
    let other_key = BlockKey::new(1, [9; SECRET_LEN], NOW + 60_000);
    let with_grant = |g: pb::BlockGrant| {
        let mut t = Grant::read(block(), NOW + 1).sign(&key(1));
        t.grant = g.encode_to_vec().into();
        t
    };
    let cases: Vec<VerifyCase> = vec![
        (
            "valid",
            vec![key(1)],
            Some(write.sign(&key(1))),
            Ok(write.clone()),
        ),
        (
            "a second key",
            vec![key(1), key(2)],
            Some(write.sign(&key(2))),
            Ok(write.clone()),
        ),
        ("no token", vec![key(1)], None, Err(TokenError::Missing)),
        (
            "an empty token",
            vec![key(1)],
            Some(pb::BlockToken::default()),
            Err(TokenError::Missing),
        ),
        (
            "no keys yet",
            vec![],
            Some(write.sign(&key(1))),
            Err(TokenError::NoKeys),
        ),
        (
            "unknown key",
            vec![key(1)],
            Some(write.sign(&key(3))),
            Err(TokenError::UnknownKey(3)),
        ),
        (
            "same id, another secret (forged)",
            vec![key(1)],
            Some(write.sign(&other_key)),
            Err(TokenError::BadMac),
        ),
        (
            "flipped mac bit",
            vec![key(1)],
            Some(tampered(|t| {
                let mut m = t.mac.to_vec();
                m[0] ^= 1;
                t.mac = m.into();
            })),
            Err(TokenError::BadMac),
        ),
        (
            "truncated mac",
            vec![key(1)],
            Some(tampered(|t| t.mac = t.mac.slice(..16))),
            Err(TokenError::BadMac),
        ),
        (
            "grant widened after signing",
            vec![key(1)],
            Some(with_grant(pb::BlockGrant {
                expires_ms: u64::MAX,
                ..Grant::read(block(), NOW + 1).to_wire()
            })),
            Err(TokenError::BadMac),
        ),
        (
            "expired",
            vec![key(1)],
            Some(Grant::read(block(), NOW - 5).sign(&key(1))),
            Err(TokenError::Expired { ago_ms: 5 }),
        ),
        (
            "expires now",
            vec![key(1)],
            Some(Grant::read(block(), NOW).sign(&key(1))),
            Err(TokenError::Expired { ago_ms: 0 }),
        ),
        (
            "signed garbage",
            vec![key(1)],
            Some({
                let garbage = b"\xff\xff\xff";
                let mut mac = key(1).mac();
                mac.update(garbage);
                pb::BlockToken {
                    key_id: 1,
                    grant: bytes::Bytes::from_static(garbage),
                    mac: mac.finalize().into_bytes().to_vec().into(),
                }
            }),
            Err(TokenError::Malformed(
                "failed to decode Protobuf message: invalid varint".into(),
            )),
        ),
    ];
    for (name, keys, token, want) in cases {
        assert_eq!(ring(&keys).verify(token.as_ref(), NOW), want, "{name}");
    }
}

#[test]
fn expired_keys_are_dropped_and_the_ring_is_bounded() {
    let r = ring(&[key(1)]);
    assert_eq!(r.newest(), 1);
    let token = Grant::read(block(), NOW + 1).sign(&key(1));
    // The key's own expiry ends its tokens, whatever they claim.
    let later = key(1).expires_ms;
    assert_eq!(
        r.verify(Some(&token), later),
        Err(TokenError::UnknownKey(1))
    );
    r.learn(&[], later);
    assert_eq!(r.newest(), 0);
    let many: Vec<pb::BlockKey> = (1..=(MAX_KEYS as u64 + 10))
        .map(|i| BlockKey::new(i, [1; SECRET_LEN], NOW + i).to_wire())
        .collect();
    r.learn(&many, NOW);
    assert_eq!(r.keys.read().unwrap().len(), MAX_KEYS);
    assert_eq!(
        r.newest(),
        MAX_KEYS as u64 + 10,
        "the longest-lived are kept"
    );
    // A malformed key is skipped, the others learnt.
    r.learn(
        &[
            pb::BlockKey {
                id: 999,
                secret: bytes::Bytes::from_static(b"short"),
                expires_ms: u64::MAX,
            },
            key(1000).to_wire(),
        ],
        NOW,
    );
    assert!(r.keys.read().unwrap().contains_key(&1000));
    assert!(!r.keys.read().unwrap().contains_key(&999));
}

#[test]
fn pipelines() {
    let (a, b, c, d) = (loc(1), loc(2), loc(3), loc(4));
    let mut moved = b.clone();
    moved.address = "169.254.169.254:80".into();
    let issued = [a.clone(), b.clone(), c.clone()];
    let cases: Vec<(&str, &Location, Vec<Location>, bool)> = vec![
        ("head, the rest", &a, vec![b.clone(), c.clone()], true),
        ("middle, the rest", &b, vec![c.clone()], true),
        ("tail", &c, vec![], true),
        ("head skipping a failed node", &a, vec![c.clone()], true),
        ("head alone", &a, vec![], true),
        ("not in the pipeline", &d, vec![], false),
        (
            "an extra node",
            &a,
            vec![b.clone(), c.clone(), d.clone()],
            false,
        ),
        ("reordered", &a, vec![c.clone(), b.clone()], false),
        ("a node twice", &a, vec![b.clone(), b.clone()], false),
        ("back to itself", &a, vec![a.clone(), a.clone()], false),
        ("a node before me", &b, vec![a.clone()], false),
        ("another address for a node", &a, vec![moved], false),
    ];
    for (name, me, downstream, ok) in cases {
        assert_eq!(
            check_pipeline(&issued, &me.id, &downstream).is_ok(),
            ok,
            "{name}"
        );
    }
}

#[test]
fn writes_reads_and_transfers() {
    let (a, b, c) = (loc(1), loc(2), loc(3));
    let write = Grant::write("u1", &[a.clone(), b.clone()], 1000, NOW);
    assert!(
        write
            .check_write(&a.id, std::slice::from_ref(&b), "u1", 1000, false)
            .is_ok()
    );
    for (name, r) in [
        (
            "another upload",
            write.check_write(&a.id, std::slice::from_ref(&b), "u2", 10, false),
        ),
        (
            "too long",
            write.check_write(&a.id, std::slice::from_ref(&b), "u1", 1001, false),
        ),
        (
            "74 GB",
            write.check_write(&a.id, &[], "u1", 74 << 30, false),
        ),
        (
            "not in the pipeline",
            write.check_write(&c.id, &[], "u1", 10, false),
        ),
        ("read with it", write.check_read(&block())),
        (
            "transfer with it",
            write.check_transfer_source(&a.id, &block(), std::slice::from_ref(&b)),
        ),
    ] {
        assert!(matches!(r, Err(TokenError::Denied(_))), "{name}: {r:?}");
    }

    let read = Grant::read(block(), NOW);
    assert!(read.check_read(&block()).is_ok());
    assert!(read.check_read(&BlockId::of(b"other")).is_err());
    assert!(read.check_write(&a.id, &[], "", 0, true).is_err());

    let transfer = Grant::transfer(block(), 500, c.id, &[a.clone(), b.clone()], NOW);
    assert!(
        transfer
            .check_transfer_source(&c.id, &block(), &[a.clone(), b.clone()])
            .is_ok()
    );
    assert!(
        transfer
            .check_write(&a.id, std::slice::from_ref(&b), "", 500, true)
            .is_ok()
    );
    assert!(transfer.check_block(&block()).is_ok());
    for (name, r) in [
        (
            "another source",
            transfer.check_transfer_source(&a.id, &block(), std::slice::from_ref(&b)),
        ),
        (
            "another block",
            transfer.check_transfer_source(&c.id, &BlockId::of(b"x"), std::slice::from_ref(&a)),
        ),
        (
            "no targets",
            transfer.check_transfer_source(&c.id, &block(), &[]),
        ),
        (
            "other targets",
            transfer.check_transfer_source(&c.id, &block(), std::slice::from_ref(&c)),
        ),
        (
            "as a batch",
            transfer.check_write(&a.id, std::slice::from_ref(&b), "", 500, false),
        ),
        (
            "for an upload",
            transfer.check_write(&a.id, &[], "u1", 500, true),
        ),
        ("longer", transfer.check_write(&a.id, &[], "", 501, true)),
        (
            "trailer of another block",
            transfer.check_block(&BlockId::of(b"x")),
        ),
        ("read with it", transfer.check_read(&block())),
    ] {
        assert!(matches!(r, Err(TokenError::Denied(_))), "{name}: {r:?}");
    }
}

#[test]
fn refusals_are_permission_denied_except_missing_keys() {
    assert_eq!(
        Status::from(TokenError::Missing).code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        Status::from(TokenError::NoKeys).code(),
        tonic::Code::Unavailable
    );
    let m = Status::from(TokenError::BadMac);
    assert_eq!(m.message(), "block access token refused: bad signature");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let k = BlockKey::new(5, [0xAB; SECRET_LEN], 9);
    let shown = format!("{k:?}");
    assert!(
        !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
        "{shown}"
    );
}
