//! Manager addresses: `host:port` or `http(s)://host:port`, normalised to a URI.

/// The plaintext URI form of a manager address: `127.0.0.1:7001` becomes
/// `http://127.0.0.1:7001` (a client with TLS uses `Transport::uri`, which makes it
/// `https://`);
/// an address that already has a scheme is kept, without a trailing `/`.
/// Surrounding whitespace is removed.
pub fn normalize_address(address: &str) -> String {
    let address = address.trim().trim_end_matches('/');
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_scheme_only_when_missing() {
        assert_eq!(normalize_address("127.0.0.1:7001"), "http://127.0.0.1:7001");
        assert_eq!(normalize_address(" http://a:1/ "), "http://a:1");
        assert_eq!(normalize_address("https://a:1"), "https://a:1");
    }
}
