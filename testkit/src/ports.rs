//! Free TCP ports for servers a test starts on fixed ports (child processes, which
//! cannot be handed a bound listener).

use std::net::TcpListener;

use crate::data::random_bytes;

/// `n` distinct ports, free on every local address a moment ago, all below the
/// kernel's ephemeral range: no outgoing connection is ever given one of them, so a
/// process restarted on its old port finds it free. They are held while picking, so
/// one cluster never gets the same port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let candidates = random_bytes(4 * 2000, seed);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for c in candidates.chunks(4) {
        if ports.len() == n {
            break;
        }
        let r = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let port = low + (r % u32::from(high - low)) as u16;
        if ports.contains(&port) {
            continue;
        }
        // Free on 0.0.0.0 too, as the namenode of a partition test listens there.
        if let Ok(l) = TcpListener::bind(("0.0.0.0", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), n, "found only {} free ports", ports.len());
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports = free_ports(8);
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8, "{ports:?}");
        for p in ports {
            assert!(p >= 10_000, "{p}");
            TcpListener::bind(("127.0.0.1", p)).expect("a free port binds");
        }
    }
}
