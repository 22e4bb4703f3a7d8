//! Authorization of every rpc by the caller's role (docs/security.md, "Roles").
//!
//! Each gRPC service has one table, [`Rules`]: its rpcs and the roles allowed to call
//! each. [`layer`] enforces it as a tower layer on the tonic server, keyed on the
//! request's gRPC path (`/kdfs.v1.Namenode/DeleteFile`), before any handler or
//! decoder runs:
//!
//! - a path not in the table is refused, so an rpc added to the `.proto` and not to
//!   the table fails every test that calls it instead of being open to everyone;
//! - with mTLS, the caller's role is read from the leaf of its verified chain
//!   ([`crate::roles::role_of`]); no certificate, no role, or a role the rpc does not
//!   allow is refused with `PERMISSION_DENIED` and an audit line;
//! - in plaintext (no TLS, allowed on loopback or with `--allow-plaintext`) there is
//!   no identity to check: every rpc in the table is allowed, as the startup warning of
//!   [`crate::plaintext`] says.

use std::future::Ready;
use std::task::{Context, Poll};

use futures::future::Either;
use kdfs_core::telemetry::AUDIT_TARGET;
use tonic::Status;

use crate::roles::{Role, role_of};
use crate::tls::PeerInfo;

/// One service's authorization table.
#[derive(Debug)]
pub struct Rules {
    /// The gRPC service's full name (`kdfs.v1.Namenode`).
    pub service: &'static str,
    /// Every rpc of the service and the roles that may call it; an empty list means
    /// nobody may over mTLS.
    pub rpcs: &'static [(&'static str, &'static [Role])],
}

impl Rules {
    /// The roles allowed to call `path`, or `None` when it is no rpc of this table.
    pub fn allowed(&self, path: &str) -> Option<&'static [Role]> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if service != self.service {
            return None;
        }
        self.rpcs
            .iter()
            .find(|(name, _)| *name == method)
            .map(|(_, roles)| *roles)
    }

    /// Decides one request: `Ok` with the caller's role (`None` in plaintext), or
    /// why it is refused and who asked.
    pub fn decide(
        &self,
        path: &str,
        peer: Option<&PeerInfo>,
        mtls: bool,
    ) -> Result<Option<Role>, Refusal> {
        let Some(allowed) = self.allowed(path) else {
            return Err(Refusal {
                who: "unchecked".into(),
                reason: format!(
                    "{path} is not an rpc of {} this server serves",
                    self.service
                ),
            });
        };
        if !mtls {
            return Ok(None);
        }
        let Some(leaf) = peer.and_then(PeerInfo::leaf) else {
            return Err(Refusal {
                who: "none".into(),
                reason: "the client presented no certificate".into(),
            });
        };
        let role = role_of(leaf).map_err(|e| Refusal {
            who: "no-role".into(),
            reason: e.to_string(),
        })?;
        if allowed.contains(&role) {
            return Ok(Some(role));
        }
        let method = path.rsplit('/').next().unwrap_or(path);
        let reason = if allowed.is_empty() {
            format!("{method} is not served to any caller over mTLS (a {role} certificate asked)")
        } else {
            let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
            format!(
                "{method} is for the {} role, not {role}",
                names.join(" or ")
            )
        };
        Err(Refusal {
            who: format!("role:{role}"),
            reason,
        })
    }
}

/// A refused rpc: who asked (for the audit line) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub who: String,
    pub reason: String,
}

/// The tower layer enforcing `rules` on a tonic server; `mtls` says whether the
/// server's connections are mutual TLS (then every caller needs an allowed role).
pub fn layer(rules: &'static Rules, mtls: bool) -> AuthorizeLayer {
    AuthorizeLayer {
        rules: Tables::One(rules),
        mtls,
    }
}

/// As [`layer`], for a server that serves several services: each request is decided
/// by the table of its path's service (a path of none of them is refused).
pub fn layer_for(services: &'static [&'static Rules], mtls: bool) -> AuthorizeLayer {
    assert!(!services.is_empty(), "a server serves at least one service");
    AuthorizeLayer {
        rules: Tables::Many(services),
        mtls,
    }
}

