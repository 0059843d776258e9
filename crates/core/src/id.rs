//! Validated identifiers: space ids and participant identities.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty, or longer than the limit.
    #[error("{what} must be 1 to {max} characters long")]
    Length {
        /// Which kind of identifier.
        what: &'static str,
        /// The maximum length.
        max: usize,
    },
    /// A character outside the allowed set.
    #[error("{what} may only contain {allowed}")]
    Charset {
        /// Which kind of identifier.
        what: &'static str,
        /// The allowed characters, for the message.
        allowed: &'static str,
    },
}

/// A space's id: 1 to 64 of `[a-z0-9-]`, safe in URLs and file names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpaceId(String);

impl SpaceId {
    /// The longest accepted id.
    pub const MAX_LEN: usize = 64;

    /// Validates and wraps an id.
    pub fn new(raw: impl Into<String>) -> Result<SpaceId, IdError> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(IdError::Length { what: "space id", max: Self::MAX_LEN });
        }
        let ok = raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(IdError::Charset { what: "space id", allowed: "a-z, 0-9 and '-'" });
        }
        Ok(SpaceId(raw))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SpaceId {
    type Error = IdError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        SpaceId::new(raw)
    }
}

impl From<SpaceId> for String {
    fn from(id: SpaceId) -> String {
        id.0
    }
}

impl fmt::Display for SpaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who someone is, as the embedding app names them: 1 to 128 printable characters, no controls.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identity(String);

impl Identity {
    /// The longest accepted identity, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates and wraps an identity.
    pub fn new(raw: impl Into<String>) -> Result<Identity, IdError> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(IdError::Length { what: "identity", max: Self::MAX_LEN });
        }
        if raw.chars().any(char::is_control) {
            return Err(IdError::Charset { what: "identity", allowed: "printable characters" });
        }
        Ok(Identity(raw))
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Identity {
    type Error = IdError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Identity::new(raw)
    }
}

impl From<Identity> for String {
    fn from(id: Identity) -> String {
        id.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn space_ids_are_url_safe() {
        assert!(SpaceId::new("demo-1").is_ok());
        assert!(SpaceId::new("").is_err());
        assert!(SpaceId::new("Demo").is_err());
        assert!(SpaceId::new("a/b").is_err());
        assert!(SpaceId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn identities_refuse_control_characters() {
        assert!(Identity::new("alice@example").is_ok());
        assert!(Identity::new("al\nice").is_err());
        assert!(Identity::new("").is_err());
    }

    proptest! {
        #[test]
        fn accepted_space_ids_round_trip_through_json(raw in ".{0,80}") {
            if let Ok(id) = SpaceId::new(raw.clone()) {
                let json = serde_json::to_string(&id).expect("serialise");
                let back: SpaceId = serde_json::from_str(&json).expect("parse");
                prop_assert_eq!(back.as_str(), raw.as_str());
            } else {
                let json = serde_json::to_string(&raw).expect("serialise");
                prop_assert!(serde_json::from_str::<SpaceId>(&json).is_err());
            }
        }
    }
}
