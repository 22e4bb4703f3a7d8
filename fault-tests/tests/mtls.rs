//! Issue 9: a cluster of real processes with mutual TLS on every gRPC link.
//!
//! - Round trip (upload, download, delete) and re-replication after a SIGKILL, all over
//!   mTLS.
//! - Refusals at the namenode's TLS port, each with its reason in the namenode's log
//!   and no state change: no client certificate, a certificate from another CA, an
//!   expired certificate, plaintext, and a valid datanode certificate presented by a
//!   process that claims another node's address. (Refusals by role: `roles.rs`.)
//! - Rotation: the files are replaced under the running cluster; an upload in flight
//!   finishes, and every server presents the new certificate to new connections.
//! - Expiry: every server's `/metrics` carries the seconds until its certificate and
//!   its CA expire.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use kdfs_proto::pb;
use kdfs_proto::pb::namenode_client::NamenodeClient;
use kdfs_proto::tls::Tls;
use kdfs_testkit::pki::{Ca, Leaf, RoleCerts, write_atomically};
use kdfs_testkit::{Options, ProcessCluster, Stored, random_bytes, sha256_hex};
use rustls::pki_types::ServerName;
use tonic::transport::Channel;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// Every process presents its role's certificate of `pki`.
fn mtls_options(pki: &RoleCerts, base: Options) -> Options {
    let mut opts = base;
    for (flag, value) in pki.namenode.flags(&pki.ca.cert) {
        opts = opts.namenode_arg(&flag, &value);
    }
    for (flag, value) in pki.datanode.flags(&pki.ca.cert) {
        opts = opts.datanode_arg(&flag, &value);
    }
    for (flag, value) in pki.gateway.flags(&pki.ca.cert) {
        opts = opts.gateway_arg(&flag, &value);
    }
    opts.namenode_arg("--tls-reload-interval", "200ms")
        .datanode_arg("--tls-reload-interval", "200ms")
        .gateway_arg("--tls-reload-interval", "200ms")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
}

/// A namenode client presenting `leaf` (trusting `ca`).
fn namenode_client(port: u16, leaf: &Leaf, ca: &Path) -> NamenodeClient<Channel> {
    let tls = Tls::from_files(&leaf.cert, &leaf.key, Some(ca.to_owned())).expect("test TLS");
    let channel =
        kdfs_proto::tls::channel(&format!("127.0.0.1:{port}"), Some(&tls)).expect("a channel");
    NamenodeClient::new(channel)
}

async fn cluster_info(client: &mut NamenodeClient<Channel>) -> Result<usize, tonic::Status> {
    let info = tokio::time::timeout(
        CALL_TIMEOUT,
        client.cluster_info(pb::ClusterInfoRequest::default()),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("test call timed out"))??;
    Ok(info.into_inner().datanodes.len())
}

/// Waits until `proc_log()` holds `needle`, or fails showing the log's tail.
fn wait_for_log(c: &ProcessCluster, log: impl Fn() -> String, needle: &str) {
    c.wait_until(
        &format!("log line {needle:?}"),
        Duration::from_secs(15),
        || log().contains(needle),
    );
}