/// The tables of the services one server serves.
#[derive(Debug, Clone, Copy)]
enum Tables {
    One(&'static Rules),
    Many(&'static [&'static Rules]),
}

impl Tables {
    fn decide(
        self,
        path: &str,
        peer: Option<&PeerInfo>,
        mtls: bool,
    ) -> Result<Option<Role>, Refusal> {
        let rules = match self {
            Tables::One(rules) => rules,
            Tables::Many(all) => {
                let service = path.strip_prefix('/').and_then(|p| p.split_once('/'));
                all.iter()
                    .find(|r| service.is_some_and(|(s, _)| s == r.service))
                    .unwrap_or(&all[0])
            }
        };
        rules.decide(path, peer, mtls)
    }
}

/// See [`layer`].
#[derive(Debug, Clone, Copy)]
pub struct AuthorizeLayer {
    rules: Tables,
    mtls: bool,
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            rules: self.rules,
            mtls: self.mtls,
        }
    }
}

/// The service [`AuthorizeLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    rules: Tables,
    mtls: bool,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let peer = request.extensions().get::<PeerInfo>();
        match self.rules.decide(path, peer, self.mtls) {
            Ok(_) => Either::Right(self.inner.call(request)),
            Err(refusal) => {
                let client = PeerInfo::client_address(peer);
                tracing::info!(
                    target: AUDIT_TARGET,
                    action = "rpc",
                    rpc = %path,
                    who = %refusal.who,
                    client = %client,
                    result = "refused",
                    reason = %refusal.reason,
                    "rpc refused: {}",
                    refusal.reason
                );
                let status =
                    Status::permission_denied(format!("{path} refused: {}", refusal.reason));
                Either::Left(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Test support: the rpc names of `service` in a `.proto` file's text, in order, so a
/// table's unit test can check it names every rpc (and nothing else).
pub fn rpcs_in_proto(proto: &str, service: &str) -> Vec<String> {
    let opening = format!("service {service} {{");
    let Some(start) = proto.find(&opening) else {
        return Vec::new();
    };
    let body = &proto[start + opening.len()..];
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .filter_map(|l| l.split('(').next())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use rcgen::{CertificateParams, KeyPair, SanType};
    use rustls::pki_types::CertificateDer;
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    static RULES: Rules = Rules {
        service: "kdfs.v1.Test",
        rpcs: &[
            ("ForGateways", &[Role::Gateway]),
            ("ForBoth", &[Role::Gateway, Role::Datanode]),
            ("ForNobody", &[]),
        ],
    };

    fn cert(uris: &[&str]) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .clone()
    }

    fn peer(cert: Option<CertificateDer<'static>>) -> PeerInfo {
        PeerInfo {
            remote_addr: Some("127.0.0.1:5000".parse().unwrap()),
            certs: cert.map(|c| Arc::new(vec![c])),
        }
    }

    fn role(r: Role) -> Option<CertificateDer<'static>> {
        Some(cert(&[&r.uri()]))
    }

    #[test]
    fn the_table_decides_by_role_and_refuses_what_it_does_not_name() {
        let check =
            |path: &str, caller: Option<CertificateDer<'static>>, mtls: bool, want: &str| {
                let got = match RULES.decide(path, Some(&peer(caller)), mtls) {
                    Ok(_) => "ok".to_owned(),
                    Err(r) => format!("{}: {}", r.who, r.reason),
                };
                assert!(
                    got.contains(want),
                    "{path} (mtls {mtls}): {got}, want {want}"
                );
            };
        let (gw, dn, nn) = (Role::Gateway, Role::Datanode, Role::Namenode);
        check("/kdfs.v1.Test/ForGateways", role(gw), true, "ok");
        check(
            "/kdfs.v1.Test/ForGateways",
            role(dn),
            true,
            "role:datanode: ForGateways is for the gateway role, not datanode",
        );
        check("/kdfs.v1.Test/ForBoth", role(dn), true, "ok");
        check(
            "/kdfs.v1.Test/ForBoth",
            role(nn),
            true,
            "for the gateway or datanode role, not namenode",
        );
        check(
            "/kdfs.v1.Test/ForNobody",
            role(gw),
            true,
            "not served to any caller",
        );
        check(
            "/kdfs.v1.Test/ForGateways",
            Some(cert(&[])),
            true,
            "no-role: the certificate carries no role",
        );
        check(
            "/kdfs.v1.Test/ForGateways",
            Some(cert(&[&gw.uri(), &dn.uri()])),
            true,
            "no-role: the certificate carries several roles",
        );
        check(
            "/kdfs.v1.Test/ForGateways",
            None,
            true,
            "none: the client presented no certificate",
        );
        check(
            "/kdfs.v1.Test/Unknown",
            role(gw),
            true,
            "not an rpc of kdfs.v1.Test",
        );
        check(
            "/kdfs.v1.Other/ForGateways",
            role(gw),
            true,
            "not an rpc of kdfs.v1.Test",
        );
        check("/kdfs.v1.Test/ForGateways/x", role(gw), true, "not an rpc");
        check("", role(gw), true, "not an rpc");
        // Plaintext: no identity, every rpc of the table allowed, others still refused.
        check("/kdfs.v1.Test/ForNobody", None, false, "ok");
        check(
            "/kdfs.v1.Test/Unknown",
            None,
            false,
            "not an rpc of kdfs.v1.Test",
        );
    }

    #[tokio::test]
    async fn the_layer_answers_permission_denied_without_calling_the_service() {
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new("served".to_owned()))
        });
        let svc = layer(&RULES, true).layer(inner);
        let request = |path: &str, caller: Option<CertificateDer<'static>>| {
            let mut r = http::Request::builder().uri(path).body(()).unwrap();
            r.extensions_mut().insert(peer(caller));
            r
        };
        let ok = svc
            .clone()
            .oneshot(request("/kdfs.v1.Test/ForGateways", role(Role::Gateway)))
            .await
            .unwrap();
        assert_eq!(ok.body(), "served");
        let denied = svc
            .clone()
            .oneshot(request("/kdfs.v1.Test/ForGateways", role(Role::Datanode)))
            .await
            .unwrap();
        assert_eq!(denied.body(), "", "the handler must not run");
        let status = Status::from_header_map(denied.headers()).expect("a grpc-status");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("not datanode"), "{status:?}");
        let mut svc = svc;
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    }

    #[test]
    fn a_server_of_several_services_decides_by_the_path_s_service() {
        static OTHER: Rules = Rules {
            service: "kdfs.v1.Other",
            rpcs: &[("ForDatanodes", &[Role::Datanode])],
        };
        static BOTH: [&Rules; 2] = [&RULES, &OTHER];
        let tables = Tables::Many(&BOTH);
        let decide = |path: &str, r: Role| tables.decide(path, Some(&peer(role(r))), true);
        assert!(decide("/kdfs.v1.Test/ForGateways", Role::Gateway).is_ok());
        assert!(decide("/kdfs.v1.Other/ForDatanodes", Role::Datanode).is_ok());
        assert!(decide("/kdfs.v1.Other/ForDatanodes", Role::Gateway).is_err());
        assert!(decide("/kdfs.v1.Other/ForGateways", Role::Gateway).is_err());
        let e = decide("/kdfs.v1.Third/ForGateways", Role::Gateway).unwrap_err();
        assert!(e.reason.contains("not an rpc"), "{e:?}");
        assert!(decide("", Role::Gateway).is_err());
    }

    #[test]
    fn rpcs_are_read_from_a_service_block() {
        let proto = "service A {\n  // doc\n  rpc One(X) returns (Y);\n  rpc Two(stream X) returns (stream Y);\n}\nservice B {\n  rpc Three(X) returns (Y);\n}\n";
        assert_eq!(rpcs_in_proto(proto, "A"), ["One", "Two"]);
        assert_eq!(rpcs_in_proto(proto, "B"), ["Three"]);
        assert!(rpcs_in_proto(proto, "C").is_empty());
    }
}
