//! The namenodes of `kdfs local`: one (`--namenodes 1`, the default: `namenode/`, no
//! `--peers`, exactly as before) or an HA group (`--namenodes 3`: `namenode-0/` …, each
//! with `--id i --peers 0=127.0.0.1:P0,…`).
//!
//! An HA group's gRPC ports are chosen on its first start and kept in
//! `<data-dir>/namenode-peers` (the `--peers` value), so every later start on the same
//! directory gives each namenode the address its peers know it by. A data directory
//! made for one layout is refused by the other: a single namenode's records would not
//! be in an HA group's stores (nor the reverse), and the datanodes would refuse a
//! namenode of another cluster.

use std::net::TcpListener as StdListener;
use std::path::Path;

use anyhow::{Context, bail, ensure};

use super::bind;

/// The file that keeps an HA group's `--peers`.
const PEERS_FILE: &str = "namenode-peers";

/// One namenode of the cluster, its listeners bound.
pub(crate) struct Namenode {
    /// Its component name (`namenode` or `namenode-<i>`), also its data dir's and log's.
    pub(crate) name: String,
    pub(crate) grpc: StdListener,
    pub(crate) http: StdListener,
    /// `--id` and `--peers`, with HA.
    pub(crate) ha_flags: Vec<String>,
}

/// The component names of `count` namenodes.
pub(crate) fn names(count: u16) -> Vec<String> {
    match count {
        1 => vec!["namenode".to_owned()],
        n => (0..n).map(|i| format!("namenode-{i}")).collect(),
    }
}

/// Checks `--namenodes`: 1, or an odd number of at least 3 (an even group survives no
/// more losses than one namenode fewer).
pub(crate) fn check_count(count: u16) -> anyhow::Result<()> {
    ensure!(
        count == 1 || (count >= 3 && count % 2 == 1),
        "--namenodes {count}: use 1, or 3 (or 5) for high availability; an even number \
         survives no more namenode losses than one fewer"
    );
    Ok(())
}

