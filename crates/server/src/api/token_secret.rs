//! Token secrets a retried creation can repeat. A token's secret exists only in the
//! reply to its creation (the state keeps its hash), so with a random secret a lost
//! reply left a token nobody could use, and the retry was refused as a duplicate name.
//! When the client names its call with a request id, the secret is derived instead:
//! HMAC-SHA256 keyed with the cluster secret (known to every replica, to no client) over
//! the request id, tenant and name. Every replica derives the same secret for a retry,
//! so the retry is the same command, the state machine answers it with the first
//! outcome, and the caller gets the secret the stored hash belongs to.

use corral_model::ids::TenantId;
use corral_state::RequestId;
use sha2::{Digest, Sha256};

/// SHA-256's block size, HMAC's key block.
const BLOCK_BYTES: usize = 64;
/// Separates this use of the cluster secret from any other.
const CONTEXT: &[u8] = b"corral token secret v1\0";

/// The secret of the token `name` (of `tenant`, or platform-wide) created under
/// `request_id`, 256 bits in hex like a random one.
pub(crate) fn derived_secret(
    cluster_secret: &str,
    request_id: RequestId,
    tenant: Option<TenantId>,
    name: &str,
) -> String {
    let mut message = Vec::with_capacity(CONTEXT.len() + 24 + name.len());
    message.extend_from_slice(CONTEXT);
    message.extend_from_slice(&request_id.0.to_le_bytes());
    message.extend_from_slice(&tenant.map_or(0, |tenant| tenant.0).to_le_bytes());
    message.extend_from_slice(name.as_bytes());
    hex::encode(hmac_sha256(cluster_secret.as_bytes(), &message))
}

/// Separates node log keys from token secrets.
const LOG_KEY_CONTEXT: &[u8] = b"corral node log key v1\0";

/// The key managers present to `node`'s log server: derived from the cluster secret,
/// so every replica can compute it and no agent learns another node's key (or the
/// cluster secret). A node's key opens only that node's logs, which it has anyway.
pub(crate) fn log_key(cluster_secret: &str, node: corral_model::NodeId) -> String {
    let mut message = Vec::with_capacity(LOG_KEY_CONTEXT.len() + 8);
    message.extend_from_slice(LOG_KEY_CONTEXT);
    message.extend_from_slice(&node.0.to_le_bytes());
    hex::encode(hmac_sha256(cluster_secret.as_bytes(), &message))
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block_key = [0u8; BLOCK_BYTES];
    if key.len() > BLOCK_BYTES {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block_key.map(|byte| byte ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block_key.map(|byte| byte ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_cases() {
        // Test case 2: a short key.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn log_keys_differ_per_node_and_from_token_secrets() {
        let first = log_key("cluster", corral_model::NodeId(1));
        assert_eq!(first, log_key("cluster", corral_model::NodeId(1)));
        assert_ne!(first, log_key("cluster", corral_model::NodeId(2)));
        assert_ne!(first, log_key("other", corral_model::NodeId(1)));
        assert_ne!(first, derived_secret("cluster", RequestId(1), None, "node"));
    }

    #[test]
    fn the_same_call_gives_the_same_secret_and_any_other_input_another() {
        let secret = derived_secret("cluster", RequestId(7), Some(TenantId(1)), "ci");
        assert_eq!(secret.len(), 64);
        assert_eq!(
            secret,
            derived_secret("cluster", RequestId(7), Some(TenantId(1)), "ci")
        );
        for other in [
            derived_secret("other cluster", RequestId(7), Some(TenantId(1)), "ci"),
            derived_secret("cluster", RequestId(8), Some(TenantId(1)), "ci"),
            derived_secret("cluster", RequestId(7), None, "ci"),
            derived_secret("cluster", RequestId(7), Some(TenantId(1)), "cd"),
        ] {
            assert_ne!(secret, other);
        }
    }
}
