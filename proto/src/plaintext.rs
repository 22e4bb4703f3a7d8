//! Secure by default: whether a gRPC server may serve without TLS (docs/security.md,
//! "Plaintext").
//!
//! Without mTLS nobody is authenticated and no role is checked, so anyone who reaches
//! the port may call every rpc (delete files, register fake datanodes). A server whose
//! gRPC listener is not on a loopback address therefore refuses to start without TLS
//! unless `--allow-plaintext` ([`PlaintextArgs`]) accepts the risk, and then warns at
//! every start. On loopback (tests, `kdfs local --no-tls`) plaintext is allowed with a
//! warning: only local processes can reach it.

use std::net::SocketAddr;

/// The `--allow-plaintext` flag of the gRPC servers (`KDFS_ALLOW_PLAINTEXT`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlaintextArgs {
    /// Serve gRPC without TLS on an address that is not loopback (e.g. 0.0.0.0).
    /// Anyone who can reach the port can then call every rpc: use it only on a network
    /// you trust completely. Without it the server refuses to start that way.
    #[arg(long, env = "KDFS_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
}

/// The refusal to serve plaintext on a reachable address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to serve gRPC in plaintext on {listen}, which is not a loopback address: \
     anyone who can reach it could call every rpc (delete files, register fake \
     datanodes). Turn on mTLS with --tls-cert, --tls-key and --tls-ca (role certificates \
     from `kdfs certs`), listen on 127.0.0.1, or accept the risk with --allow-plaintext \
     (KDFS_ALLOW_PLAINTEXT=true)"
)]
pub struct PlaintextRefused {
    pub listen: SocketAddr,
}

impl PlaintextArgs {
    /// Decides whether a gRPC server bound to `listen` may serve, `mtls` saying
    /// whether TLS is configured; warns (one line) whenever it serves in plaintext.
    pub fn check(&self, listen: SocketAddr, mtls: bool) -> Result<(), PlaintextRefused> {
        if mtls {
            return Ok(());
        }
        if is_loopback(listen) {
            tracing::warn!(
                listen = %listen,
                "gRPC is plaintext on loopback: callers are not authenticated and no role \
                 is checked, every rpc is allowed to any local process"
            );
            return Ok(());
        }
        if !self.allow_plaintext {
            return Err(PlaintextRefused { listen });
        }
        tracing::warn!(
            listen = %listen,
            "--allow-plaintext: gRPC is plaintext on a non-loopback address: callers are \
             not authenticated and no role is checked, every rpc is allowed to anyone who \
             can reach this port (turn on mTLS with --tls-cert, --tls-key and --tls-ca)"
        );
        Ok(())
    }
}

/// Whether only this machine can reach `addr` (127.0.0.0/8, ::1, or ::ffff:127.x);
/// the unspecified addresses 0.0.0.0 and :: listen on every interface, so they are not.
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_refused_off_loopback_unless_allowed() {
        let check = |listen: &str, mtls: bool, allow: bool| {
            let args = PlaintextArgs {
                allow_plaintext: allow,
            };
            args.check(listen.parse().unwrap(), mtls).is_ok()
        };
        for (listen, mtls, allow, ok) in [
            ("127.0.0.1:8020", false, false, true),
            ("127.0.0.42:8020", false, false, true),
            ("[::1]:8020", false, false, true),
            ("[::ffff:127.0.0.1]:8020", false, false, true),
            ("0.0.0.0:8020", false, false, false),
            ("[::]:8020", false, false, false),
            ("10.1.2.3:8020", false, false, false),
            ("[::ffff:10.1.2.3]:8020", false, false, false),
            ("0.0.0.0:8020", false, true, true),
            ("0.0.0.0:8020", true, false, true),
            ("10.1.2.3:8020", true, false, true),
        ] {
            assert_eq!(
                check(listen, mtls, allow),
                ok,
                "{listen} mtls={mtls} allow={allow}"
            );
        }
    }

    #[test]
    fn the_refusal_names_the_flags() {
        let e = PlaintextRefused {
            listen: "0.0.0.0:8020".parse().unwrap(),
        }
        .to_string();
        for needle in [
            "0.0.0.0:8020",
            "--tls-cert",
            "--allow-plaintext",
            "KDFS_ALLOW_PLAINTEXT",
        ] {
            assert!(e.contains(needle), "{e}");
        }
    }
}
