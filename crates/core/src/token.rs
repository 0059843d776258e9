//! Access tokens: HS256 JWTs minted with an API key/secret pair and verified locally.
//!
//! Like LiveKit's, a token names the API key as issuer (`iss`), the participant (`sub`), the space
//! it grants (`space`, or `*` for every space), the `role`, and its expiry (`exp`). Verification
//! needs nothing but the secret: no database on the join path.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{Identity, Role, SpaceId, UnixTime};

/// Which spaces a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SpaceScope {
    /// Every space on the node (`"*"`): for operators and the demo host.
    Any,
    /// One space.
    One(SpaceId),
}

impl SpaceScope {
    /// Whether the scope covers `space`.
    pub fn covers(&self, space: &SpaceId) -> bool {
        match self {
            SpaceScope::Any => true,
            SpaceScope::One(id) => id == space,
        }
    }
}

impl TryFrom<String> for SpaceScope {
    type Error = crate::IdError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        if raw == "*" { Ok(SpaceScope::Any) } else { SpaceId::new(raw).map(SpaceScope::One) }
    }
}

impl From<SpaceScope> for String {
    fn from(scope: SpaceScope) -> String {
        match scope {
            SpaceScope::Any => "*".to_owned(),
            SpaceScope::One(id) => id.into(),
        }
    }
}

/// The claims Townhall reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that minted it.
    pub iss: String,
    /// The participant.
    pub sub: Identity,
    /// The space(s) it grants.
    pub space: SpaceScope,
    /// The participant's role.
    pub role: Role,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// An operator of the node (`townhall token --operator`, the start-up token): the admin API,
    /// and every space whatever its room says. Never implied by a role or a `*` scope.
    #[serde(default, skip_serializing_if = "is_false")]
    pub op: bool,
    /// Minted by a node for someone who joined without a token: they count as anonymous (their
    /// queue, proof of work) wherever they present it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub anon: bool,
    /// A ticket the node minted to carry in URLs (listener role, one space, short-lived): the
    /// only kind of token accepted in a query string.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ticket: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Claims {
    /// Plain claims (no operator, anonymous or ticket flags) for `who` with `role` on `space`,
    /// valid for `ttl_secs` from `now`, issued under `api_key`.
    pub fn new(
        api_key: &str,
        who: Identity,
        role: Role,
        space: SpaceScope,
        now: UnixTime,
        ttl_secs: u64,
    ) -> Claims {
        Claims {
            iss: api_key.to_owned(),
            sub: who,
            space,
            role,
            iat: now.0,
            exp: now.0.saturating_add(ttl_secs),
            op: false,
            anon: false,
            ticket: false,
        }
    }

    /// Whether these claims make their holder an operator of the node.
    pub fn is_operator(&self) -> bool {
        self.op && self.space == SpaceScope::Any
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, wrong algorithm, or claims of the wrong shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not match the secret.
    #[error("token signature is invalid")]
    BadSignature,
    /// Signed by another API key.
    #[error("token was issued by an unknown API key")]
    UnknownIssuer,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// The token does not grant this space.
    #[error("token does not grant space {0}")]
    WrongSpace(SpaceId),
    /// Could not sign (a bug or a bad key).
    #[error("could not sign token: {0}")]
    Signing(String),
}

/// An API key and its secret: mints and verifies tokens.
#[derive(Clone)]
pub struct TokenKeys {
    api_key: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("api_key", &self.api_key).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// The longest token accepted, in bytes; longer input is refused before any parsing.
    pub const MAX_TOKEN_LEN: usize = 4096;

