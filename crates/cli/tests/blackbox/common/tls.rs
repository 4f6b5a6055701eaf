//! The test PKI: one development CA per test binary, made with the binary's own
//! `corral cert init`/`issue` (so the shipped commands are what the tests trust), and a
//! loopback certificate every harness replica and agent presents. Clusters and agents
//! start with TLS on; clients here check the managers against the CA, and machine
//! callers (peers, agents) present the node certificate.

use super::corral_binary;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The certificate every harness replica and agent presents.
pub const NODE_CERTIFICATE: &str = "node";

pub struct Pki {
    /// Kept for the whole run (a static is never dropped).
    _directory: tempfile::TempDir,
    pub directory: PathBuf,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Pki {
    /// The `[tls]` table of a manager's or an agent's config.
    pub fn config_section(&self) -> String {
        format!(
            "[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.ca_file.display(),
            self.cert_file.display(),
            self.key_file.display()
        )
    }

    /// Issues another certificate signed by the same CA (a rotation).
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        corral_cert(&[
            "issue",
            "--ca-dir",
            &self.directory.display().to_string(),
            "--name",
            name,
            "--out",
            &self.directory.display().to_string(),
        ]);
        (
            self.directory.join(format!("{name}.pem")),
            self.directory.join(format!("{name}-key.pem")),
        )
    }
}

/// Runs `corral cert ARGS`, which must succeed.
pub fn corral_cert(args: &[&str]) {
    let output = Command::new(corral_binary())
        .arg("cert")
        .args(args)
        .output()
        .expect("run corral cert");
    assert!(output.status.success(), "corral cert {args:?}: {output:?}");
}

/// Makes a CA in `directory` with `corral cert init` and returns its certificate.
pub fn new_ca(directory: &Path) -> PathBuf {
    corral_cert(&["init", "--dir", &directory.display().to_string()]);
    directory.join("ca.pem")
}

/// The test binary's PKI, made on first use.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let directory = tempfile::tempdir().expect("PKI directory");
        let path = directory.path().to_path_buf();
        let ca_file = new_ca(&path);
        let pki = Pki {
            _directory: directory,
            directory: path.clone(),
            ca_file,
            cert_file: path.join(format!("{NODE_CERTIFICATE}.pem")),
            key_file: path.join(format!("{NODE_CERTIFICATE}-key.pem")),
        };
        pki.issue(NODE_CERTIFICATE);
        pki
    })
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// TLS checking the manager against the harness CA, with no client certificate (a
/// tenant's or an operator's client).
pub fn client_tls() -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&pki().ca_file)))
}

/// As `client_tls`, presenting the node certificate (a peer or an agent).
pub fn peer_tls() -> ClientTlsConfig {
    client_tls().identity(Identity::from_pem(
        read(&pki().cert_file),
        read(&pki().key_file),
    ))
}

/// An endpoint for `address` (`host:port`) over TLS.
pub fn endpoint(address: &str, tls: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://{address}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .tls_config(tls)
        .expect("TLS configuration")
}

/// A lazy channel to `address` as a client without a certificate.
pub fn channel(address: &str) -> Channel {
    endpoint(address, client_tls()).connect_lazy()
}

/// A lazy channel to `address` as a machine with the node certificate.
pub fn peer_channel(address: &str) -> Channel {
    endpoint(address, peer_tls()).connect_lazy()
}

/// What `corral_client` dials with: the harness CA, no client certificate.
pub fn transport() -> corral_client::Transport {
    corral_client::Transport::Tls(corral_client::ClientTls::new(read(&pki().ca_file), None))
}