#[test]
fn mtls_cluster_round_trip_refusals_and_rereplication() {
    let pki = tempfile::tempdir().expect("pki dir");
    let certs = RoleCerts::new(pki.path(), LOCAL_NAMES);
    let ca = &certs.ca;
    let mut c = ProcessCluster::start(mtls_options(
        &certs,
        Options::default().datanodes(4).replication(3),
    ));
    assert!(
        c.namenodes[0].log_text().contains("mTLS on"),
        "the namenode did not report mTLS on:\n{}",
        c.namenodes[0].log_tail(20)
    );

    // Round trip over mTLS: every gRPC hop (gateway -> namenode, gateway -> datanode,
    // datanode -> datanode, datanode -> namenode) is TLS now.
    let sizes = [1, 200 << 10, (1 << 20) + 3, 3 << 20];
    let files: Vec<Stored> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| c.upload(&random_bytes(n, 900 + i as u64)))
        .collect();
    c.verify_all(&files);
    let doomed = c.upload(&random_bytes(64 << 10, 999));
    c.delete(&doomed.hash);
    assert!(
        c.file(&doomed.hash).expect("file lookup").is_none(),
        "a deleted file is still listed"
    );
    c.wait_replicated("initial replication", Duration::from_secs(30), &files, &[]);

    let rt = runtime();
    // Every server exports when its certificates expire (RoleCerts' leaves and CA are
    // valid for centuries, so both figures are large and positive).
    let metrics_of = |addr: String| {
        rt.block_on(async {
            let addr = addr.parse().expect("a socket address");
            kdfs_testkit::http_get(addr, "/metrics").await.1
        })
    };
    let gateway_http = c.gateway.flag("listen").expect("the gateway's --listen");
    for (who, addr) in [
        (
            "namenode",
            c.namenodes[0].flag("http").expect("--http").to_owned(),
        ),
        (
            "datanode-0",
            c.datanodes[0].flag("http").expect("--http").to_owned(),
        ),
        ("gateway", gateway_http.to_owned()),
    ] {
        let text = metrics_of(addr);
        for which in ["own", "ca"] {
            let series = format!(
                "kdfs_tls_certificate_expiry_seconds{{use=\"mtls\",certificate=\"{which}\"}} "
            );
            let left: i64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .unwrap_or_else(|| panic!("{who}'s /metrics lacks {series}:\n{text}"))
                .parse()
                .expect("an integer");
            assert!(left > 365 * 86_400, "{who}: {which} expires in {left}s");
        }
    }
    // Lazy channels spawn their connection task on creation.
    let _in_runtime = rt.enter();
    let port = c.namenode_port;
    let mut good = namenode_client(port, &certs.gateway, &ca.cert);
    let live_before = rt
        .block_on(cluster_info(&mut good))
        .expect("a valid client is served");
    assert_eq!(live_before, 4);

    // 1. No client certificate.
    let ca_pem = std::fs::read_to_string(&ca.cert).expect("ca.crt");
    let no_cert = rt.block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem))
            .domain_name("127.0.0.1");
        let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .connect_lazy();
        cluster_info(&mut NamenodeClient::new(channel)).await
    });
    assert!(
        no_cert.is_err(),
        "a client without a certificate was served"
    );
    wait_for_log(
        &c,
        || c.namenodes[0].log_text(),
        "the client presented no certificate",
    );

    // 2. A certificate from another CA (same names).
    let other_ca = Ca::new(&pki.path().join("other"), "some other CA");
    let stranger = other_ca.role_leaf("stranger", "gateway", LOCAL_NAMES);
    let other = rt.block_on(async {
        // Trusts our CA for the server, presents the other CA's certificate.
        cluster_info(&mut namenode_client(port, &stranger, &ca.cert)).await
    });
    assert!(other.is_err(), "another CA's certificate was accepted");
    wait_for_log(
        &c,
        || c.namenodes[0].log_text(),
        "the certificate is not signed by the trusted CA",
    );

    // 3. An expired certificate from the right CA.
    let expired = ca.expired_leaf("expired", "gateway", LOCAL_NAMES);
    let late = rt.block_on(cluster_info(&mut namenode_client(port, &expired, &ca.cert)));
    assert!(late.is_err(), "an expired certificate was accepted");
    wait_for_log(
        &c,
        || c.namenodes[0].log_text(),
        "the certificate has expired",
    );

    // 4. Plaintext gRPC to the TLS port.
    let plain = rt.block_on(async {
        let channel =
            kdfs_proto::transport::lazy_channel(&format!("127.0.0.1:{port}")).expect("channel");
        cluster_info(&mut NamenodeClient::new(channel)).await
    });
    assert!(
        plain.is_err(),
        "a plaintext client was served on the TLS port"
    );
    wait_for_log(&c, || c.namenodes[0].log_text(), "not a TLS handshake");

    // 5. A valid datanode certificate (it names 127.0.0.1 and localhost) presented by
    //    a process that claims to be a datanode at another host.
    let impostor = rt.block_on(async {
        let mut client = namenode_client(port, &certs.datanode, &ca.cert);
        client
            .register(pb::RegisterRequest {
                datanode_id: "6f1c1b2e-3d4c-4b5a-9e8f-7a6b5c4d3e2f".into(),
                address: "datanode-7.datanode.kdfs.svc.cluster.local:9866".into(),
                capacity: 1 << 40,
                available: 1 << 40,
                ..Default::default()
            })
            .await
    });
    let status = impostor.expect_err("an impostor datanode was registered");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("datanode-7.datanode.kdfs.svc.cluster.local"),
        "{status:?}"
    );
    wait_for_log(
        &c,
        || c.namenodes[0].log_text(),
        "datanode identity refused",
    );

    // No refusal changed anything: still exactly the four real datanodes, every file
    // intact.
    let live_after = rt.block_on(cluster_info(&mut good)).expect("still served");
    assert_eq!(live_after, 4, "a refused client changed the datanode set");
    assert_eq!(c.live_datanodes(), 4);
    c.verify_all(&files);

    // Re-replication over TLS: datanode -> datanode transfers after a SIGKILL.
    let victim = (0..4)
        .max_by_key(|&i| c.blocks_on_disk(i).len())
        .expect("four datanodes");
    c.kill_datanode(victim);
    c.wait_until("victim declared dead", Duration::from_secs(20), || {
        c.datanode_state(victim).as_deref() == Some("dead")
    });
    c.wait_replicated(
        "every block back to 3 replicas over mTLS",
        Duration::from_secs(90),
        &files,
        &[victim],
    );
    c.verify_all(&files);
}

