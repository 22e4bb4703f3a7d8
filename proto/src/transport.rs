//! Transport settings shared by every gRPC client and server.
//!
//! Large messages, large frames, wide windows and `TCP_NODELAY` let one stream run near
//! the loopback ceiling; tonic's defaults, or Nagle's algorithm, cost most of it. The
//! sizes and the figures that chose them: docs/decisions/0007-transport-windows.md.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Bytes of block data per `WriteBlockRequest.data` / `ReadBlockResponse.data` message.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Largest message any kdfs server or client decodes: a chunk plus generous framing,
/// and a full-report chunk of `MAX_REPORT_CHUNK` entries.
pub const MAX_MESSAGE_SIZE: usize = 8 << 20;
/// Block entries per `FullBlockReportChunk` (~40 bytes each on the wire: ~2 MiB).
pub const MAX_REPORT_CHUNK: usize = 50_000;
/// `HeartbeatRequest.failed_copies` entries per heartbeat (a datanode keeps at most
/// this many; older ones are dropped and left to the namenode's copy timeout).
pub const MAX_FAILED_COPIES: usize = 1_000;
/// HTTP/2 flow-control windows: per stream and per connection. What a client receives
/// in bulk is `ReadBlock` pieces: a gateway holds up to a stream window of each block
/// it reads (the current one and one ahead), so the window bounds its memory
/// (docs/decisions/0007-transport-windows.md).
pub const STREAM_WINDOW: u32 = 4 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// A server's per-stream receive window. Smaller than a client's: a datanode holds up
/// to this much of every write stream it receives (two per upload while blocks
/// overlap) before its forward and disk queues take it, and that is most of its peak
/// memory: two 1 MiB messages in flight per stream keep the speed with less memory
/// (docs/decisions/0007-transport-windows.md).
pub const SERVER_STREAM_WINDOW: u32 = 2 << 20;
/// Largest HTTP/2 frame a server or a client accepts.
pub const MAX_FRAME_SIZE: u32 = 1 << 20;
/// Batches of small files (`WriteBlocks`, `CommitFiles`): a batched block is at most
/// `MAX_BATCHED_BLOCK` bytes (one data message), a batch holds at most
/// `MAX_BATCH_FILES` files and `MAX_BATCH_BYTES` bytes of blocks. A datanode holds at
/// most one batched block of each stream in memory.
pub const MAX_BATCHED_BLOCK: u64 = CHUNK_SIZE as u64;
pub const MAX_BATCH_FILES: usize = 256;
pub const MAX_BATCH_BYTES: u64 = 4 << 20;
/// Dialing a peer that does not answer is given up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 keep-alive pings detect a peer that vanished mid-stream (a killed pod's
/// connection can otherwise hang until TCP gives up, minutes later).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// An endpoint for `address` (`host:port` or a full `http://` URI) with kdfs's settings.
pub fn endpoint(address: &str) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // What a client receives (ReadBlock's 1 MiB pieces) comes in frames of at most
        // this: with HTTP/2's default of 16 KiB a 1 MiB message is 64 frames.
        .max_frame_size(MAX_FRAME_SIZE))
}

/// A lazily connecting channel: dialing happens on first use and again after a failure,
/// so a peer that is down at start is not an error until it is needed.
pub fn lazy_channel(address: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(address)?.connect_lazy())
}

/// A server builder with kdfs's settings.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(SERVER_STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}
