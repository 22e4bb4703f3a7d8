//! A datanode gRPC service that stores nothing: it counts what it is sent and serves
//! one fixed piece to every read, so a ceiling or floor measures the transport alone.

use bytes::Bytes;
use kdfs_proto::{pb, transport};

/// A [`Sink`] datanode service on 127.0.0.1 with the store's transport settings,
/// serving `piece` to reads.
pub(crate) struct SinkServer {
    addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

pub(crate) type DatanodeClient = pb::datanode_client::DatanodeClient<tonic::transport::Channel>;

impl SinkServer {
    pub(crate) async fn start(piece: Bytes) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let server = pb::datanode_server::DatanodeServer::new(Sink { piece })
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE);
        let serve = transport::server()
            .add_service(server)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        Ok(Self {
            addr,
            stop,
            task: tokio::spawn(serve),
        })
    }

    pub(crate) async fn client(&self) -> anyhow::Result<DatanodeClient> {
        let channel = transport::endpoint(&self.addr.to_string())?
            .connect()
            .await?;
        Ok(DatanodeClient::new(channel).max_encoding_message_size(transport::MAX_MESSAGE_SIZE))
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Counts what it is sent; serves its `piece` to every read.
struct Sink {
    piece: Bytes,
}

#[tonic::async_trait]
impl pb::datanode_server::Datanode for Sink {
    async fn write_block(
        &self,
        req: tonic::Request<tonic::Streaming<pb::WriteBlockRequest>>,
    ) -> Result<tonic::Response<pb::WriteBlockResponse>, tonic::Status> {
        let mut s = req.into_inner();
        let mut n = 0u64;
        while let Some(m) = s.message().await? {
            if let Some(pb::write_block_request::Msg::Data(d)) = m.msg {
                n += d.len() as u64;
            }
        }
        Ok(tonic::Response::new(pb::WriteBlockResponse {
            length: n,
            ..Default::default()
        }))
    }

    async fn write_blocks(
        &self,
        _: tonic::Request<tonic::Streaming<pb::WriteBlockRequest>>,
    ) -> Result<tonic::Response<pb::WriteBlocksResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("WriteBlocks"))
    }

    type ReadBlockStream =
        futures::stream::Iter<std::option::IntoIter<Result<pb::ReadBlockResponse, tonic::Status>>>;

    /// One message of at most `length` bytes of the piece: the floor's read stream.
    async fn read_block(
        &self,
        req: tonic::Request<pb::ReadBlockRequest>,
    ) -> Result<tonic::Response<Self::ReadBlockStream>, tonic::Status> {
        let len = (req.into_inner().length as usize).min(self.piece.len());
        let data = self.piece.slice(..len);
        Ok(tonic::Response::new(futures::stream::iter(Some(Ok(
            pb::ReadBlockResponse {
                offset: 0,
                crc32c: 0,
                data,
            },
        )))))
    }

    /// Answers at once: the floor's unary call.
    async fn transfer_block(
        &self,
        _: tonic::Request<pb::ReplicateBlock>,
    ) -> Result<tonic::Response<pb::TransferBlockResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::TransferBlockResponse::default()))
    }
}