    /// Keys from an API key and its secret.
    pub fn new(api_key: impl Into<String>, secret: &[u8]) -> TokenKeys {
        let api_key = api_key.into();
        let mut validation = Validation::new(Algorithm::HS256);
        // Time is checked against the injected clock in `verify`, not jsonwebtoken's own.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        TokenKeys {
            api_key,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The API key that tokens name as issuer.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Signs any claims shape (HS256).
    pub(crate) fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Decodes and checks the signature of any claims shape (time and issuer are the caller's).
    pub(crate) fn decode_claims<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<T, TokenError> {
        if token.len() > Self::MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("token too long".into()));
        }
        jsonwebtoken::decode::<T>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed(e.to_string()),
            })
    }

    /// Mints a token for `who` with `role` on `space`, valid for `ttl_secs` from `now`.
    pub fn mint(
        &self,
        who: Identity,
        role: Role,
        space: SpaceScope,
        now: UnixTime,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        self.sign(&Claims::new(&self.api_key, who, role, space, now, ttl_secs))
    }

    /// Signs claims built by the caller (operator tokens, tickets); the issuer is set to this
    /// key.
    pub fn mint_claims(&self, mut claims: Claims) -> Result<String, TokenError> {
        claims.iss = self.api_key.clone();
        self.sign(&claims)
    }

    /// Verifies signature, issuer and expiry at `now`; returns the claims.
    pub fn verify(&self, token: &str, now: UnixTime) -> Result<Claims, TokenError> {
        let claims: Claims = self.decode_claims(token)?;
        if claims.iss != self.api_key {
            return Err(TokenError::UnknownIssuer);
        }
        if claims.exp <= now.0 {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Verifies a token and that it grants `space`.
    pub fn verify_for(
        &self,
        token: &str,
        space: &SpaceId,
        now: UnixTime,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify(token, now)?;
        if !claims.space.covers(space) {
            return Err(TokenError::WrongSpace(space.clone()));
        }
        Ok(claims)
    }
}

/// A waiting-room ticket: a place in a node's queue for a space. Signed like access tokens but
/// of a different shape (`typ` = `"wait"`), so neither can pass for the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitTicket {
    /// Always `"wait"`.
    pub typ: String,
    /// The API key that signed it.
    pub iss: String,
    /// The space it queues for.
    pub space: SpaceId,
    /// The place in the queue (ticket number).
    pub n: u64,
    /// The line: 0 for signed-in joiners, 1 for anonymous ones.
    #[serde(default)]
    pub lane: u8,
    /// Whose numbering `n` is: absent for the node's line (a node alone) or the cluster's one
    /// line; a node's id for the node's own line while the cluster's was out of reach. The
    /// same number in two numberings is two places.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The line's called mark its position was told against (the cluster's line): a door whose
    /// own read of the mark is older decides from this one, so the holder is never told a
    /// later place than before. Absent on tickets of a node's own line and older tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<u64>,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// The place a waiting-room ticket holds (see [`WaitTicket`] for each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitPlace {
    /// The space it queues for.
    pub space: SpaceId,
    /// The ticket number.
    pub n: u64,
    /// The line: 0 signed-in, 1 anonymous.
    pub lane: u8,
    /// The node whose own line numbered it (`None`: the one line, or a node alone).
    pub node: Option<String>,
    /// The line's called mark its position was told against, if the cluster's line.
    pub seen: Option<u64>,
}

impl TokenKeys {
    /// Signs a waiting-room ticket for `place` (number `n` of line `lane` in `space`'s queue,
    /// numbered by `node`'s own line or by the one line when `None`), valid `ttl_secs`.
    pub fn mint_wait(
        &self,
        place: WaitPlace,
        now: UnixTime,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        let WaitPlace { space, n, lane, node, seen } = place;
        let ticket = WaitTicket {
            typ: "wait".into(),
            iss: self.api_key.clone(),
            space,
            n,
            lane,
            node,
            seen,
            iat: now.0,
            exp: now.0.saturating_add(ttl_secs),
        };
        self.sign(&ticket)
    }

