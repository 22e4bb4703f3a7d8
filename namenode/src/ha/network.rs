//! The Raft rpcs between namenodes, both ends: [`Network`] dials the other members'
//! `RaftPeer` service (the same gRPC port, through the mutual-TLS channel code, with
//! this namenode's own certificate), and [`PeerService`] serves it. The payloads are
//! openraft's messages in bincode; a member's Raft error travels inside the reply, a
//! transport failure as the gRPC status.

use std::sync::Arc;

use kdfs_proto::pb::{self, raft_peer_client::RaftPeerClient, raft_peer_server};
use kdfs_proto::tls::{self, Tls};
use kdfs_proto::transport;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::TypeConfig;
use super::status::Heard;

type NodeId = u64;

/// Dials the other members.
pub struct Network {
    pub tls: Option<Arc<Tls>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            client: tls::channel(&node.addr, self.tls.as_ref())
                .map(|c| {
                    RaftPeerClient::new(c)
                        .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
                        .max_encoding_message_size(transport::MAX_MESSAGE_SIZE)
                })
                .map_err(|e| e.to_string()),
        }
    }
}

/// One other member.
pub struct Peer {
    target: NodeId,
    client: Result<RaftPeerClient<Channel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

impl Peer {
    async fn call<Q, A, E>(
        &mut self,
        rpc: &'static str,
        request: &Q,
        option: &RPCOption,
    ) -> Result<A, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Q: Serialize,
        A: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = self
            .client
            .as_mut()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&Failed(e.clone()))))?;
        let payload = bincode::serialize(request)
            .map_err(|e| RPCError::Network(NetworkError::new(&Failed(e.to_string()))))?;
        let message = pb::RaftMessage {
            payload: payload.into(),
        };
        let call = async {
            match rpc {
                "append" => client.append_entries(message).await,
                "vote" => client.vote(message).await,
                _ => client.install_snapshot(message).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&Failed(format!(
                    "{rpc} to namenode {}: {}",
                    self.target,
                    status.message()
                )))));
            }
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&Failed(format!(
                    "{rpc} to namenode {}: no answer within {:?}",
                    self.target,
                    option.hard_ttl()
                )))));
            }
        };
        let answer: Result<A, RaftError<NodeId, E>> = bincode::deserialize(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&Failed(e.to_string()))))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// The `RaftPeer` service: hands each rpc to the local Raft node.
#[derive(Clone)]
pub struct PeerService {
    pub raft: Raft<TypeConfig>,
    /// The leader's commit index as its appends say, for `/readyz`.
    pub heard: Arc<Heard>,
}

fn decode<T: DeserializeOwned>(m: &pb::RaftMessage) -> Result<T, Status> {
    bincode::deserialize(&m.payload).map_err(|e| Status::invalid_argument(format!("payload: {e}")))
}

fn encode<T: Serialize>(answer: &T) -> Result<Response<pb::RaftMessage>, Status> {
    let payload = bincode::serialize(answer).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::RaftMessage {
        payload: payload.into(),
    }))
}

impl PeerService {
    pub fn into_server(self) -> raft_peer_server::RaftPeerServer<Self> {
        raft_peer_server::RaftPeerServer::new(self)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE)
    }
}

#[tonic::async_trait]
impl raft_peer_server::RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.get_ref())?;
        let commit = rpc.leader_commit.map_or(0, |l| l.index);
        let answer = self.raft.append_entries(rpc).await;
        if answer.is_ok() {
            self.heard.leader_commit(commit);
        }
        encode(&answer)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request.get_ref())?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref())?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}
