//! The signing key of the built-in authorization server: an ES256 (P-256) key
//! generated on first start and kept at `<data>/keys/es256.pem` (mode 0600), its
//! JWKS, and access-token minting and verification.
//!
//! Verification accepts ES256 only: `alg: none`, HMAC and every other algorithm
//! are refused before any signature check, so a token signed with the public key
//! as an HMAC secret cannot pass.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Errors loading or creating the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("signing key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds something else than a PKCS#8 P-256 key.
    #[error("signing key {path} is not a PKCS#8 P-256 private key: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Why a token was refused. Shown to nobody but the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    /// Not a JWT at all.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than the one accepted (incl. `none`).
    #[error("algorithm not accepted")]
    Algorithm,
    /// The header names another key.
    #[error("unknown key id")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `exp` is past.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// `aud` is not this resource.
    #[error("wrong audience")]
    Audience,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    Issuer,
    /// A required claim is missing or malformed.
    #[error("missing or invalid claims")]
    Claims,
    /// The token's family was revoked.
    #[error("revoked")]
    Revoked,
    /// The token's user no longer exists (removed from the users file).
    #[error("user no longer exists")]
    SubjectGone,
    /// The token's user no longer holds any of the token's scopes.
    #[error("scopes withdrawn from the user")]
    ScopesWithdrawn,
    /// The key set could not be fetched (external mode).
    #[error("key set unavailable")]
    KeysUnavailable,
}

/// The claims of an access token Stockade issues (RFC 9068 shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// Issuer: the public URL.
    pub iss: String,
    /// Subject: the user.
    pub sub: String,
    /// Audience: the resource URL (`<public_url>/mcp`).
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Unique token id.
    pub jti: String,
    /// The OAuth client.
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The token family (one authorization), for revocation.
    pub fam: String,
}

/// The ES256 key, ready to sign and verify.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Selects jsonwebtoken's RustCrypto provider for the process (idempotent).
pub fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

impl SigningKey {
    /// Loads `<dir>/es256.pem`, creating the directory (0700) and a new key (0600)
    /// when there is none.
    pub fn load_or_create(dir: &Path) -> Result<SigningKey, KeyError> {
        let (pem, path) = Self::load_or_create_pem(dir)?;
        Self::from_pem(&pem).map_err(|message| KeyError::Invalid { path, message })
    }

    /// The PEM of `<dir>/es256.pem` (created as in
    /// [`load_or_create`](Self::load_or_create)), and that path.
    pub fn load_or_create_pem(dir: &Path) -> Result<(String, PathBuf), KeyError> {
        install_crypto_provider();
        let path = dir.join("es256.pem");
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                crate::fsutil::warn_if_exposed(&path, "the token signing key");
                Ok((pem, path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_private_dir(dir).map_err(io)?;
                let pem = Self::generate_pem();
                write_private(&path, pem.as_bytes()).map_err(io)?;
                tracing::info!(path = %path.display(), "generated a new ES256 signing key");
                Ok((pem, path))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A key from the PKCS#8 PEM of a P-256 private key.
    pub fn from_pem(pem: &str) -> Result<SigningKey, String> {
        install_crypto_provider();
        let key = p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?;
        Ok(Self::from_secret(&key))
    }

    /// The PKCS#8 PEM of a new random P-256 key.
    pub fn generate_pem() -> String {
        Self::generate_secret()
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding of a valid key")
            .to_string()
    }

    /// A fresh in-memory key (tests).
    pub fn generate() -> SigningKey {
        install_crypto_provider();
        Self::from_secret(&Self::generate_secret())
    }

    fn generate_secret() -> p256::SecretKey {
        loop {
            let bytes = super::random_bytes::<32>();
            if let Ok(k) = p256::SecretKey::from_slice(&bytes) {
                return k;
            }
        }
    }

    fn from_secret(key: &p256::SecretKey) -> SigningKey {
        let point = key.public_key().to_encoded_point(false);
        let x = B64.encode(point.x().expect("uncompressed point has x"));
        let y = B64.encode(point.y().expect("uncompressed point has y"));
        // RFC 7638 thumbprint: the required members in lexicographic order.
        let thumb = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = B64.encode(Sha256::digest(thumb.as_bytes()));
        let der = key.to_pkcs8_der().expect("PKCS#8 encoding of a valid key");
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let decoding = DecodingKey::from_ec_components(&x, &y).expect("valid P-256 coordinates");
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": kid, "use": "sig", "alg": "ES256",
        });
        SigningKey {
            kid,
            encoding,
            decoding,
            jwk,
        }
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document (`/jwks.json`) of this key alone.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk.clone()] })
    }

    /// This key's public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `claims` as an access token (`typ: at+jwt`).
    pub fn sign(&self, claims: &AccessClaims) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("ES256 signing cannot fail")
    }

    /// Verifies a token: ES256 with this key, `iss`, `aud`, `exp` and `nbf`
    /// when present (30 s leeway).
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, TokenRejection> {
        let header = check_header(token, &[Algorithm::ES256])?;
        if header.kid.as_deref().is_some_and(|k| k != self.kid) {
            return Err(TokenRejection::UnknownKey);
        }
        decode_with(
            token,
            &self.decoding,
            Algorithm::ES256,
            issuer,
            audience,
            true,
        )
    }

    /// Like [`verify`](Self::verify) but accepts expired tokens (for revocation).
    pub fn verify_ignoring_expiry(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, TokenRejection> {
        check_header(token, &[Algorithm::ES256])?;
        decode_with(
            token,
            &self.decoding,
            Algorithm::ES256,
            issuer,
            audience,
            false,
        )
    }
}

/// Reads the header and refuses algorithms outside `allowed` (and `none`, which
/// jsonwebtoken cannot even represent).
pub(crate) fn check_header(token: &str, allowed: &[Algorithm]) -> Result<Header, TokenRejection> {
    if token.split('.').count() != 3 {
        return Err(TokenRejection::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::Json(_) => {
            // An unknown `alg` (e.g. "none") fails to deserialize.
            if raw_alg(token).is_some() {
                TokenRejection::Algorithm
            } else {
                TokenRejection::Malformed
            }
        }
        _ => TokenRejection::Malformed,
    })?;
    if !allowed.contains(&header.alg) {
        return Err(TokenRejection::Algorithm);
    }
    Ok(header)
}

fn raw_alg(token: &str) -> Option<String> {
    let head = token.split('.').next()?;
    let bytes = B64.decode(head.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// Decodes and validates `token` with `key`: signature, `iss`, `aud`, `exp`
/// (unless `validate_exp` is false) and `nbf` when present, with 30 s leeway.
pub(crate) fn decode_with<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    issuer: &str,
    audience: &str,
    validate_exp: bool,
) -> Result<T, TokenRejection> {
    use jsonwebtoken::errors::ErrorKind as K;
    let mut v = Validation::new(alg);
    v.leeway = 30;
    v.validate_exp = validate_exp;
    v.validate_nbf = true;
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<T>(token, key, &v)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            K::ExpiredSignature => TokenRejection::Expired,
            K::InvalidAudience => TokenRejection::Audience,
            K::InvalidIssuer => TokenRejection::Issuer,
            K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidKeyFormat => {
                TokenRejection::Signature
            }
            K::InvalidAlgorithm | K::InvalidAlgorithmName => TokenRejection::Algorithm,
            K::ImmatureSignature => TokenRejection::NotYetValid,
            K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) | K::Json(_) => {
                TokenRejection::Claims
            }
            _ => TokenRejection::Malformed,
        })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600, durably (temp file, fsync, rename).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
