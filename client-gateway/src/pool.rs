//! One gRPC channel per datanode address, created lazily and reused.
//!
//! A tonic `Channel` multiplexes any number of concurrent streams over one HTTP/2
//! connection and reconnects by itself after a failure, so one per peer is all a
//! gateway needs: pipelines and reads of every upload and download share them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kdfs_proto::pb::datanode_client::DatanodeClient;
use kdfs_proto::tls::{self, Tls};
use kdfs_proto::transport;
use tonic::transport::Channel;

use crate::error::{Error, Result};

/// Lazily connected, reused datanode channels keyed by `host:port`; through mTLS when
/// the client has certificates (a datanode's certificate must name its address).
pub struct Pool {
    channels: Mutex<HashMap<String, Channel>>,
    tls: Option<Arc<Tls>>,
}

impl Pool {
    pub fn new(tls: Option<Arc<Tls>>) -> Self {
        Self {
            channels: Mutex::default(),
            tls,
        }
    }

    /// A client for the datanode at `address` (already checked by `wire::address`).
    pub fn datanode(&self, address: &str) -> Result<DatanodeClient<Channel>> {
        Ok(DatanodeClient::new(self.channel(address)?)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE))
    }

    /// The channel to the datanode at `address`, for [`kdfs_proto::framed`] calls.
    pub fn channel(&self, address: &str) -> Result<Channel> {
        let mut map = self.channels.lock().expect("pool lock is never poisoned");
        Ok(match map.get(address) {
            Some(c) => c.clone(),
            None => {
                let c = tls::channel(address, self.tls.as_ref()).map_err(|e| {
                    Error::InvalidInput(format!("datanode address {address:?}: {e}"))
                })?;
                map.insert(address.to_owned(), c.clone());
                c
            }
        })
    }

    /// Number of datanodes a channel was opened to (for metrics and tests).
    pub fn len(&self) -> usize {
        self.channels
            .lock()
            .expect("pool lock is never poisoned")
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
