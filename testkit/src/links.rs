//! The links between the namenodes of an HA test cluster, made cuttable: a TCP relay in
//! front of each namenode, which every process dials instead of the namenode itself
//! (the addresses in `--peers` and in the datanodes' and gateway's `--namenode`).
//!
//! A relay tells which process opened a connection by the socket's owner (the
//! connection's local port in `/proc/net/tcp`, then the namenodes' open sockets in
//! `/proc/<pid>/fd`), so a test can cut namenode *a* from namenode *b* in both
//! directions while the gateway and the datanodes still reach both: the partition that
//! tempts a deposed leader most, since writes still arrive at it.
//!
//! A cut link behaves like a network that drops packets: bytes sent over it are read and
//! thrown away (nothing is refused or reset, so the sender only sees silence), and a
//! connection that lost bytes is closed when the link heals, so both ends reconnect to
//! a clean stream. Connections of other processes pass through untouched.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes relayed per read.
const RELAY_BUF: usize = 64 << 10;

/// The relays in front of every namenode and which links between them are cut.
pub struct NamenodeLinks {
    shared: Arc<Shared>,
    /// The address each relay listens on, by namenode index.
    addrs: Vec<SocketAddr>,
}

struct Shared {
    /// The process id of each namenode while it runs, by index.
    pids: Mutex<Vec<Option<u32>>>,
    /// Cut links as `(from, to)`; a cut is always recorded in both directions.
    cuts: Mutex<BTreeSet<(usize, usize)>>,
    /// Every relayed connection still open.
    conns: Mutex<Vec<Relayed>>,
    stopping: AtomicBool,
}

/// One relayed connection: the caller's socket and the namenode's.
struct Relayed {
    client: TcpStream,
    upstream: TcpStream,
    /// Bytes were dropped on it while its link was cut.
    lost: Arc<AtomicBool>,
    /// One of its directions ended (and shut both sockets down).
    closed: Arc<AtomicBool>,
}

impl NamenodeLinks {
    /// A relay on a free loopback port in front of each of `targets` (the namenodes'
    /// own gRPC addresses, by index).
    pub fn start(targets: &[SocketAddr]) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pids: Mutex::new(vec![None; targets.len()]),
            cuts: Mutex::new(BTreeSet::new()),
            conns: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let mut addrs = Vec::new();
        for (to, &target) in targets.iter().enumerate() {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            addrs.push(addr);
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("nn-relay-{to}"))
                .spawn(move || accept_loop(&listener, addr, target, to, &shared))?;
        }
        Ok(Self { shared, addrs })
    }

    /// The address that reaches namenode `i` through its relay.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Records namenode `i`'s process id (`None` while it is down), by which its
    /// connections are told from the others'.
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        lock(&self.shared.pids)[i] = pid;
    }

    /// Cuts namenode `i` off from every other namenode, both ways.
    pub fn isolate(&self, i: usize) {
        let mut cuts = lock(&self.shared.cuts);
        for j in (0..self.addrs.len()).filter(|&j| j != i) {
            cuts.insert((i, j));
            cuts.insert((j, i));
        }
    }

    /// Whether any link is cut.
    pub fn any_cut(&self) -> bool {
        !lock(&self.shared.cuts).is_empty()
    }

    /// Restores every link and closes the connections that lost bytes meanwhile.
    pub fn heal(&self) {
        lock(&self.shared.cuts).clear();
        let mut conns = lock(&self.shared.conns);
        conns.retain(|c| {
            if c.lost.load(Ordering::Relaxed) {
                let _ = c.client.shutdown(Shutdown::Both);
                let _ = c.upstream.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }
}

impl Drop for NamenodeLinks {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        for addr in &self.addrs {
            // Wakes the accept loop, which then sees `stopping`.
            let _ = TcpStream::connect(addr);
        }
        for c in lock(&self.shared.conns).drain(..) {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.upstream.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(
    listener: &TcpListener,
    own: SocketAddr,
    target: SocketAddr,
    to: usize,
    shared: &Arc<Shared>,
) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        let from = client
            .peer_addr()
            .ok()
            .and_then(|peer| caller(peer.port(), own.port(), &lock(&shared.pids)));
        let Ok(upstream) = TcpStream::connect(target) else {
            // The namenode is down: the caller sees its connection closed.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (lost, closed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        let (Ok(c3), Ok(u3)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        lock(&shared.conns).push(Relayed {
            client,
            upstream,
            lost: lost.clone(),
            closed: closed.clone(),
        });
        // Bytes from the caller go `from → to`; the answers `to → from`.
        let forward = Direction { from, to: Some(to) };
        let back = Direction {
            from: Some(to),
            to: from,
        };
        for (src, dst, dir) in [(c2, u2, forward), (u3, c3, back)] {
            let (shared, lost, closed) = (shared.clone(), lost.clone(), closed.clone());
            let _ = std::thread::Builder::new()
                .name(format!("nn-relay-{to}-conn"))
                .spawn(move || {
                    relay(src, dst, dir, &shared, &lost);
                    closed.store(true, Ordering::Relaxed);
                });
        }
        lock(&shared.conns).retain(|c| !c.closed.load(Ordering::Relaxed));
    }
}

/// Which namenodes a stream of bytes goes between (`None`: another process, whose
/// links are never cut).
#[derive(Clone, Copy)]
struct Direction {
    from: Option<usize>,
    to: Option<usize>,
}

/// Copies `src` to `dst` until either ends, dropping what arrives while the link is cut.
fn relay(
    mut src: TcpStream,
    mut dst: TcpStream,
    dir: Direction,
    shared: &Shared,
    lost: &AtomicBool,
) {
    let mut buf = vec![0u8; RELAY_BUF];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let cut = match (dir.from, dir.to) {
            (Some(a), Some(b)) => lock(&shared.cuts).contains(&(a, b)),
            _ => false,
        };
        if cut {
            lost.store(true, Ordering::Relaxed);
            continue;
        }
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

/// The index of the namenode whose process owns the loopback socket of local port
/// `port` connected to `relay_port`, if one does.
fn caller(port: u16, relay_port: u16, pids: &[Option<u32>]) -> Option<usize> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .find_map(|table| socket_inode(&table, port, relay_port))?;
    let wanted = format!("socket:[{inode}]");
    pids.iter().position(|pid| {
        pid.is_some_and(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
                })
            })
        })
    })
}

