//! One gRPC channel per peer address, created lazily and reused.
//!
//! A tonic `Channel` multiplexes any number of concurrent streams over one HTTP/2
//! connection and reconnects by itself after a failure, so one per peer is all a
//! process needs: the gateway's pipelines and reads and a datanode's forwarding to its
//! successor share them. Every channel is built with [`crate::transport`]'s settings,
//! and through mutual TLS when the pool was given certificates (the peer's certificate
//! must then name the address dialed).
//!
//! The pool is bounded ([`MAX_CHANNELS`] by default): past it, the least recently used
//! channel is dropped from the map (calls already running on it finish; a later call
//! to that address dials again), so addresses from the network cannot grow it without
//! end (issue 24 finding 6; datanodes dial only addresses a block token names).

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

/// Channels a pool keeps by default: far more peers than a cluster has datanodes.
pub const MAX_CHANNELS: usize = 1024;

/// Lazily connected, reused channels keyed by address (`host:port` or a URI), at most
/// `capacity` of them. Cloning is cheap and shares the channels.
#[derive(Debug, Clone)]
pub struct ChannelPool {
    channels: Arc<Mutex<Channels>>,
    tls: Option<Arc<Tls>>,
}

/// The map and the use counter that orders its entries by last use.
#[derive(Debug)]
struct Channels {
    map: HashMap<String, (Channel, u64)>,
    uses: u64,
    capacity: usize,
}

impl ChannelPool {
    /// An empty pool of at most [`MAX_CHANNELS`]; its channels go through mTLS when
    /// `tls` is set.
    pub fn new(tls: Option<Arc<Tls>>) -> Self {
        Self::with_capacity(tls, MAX_CHANNELS)
    }

    /// An empty pool keeping at most `capacity` (at least 1) channels.
    pub fn with_capacity(tls: Option<Arc<Tls>>, capacity: usize) -> Self {
        Self {
            channels: Arc::new(Mutex::new(Channels {
                map: HashMap::new(),
                uses: 0,
                capacity: capacity.max(1),
            })),
            tls,
        }
    }

    /// The channel to `address`, dialed on first use (for [`crate::framed`] calls and
    /// generated clients alike). A bad address is not remembered; a new one past the
    /// capacity evicts the least recently used.
    pub fn channel(&self, address: &str) -> Result<Channel, BadAddress> {
        let mut guard = self
            .channels
            .lock()
            .expect("channel pool lock is never poisoned");
        let pool = &mut *guard;
        pool.uses += 1;
        if let Some((c, used)) = pool.map.get_mut(address) {
            *used = pool.uses;
            return Ok(c.clone());
        }
        let c = tls::channel(address, self.tls.as_ref()).map_err(|source| BadAddress {
            address: address.to_owned(),
            source,
        })?;
        if pool.map.len() >= pool.capacity {
            // A scan, on a new address only: cheap next to the dial that follows.
            let oldest = pool
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(a, _)| a.clone());
            if let Some(a) = oldest {
                pool.map.remove(&a);
            }
        }
        pool.map.insert(address.to_owned(), (c.clone(), pool.uses));
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
            .map
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
    async fn past_its_capacity_the_least_recently_used_channel_goes() {
        let pool = ChannelPool::with_capacity(None, 2);
        pool.channel("127.0.0.1:1").unwrap();
        pool.channel("127.0.0.1:2").unwrap();
        pool.channel("127.0.0.1:1").unwrap(); // Now :2 is the least recently used.
        pool.channel("127.0.0.1:3").unwrap();
        assert_eq!(pool.len(), 2);
        let kept: Vec<String> = {
            let c = pool.channels.lock().unwrap();
            let mut k: Vec<String> = c.map.keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(kept, ["127.0.0.1:1", "127.0.0.1:3"]);
        for port in 10..1000 {
            pool.channel(&format!("127.0.0.1:{port}")).unwrap();
        }
        assert_eq!(pool.len(), 2, "any number of addresses leaves it bounded");
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
