//! One gRPC channel per peer address, created lazily and reused.
//!
//! A tonic `Channel` multiplexes any number of concurrent streams over one HTTP/2
//! connection and reconnects by itself after a failure, so one per peer is all a
//! process needs: the gateway's pipelines and reads and a datanode's forwarding to its
//! successor share them. Every channel is built with [`crate::transport`]'s settings,
//! and through mutual TLS when the pool was given certificates (the peer's certificate
//! must then name the address dialed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;

use crate::pb::datanode_client::DatanodeClient;
use crate::tls::{self, Tls};
use crate::transport;

/// An address a channel cannot be built for (not a valid URI authority).
#[derive(Debug, thiserror::Error)]
#[error("bad address {address:?}: {source}")]
pub struct BadAddress {
    /// The address as given.
    pub address: String,
    /// Why the endpoint was refused.
    #[source]
    pub source: tonic::transport::Error,
}

/// Lazily connected, reused channels keyed by address (`host:port` or a URI).
/// Cloning is cheap and shares the channels.
#[derive(Debug, Clone)]
pub struct ChannelPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<Arc<Tls>>,
}

impl ChannelPool {
    /// An empty pool; its channels go through mTLS when `tls` is set.
    pub fn new(tls: Option<Arc<Tls>>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    /// The channel to `address`, dialed on first use (for [`crate::framed`] calls and
    /// generated clients alike). A bad address is not remembered.
    pub fn channel(&self, address: &str) -> Result<Channel, BadAddress> {
        let mut map = self
            .channels
            .lock()
            .expect("channel pool lock is never poisoned");
        if let Some(c) = map.get(address) {
            return Ok(c.clone());
        }
        let c = tls::channel(address, self.tls.as_ref()).map_err(|source| BadAddress {
            address: address.to_owned(),
            source,
        })?;
        map.insert(address.to_owned(), c.clone());
        Ok(c)
    }

    /// A datanode client over the channel to `address`, with kdfs's message size limits.
    pub fn datanode(&self, address: &str) -> Result<DatanodeClient<Channel>, BadAddress> {
        Ok(DatanodeClient::new(self.channel(address)?)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE))
    }

    /// Number of addresses a channel was opened to (for metrics and tests).
    pub fn len(&self) -> usize {
        self.channels
            .lock()
            .expect("channel pool lock is never poisoned")
            .len()
    }

    /// Whether no channel was opened yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Building a lazy channel spawns its buffer task, hence a runtime; nothing is dialed.

    #[tokio::test]
    async fn one_channel_per_address_shared_by_clones() {
        let pool = ChannelPool::new(None);
        assert!(pool.is_empty());
        pool.channel("127.0.0.1:9866").unwrap();
        pool.datanode("127.0.0.1:9866").unwrap();
        assert_eq!(pool.len(), 1);
        let clone = pool.clone();
        clone.channel("http://127.0.0.1:9867").unwrap();
        assert_eq!(pool.len(), 2, "a clone shares the pool's channels");
    }

    #[tokio::test]
    async fn a_bad_address_is_an_error_and_not_remembered() {
        let pool = ChannelPool::new(None);
        let err = pool.channel("no spaces allowed:1").unwrap_err();
        assert_eq!(err.address, "no spaces allowed:1");
        assert!(
            err.to_string()
                .starts_with("bad address \"no spaces allowed:1\": "),
            "{err}"
        );
        assert!(pool.is_empty());
    }
}
