//! A namenode that is not the leader, for gateways given an HA `--namenode` list before
//! real HA namenodes exist in these tests: a real gRPC server on 127.0.0.1 that refuses
//! every rpc of `Namenode` and `ObjectNamespace` with `kdfs_proto::leader::not_leader`
//! (naming the leader it was given, or none) and answers `NamenodeRole` as a follower.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use kdfs_proto::pb::{NamenodeRoleRequest, NamenodeRoleResponse, RaftRole};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::server::{NamedService, UnaryService};

/// A refusing namenode and what it was asked.
pub struct Follower {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Rpcs refused as "not the leader".
    pub refused: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Follower {
    /// Serves as namenode `id`, naming `leader` (`host:port`) in its refusals.
    pub async fn start(id: u32, leader: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let refused = Arc::new(AtomicUsize::new(0));
        let service = Refuser {
            id,
            leader: leader.map(str::to_owned),
            refused: refused.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = kdfs_proto::transport::server()
                .add_service(service.clone())
                .add_service(Objects(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Self { url, refused, task }
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Refuser {
    id: u32,
    leader: Option<String>,
    refused: Arc<AtomicUsize>,
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for Refuser {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Answer {
        if req.uri().path() == "/kdfs.v1.Namenode/NamenodeRole" {
            let role = Role(NamenodeRoleResponse {
                id: self.id,
                role: RaftRole::Follower as i32,
                term: 1,
                leader_address: self.leader.clone().unwrap_or_default(),
                ..Default::default()
            });
            return Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(role, req).await)
            });
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let refusal = kdfs_proto::leader::not_leader(self.leader.as_deref());
        Box::pin(std::future::ready(Ok(refusal.into_http())))
    }
}

impl NamedService for Refuser {
    const NAME: &'static str = "kdfs.v1.Namenode";
}

/// The same refusals under the `ObjectNamespace` service's name.
#[derive(Clone)]
struct Objects(Refuser);

impl tower::Service<http::Request<Body>> for Objects {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Answer {
        self.0.call(req)
    }
}

impl NamedService for Objects {
    const NAME: &'static str = "kdfs.v1.ObjectNamespace";
}

struct Role(NamenodeRoleResponse);

impl UnaryService<NamenodeRoleRequest> for Role {
    type Response = NamenodeRoleResponse;
    type Future = std::future::Ready<Result<tonic::Response<NamenodeRoleResponse>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<NamenodeRoleRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(self.0.clone())))
    }
}
