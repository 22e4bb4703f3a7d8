//! The HTTP contract that holds without a cluster: a gateway whose namenode is
//! unreachable still routes, validates, authenticates and answers JSON errors.

mod common;

use std::time::Duration;

use common::{Gateway, assert_json_error, get_error, http, multipart};

/// A namenode address nothing listens on (the port was bound, then released).
async fn dead_namenode() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

const HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[tokio::test]
async fn routes_validate_and_answer_json_errors() {
    let gw = Gateway::start(&dead_namenode().await, &[]).await;
    let c = http();

    // The page.
    let r = c.get(gw.at("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"file-input\""));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external resources"
    );

    // Unknown routes and wrong methods.
    get_error(&c, gw.at("/nope"), 404).await;
    get_error(&c, gw.at("/upload"), 405).await;
    assert_json_error(c.post(gw.at("/download")).send().await.unwrap(), 405).await;
    assert_json_error(
        c.put(gw.at(&format!("/files/{HASH}")))
            .send()
            .await
            .unwrap(),
        405,
    )
    .await;
    assert_json_error(c.delete(gw.at("/files")).send().await.unwrap(), 405).await;

    // Invalid hashes, before the namenode is asked.
    for q in [
        "/download",
        "/download?hash=",
        "/download?hash=xyz",
        "/download?hash=E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "/download?hash=..%2F..%2Fetc%2Fpasswd",
        "/files/not-a-hash",
        "/files/..%2F..%2Fetc",
    ] {
        let m = get_error(&c, gw.at(q), 400).await;
        assert!(m.contains("hash"), "{q}: {m}");
    }
    assert_json_error(c.delete(gw.at("/files/zz")).send().await.unwrap(), 400).await;
    get_error(&c, gw.at("/files?limit=0"), 400).await;
    get_error(&c, gw.at("/files?limit=abc"), 400).await;

    // Bad upload bodies, refused before any namenode call.
    let r = c
        .post(gw.at("/upload"))
        .header("content-type", "multipart/form-data")
        .body("no boundary")
        .send()
        .await
        .unwrap();
    let m = assert_json_error(r, 400).await;
    assert!(m.contains("multipart"), "{m}");
    let r = c
        .post(gw.at("/upload?name=a&name=b"))
        .body("bad query")
        .send()
        .await
        .unwrap();
    assert_json_error(r, 400).await;
    let (ct, body) = multipart(&[("other", None, b"x")]);
    let r = c
        .post(gw.at("/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let m = assert_json_error(r, 400).await;
    assert!(m.contains("file"), "{m}");
    let r = c
        .post(gw.at("/upload"))
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body("--xyz\r\nthis is not a part header\r\n\r\n")
        .send()
        .await
        .unwrap();
    assert_json_error(r, 400).await;

    // A well-formed upload needs the namenode: 503 with a clear message.
    let (ct, body) = multipart(&[("file", Some("a.txt"), b"hello")]);
    let r = c
        .post(gw.at("/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let m = assert_json_error(r, 503).await;
    assert!(m.contains("namenode"), "{m}");
    // So does a raw body (PUT or POST, any non-form type, or none).
    for (method, ct) in [
        (reqwest::Method::PUT, None),
        (reqwest::Method::POST, Some("application/octet-stream")),
        (reqwest::Method::POST, None),
    ] {
        let mut req = c
            .request(method, gw.at("/upload?name=a.bin"))
            .body("raw bytes");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let m = assert_json_error(req.send().await.unwrap(), 503).await;
        assert!(m.contains("namenode"), "{m}");
    }
    assert_json_error(c.patch(gw.at("/upload")).send().await.unwrap(), 405).await;

    // Reads that need the namenode: 503 JSON; /info keeps its shape.
    get_error(&c, gw.at(&format!("/download?hash={HASH}")), 503).await;
    get_error(&c, gw.at("/files"), 503).await;
    let r = c.get(gw.at("/info")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["service"], "kdfs-gateway");
    assert!(v["error"].as_str().unwrap().contains("namenode"));
    assert_eq!(v["namenodes"][0]["role"], "unreachable", "{v}");
    assert!(v["namenodes"][0]["id"].is_null(), "{v}");

    // Health: live but not ready.
    assert_eq!(c.get(gw.at("/healthz")).send().await.unwrap().status(), 200);
    get_error(&c, gw.at("/readyz"), 503).await;
    let r = c.get(gw.at("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    gw.stop().await;
}

#[tokio::test]
async fn auth_token_guards_upload_and_delete_only() {
    let gw = Gateway::start(&dead_namenode().await, &["--auth-token=s3cret"]).await;
    let c = http();
    let (ct, body) = multipart(&[("file", Some("a.txt"), b"hello")]);

    // No token, wrong token, wrong scheme: 401 JSON.
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("Basic s3cret"),
    ] {
        let mut req = c
            .post(gw.at("/upload"))
            .header("content-type", ct.clone())
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_json_error(r, 401).await;
        let mut req = c.delete(gw.at(&format!("/files/{HASH}")));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        assert_json_error(req.send().await.unwrap(), 401).await;
    }

    // 401 comes before the body is read: a body that never ends still gets an answer.
    let endless = futures::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"--b\r\n"))
    })
    .chain(futures::stream::pending());
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.post(gw.at("/upload"))
            .header("content-type", "multipart/form-data; boundary=b")
            .body(reqwest::Body::wrap_stream(endless))
            .send(),
    )
    .await
    .expect("401 without reading the body")
    .unwrap();
    assert_eq!(r.status(), 401);

    // The right token passes (and then meets the dead namenode: 503).
    let r = c
        .post(gw.at("/upload"))
        .header("authorization", "Bearer s3cret")
        .header("content-type", ct.clone())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_json_error(r, 503).await;
    let r = c
        .delete(gw.at(&format!("/files/{HASH}")))
        .header("authorization", "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_json_error(r, 503).await;

    // Reads stay open: they reach the namenode (503 here), never 401.
    get_error(&c, gw.at("/files"), 503).await;
    get_error(&c, gw.at(&format!("/files/{HASH}")), 503).await;
    assert_eq!(c.get(gw.at("/")).send().await.unwrap().status(), 200);

    gw.stop().await;
}

use futures::StreamExt;
