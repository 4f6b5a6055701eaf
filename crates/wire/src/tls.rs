//! TLS for every corral connection, in one place: the `[tls]` section managers and agents
//! share ([`TlsConfig`]), reading and checking the PEM files it names (errors name the
//! field or flag and the file), tonic's server and client TLS configurations built from
//! them, how an address is dialled ([`Transport`]: `https://` with a CA, `http://` only
//! when plaintext was asked for), and the check that a machine caller presented a client
//! certificate ([`RequireClientCertificate`]).
//!
//! Mutual TLS, as etcd's `--peer-client-cert-auth`: the managers' one port accepts
//! callers with and without a certificate (tenants' CLIs have none), but a certificate
//! that is presented must be signed by the cluster CA (rustls refuses the handshake
//! otherwise), and the services only machines call (Raft, AgentService) refuse a call
//! whose connection carried none. An agent's log server requires one outright: only
//! managers call it.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// Largest PEM file read (a certificate chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;
/// A handshake not finished by then is dropped: a client that opens connections and
/// never completes them must not hold the server's handshake tasks forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[tls]` section of a manager's or an agent's configuration: the cluster CA and
/// this process's certificate and key, or `insecure = true` for plaintext. Neither is a
/// configuration error: plaintext is never a default.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA (PEM): peers, agents and managers must present certificates it
    /// signed, and servers are checked against it.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This process's certificate (PEM), used as both server and client certificate.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Speak plaintext on every listener and connection (tests, the simulation).
    #[serde(default)]
    pub insecure: bool,
}

/// A TLS problem: what was being read or checked (a config field or a CLI flag) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError {
    /// The config field (`tls.ca_file`) or flag (`--ca-file`).
    pub field: String,
    pub reason: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for TlsError {}

