//! Proof of work for anonymous joiners in attack mode: the node hands out a signed challenge;
//! the joiner finds a counter such that SHA-256(`challenge:counter`) starts with `difficulty`
//! zero bits. Cheap for one person's browser (about 2^difficulty hashes), expensive for a bot
//! army, and stateless for the node (the challenge is signed and expires). A challenge is bound
//! to one space, and [`TokenKeys::verify_pow`] returns its nonce so the node can refuse a second
//! use of the same solution (a fixed-memory replay filter at the edge).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{SpaceId, TokenError, TokenKeys, UnixTime};

/// The most leading zero bits a challenge may ask for.
pub const MAX_DIFFICULTY: u8 = 32;

/// A signed proof-of-work challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowChallenge {
    /// Always `"pow"`.
    pub typ: String,
    /// The API key that signed it.
    pub iss: String,
    /// Random, so solutions cannot be precomputed.
    pub nonce: u64,
    /// Leading zero bits required.
    pub difficulty: u8,
    /// The space it admits to.
    pub space: SpaceId,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// Why a proof of work was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    /// Not `challenge:counter`.
    #[error("proof of work must be `challenge:counter`")]
    Malformed,
    /// The challenge is not ours, or expired.
    #[error("challenge refused: {0}")]
    Challenge(#[from] TokenError),
    /// The hash does not have enough leading zero bits.
    #[error("the hash has {got} leading zero bits; {need} are required")]
    TooEasy {
        /// Bits found.
        got: u32,
        /// Bits required.
        need: u8,
    },
}

/// Leading zero bits of SHA-256(`challenge:counter`).
pub fn leading_zero_bits(challenge: &str, counter: u64) -> u32 {
    let digest = Sha256::new()
        .chain_update(challenge)
        .chain_update(b":")
        .chain_update(counter.to_string())
        .finalize();
    let mut bits = 0;
    for byte in digest {
        if byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// Finds a counter solving `challenge` at `difficulty` (what a client does).
pub fn solve(challenge: &str, difficulty: u8) -> u64 {
    (0..).find(|c| leading_zero_bits(challenge, *c) >= u32::from(difficulty)).unwrap_or(0)
}

impl TokenKeys {
    /// Signs a challenge of `difficulty` bits for joining `space`, valid `ttl_secs`.
    pub fn mint_pow(
        &self,
        space: SpaceId,
        nonce: u64,
        difficulty: u8,
        now: UnixTime,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        let claims = PowChallenge {
            typ: "pow".into(),
            iss: self.api_key().to_owned(),
            nonce,
            difficulty: difficulty.min(MAX_DIFFICULTY),
            space,
            exp: now.0.saturating_add(ttl_secs),
        };
        self.sign(&claims)
    }

    /// Checks a proof `challenge:counter` for joining `space` against at least `min_difficulty`
    /// bits at `now`; returns the challenge's nonce, which the caller admits once.
    pub fn verify_pow(
        &self,
        proof: &str,
        space: &SpaceId,
        min_difficulty: u8,
        now: UnixTime,
    ) -> Result<u64, PowError> {
        let (challenge, counter) = proof.rsplit_once(':').ok_or(PowError::Malformed)?;
        let counter: u64 = counter.parse().map_err(|_| PowError::Malformed)?;
        let claims: PowChallenge = self.decode_claims(challenge)?;
        if claims.typ != "pow" {
            return Err(PowError::Challenge(TokenError::Malformed("not a challenge".into())));
        }
        if claims.iss != self.api_key() {
            return Err(PowError::Challenge(TokenError::UnknownIssuer));
        }
        if claims.exp <= now.0 {
            return Err(PowError::Challenge(TokenError::Expired));
        }
        if &claims.space != space {
            return Err(PowError::Challenge(TokenError::WrongSpace(space.clone())));
        }
        let need = claims.difficulty.max(min_difficulty);
        let got = leading_zero_bits(challenge, counter);
        if got < u32::from(need) {
            return Err(PowError::TooEasy { got, need });
        }
        Ok(claims.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> TokenKeys {
        TokenKeys::new("key", b"a secret long enough for HS256 use")
    }

    fn space(s: &str) -> SpaceId {
        SpaceId::new(s).expect("id")
    }

    #[test]
    fn a_solved_challenge_verifies_and_a_lazy_one_does_not() {
        let k = keys();
        let challenge = k.mint_pow(space("a"), 42, 10, UnixTime(0), 60).expect("mint");
        let counter = solve(&challenge, 10);
        assert!(leading_zero_bits(&challenge, counter) >= 10);
        let proof = format!("{challenge}:{counter}");
        assert_eq!(k.verify_pow(&proof, &space("a"), 10, UnixTime(1)), Ok(42), "its nonce");
        assert_eq!(
            k.verify_pow(&proof, &space("b"), 10, UnixTime(1)),
            Err(PowError::Challenge(TokenError::WrongSpace(space("b")))),
            "bound to the space it was asked for"
        );
        let lazy = (0..).find(|c| leading_zero_bits(&challenge, *c) < 10).expect("an easy counter");
        assert!(matches!(
            k.verify_pow(&format!("{challenge}:{lazy}"), &space("a"), 10, UnixTime(1)),
            Err(PowError::TooEasy { .. })
        ));
        assert!(matches!(
            k.verify_pow(&format!("{challenge}:{counter}"), &space("a"), 10, UnixTime(60)),
            Err(PowError::Challenge(TokenError::Expired))
        ));
        assert!(
            matches!(
                k.verify_pow(&format!("{challenge}:{counter}"), &space("a"), 30, UnixTime(1)),
                Err(PowError::TooEasy { .. })
            ),
            "the node's minimum wins"
        );
        let other = TokenKeys::new("key", b"another secret entirely, also long");
        assert!(
            other
                .verify_pow(&format!("{challenge}:{counter}"), &space("a"), 10, UnixTime(1))
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_proofs_never_verify_or_panic(raw in ".{0,300}") {
            prop_assert!(keys().verify_pow(&raw, &space("a"), 8, UnixTime(0)).is_err());
        }
    }
}