/// Binds every namenode's listeners (an HA group's gRPC ports as kept in `root`, or new
/// ones recorded there) and returns them with the URL list datanodes and the gateway
/// get as `--namenode`.
pub(crate) fn bind_all(root: &Path, count: u16) -> anyhow::Result<(Vec<Namenode>, String)> {
    check_layout(root, count)?;
    let names = names(count);
    if count == 1 {
        let grpc = bind("127.0.0.1:0", "namenode")?;
        let url = format!("http://{}", grpc.local_addr()?);
        let http = bind("127.0.0.1:0", "namenode metrics")?;
        let nn = Namenode {
            name: names[0].clone(),
            grpc,
            http,
            ha_flags: Vec::new(),
        };
        return Ok((vec![nn], url));
    }
    let peers_path = root.join(PEERS_FILE);
    let kept = match std::fs::read_to_string(&peers_path) {
        Ok(text) => Some(parse_peers(text.trim(), count).with_context(|| {
            format!(
                "{} does not hold the --peers of {count} namenodes (remove it to pick new ports)",
                peers_path.display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", peers_path.display())),
    };
    let mut grpcs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let addr = kept.as_ref().map_or("127.0.0.1:0", |k| k[i].as_str());
        let what = format!("{name} (its port is kept in {})", peers_path.display());
        grpcs.push(bind(addr, &what)?);
    }
    let addrs = grpcs
        .iter()
        .map(|l| Ok(l.local_addr()?.to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}={a}"))
        .collect::<Vec<_>>()
        .join(",");
    if kept.is_none() {
        std::fs::create_dir_all(root)?;
        std::fs::write(&peers_path, format!("{peers}\n"))
            .with_context(|| format!("writing {}", peers_path.display()))?;
    }
    let mut out = Vec::new();
    for (i, (name, grpc)) in names.into_iter().zip(grpcs).enumerate() {
        out.push(Namenode {
            http: bind("127.0.0.1:0", &format!("{name} metrics"))?,
            name,
            grpc,
            ha_flags: vec![format!("--id={i}"), format!("--peers={peers}")],
        });
    }
    let urls = addrs
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok((out, urls))
}

/// Refuses a data dir made for the other layout (see the module docs).
fn check_layout(root: &Path, count: u16) -> anyhow::Result<()> {
    let has = |name: &str| root.join(name).exists();
    let non_empty =
        |name: &str| std::fs::read_dir(root.join(name)).is_ok_and(|mut d| d.next().is_some());
    if count == 1 && (has(PEERS_FILE) || non_empty("namenode-0")) {
        bail!(
            "{} holds an HA group of namenodes (namenode-0/ …, {PEERS_FILE}): start it with \
             the --namenodes it was made with",
            root.display()
        );
    }
    if count > 1 && non_empty("namenode") {
        bail!(
            "{} holds a single namenode's data (namenode/): an HA group would start with \
             empty records and the datanodes would refuse it; start it with --namenodes 1, \
             or use another --data-dir",
            root.display()
        );
    }
    if count > 1 && non_empty(&format!("namenode-{count}")) {
        bail!(
            "{} holds a larger HA group than --namenodes {count}",
            root.display()
        );
    }
    Ok(())
}

/// The addresses of a kept `--peers` value of `count` namenodes, by id.
fn parse_peers(text: &str, count: u16) -> anyhow::Result<Vec<String>> {
    let mut addrs = Vec::new();
    for (i, entry) in text.split(',').enumerate() {
        let (id, addr) = entry
            .split_once('=')
            .with_context(|| format!("{entry:?} is not ID=HOST:PORT"))?;
        ensure!(id == i.to_string(), "entry {i} has the id {id:?}");
        let addr: std::net::SocketAddr = addr
            .parse()
            .with_context(|| format!("{addr:?} is not an IP:PORT"))?;
        ensure!(addr.ip().is_loopback(), "{addr} is not a loopback address");
        addrs.push(addr.to_string());
    }
    ensure!(
        addrs.len() == usize::from(count),
        "it names {} namenodes",
        addrs.len()
    );
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_names() {
        assert!(check_count(1).is_ok() && check_count(3).is_ok() && check_count(5).is_ok());
        for bad in [0, 2, 4] {
            assert!(check_count(bad).is_err(), "{bad}");
        }
        assert_eq!(names(1), ["namenode"]);
        assert_eq!(names(3), ["namenode-0", "namenode-1", "namenode-2"]);
    }

    #[test]
    fn kept_peers_are_checked() {
        let ok = "0=127.0.0.1:1000,1=127.0.0.1:1001,2=127.0.0.1:1002";
        assert_eq!(parse_peers(ok, 3).unwrap()[2], "127.0.0.1:1002");
        assert!(parse_peers(ok, 5).is_err());
        assert!(parse_peers("1=127.0.0.1:1,0=127.0.0.1:2,2=127.0.0.1:3", 3).is_err());
        assert!(parse_peers("0=10.0.0.1:1,1=127.0.0.1:2,2=127.0.0.1:3", 3).is_err());
        assert!(parse_peers("garbage", 3).is_err());
    }

    #[test]
    fn an_ha_group_keeps_its_ports_and_layouts_do_not_mix() {
        let root = tempfile::tempdir().unwrap();
        let (first, urls) = bind_all(root.path(), 3).unwrap();
        assert_eq!(urls.split(',').count(), 3);
        assert_eq!(first[1].ha_flags[0], "--id=1");
        let peers = first[0].ha_flags[1].clone();
        assert!(
            first.iter().all(|n| n.ha_flags[1] == peers),
            "one list everywhere"
        );
        drop(first);
        let (again, urls_again) = bind_all(root.path(), 3).unwrap();
        assert_eq!(again[2].ha_flags[1], peers, "the same ports on a restart");
        assert_eq!(urls_again, urls);
        drop(again);
        assert!(
            bind_all(root.path(), 1).is_err(),
            "an HA dir started single"
        );

        let single = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(single.path().join("namenode")).unwrap();
        std::fs::write(single.path().join("namenode/meta.redb"), b"x").unwrap();
        assert!(
            bind_all(single.path(), 3).is_err(),
            "a single dir started HA"
        );
        let (one, _) = bind_all(single.path(), 1).unwrap();
        assert!(one[0].ha_flags.is_empty());
    }
}
