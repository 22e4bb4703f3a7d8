//! The one place an HA namenode decides whether it serves: every rpc of `Namenode`
//! (but NamenodeRole) and `ObjectNamespace` goes through the [`Gate`], which hands it
//! to the current leadership instance's services while this namenode leads with a
//! majority behind it, and refuses it otherwise with `kdfs_proto::leader::not_leader`
//! naming the leader it knows. NamenodeRole is answered here, from Raft's state.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use kdfs_proto::pb;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::service::Routes;
use tower::Service;

use super::status::RaftStatus;

/// The path of the one rpc every member answers itself.
const ROLE_PATH: &str = "/kdfs.v1.Namenode/NamenodeRole";

/// Routes rpcs to the serving instance, or refuses them.
#[derive(Clone)]
pub struct Gate {
    status: Arc<RaftStatus>,
    routes: Arc<RwLock<Option<Routes>>>,
}

impl Gate {
    pub fn new(status: Arc<RaftStatus>) -> Self {
        Self {
            status,
            routes: Arc::default(),
        }
    }

    /// A leadership instance serves through `routes` from now on.
    pub fn open(&self, routes: Routes) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Some(routes);
    }

    /// No instance serves any more.
    pub fn close(&self) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn handle(self, request: http::Request<Body>) -> http::Response<Body> {
        if request.uri().path() == ROLE_PATH {
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::default());
            return grpc.unary(RoleService(self.status.clone()), request).await;
        }
        let routes = if self.status.serving() {
            self.routes
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        } else {
            None
        };
        match routes {
            Some(mut routes) => match routes.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            None => {
                metrics::counter!("kdfs_namenode_not_leader_refusals_total").increment(1);
                kdfs_proto::leader::not_leader(self.status.leader_hint().as_deref()).into_http()
            }
        }
    }
}

/// NamenodeRole, answered from Raft's state.
struct RoleService(Arc<RaftStatus>);

impl UnaryService<pb::NamenodeRoleRequest> for RoleService {
    type Response = pb::NamenodeRoleResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<pb::NamenodeRoleRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(self.0.role())))
    }
}

/// The gate under one service's name (tonic routes by it).
macro_rules! gated {
    ($name:ident, $service:literal) => {
        #[derive(Clone)]
        pub struct $name(pub Gate);

        impl NamedService for $name {
            const NAME: &'static str = $service;
        }

        impl Service<http::Request<Body>> for $name {
            type Response = http::Response<Body>;
            type Error = Infallible;
            type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<Body>) -> Self::Future {
                let gate = self.0.clone();
                Box::pin(async move { Ok(gate.handle(request).await) })
            }
        }
    };
}

gated!(NamenodeGate, "kdfs.v1.Namenode");
gated!(ObjectsGate, "kdfs.v1.ObjectNamespace");
