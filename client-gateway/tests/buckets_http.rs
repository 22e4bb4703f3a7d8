//! The bucket/key routes of the HTTP port (`/buckets…`, what the browser page uses)
//! against a real cluster with a bearer token: puts and deletes need the token, names
//! are checked before anything is stored, listings page and fold "folders", an object
//! put here has its MD5 as ETag and is readable back, by key and by its SHA-256.

mod common;
mod support;

use common::cluster::{Spec, TestCluster};
use common::{assert_json_error, http};
use serde_json::Value;
use support::{content, sha};

const TOKEN: &str = "bucket-test-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_and_keys_over_http_with_the_token() {
    let c = TestCluster::with(Spec {
        gateway_args: vec![format!("--auth-token={TOKEN}")],
        ..Spec::default()
    })
    .await;
    let h = http();
    let at = |p: &str| c.gateway.at(p);
    let put = |url: String| h.put(url).bearer_auth(TOKEN);

    // Mutations need the token; names are checked.
    assert_json_error(h.put(at("/buckets/photos")).send().await.unwrap(), 401).await;
    let r = put(at("/buckets/photos")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_json_error(put(at("/buckets/photos")).send().await.unwrap(), 409).await;
    assert_json_error(put(at("/buckets/Not_A_Bucket")).send().await.unwrap(), 400).await;
    let long = "k".repeat(1025);
    let r = put(at(&format!("/buckets/photos/objects/{long}")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_json_error(r, 400).await;
    let r = put(at("/buckets/nowhere/objects/k"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_json_error(r, 404).await;
    let r = h
        .put(at("/buckets/photos/objects/k"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_json_error(r, 401).await;

    // Objects in "folders", one key with a space and a percent sign.
    let data = content(300_000, 9);
    let mut want = Vec::new();
    for key in [
        "2026/summer/a b%.bin",
        "2026/summer/c.bin",
        "2026/x.txt",
        "top.txt",
    ] {
        let r = put(at(&format!(
            "/buckets/photos/objects/{}",
            key.replace('%', "%25").replace(' ', "%20")
        )))
        .header("content-type", "image/jpeg")
        .body(data.clone())
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{key}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"]["key"], key);
        assert_eq!(v["object"]["hash"], sha(&data));
        let md5 = {
            use md5::Digest;
            hex::encode(md5::Md5::digest(&data))
        };
        assert_eq!(v["object"]["etag"], md5, "the ETag is the MD5");
        want.push(key.to_owned());
    }
    let list = |q: &str| {
        let url = at(&format!("/buckets/photos?{q}"));
        let h = h.clone();
        async move {
            let r = h.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let root = list("delimiter=/").await;
    assert_eq!(root["folders"], serde_json::json!(["2026/"]), "{root}");
    assert_eq!(root["objects"][0]["key"], "top.txt", "{root}");
    let inner = list("prefix=2026/&delimiter=/").await;
    assert_eq!(
        inner["folders"],
        serde_json::json!(["2026/summer/"]),
        "{inner}"
    );
    assert_eq!(inner["objects"][0]["key"], "2026/x.txt", "{inner}");
    // Pages of two, every key once, in order.
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let page = list(&format!("limit=2&continuation={}", urlencode(&next))).await;
        seen.extend(
            page["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["key"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(n) => next = n.to_owned(),
            None => break,
        }
    }
    want.sort();
    assert_eq!(seen, want);
    let r = h
        .get(at("/buckets/photos?continuation=not-a-token"))
        .send()
        .await
        .unwrap();
    assert_json_error(r, 400).await;

    // Read back by key (type kept) and by hash.
    let r = h
        .get(at("/buckets/photos/objects/2026/summer/a%20b%25.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(sha(&r.bytes().await.unwrap()), sha(&data));
    let r = h
        .get(at(&format!("/download?hash={}", sha(&data))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A bucket with keys is not deleted; deletes need the token.
    assert_json_error(
        h.delete(at("/buckets/photos/objects/top.txt"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    let r = h
        .delete(at("/buckets/photos"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_json_error(r, 409).await;
    for key in &want {
        let url = at(&format!(
            "/buckets/photos/objects/{}",
            key.replace('%', "%25").replace(' ', "%20")
        ));
        let r = h
            .delete(url.clone())
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["deleted"], true);
        assert_json_error(h.get(url).send().await.unwrap(), 404).await;
    }
    let r = h
        .delete(at("/buckets/photos"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = h
        .get(at("/buckets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["buckets"], serde_json::json!([]));
}

/// The few characters a continuation token may hold that a query must escape.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
