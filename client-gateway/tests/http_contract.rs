//! The gateway's whole HTTP contract against a real in-process cluster: routes,
//! statuses, headers and body shapes, `--max-upload` and `--auth-token`.

mod common;
mod support;

use common::cluster::{BLOCK, Spec, TestCluster};
use common::{assert_json_error, get_error, http, multipart};
use serde_json::Value;
use support::{
    answer_while_owing, content, download, get_json, list_files, sha, source, upload, upload_ok,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_contract_routes_statuses_headers_and_shapes() {
    let cluster = TestCluster::start(3).await;
    let c = http();
    let url = cluster.gateway.url.clone();

    // /info, /readyz, /healthz, /metrics.
    let info: Value = get_json(&c, &format!("{url}/info")).await;
    assert_eq!(info["service"], "kdfs-gateway");
    assert_eq!(info["status"], "ok");
    assert_eq!(info["namenode"], cluster.namenode_url.as_str());
    // One namenode without HA: it leads, as id 0.
    assert_eq!(
        info["namenodes"],
        serde_json::json!([{
            "id": 0,
            "address": cluster.namenode_url.trim_start_matches("http://"),
            "role": "leader",
        }])
    );
    assert!(info["version"].is_string());
    assert_eq!(info["safe_mode"], false);
    for k in ["files", "blocks", "bytes", "under_replicated"] {
        assert!(info[k].is_u64(), "{k} in {info}");
    }
    let dns = info["datanodes"].as_array().unwrap();
    assert_eq!(dns.len(), 3);
    for d in dns {
        for k in ["id", "address", "zone", "state"] {
            assert!(d[k].is_string(), "{k} in {d}");
        }
        for k in ["capacity", "used", "blocks"] {
            assert!(d[k].is_u64(), "{k} in {d}");
        }
        assert!(d["last_heartbeat_secs"].is_number());
        assert_eq!(d["state"], "live");
    }
    assert_eq!(
        c.get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Upload with a non-ASCII name; download headers.
    let data = content(2 * BLOCK as usize + 5, 3);
    let name = "résumé ü;2.txt";
    let v = upload_ok(&c, &url, name, &data).await;
    let hash = v["hash"].as_str().unwrap().to_owned();
    assert_eq!(v["name"], name);
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["etag"], format!("\"{hash}\"").as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"r_sum_ _;2.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%C3%BC%3B2.txt"
    );
    assert!(r.bytes().await.unwrap()[..] == data[..]);

    // A hostile name (quote, backslash, header syntax) stored through the library
    // cannot break out of Content-Disposition.
    let hostile = "x\"; filename=evil.exe\\ Set-Cookie: a=b";
    let client = cluster.client();
    let evil = client
        .upload(source(b"evil".to_vec(), 4), hostile, "")
        .await
        .unwrap();
    let r = c
        .get(format!("{url}/download?hash={}", evil.record.id))
        .send()
        .await
        .unwrap();
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(cd.matches('"').count(), 2, "{cd}");
    assert!(
        cd.starts_with(
            "attachment; filename=\"x_; filename=evil.exe_ Set-Cookie: a=b\"; filename*=UTF-8''"
        ),
        "{cd}"
    );
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(r.headers()["content-type"], "application/octet-stream");

    // The same through a browser-style multipart filename (`"` sent as %22, CR LF
    // as %0D%0A): the name is kept with its quote, and still cannot inject anything.
    let (ct, body) = multipart(&[(
        "file",
        Some("q%22; filename=evil.exe%0D%0ASet-Cookie: a=b"),
        b"browser",
    )]);
    let r = c
        .post(format!("{url}/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "q\"; filename=evil.exeSet-Cookie: a=b");
    let r = c
        .get(format!("{url}/download?hash={}", sha(b"browser")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"q_; filename=evil.exeSet-Cookie: a=b\"; \
         filename*=UTF-8''q%22%3B%20filename%3Devil.exeSet-Cookie%3A%20a%3Db"
    );
    assert!(r.headers().get("set-cookie").is_none());

    // HEAD: the same headers, no body.
    let r = c
        .head(format!("{url}/download?hash={hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert!(r.bytes().await.unwrap().is_empty());

    // ETag and If-None-Match.
    for inm in [
        format!("\"{hash}\""),
        format!("W/\"{hash}\""),
        "*".to_owned(),
    ] {
        let r = c
            .get(format!("{url}/download?hash={hash}"))
            .header("if-none-match", &inm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{inm}");
        assert_eq!(r.headers()["etag"], format!("\"{hash}\"").as_str());
    }
    let r = c
        .get(format!("{url}/download?hash={hash}"))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // /files: newest first, pagination, search.
    let second = upload_ok(&c, &url, "second.txt", b"second file").await;
    let list = list_files(&c, &url).await;
    let files = list["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    assert_eq!(files[0]["hash"], second["hash"], "newest first");
    for f in files {
        for k in ["hash", "name", "content_type", "created"] {
            assert!(f[k].is_string(), "{k} in {f}");
        }
        for k in ["size", "created_ms", "replicas", "blocks"] {
            assert!(f[k].is_number(), "{k} in {f}");
        }
    }
    assert!(list["next"].is_null());
    let page1: Value = get_json(&c, &format!("{url}/files?limit=2")).await;
    assert_eq!(page1["files"].as_array().unwrap().len(), 2);
    let next = page1["next"].as_str().expect("a next cursor").to_owned();
    let page2: Value = c
        .get(format!("{url}/files"))
        .query(&[("limit", "2"), ("after", next.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["files"].as_array().unwrap().len(), 2);
    assert_eq!(page2["files"][1]["hash"], hash.as_str());
    let found: Value = c
        .get(format!("{url}/files"))
        .query(&[("q", "RÉSUMÉ")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found = found["files"].as_array().unwrap();
    assert!(
        found.iter().any(|f| f["hash"] == hash.as_str()),
        "search finds résumé"
    );
    assert!(found.iter().all(|f| f["hash"] != second["hash"]));

    // /files/{hash}: record, blocks and live locations.
    let one: Value = get_json(&c, &format!("{url}/files/{hash}")).await;
    assert_eq!(one["hash"], hash.as_str());
    assert_eq!(one["size"], data.len() as u64);
    let blocks = one["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[1]["offset"], BLOCK);
    for b in blocks {
        assert!(b["replicas"].as_array().unwrap().len() >= 2, "{b}");
        assert!(b["replicas"][0]["address"].is_string());
    }

    // Unknown: 404. Delete: 200, then 410 for reads, gone from listings.
    let unknown = sha(b"never stored");
    get_error(&c, format!("{url}/download?hash={unknown}"), 404).await;
    get_error(&c, format!("{url}/files/{unknown}"), 404).await;
    let r = c
        .delete(format!("{url}/files/{hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["deleted"], true);
    // Deleting again is idempotent; deleting what never existed is 404.
    let r = c
        .delete(format!("{url}/files/{hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], false);
    assert_json_error(
        c.delete(format!("{url}/files/{unknown}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    get_error(&c, format!("{url}/download?hash={hash}"), 410).await;
    get_error(&c, format!("{url}/files/{hash}"), 410).await;
    let list = list_files(&c, &url).await;
    assert!(
        list["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["hash"] != hash.as_str())
    );

    // Uploading the same content again right after a delete is accepted at once and
    // reads back: no delete, delivered or not, can remove a replica it wrote.
    let back = upload_ok(&c, &url, "back.txt", &data).await;
    assert_eq!(back["hash"], hash.as_str());
    assert!(download(&c, &url, &hash).await == data);

    // Duplicate file field: 400, nothing stored.
    let (ct, body) = multipart(&[("file", Some("a"), b"one"), ("file", Some("b"), b"two")]);
    let r = c
        .post(format!("{url}/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let m = assert_json_error(r, 400).await;
    assert!(m.contains("more than one"), "{m}");
    get_error(&c, format!("{url}/files/{}", sha(b"one")), 404).await;
    // Other form fields are ignored; the file part's name and type are kept.
    let (ct, body) = multipart(&[
        ("note", None, b"hi"),
        ("file", Some("c.bin"), b"three"),
        ("x", None, b"y"),
    ]);
    let r = c
        .post(format!("{url}/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["hash"], sha(b"three"));
    assert_eq!(v["name"], "c.bin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_upload_and_auth_token_on_a_cluster() {
    let cluster = TestCluster::with(Spec {
        gateway_args: vec!["--max-upload=1MiB".into(), "--auth-token=tok".into()],
        ..Spec::default()
    })
    .await;
    let c = http();
    let url = &cluster.gateway.url;
    let big = content(3 << 20, 1);
    let part = reqwest::multipart::Part::bytes(big.clone()).file_name("big.bin");
    let r = c
        .post(format!("{url}/upload"))
        .bearer_auth("tok")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await;
    // The gateway answers 413 as soon as the limit is crossed; it may close the
    // connection before the client finished sending.
    if let Ok(r) = r {
        assert_json_error(r, 413).await;
    }
    // Deterministically: send half of the body (past the limit) and read the answer
    // while the rest is still owed.
    {
        let (ct, body) = multipart(&[("file", Some("big.bin"), &big)]);
        let addr = url.trim_start_matches("http://");
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer tok\r\n\
             Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let answer = answer_while_owing(addr, &head, &body[..body.len() / 2]).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    // That connection may be half-closed now: use a fresh client (and pool).
    let c = http();
    get_error(&c, format!("{url}/files/{}", sha(&big)), 404).await;

    let small = content(1 << 20, 2);
    let part = reqwest::multipart::Part::bytes(small.clone()).file_name("ok.bin");
    let r = c
        .post(format!("{url}/upload"))
        .bearer_auth("tok")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "exactly the limit is accepted");
    let r = upload(&c, url, "noauth.bin", b"x").await;
    assert_json_error(r, 401).await;
    // Reads stay open.
    assert!(download(&c, url, &sha(&small)).await == small);
    let r = c
        .delete(format!("{url}/files/{}", sha(&small)))
        .send()
        .await
        .unwrap();
    assert_json_error(r, 401).await;
    let r = c
        .delete(format!("{url}/files/{}", sha(&small)))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