    /// Verifies a waiting-room ticket for `space` at `now`.
    pub fn verify_wait(
        &self,
        ticket: &str,
        space: &SpaceId,
        now: UnixTime,
    ) -> Result<WaitTicket, TokenError> {
        let t: WaitTicket = self.decode_claims(ticket)?;
        if t.typ != "wait" {
            return Err(TokenError::Malformed("not a waiting-room ticket".into()));
        }
        if t.iss != self.api_key {
            return Err(TokenError::UnknownIssuer);
        }
        if t.exp <= now.0 {
            return Err(TokenError::Expired);
        }
        if &t.space != space {
            return Err(TokenError::WrongSpace(space.clone()));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> TokenKeys {
        TokenKeys::new("key", b"a secret long enough for HS256 use")
    }

    fn who() -> Identity {
        Identity::new("alice").expect("identity")
    }

    fn space(s: &str) -> SpaceId {
        SpaceId::new(s).expect("id")
    }

    #[test]
    fn minted_tokens_verify_until_expiry() {
        let k = keys();
        let t = k.mint(who(), Role::Speaker, SpaceScope::One(space("a")), UnixTime(100), 60);
        let t = t.expect("mint");
        let c = k.verify_for(&t, &space("a"), UnixTime(159)).expect("valid");
        assert_eq!((c.sub, c.role, c.exp), (who(), Role::Speaker, 160));
        assert_eq!(k.verify(&t, UnixTime(160)), Err(TokenError::Expired));
        let wrong = k.verify_for(&t, &space("b"), UnixTime(120));
        assert_eq!(wrong, Err(TokenError::WrongSpace(space("b"))));
    }

    #[test]
    fn flags_round_trip_and_plain_tokens_carry_none() {
        let k = keys();
        let plain = k.mint(who(), Role::Host, SpaceScope::Any, UnixTime(0), 60).expect("mint");
        let c = k.verify(&plain, UnixTime(1)).expect("valid");
        assert!(!c.op && !c.anon && !c.ticket && !c.is_operator());
        let op = Claims {
            op: true,
            ..Claims::new("x", who(), Role::Host, SpaceScope::Any, UnixTime(0), 60)
        };
        let c = k.verify(&k.mint_claims(op.clone()).expect("mint"), UnixTime(1)).expect("valid");
        assert!(c.is_operator());
        assert_eq!(c.iss, "key", "the issuer is the signing key's");
        let one = Claims { space: SpaceScope::One(space("a")), ..op };
        assert!(!one.is_operator(), "an operator flag on a one-space token is not an operator");
    }

    #[test]
    fn wildcard_scope_covers_every_space() {
        let k = keys();
        let t = k.mint(who(), Role::Host, SpaceScope::Any, UnixTime(0), 60).expect("mint");
        assert!(k.verify_for(&t, &space("anything"), UnixTime(1)).is_ok());
    }

    #[test]
    fn other_secrets_and_issuers_are_refused() {
        let t = keys().mint(who(), Role::Host, SpaceScope::Any, UnixTime(0), 60).expect("mint");
        let other_secret = TokenKeys::new("key", b"another secret entirely, also long");
        assert_eq!(other_secret.verify(&t, UnixTime(1)), Err(TokenError::BadSignature));
        let other_key = TokenKeys::new("other", b"a secret long enough for HS256 use");
        assert_eq!(other_key.verify(&t, UnixTime(1)), Err(TokenError::UnknownIssuer));
    }

    #[test]
    fn tampered_claims_are_refused() {
        let k = keys();
        let t = k.mint(who(), Role::Listener, SpaceScope::Any, UnixTime(0), 60).expect("mint");
        let parts: Vec<&str> = t.split('.').collect();
        let forged_claims =
            r#"{"iss":"key","sub":"alice","space":"*","role":"host","iat":0,"exp":60}"#;
        use base64_like::encode_url_no_pad;
        let forged =
            format!("{}.{}.{}", parts[0], encode_url_no_pad(forged_claims.as_bytes()), parts[2]);
        assert_eq!(k.verify(&forged, UnixTime(1)), Err(TokenError::BadSignature));
    }

    #[test]
    fn wait_tickets_and_access_tokens_cannot_pass_for_each_other() {
        let k = keys();
        let place = |node: Option<&str>, seen| WaitPlace {
            space: space("a"),
            n: 7,
            lane: 1,
            node: node.map(str::to_owned),
            seen,
        };
        let wait = k.mint_wait(place(None, Some(5)), UnixTime(0), 60).expect("mint");
        let t = k.verify_wait(&wait, &space("a"), UnixTime(1)).expect("valid");
        assert_eq!((t.n, t.lane, t.node, t.seen), (7, 1, None, Some(5)));
        let own = k.mint_wait(place(Some("edge-1"), None), UnixTime(0), 60).expect("mint");
        let t = k.verify_wait(&own, &space("a"), UnixTime(1)).expect("valid");
        assert_eq!((t.node.as_deref(), t.seen), (Some("edge-1"), None));
        assert_eq!(
            k.verify_wait(&wait, &space("b"), UnixTime(1)),
            Err(TokenError::WrongSpace(space("b")))
        );
        assert_eq!(k.verify_wait(&wait, &space("a"), UnixTime(60)), Err(TokenError::Expired));
        assert!(k.verify(&wait, UnixTime(1)).is_err(), "a ticket is not an access token");
        let access = k.mint(who(), Role::Host, SpaceScope::Any, UnixTime(0), 60).expect("mint");
        assert!(
            k.verify_wait(&access, &space("a"), UnixTime(1)).is_err(),
            "a token is not a ticket"
        );
        let other = TokenKeys::new("key", b"another secret entirely, also long");
        assert_eq!(
            other.verify_wait(&wait, &space("a"), UnixTime(1)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn oversize_tokens_are_refused_before_parsing() {
        let long = "a".repeat(TokenKeys::MAX_TOKEN_LEN + 1);
        assert!(matches!(keys().verify(&long, UnixTime(0)), Err(TokenError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_verifies_or_panics(raw in ".{0,600}") {
            prop_assert!(keys().verify(&raw, UnixTime(0)).is_err());
        }

        #[test]
        fn arbitrary_jwt_shaped_text_never_verifies(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,80}") {
            let raw = format!("{a}.{b}.{c}");
            prop_assert!(keys().verify(&raw, UnixTime(0)).is_err());
        }
    }

    /// Minimal URL-safe base64 for the tamper test (keeps base64 out of the dependencies).
    mod base64_like {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

        pub(super) fn encode_url_no_pad(input: &[u8]) -> String {
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                let chars = chunk.len() + 1;
                for i in 0..chars {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