/// The inode of the socket in a `/proc/net/tcp` table whose local port is `local` and
/// remote port `remote`.
fn socket_inode(table: &str, local: u16, remote: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port_of = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
        (port_of(f.get(1)?)? == local && port_of(f.get(2)?)? == remote)
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_socket_is_found_by_its_ports() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 20 4 30 10 -1
   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0 20 4 30 10 -1";
        assert_eq!(socket_inode(table, 0x9C40, 0x1F90), Some(12345));
        assert_eq!(socket_inode(table, 0x1F90, 0x9C40), Some(12346));
        assert_eq!(socket_inode(table, 1, 2), None);
    }

    /// An echo server standing in for a namenode.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        addr
    }

    #[test]
    fn this_process_is_told_apart_and_its_links_cut_and_healed() {
        let links = NamenodeLinks::start(&[echo(), echo()]).unwrap();
        let roundtrip = |s: &mut TcpStream| {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s.write_all(b"ping").unwrap();
            let mut got = [0u8; 4];
            s.read_exact(&mut got).is_ok() && &got == b"ping"
        };
        // Another process's connection (no pid recorded) passes even across a cut.
        let mut other = TcpStream::connect(links.addr(1)).unwrap();
        assert!(roundtrip(&mut other));
        // This process posing as namenode 0: cut from namenode 1, then healed.
        links.set_pid(0, Some(std::process::id()));
        let mut as_nn0 = TcpStream::connect(links.addr(1)).unwrap();
        assert!(roundtrip(&mut as_nn0));
        links.isolate(0);
        assert!(links.any_cut());
        assert!(!roundtrip(&mut as_nn0), "bytes crossed a cut link");
        let mut fresh = TcpStream::connect(links.addr(1)).unwrap();
        assert!(
            !roundtrip(&mut fresh),
            "a new connection crossed a cut link"
        );
        // Untouched by the cut: connections to namenode 0 from others are fine.
        let mut to_nn0 = TcpStream::connect(links.addr(0)).unwrap();
        assert!(roundtrip(&mut to_nn0));
        links.heal();
        let mut healed = TcpStream::connect(links.addr(1)).unwrap();
        assert!(roundtrip(&mut healed));
        // A stream that lost bytes is closed on healing, never resumed mid-way.
        let mut buf = [0u8; 1];
        as_nn0
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(matches!(as_nn0.read(&mut buf), Ok(0) | Err(_)));
    }
}
