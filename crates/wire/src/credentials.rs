//! Credentials in call metadata: the `Bearer <token>` form of the authorization header
//! and the one comparison of secrets (constant time, so a wrong guess does not tell how
//! much of it was right).

use crate::headers::AUTHORIZATION_HEADER;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// What precedes the token in the authorization header.
pub const BEARER_PREFIX: &str = "Bearer ";
/// Longest token accepted.
const MAX_TOKEN_BYTES: usize = 512;

/// The authorization header's value carrying `token`.
pub fn bearer_value(token: &str) -> String {
    format!("{BEARER_PREFIX}{token}")
}

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Clone, Debug, Default)]
pub struct BearerInterceptor {
    authorization: Option<MetadataValue<Ascii>>,
}

impl BearerInterceptor {
    /// An interceptor sending this token (none or empty: no `authorization` metadata);
    /// the error says why the token cannot be sent.
    pub fn new(token: Option<&str>) -> Result<BearerInterceptor, &'static str> {
        let authorization = match token.map(str::trim).filter(|token| !token.is_empty()) {
            None => None,
            Some(token) if !token.bytes().all(|byte| byte.is_ascii_graphic()) => {
                return Err("the token must be printable ASCII without spaces")
            }
            Some(token) => Some(
                bearer_value(token)
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| "the token must be printable ASCII")?,
            ),
        };
        Ok(BearerInterceptor { authorization })
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert(AUTHORIZATION_HEADER, authorization.clone());
        }
        Ok(request)
    }
}

/// The bearer token of a request, if well formed.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, Status> {
    let value = metadata
        .get(AUTHORIZATION_HEADER)
        .ok_or_else(|| Status::unauthenticated("missing authorization metadata (Bearer token)"))?;
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
    let token = text
        .strip_prefix(BEARER_PREFIX)
        .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <token>'"))?;
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Status::unauthenticated("malformed bearer token"));
    }
    Ok(token)
}

/// Whether two secrets are equal, in time that depends on their lengths only.
pub fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut metadata = MetadataMap::new();
        assert_eq!(
            bearer_token(&metadata).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        metadata.insert(AUTHORIZATION_HEADER, "Basic abc".parse().unwrap());
        assert_eq!(
            bearer_token(&metadata).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        metadata.insert(
            AUTHORIZATION_HEADER,
            bearer_value("secret-value").parse().unwrap(),
        );
        assert_eq!(bearer_token(&metadata).unwrap(), "secret-value");
    }

    #[test]
    fn comparison() {
        assert!(constant_time_equal(b"same", b"same"));
        assert!(!constant_time_equal(b"same", b"sane"));
        assert!(!constant_time_equal(b"same", b"same-longer"));
        assert!(constant_time_equal(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_equal(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_equal(b"Bearer ab", b"Bearer abc"));
    }
}
