//! Optional login tokens: when a secret is configured, `enter` must carry
//! `token = "<expiry>.<hex HMAC-SHA256(secret, "<username>.<expiry>")>"`, minted by whoever
//! authenticated the user (`shaddock token <username>` does it from the command line).
//! Off by default, as in Pomelo.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token does not match the user")]
    BadSignature,
}

fn mac(secret: &[u8], username: &str, expiry: u64) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("hmac accepts any key"));
    mac.update(username.as_bytes());
    mac.update(b".");
    mac.update(expiry.to_string().as_bytes());
    mac
}

/// A token for `username` valid until `expiry` (unix seconds).
pub fn mint(secret: &[u8], username: &str, expiry: u64) -> String {
    let sig = mac(secret, username, expiry).finalize().into_bytes();
    format!("{expiry}.{}", hex::encode(sig))
}

/// Checks `token` for `username` at time `now` (unix seconds).
pub fn verify(secret: &[u8], username: &str, token: Option<&str>, now: u64) -> Result<(), TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let (expiry, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    let sig = hex::decode(sig).map_err(|_| TokenError::Malformed)?;
    if expiry < now {
        return Err(TokenError::Expired);
    }
    mac(secret, username, expiry)
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_for_its_user_until_it_expires() {
        let t = mint(b"s3cret", "alice", 1000);
        assert_eq!(verify(b"s3cret", "alice", Some(&t), 999), Ok(()));
        assert_eq!(
            verify(b"s3cret", "bob", Some(&t), 999),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"other", "alice", Some(&t), 999),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", "alice", Some(&t), 1001),
            Err(TokenError::Expired)
        );
        assert_eq!(verify(b"s3cret", "alice", None, 0), Err(TokenError::Missing));
        assert_eq!(
            verify(b"s3cret", "alice", Some("nonsense"), 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(b"s3cret", "alice", Some("5.zz"), 0),
            Err(TokenError::Malformed)
        );
    }
}