fn tls_error(field: &str, reason: impl Into<String>) -> TlsError {
    TlsError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl TlsConfig {
    /// TLS from these three files.
    pub fn files(
        ca_file: impl Into<PathBuf>,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> TlsConfig {
        TlsConfig {
            ca_file: Some(ca_file.into()),
            cert_file: Some(cert_file.into()),
            key_file: Some(key_file.into()),
            insecure: false,
        }
    }

    /// Plaintext, explicitly.
    pub fn insecure() -> TlsConfig {
        TlsConfig {
            insecure: true,
            ..TlsConfig::default()
        }
    }

    /// Either all three files or `insecure = true`; the error says what to add.
    pub fn validate(&self) -> Result<(), TlsError> {
        let files = [
            ("tls.ca_file", &self.ca_file),
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
        ];
        if self.insecure {
            if let Some((field, _)) = files.iter().find(|(_, file)| file.is_some()) {
                return Err(tls_error(
                    "tls.insecure",
                    format!("plaintext cannot be combined with {field}; remove one of them"),
                ));
            }
            return Ok(());
        }
        if files.iter().all(|(_, file)| file.is_none()) {
            return Err(tls_error(
                "tls",
                "add a [tls] section with ca_file, cert_file and key_file (`corral cert init` \
                 and `corral cert issue` make them), or `insecure = true` under [tls] to \
                 speak plaintext",
            ));
        }
        for (field, file) in files {
            match file {
                None => {
                    return Err(tls_error(
                        field,
                        "required: TLS needs ca_file, cert_file and key_file",
                    ))
                }
                Some(path) if path.as_os_str().is_empty() => {
                    return Err(tls_error(field, "must not be empty"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Makes relative file names relative to `directory` (the configuration file's), so
    /// a configuration works wherever it is started from.
    pub fn resolve_relative_to(&mut self, directory: &Path) {
        for file in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = directory.join(&*file);
            }
        }
    }

    /// Reads and checks the files: None when plaintext was asked for.
    pub fn load(&self) -> Result<Option<NodeTls>, TlsError> {
        self.validate()?;
        match (&self.ca_file, &self.cert_file, &self.key_file) {
            (Some(ca), Some(cert), Some(key)) if !self.insecure => Ok(Some(NodeTls {
                ca_pem: read_certificates("tls.ca_file", ca)?,
                identity: PemIdentity {
                    cert_pem: read_certificates("tls.cert_file", cert)?,
                    key_pem: read_private_key("tls.key_file", key)?,
                },
            })),
            _ => Ok(None),
        }
    }
}

/// A certificate chain and its private key, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct PemIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for PemIdentity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        formatter
            .debug_struct("PemIdentity")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl PemIdentity {
    fn tonic(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// Whether a server demands a client certificate during the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Callers may come without one (the managers' port: tenants' CLIs); one that is
    /// presented must be signed by the CA.
    Optional,
    /// The handshake fails without one signed by the CA (an agent's log server).
    Required,
}

/// A manager's or an agent's TLS material: the cluster CA and its own certificate and
/// key, read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTls {
    ca_pem: Vec<u8>,
    identity: PemIdentity,
}

impl NodeTls {
    /// The server side: this node's certificate, client certificates checked against
    /// the CA.
    pub fn server_config(&self, clients: ClientCertificates) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.tonic())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(clients == ClientCertificates::Optional)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The client side: servers checked against the CA, this node's certificate
    /// presented as its client certificate.
    pub fn client(&self) -> ClientTls {
        ClientTls {
            ca_pem: self.ca_pem.clone(),
            identity: Some(self.identity.clone()),
        }
    }
}

/// What a client dials with: the CA servers are checked against and, for machines, a
/// client certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    identity: Option<PemIdentity>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("identity", &self.identity)
            .finish()
    }
}

impl ClientTls {
    /// From PEM already read and checked (`read_certificates`, `read_private_key`).
    pub fn new(ca_pem: Vec<u8>, identity: Option<PemIdentity>) -> ClientTls {
        ClientTls { ca_pem, identity }
    }

    /// Reads the CA and, when both are given, a client certificate and key; `flags`
    /// names them in errors (`--ca-file`, `--cert-file`, `--key-file`).
    pub fn load(
        ca_file: &Path,
        identity: Option<(&Path, &Path)>,
        flags: [&str; 3],
    ) -> Result<ClientTls, TlsError> {
        let ca_pem = read_certificates(flags[0], ca_file)?;
        let identity = match identity {
            None => None,
            Some((cert, key)) => Some(PemIdentity {
                cert_pem: read_certificates(flags[1], cert)?,
                key_pem: read_private_key(flags[2], key)?,
            }),
        };
        Ok(ClientTls { ca_pem, identity })
    }

    fn config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.identity {
            Some(identity) => config.identity(identity.tonic()),
            None => config,
        }
    }
}

/// How a process dials the addresses it is given: plaintext, or TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// `http://`; an `https://` address is refused rather than downgraded.
    #[default]
    Plaintext,
    Tls(ClientTls),
}

impl Transport {
    /// From a loaded `[tls]` section: None (insecure) dials plaintext.
    pub fn from_node(tls: Option<&NodeTls>) -> Transport {
        tls.map_or(Transport::Plaintext, |tls| Transport::Tls(tls.client()))
    }

    fn scheme(&self) -> &'static str {
        match self {
            Transport::Plaintext => "http",
            Transport::Tls(_) => "https",
        }
    }

    /// The URI of `address`: `host:port` gets this transport's scheme; an address with
    /// a scheme keeps it; no trailing `/`, no surrounding whitespace.
    pub fn uri(&self, address: &str) -> String {
        let address = address.trim().trim_end_matches('/');
        if address.starts_with("http://") || address.starts_with("https://") {
            address.to_string()
        } else {
            format!("{}://{address}", self.scheme())
        }
    }

    /// An endpoint for `address` (see [`Transport::uri`]) with TLS configured when its
    /// scheme is `https`. An `https://` address without TLS material is an error: it is
    /// never dialled in plaintext.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, String> {
        let uri = self.uri(address);
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|error| format!("invalid address '{address}': {error}"))?;
        if !uri.starts_with("https://") {
            return Ok(endpoint);
        }
        match self {
            Transport::Plaintext => Err(format!(
                "'{uri}' asks for TLS but no CA is configured (give the CA certificate: \
                 --ca-file or CORRAL_CA_FILE for the CLI, tls.ca_file in a config); an https \
                 address is never dialled in plaintext"
            )),
            Transport::Tls(tls) => endpoint
                .tls_config(tls.config())
                .map_err(|error| format!("TLS for '{uri}': {}", error_chain(&error))),
        }
    }
}

/// Refuses a call whose connection presented no client certificate, before its message
/// is decoded. rustls has already checked a presented certificate against the CA, so
/// presence is proof. Off (`required = false`) when the process speaks plaintext.
#[derive(Clone, Copy, Debug)]
pub struct RequireClientCertificate {
    pub required: bool,
}

impl tonic::service::Interceptor for RequireClientCertificate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.required
            || request
                .peer_certs()
                .is_some_and(|certificates| !certificates.is_empty())
        {
            return Ok(request);
        }
        Err(Status::unauthenticated(
            "this service is for peers and agents: it requires a client certificate signed \
             by the cluster CA (mutual TLS)",
        ))
    }
}

