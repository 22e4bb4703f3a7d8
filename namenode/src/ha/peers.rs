//! `--peers`: every namenode of the HA group by id, `0=HOST:PORT,1=HOST:PORT,…`, the
//! same list on each, this namenode's `--id` among them.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Most namenodes one group may have.
pub const MAX_PEERS: usize = 9;

/// The group: id → gRPC address (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<u64, String>);

impl Peers {
    /// Parses `--peers` and checks that `own` is one of them.
    pub fn parse(list: &str, own: u32) -> Result<Self> {
        let bad = |why: String| Error::InvalidArgument(format!("--peers: {why}"));
        let mut peers = BTreeMap::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, address) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("{item:?} is not ID=HOST:PORT")))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| bad(format!("{id:?} is not a namenode id")))?;
            let address = address.trim();
            let port = address.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
            if !matches!(port, Some((h, Ok(p))) if !h.is_empty() && p != 0) || address.contains('/')
            {
                return Err(bad(format!("{address:?} is not HOST:PORT")));
            }
            if peers.insert(id, address.to_owned()).is_some() {
                return Err(bad(format!("namenode {id} is listed twice")));
            }
        }
        if peers.len() > MAX_PEERS {
            return Err(bad(format!("at most {MAX_PEERS} namenodes")));
        }
        if !peers.contains_key(&u64::from(own)) {
            return Err(bad(format!("this namenode's --id {own} is not listed")));
        }
        Ok(Self(peers))
    }

    pub fn address(&self, id: u64) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }

    /// The member that may form the group (`bootstrap.rs`).
    pub fn lowest(&self) -> u64 {
        *self.0.keys().next().expect("at least this namenode")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_refuse_what_they_should() {
        let p = Peers::parse("0=a:1, 1=b:2,2=[::1]:3", 1).unwrap();
        assert_eq!(p.address(2), Some("[::1]:3"));
        assert_eq!(p.lowest(), 0);
        for bad in [
            "0=a:1,0=b:2",
            "x=a:1",
            "0=a",
            "0=:1",
            "0=a:0",
            "0=http://a:1",
            "1=a:1",
        ] {
            assert!(Peers::parse(bad, 0).is_err(), "{bad}");
        }
    }
}
