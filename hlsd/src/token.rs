//! Signed, expiring access tokens for playlists and segments (HMAC-SHA256, RFC 2104 / FIPS 180-4).
//!
//! A token is `base64url_nopad(expiry_be_u64 || HMAC-SHA256(secret, scope || "|" || expiry))`
//! (40 bytes, 54 characters). `expiry` is Unix seconds; `scope` is what the token opens: a
//! stream name for `/live/<stream>/...`, `vod/session/<id>` or `vod/incident/<id>` for VOD
//! playlists. The MAC is compared in constant time (`Mac::verify_slice`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const TOKEN_BYTES: usize = 8 + 32;

/// Why a token was refused; every variant is answered with 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token required")]
    Missing,
    #[error("token malformed")]
    Malformed,
    #[error("token signature invalid")]
    Forged,
    #[error("token expired")]
    Expired,
}

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl TokenSigner {
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self {
            key: secret.as_ref().to_vec(),
        }
    }

    fn mac(&self, scope: &str, expiry: u64) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(scope.as_bytes());
        mac.update(b"|");
        mac.update(expiry.to_string().as_bytes());
        mac
    }

    /// A token opening `scope` until `expiry_unix` (seconds).
    pub fn sign(&self, scope: &str, expiry_unix: u64) -> String {
        let mut raw = [0u8; TOKEN_BYTES];
        raw[..8].copy_from_slice(&expiry_unix.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(scope, expiry_unix).finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks `token` for `scope` at time `now_unix`; returns its expiry.
    pub fn verify(&self, scope: &str, token: &str, now_unix: u64) -> Result<u64, TokenError> {
        if token.len() != 54 {
            return Err(TokenError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Malformed)?;
        if raw.len() != TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let expiry = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        self.mac(scope, expiry)
            .verify_slice(&raw[8..])
            .map_err(|_| TokenError::Forged)?;
        if expiry < now_unix {
            return Err(TokenError::Expired);
        }
        Ok(expiry)
    }
}

/// Seconds since the Unix epoch now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Appends `token=<token>` to every URI of a playlist: URI lines (not starting with `#`) and the
/// quoted `URI="..."` attribute of tags (EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT), so players
/// that resolve relative URLs without the playlist's query still send it.
pub fn add_token_to_uris(playlist: &str, token: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + playlist.len() / 4);
    for line in playlist.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        if body.is_empty() {
            out.push_str(line);
            continue;
        }
        if body.starts_with('#') {
            // Tags that name a file (EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT) carry it in
            // a quoted URI attribute.
            match body.find("URI=\"") {
                Some(at) => {
                    let start = at + 5;
                    let end = body[start..].find('"').map_or(body.len(), |e| start + e);
                    let uri = &body[start..end];
                    out.push_str(&body[..end]);
                    out.push(if uri.contains('?') { '&' } else { '?' });
                    out.push_str("token=");
                    out.push_str(token);
                    out.push_str(&line[end..]);
                }
                None => out.push_str(line),
            }
            continue;
        }
        out.push_str(body);
        out.push(if body.contains('?') { '&' } else { '?' });
        out.push_str("token=");
        out.push_str(token);
        out.push_str(&line[body.len()..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let s = TokenSigner::new("k");
        let t = s.sign("cam1", 1000);
        assert_eq!(t.len(), 54);
        assert_eq!(s.verify("cam1", &t, 999), Ok(1000));
        assert_eq!(s.verify("cam1", &t, 1000), Ok(1000));
        assert_eq!(s.verify("cam1", &t, 1001), Err(TokenError::Expired));
        assert_eq!(s.verify("cam2", &t, 0), Err(TokenError::Forged));
        assert_eq!(
            TokenSigner::new("other").verify("cam1", &t, 0),
            Err(TokenError::Forged)
        );
        // Moving the expiry forward without the key breaks the MAC.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[7] ^= 0xff;
        assert_eq!(
            s.verify("cam1", &URL_SAFE_NO_PAD.encode(&raw), 0),
            Err(TokenError::Forged)
        );
        assert_eq!(s.verify("cam1", "short", 0), Err(TokenError::Malformed));
        assert_eq!(
            s.verify("cam1", &"*".repeat(54), 0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn token_rewrite_of_low_latency_tags() {
        let pl = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MAP:URI=\"ll-init-0.mp4\"\n\
                  #EXT-X-PART:DURATION=0.200,URI=\"ll-5.0.m4s\",INDEPENDENT=YES\n\
                  #EXTINF:0.200000,\nll-5.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ll-6.0.m4s\"\n";
        assert_eq!(
            add_token_to_uris(pl, "T"),
            "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MAP:URI=\"ll-init-0.mp4?token=T\"\n\
             #EXT-X-PART:DURATION=0.200,URI=\"ll-5.0.m4s?token=T\",INDEPENDENT=YES\n\
             #EXTINF:0.200000,\nll-5.m4s?token=T\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ll-6.0.m4s?token=T\"\n"
        );
    }

    #[test]
    fn token_rewrite() {
        let pl = "#EXTM3U\n#EXTINF:2.0,\n1.ts\n#EXTINF:2.0,\r\n2.ts?x=1\r\n";
        assert_eq!(
            add_token_to_uris(pl, "T"),
            "#EXTM3U\n#EXTINF:2.0,\n1.ts?token=T\n#EXTINF:2.0,\r\n2.ts?x=1&token=T\r\n"
        );
    }
}