/// An error with its causes (tonic's TLS errors say only "transport error" at the top).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn read_pem(field: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let shown = path.display();
    let metadata = std::fs::metadata(path)
        .map_err(|error| tls_error(field, format!("cannot read {shown}: {error}")))?;
    if metadata.len() > MAX_PEM_BYTES {
        return Err(tls_error(
            field,
            format!("{shown} is larger than 1 MiB; not a PEM file"),
        ));
    }
    std::fs::read(path).map_err(|error| tls_error(field, format!("cannot read {shown}: {error}")))
}

/// Reads a PEM file of one or more certificates (a CA, or a chain); refuses a file
/// holding none, naming `field` and the file.
pub fn read_certificates(field: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem = read_pem(field, path)?;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|error| {
            tls_error(
                field,
                format!("{} is not valid PEM: {error}", path.display()),
            )
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(tls_error(
            field,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(pem)
}

/// Reads a PEM private key file (PKCS#8, PKCS#1 or SEC1), naming `field` and the file
/// when it holds none.
pub fn read_private_key(field: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let pem = read_pem(field, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        tls_error(
            field,
            format!(
                "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----): {error}",
                path.display()
            ),
        )
    })?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_files_nor_insecure_says_what_to_add() {
        let error = TlsConfig::default().validate().unwrap_err();
        assert_eq!(error.field, "tls");
        assert!(
            error.reason.contains("ca_file, cert_file and key_file"),
            "{error}"
        );
        assert!(error.reason.contains("insecure = true"), "{error}");
        assert!(TlsConfig::insecure().validate().is_ok());
        assert!(TlsConfig::files("ca.pem", "a.pem", "a-key.pem")
            .validate()
            .is_ok());
    }

    #[test]
    fn partial_or_contradictory_sections_name_the_field() {
        let mut partial = TlsConfig::files("ca.pem", "a.pem", "a-key.pem");
        partial.key_file = None;
        assert_eq!(partial.validate().unwrap_err().field, "tls.key_file");
        let mut both = TlsConfig::files("ca.pem", "a.pem", "a-key.pem");
        both.insecure = true;
        assert_eq!(both.validate().unwrap_err().field, "tls.insecure");
    }

    #[test]
    fn relative_files_are_relative_to_the_config() {
        let mut config = TlsConfig::files("ca.pem", "/etc/a.pem", "k/a-key.pem");
        config.resolve_relative_to(Path::new("/srv/corral"));
        assert_eq!(config.ca_file.unwrap(), Path::new("/srv/corral/ca.pem"));
        assert_eq!(config.cert_file.unwrap(), Path::new("/etc/a.pem"));
        assert_eq!(
            config.key_file.unwrap(),
            Path::new("/srv/corral/k/a-key.pem")
        );
    }

    #[test]
    fn unreadable_and_non_pem_files_are_named() {
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("missing.pem");
        let error = read_certificates("tls.ca_file", &missing).unwrap_err();
        assert_eq!(error.field, "tls.ca_file");
        assert!(error.reason.contains("missing.pem"), "{error}");
        let garbage = directory.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let error = read_certificates("--ca-file", &garbage).unwrap_err();
        assert!(
            error.to_string().starts_with("--ca-file: ") && error.reason.contains("garbage.pem"),
            "{error}"
        );
        let error = read_private_key("tls.key_file", &garbage).unwrap_err();
        assert!(error.reason.contains("no PEM private key"), "{error}");
        // A certificate is not a key.
        let certificate = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = directory.path().join("cert.pem");
        std::fs::write(&cert_path, certificate.cert.pem()).unwrap();
        assert!(read_certificates("tls.cert_file", &cert_path).is_ok());
        assert!(read_private_key("tls.key_file", &cert_path).is_err());
    }

    #[test]
    fn plaintext_never_dials_https() {
        let plaintext = Transport::Plaintext;
        assert_eq!(plaintext.uri(" 127.0.0.1:7001/ "), "http://127.0.0.1:7001");
        assert!(plaintext.endpoint("http://127.0.0.1:7001").is_ok());
        let error = plaintext.endpoint("https://127.0.0.1:7001").unwrap_err();
        assert!(error.contains("no CA is configured"), "{error}");
        let tls = Transport::Tls(ClientTls::new(Vec::new(), None));
        assert_eq!(tls.uri("127.0.0.1:7001"), "https://127.0.0.1:7001");
        assert_eq!(tls.uri("http://127.0.0.1:7001"), "http://127.0.0.1:7001");
    }
}
