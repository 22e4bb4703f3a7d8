//! Roles: what a kdfs certificate says its holder is (docs/security.md, "Roles").
//!
//! Every certificate `kdfs certs` issues carries exactly one role as a subject
//! alternative name URI, `spiffe://kdfs/role/<role>` (a SPIFFE-shaped id, so tools
//! that show URI SANs show it plainly). A server reads it from the client's *verified*
//! chain (the leaf of [`crate::tls::PeerInfo::certs`], which rustls checked against
//! the CA before the connection was accepted) and [`crate::authz`] decides each rpc by
//! it. A certificate with no role URI, or with several, has no role: nothing is
//! allowed to it.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The URI prefix of a role SAN; the role's name follows.
pub const ROLE_URI_PREFIX: &str = "spiffe://kdfs/role/";

/// The kdfs processes that hold a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Namenode,
    Datanode,
    Gateway,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Namenode, Role::Datanode, Role::Gateway];

    pub fn name(self) -> &'static str {
        match self {
            Role::Namenode => "namenode",
            Role::Datanode => "datanode",
            Role::Gateway => "gateway",
        }
    }

    /// The SAN URI that gives a certificate this role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.name())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("{s:?} is not a kdfs role (namenode, datanode, gateway)"))
    }
}

/// Why a certificate has no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRole {
    #[error("the certificate cannot be parsed: {0}")]
    Unreadable(String),
    #[error("the certificate carries no role (no {ROLE_URI_PREFIX}<role> URI name)")]
    Missing,
    #[error("the certificate carries several roles ({0}); a kdfs certificate has exactly one")]
    Several(String),
    #[error("the certificate's role URI {0:?} names no kdfs role")]
    Unknown(String),
}

/// The role `cert` carries: exactly one `spiffe://kdfs/role/<role>` URI among its
/// subject alternative names. Only call it on a certificate a TLS handshake verified.
pub fn role_of(cert: &CertificateDer<'_>) -> Result<Role, NoRole> {
    let (_, parsed) =
        X509Certificate::from_der(cert).map_err(|e| NoRole::Unreadable(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| NoRole::Unreadable(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(ROLE_URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(NoRole::Missing),
        [uri] => uri[ROLE_URI_PREFIX.len()..]
            .parse()
            .map_err(|_| NoRole::Unknown((*uri).to_owned())),
        several => Err(NoRole::Several(several.join(", "))),
    }
}

/// Checks that our own certificate carries `role` (a process started with another
/// role's certificate would have every call refused by its peers; say so at start).
pub fn require_own(cert: &CertificateDer<'_>, role: Role) -> Result<(), String> {
    match role_of(cert) {
        Ok(r) if r == role => Ok(()),
        Ok(other) => Err(format!(
            "--tls-cert is a {other} certificate, but this process is a {role}: its peers \
             would refuse its calls (use the {role} certificate of `kdfs certs`)"
        )),
        Err(e) => Err(format!(
            "--tls-cert: {e}; peers refuse every call from it (issue role certificates \
             with `kdfs certs`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert(uris: &[&str]) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_certificate_has_exactly_one_role_or_none() {
        let check = |uris: &[&str], want: Result<Role, &str>| {
            let got = role_of(&cert(uris)).map_err(|e| e.to_string());
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{uris:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{uris:?}: {got}"),
                (got, want) => panic!("{uris:?}: got {got:?}, want {want:?}"),
            }
        };
        check(&["spiffe://kdfs/role/gateway"], Ok(Role::Gateway));
        check(&["spiffe://kdfs/role/datanode"], Ok(Role::Datanode));
        check(
            &["https://example.com/", "spiffe://kdfs/role/namenode"],
            Ok(Role::Namenode),
        );
        check(&[], Err("carries no role"));
        check(&["spiffe://other/role/gateway"], Err("carries no role"));
        check(
            &["spiffe://kdfs/role/gateway", "spiffe://kdfs/role/datanode"],
            Err("several roles"),
        );
        check(
            &["spiffe://kdfs/role/gateway", "spiffe://kdfs/role/gateway"],
            Err("several roles"),
        );
        check(&["spiffe://kdfs/role/admin"], Err("names no kdfs role"));
        check(&["spiffe://kdfs/role/Gateway"], Err("names no kdfs role"));
        assert!(matches!(
            role_of(&CertificateDer::from(vec![1, 2, 3])),
            Err(NoRole::Unreadable(_))
        ));
    }

    #[test]
    fn own_certificate_must_carry_the_processes_role() {
        let gw = cert(&["spiffe://kdfs/role/gateway"]);
        assert!(require_own(&gw, Role::Gateway).is_ok());
        let err = require_own(&gw, Role::Datanode).unwrap_err();
        assert!(
            err.contains("gateway certificate") && err.contains("datanode"),
            "{err}"
        );
        assert!(require_own(&cert(&[]), Role::Gateway).is_err());
    }

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.name().parse::<Role>(), Ok(r));
            assert_eq!(r.uri(), format!("spiffe://kdfs/role/{r}"));
        }
    }
}
