//! `WriteBlock` and `WriteBlocks` calls whose block bytes are sent without a copy.
//!
//! tonic's generated client encodes every message into its own buffer, so each MiB of
//! block data is copied once more by every sender (the gateway and each forwarding
//! datanode). And the receiver's tonic copies a message it has partly buffered a
//! second time: it reads a message's 5-byte gRPC header only once a frame has brought
//! it, then reserves room for the whole message *beside* what it holds, which with a
//! 1 MiB message in a 1 MiB frame is nearly all of it (`BytesMut::reserve` in
//! `decode_chunk`; docs/decisions/0005-framed-writes.md).
//!
//! Here a data message of at least [`SEPARATE_DATA`] bytes goes out as two body
//! pieces: its framing (gRPC header, protobuf key and length, 11 bytes at most), then
//! the block bytes themselves, the same `Bytes` the caller holds. HTTP/2 sends each
//! piece as its own DATA frame (h2 writes large payloads from the caller's buffer,
//! never coalescing pieces), so the receiver reads the header before any of the data
//! and reserves the message once, before its bytes arrive. What goes on the wire is
//! byte for byte what tonic would send; the server side is tonic's, unchanged.

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::Frame;
use prost::Message;
use tonic::codec::{Codec, Streaming};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::ServiceExt;

use crate::pb::write_block_request::Msg;
use crate::pb::{WriteBlockRequest, WriteBlockResponse, WriteBlocksResponse};
use crate::transport::MAX_MESSAGE_SIZE;

/// The rpcs sent this way, by their answer.
pub trait Answer: Message + Default + Send + 'static {
    /// The rpc's path.
    const PATH: &'static str;
}

impl Answer for WriteBlockResponse {
    const PATH: &'static str = "/kdfs.v1.Datanode/WriteBlock";
}

impl Answer for WriteBlocksResponse {
    const PATH: &'static str = "/kdfs.v1.Datanode/WriteBlocks";
}

/// Data messages at least this long are sent as framing + the caller's bytes; shorter
/// ones (a batch's small blocks) are encoded whole, in one piece.
pub const SEPARATE_DATA: usize = 16 << 10;

/// The protobuf field number of `WriteBlockRequest.data`.
const DATA_FIELD: u32 = 2;

/// The body pieces of one request message, as tonic would put it on the wire (no
/// compression): the gRPC header (flag and length) and the protobuf encoding.
fn pieces(request: WriteBlockRequest) -> impl Iterator<Item = Bytes> {
    let (first, second) = match request.msg {
        Some(Msg::Data(data)) if data.len() >= SEPARATE_DATA => {
            let len = prost::encoding::bytes::encoded_len(DATA_FIELD, &data);
            let mut head = BytesMut::with_capacity(16);
            head.put_u8(0);
            head.put_u32(len as u32);
            prost::encoding::encode_key(
                DATA_FIELD,
                prost::encoding::WireType::LengthDelimited,
                &mut head,
            );
            prost::encoding::encode_varint(data.len() as u64, &mut head);
            (head.freeze(), Some(data))
        }
        msg => {
            let request = WriteBlockRequest { msg };
            let len = request.encoded_len();
            let mut buf = BytesMut::with_capacity(5 + len);
            buf.put_u8(0);
            buf.put_u32(len as u32);
            request
                .encode(&mut buf)
                .expect("a BytesMut with room for the message");
            (buf.freeze(), None)
        }
    };
    std::iter::once(first).chain(second)
}

/// The client-streaming call answered by `R` (`WriteBlock` or `WriteBlocks`) on
/// `channel`, sending `requests`; its one answer. Errors as tonic's generated client gives them:
/// a transport failure, a status in the headers (trailers-only) or in the trailers.
pub async fn client_streaming<R, S>(channel: Channel, requests: S) -> Result<R, Status>
where
    R: Answer,
    S: Stream<Item = WriteBlockRequest> + Send + 'static,
{
    let path = R::PATH;
    let body = requests
        .flat_map(|r| futures::stream::iter(pieces(r)))
        .map(|piece| Ok::<_, Status>(Frame::data(piece)));
    let request = http::Request::builder()
        .method(http::Method::POST)
        .version(http::Version::HTTP_2)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(
            body,
        )))
        .map_err(|e| Status::internal(format!("{path}: {e}")))?;
    let response = channel
        .oneshot(request)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    // A status in the headers is the whole answer (trailers-only).
    if let Some(status) = Status::from_header_map(response.headers()) {
        if status.code() != Code::Ok {
            return Err(status);
        }
        return Err(Status::internal("Missing response message."));
    }
    let status = response.status();
    let decoder = tonic_prost::ProstCodec::<WriteBlockRequest, R>::default().decoder();
    let mut answer = Streaming::new_response(
        decoder,
        response.into_body(),
        status,
        None,
        Some(MAX_MESSAGE_SIZE),
    );
    let message = answer
        .message()
        .await?
        .ok_or_else(|| Status::internal("Missing response message."))?;
    // The trailers carry the call's status: an error there fails the call.
    answer.trailers().await?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{WriteHeader, WriteTrailer};

    /// What tonic's encoder would send for `request`.
    fn tonic_wire(request: &WriteBlockRequest) -> Vec<u8> {
        let body = request.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn pieces_are_what_tonic_sends_and_large_data_is_not_copied() {
        let data = Bytes::from((0..(1usize << 20)).map(|i| i as u8).collect::<Vec<_>>());
        let requests = [
            WriteBlockRequest {
                msg: Some(Msg::Header(WriteHeader {
                    upload_id: "u".into(),
                    max_length: 7,
                    ..Default::default()
                })),
            },
            WriteBlockRequest {
                msg: Some(Msg::Data(data.clone())),
            },
            WriteBlockRequest {
                msg: Some(Msg::Data(Bytes::from_static(b"small"))),
            },
            WriteBlockRequest {
                msg: Some(Msg::Data(data.slice(..SEPARATE_DATA))),
            },
            WriteBlockRequest {
                msg: Some(Msg::Data(Bytes::new())),
            },
            WriteBlockRequest {
                msg: Some(Msg::Trailer(WriteTrailer::default())),
            },
            WriteBlockRequest { msg: None },
        ];
        for request in requests {
            let pieces: Vec<Bytes> = pieces(request.clone()).collect();
            assert_eq!(pieces.concat(), tonic_wire(&request), "{request:?}");
            match &request.msg {
                Some(Msg::Data(d)) if d.len() >= SEPARATE_DATA => {
                    assert_eq!(pieces.len(), 2);
                    assert!(pieces[0].len() <= 11);
                    // The caller's bytes themselves, not a copy.
                    assert_eq!(pieces[1].as_ptr(), d.as_ptr());
                }
                _ => assert_eq!(pieces.len(), 1),
            }
        }
    }
}