/// The certificate a TLS server at `port` presents to a new connection.
async fn presented_certificate(port: u16, client: &Leaf, ca: &Path) -> Vec<u8> {
    let tls = Tls::from_files(&client.cert, &client.key, Some(ca.to_owned())).expect("test TLS");
    let config = tls.client_config().expect("a client side");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("TCP connect");
    let name = ServerName::try_from("127.0.0.1").expect("a name");
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .to_vec()
}

/// A body that sends `first` bytes, then waits for a signal before the rest: an upload
/// that is in flight for as long as the test wants.
struct PausedReader {
    data: Vec<u8>,
    at: usize,
    first: usize,
    resume: Option<mpsc::Receiver<()>>,
    paused: Arc<AtomicBool>,
}

impl Read for PausedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.first
            && let Some(rx) = self.resume.take()
        {
            self.paused.store(true, Ordering::SeqCst);
            let _ = rx.recv_timeout(Duration::from_secs(60));
        }
        let end = if self.at < self.first {
            self.first
        } else {
            self.data.len()
        };
        let n = buf.len().min(end - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn rotated_certificates_serve_new_connections_and_transfers_in_flight_finish() {
    let pki = tempfile::tempdir().expect("pki dir");
    let certs = RoleCerts::new(pki.path(), LOCAL_NAMES);
    let ca = &certs.ca;
    let old_ders = [certs.namenode.der(), certs.datanode.der()];
    let c = ProcessCluster::start(mtls_options(&certs, Options::default()));
    let rt = runtime();
    let nn_port = c.namenode_port;
    let dn_ports: Vec<u16> = c
        .datanode_addrs
        .iter()
        .map(|a| a.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let checker = ca.role_leaf("checker", "gateway", LOCAL_NAMES);
    assert_eq!(
        rt.block_on(presented_certificate(nn_port, &checker, &ca.cert)),
        old_ders[0]
    );

    // An upload starts with the old certificates and pauses half-way.
    let data = random_bytes(6 << 20, 4242);
    let (resume, wait) = mpsc::channel();
    let paused = Arc::new(AtomicBool::new(false));
    let body = PausedReader {
        data: data.clone(),
        at: 0,
        first: 3 << 20,
        resume: Some(wait),
        paused: paused.clone(),
    };
    let api = c.api.clone();
    let upload = std::thread::spawn(move || api.try_upload_reader("in-flight.bin", body));
    c.wait_until(
        "the upload paused half-way",
        Duration::from_secs(20),
        || paused.load(Ordering::SeqCst),
    );

    // Rotate: new leaves (same CA, same roles) written over the files every process
    // reads; short-lived ones (20 days), so each process warns after its reload.
    let mut new_ders = Vec::new();
    for (role, leaf) in [
        ("namenode", &certs.namenode),
        ("datanode", &certs.datanode),
        ("gateway", &certs.gateway),
    ] {
        let fresh = ca.leaf_expiring_in(&format!("fresh-{role}"), role, LOCAL_NAMES, 20);
        new_ders.push(fresh.der());
        write_atomically(&leaf.key, &std::fs::read(&fresh.key).unwrap());
        write_atomically(&leaf.cert, &std::fs::read(&fresh.cert).unwrap());
    }
    assert_ne!(new_ders[0], old_ders[0]);

    // Every server presents the new certificate to new connections, without restarts.
    for (what, port, new_der) in std::iter::once(("namenode", nn_port, &new_ders[0]))
        .chain(dn_ports.iter().map(|&p| ("datanode", p, &new_ders[1])))
    {
        c.wait_until(
            &format!("{what} on port {port} presenting the rotated certificate"),
            Duration::from_secs(15),
            || rt.block_on(presented_certificate(port, &checker, &ca.cert)) == *new_der,
        );
    }

    // The paused upload resumes over its old connections and completes, verified.
    resume.send(()).expect("the reader waits");
    let stored = upload
        .join()
        .expect("the upload thread")
        .expect("the upload in flight during rotation finished");
    assert_eq!(stored["hash"].as_str(), Some(sha256_hex(&data).as_str()));
    assert_eq!(c.download(&sha256_hex(&data)), data);

    // And fresh transfers work on the new certificates end to end.
    let after = random_bytes(1 << 20, 4343);
    let s = c.upload(&after);
    assert_eq!(c.download(&s.hash), after);
    assert!(
        c.namenodes[0]
            .log_text()
            .contains("reloaded for new connections"),
        "the namenode did not log the reload"
    );
    // Every process warned, once reloaded, that its new certificate ends within 30
    // days (in 20 days, or 19 and some hours once a second has passed).
    for p in c.procs() {
        let warned = |days: u32| {
            p.log_text().contains(&format!(
                "the certificate this process presents expires in {days} days"
            ))
        };
        c.wait_until(
            &format!("{} warning of its certificate's end", p.name),
            Duration::from_secs(15),
            || warned(20) || warned(19),
        );
    }
}
