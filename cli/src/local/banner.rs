//! What `kdfs local` prints on the terminal once the cluster serves: the few lines a
//! person needs (where to point a browser or `curl`, where the data and logs are, how
//! to stop). Everything else goes to the log files.
//!
//! The `gateway: <url>` line stays exactly that, at the start of a line: scripts, the
//! CLI's tests and the browser test read the gateway's address from it; so does the
//! `s3: <url>` line, followed by the S3 key pair and an `aws` line ready to paste.

use std::path::Path;

/// What the banner shows.
pub(crate) struct Banner<'a> {
    pub(crate) gateway: &'a str,
    pub(crate) data_dir: &'a Path,
    pub(crate) logs_dir: &'a Path,
    pub(crate) namenodes: u16,
    pub(crate) datanodes: u16,
    /// Where the mTLS certificates are; `None` with `--no-tls`.
    pub(crate) tls_dir: Option<&'a Path>,
    /// The S3 port and its key pair; `None` with `--s3 off`.
    pub(crate) s3: Option<S3<'a>>,
}

/// The S3 port as the banner shows it.
pub(crate) struct S3<'a> {
    pub(crate) url: &'a str,
    pub(crate) access_key: &'a str,
    pub(crate) secret_key: &'a str,
    pub(crate) file: &'a Path,
}

impl std::fmt::Display for Banner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let datanodes = match self.datanodes {
            0 | 1 => "datanode-0.log".to_owned(),
            n => format!("datanode-0.log … datanode-{}.log", n - 1),
        };
        let namenodes = match self.namenodes {
            0 | 1 => "namenode.log".to_owned(),
            n => format!("namenode-0.log … namenode-{}.log", n - 1),
        };
        let tls = match self.tls_dir {
            Some(dir) => format!(
                "mTLS on every internal gRPC link; certificates in {} (the gateway's HTTP is plain)",
                dir.display()
            ),
            None => {
                "off (--no-tls: internal links in plaintext, open to any local process)".to_owned()
            }
        };
        writeln!(f, "kdfs local is serving")?;
        writeln!(f, "gateway: {}", self.gateway)?;
        writeln!(f, "page:    {}/", self.gateway)?;
        writeln!(f, "data:    {}", self.data_dir.display())?;
        writeln!(
            f,
            "logs:    {}/ ({namenodes}, {datanodes}, gateway.log; --verbose streams them)",
            self.logs_dir.display()
        )?;
        writeln!(f, "tls:     {tls}")?;
        if self.namenodes > 1 {
            writeln!(
                f,
                "ha:      {} namenodes (Raft); writes go on while a majority runs",
                self.namenodes
            )?;
        }
        if let Some(s3) = &self.s3 {
            writeln!(f, "s3: {}", s3.url)?;
            writeln!(
                f,
                "s3 keys: access key {}, secret key {} (in {})",
                s3.access_key,
                s3.secret_key,
                s3.file.display()
            )?;
            writeln!(
                f,
                "aws:     AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION=us-east-1 aws --endpoint-url {} s3 ls",
                s3.access_key, s3.secret_key, s3.url
            )?;
        }
        write!(f, "stop:    Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(datanodes: u16, tls_dir: Option<&str>, expected: &str) {
        let banner = Banner {
            gateway: "http://127.0.0.1:8080",
            data_dir: Path::new("./kdfs-data"),
            logs_dir: Path::new("./kdfs-data/logs"),
            namenodes: 1,
            datanodes,
            tls_dir: tls_dir.map(Path::new),
            s3: None,
        };
        assert_eq!(banner.to_string(), expected);
    }

    #[test]
    fn banner() {
        check(
            3,
            None,
            "kdfs local is serving
gateway: http://127.0.0.1:8080
page:    http://127.0.0.1:8080/
data:    ./kdfs-data
logs:    ./kdfs-data/logs/ (namenode.log, datanode-0.log … datanode-2.log, gateway.log; --verbose streams them)
tls:     off (--no-tls: internal links in plaintext, open to any local process)
stop:    Ctrl-C",
        );
        check(
            1,
            Some("./kdfs-data/tls"),
            "kdfs local is serving
gateway: http://127.0.0.1:8080
page:    http://127.0.0.1:8080/
data:    ./kdfs-data
logs:    ./kdfs-data/logs/ (namenode.log, datanode-0.log, gateway.log; --verbose streams them)
tls:     mTLS on every internal gRPC link; certificates in ./kdfs-data/tls (the gateway's HTTP is plain)
stop:    Ctrl-C",
        );
    }

    /// Scripts, tests/browser/test_page.py and cli/tests read the gateway from this line.
    #[test]
    fn the_gateway_line_is_kept_verbatim() {
        let banner = Banner {
            gateway: "http://127.0.0.1:43117",
            data_dir: Path::new("d"),
            logs_dir: Path::new("d/logs"),
            namenodes: 3,
            datanodes: 2,
            tls_dir: None,
            s3: Some(S3 {
                url: "http://127.0.0.1:9000",
                access_key: "KDFSAK",
                secret_key: "sekret",
                file: Path::new("d/s3-credentials"),
            }),
        }
        .to_string();
        assert!(banner.lines().any(|l| l == "s3: http://127.0.0.1:9000"));
        assert!(banner.lines().any(|l| l.starts_with("aws: ")
            && l.contains("AWS_ACCESS_KEY_ID=KDFSAK AWS_SECRET_ACCESS_KEY=sekret")
            && l.contains("aws --endpoint-url http://127.0.0.1:9000 s3 ls")));
        assert!(
            banner
                .lines()
                .any(|l| l == "gateway: http://127.0.0.1:43117")
        );
        assert!(banner.contains("(namenode-0.log … namenode-2.log, datanode-0.log"));
        assert!(
            banner
                .lines()
                .any(|l| l.starts_with("ha:      3 namenodes"))
        );
    }
}
