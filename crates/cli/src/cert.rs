//! `corral cert`: a development certificate authority (rcgen). `init` makes the CA
//! (`ca.pem`, `ca-key.pem`), `issue` a certificate it signs for a manager, an agent or a
//! client (`NAME.pem`, `NAME-key.pem`), usable as both server and client certificate, so
//! one file serves a replica's port and its mutual-TLS connections to peers. Private
//! keys are written with mode 0600. `corral dev` makes its own with the same functions.
//!
//! For production, any CA that issues certificates with the serverAuth and clientAuth
//! uses and the hosts as subject alternative names works as well.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA's common name; `issue` rebuilds the issuer from it and the CA's key.
const CA_COMMON_NAME: &str = "corral development CA";
const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
/// A development CA lives for ten years, certificates for one: long enough not to get
/// in the way, short enough that a forgotten one expires.
const CA_VALIDITY_DAYS: i64 = 3_650;
const CERTIFICATE_VALIDITY_DAYS: i64 = 365;
/// Subject alternative names when no `--host` is given: loopback.
pub const DEFAULT_HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// Files a command wrote.
#[derive(Debug, PartialEq, Eq)]
pub struct Written {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// Creates a CA in `directory` (made if missing). An existing CA is never overwritten:
/// every certificate it signed would stop being trusted.
pub fn init(directory: &Path) -> Result<Written, String> {
    let written = Written {
        certificate: directory.join(CA_FILE),
        key: directory.join(CA_KEY_FILE),
    };
    for path in [&written.certificate, &written.key] {
        if path.exists() {
            return Err(format!(
                "{} exists; a CA is never overwritten (choose another --dir)",
                path.display()
            ));
        }
    }
    create_private_directory(directory)?;
    let key = KeyPair::generate().map_err(|error| format!("generating a key: {error}"))?;
    let certificate = ca_params()
        .self_signed(&key)
        .map_err(|error| format!("signing the CA: {error}"))?;
    write_file(&written.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&written.certificate, certificate.pem().as_bytes(), false)?;
    Ok(written)
}

/// Whether `directory` holds a CA made by `init`.
pub fn ca_exists(directory: &Path) -> bool {
    directory.join(CA_FILE).is_file() && directory.join(CA_KEY_FILE).is_file()
}

/// The CA certificate's path in a CA directory.
pub fn ca_file(directory: &Path) -> PathBuf {
    directory.join(CA_FILE)
}

/// Issues `name`'s certificate, signed by the CA in `ca_directory`, for `hosts` (DNS
/// names or IP addresses; loopback when empty), into `out` as `NAME.pem` and
/// `NAME-key.pem`. Issuing a name again replaces its files (a rotation).
pub fn issue(
    ca_directory: &Path,
    name: &str,
    hosts: &[String],
    out: &Path,
) -> Result<Written, String> {
    validate_name(name)?;
    let ca_key_path = ca_directory.join(CA_KEY_FILE);
    let ca_key_pem = std::fs::read_to_string(&ca_key_path)
        .map_err(|error| format!("--ca-dir: cannot read {}: {error}", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|error| {
        format!(
            "--ca-dir: {} is not a PEM private key: {error}",
            ca_key_path.display()
        )
    })?;
    check_ca_matches_key(&ca_directory.join(CA_FILE), &ca_key)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let hosts: Vec<String> = if hosts.is_empty() {
        DEFAULT_HOSTS.iter().map(|host| host.to_string()).collect()
    } else {
        hosts.to_vec()
    };
    let mut params = CertificateParams::new(hosts.clone())
        .map_err(|error| format!("--host {hosts:?}: {error}"))?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, name.to_string());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Both: a replica's one certificate serves its port and identifies it to peers.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CERTIFICATE_VALIDITY_DAYS);
    let key = KeyPair::generate().map_err(|error| format!("generating a key: {error}"))?;
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(|error| format!("signing {name}'s certificate: {error}"))?;
    create_private_directory(out)?;
    let written = Written {
        certificate: out.join(format!("{name}.pem")),
        key: out.join(format!("{name}-key.pem")),
    };
    write_file(&written.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&written.certificate, certificate.pem().as_bytes(), false)?;
    Ok(written)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    params
}

/// `issue` signs as the CA named `CA_COMMON_NAME` with the key; a `ca.pem` holding
/// another key (or another CA) would make certificates nobody trusts, so refuse early.
fn check_ca_matches_key(ca_path: &Path, ca_key: &KeyPair) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem = std::fs::read(ca_path)
        .map_err(|error| format!("--ca-dir: cannot read {}: {error}", ca_path.display()))?;
    let der = CertificateDer::from_pem_slice(&pem).map_err(|error| {
        format!(
            "--ca-dir: {} is not a PEM certificate: {error}",
            ca_path.display()
        )
    })?;
    let public_key = ca_key.public_key_raw();
    let holds = |needle: &[u8]| der.windows(needle.len()).any(|window| window == needle);
    if holds(public_key) && holds(CA_COMMON_NAME.as_bytes()) {
        Ok(())
    } else {
        Err(format!(
            "--ca-dir: {} is not the CA of {} (make both with `corral cert init`)",
            ca_path.display(),
            CA_KEY_FILE
        ))
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "--name '{name}': 1..=64 letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    }
}

fn create_private_directory(directory: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(directory)
        .map_err(|error| format!("cannot create {}: {error}", directory.display()))
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place, so a
/// reader never sees half a file; keys are 0600 from their first byte.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    let temporary = path.with_extension("pem.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    let result = options.open(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    result
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_ca_issues_certificates_with_private_keys() {
        let directory = tempfile::tempdir().unwrap();
        let ca_dir = directory.path().join("ca");
        let ca = init(&ca_dir).unwrap();
        assert_eq!(mode(&ca.key), 0o600);
        assert!(init(&ca_dir).unwrap_err().contains("never overwritten"));
        let out = directory.path().join("out");
        let issued = issue(&ca_dir, "manager-1", &[], &out).unwrap();
        assert_eq!(issued.certificate, out.join("manager-1.pem"));
        assert_eq!(mode(&issued.key), 0o600);
        let certificate = std::fs::read_to_string(&issued.certificate).unwrap();
        assert!(certificate.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issue(&ca_dir, "../escape", &[], &out).is_err());
        assert!(issue(&out, "x", &[], &out).is_err(), "not a CA directory");
    }

    #[test]
    fn a_ca_key_of_another_ca_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let (first, second) = (directory.path().join("a"), directory.path().join("b"));
        init(&first).unwrap();
        init(&second).unwrap();
        std::fs::copy(second.join(CA_KEY_FILE), first.join(CA_KEY_FILE)).unwrap();
        let error = issue(&first, "x", &[], directory.path()).unwrap_err();
        assert!(error.contains("is not the CA of"), "{error}");
    }
}
