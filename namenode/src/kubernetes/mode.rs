//! Whether Kubernetes awareness is on (`--kubernetes`, and whether the namenode runs in
//! a pod) and which pods are the datanodes.

use crate::config::Mode;

/// Whether Kubernetes awareness starts, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Enabled,
    Disabled(&'static str),
}

/// Decides from `--kubernetes` and the value of `KUBERNETES_SERVICE_HOST`.
pub fn decide(mode: Mode, service_host: Option<&str>) -> Decision {
    match mode {
        Mode::Off => Decision::Disabled("--kubernetes off"),
        Mode::On => Decision::Enabled,
        Mode::Auto => match service_host {
            Some(h) if !h.trim().is_empty() => Decision::Enabled,
            _ => Decision::Disabled("not in a cluster (KUBERNETES_SERVICE_HOST is not set)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awareness_is_on_in_a_cluster_or_when_asked() {
        for (mode, host, want) in [
            (Mode::Auto, None, false),
            (Mode::Auto, Some(""), false),
            (Mode::Auto, Some("10.43.0.1"), true),
            (Mode::On, None, true),
            (Mode::Off, Some("10.43.0.1"), false),
        ] {
            let got = decide(mode, host) == Decision::Enabled;
            assert_eq!(got, want, "{mode:?} {host:?}");
        }
    }
}
