//! Roles in a space and what each may do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A participant's role in a space, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Created the space; runs it.
    Host,
    /// Helps the host run the space.
    Cohost,
    /// May publish audio.
    Speaker,
    /// Listens.
    Listener,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 4] = [Role::Host, Role::Cohost, Role::Speaker, Role::Listener];

    /// May publish audio into the space.
    pub fn can_speak(self) -> bool {
        matches!(self, Role::Host | Role::Cohost | Role::Speaker)
    }

    /// May create, start and end spaces.
    pub fn can_manage(self) -> bool {
        matches!(self, Role::Host | Role::Cohost)
    }

    /// The role's name as used in tokens and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Cohost => "cohost",
            Role::Speaker => "speaker",
            Role::Listener => "listener",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text did not name a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected host, cohost, speaker or listener")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_matrix() {
        let table = [
            (Role::Host, true, true),
            (Role::Cohost, true, true),
            (Role::Speaker, true, false),
            (Role::Listener, false, false),
        ];
        for (role, speak, manage) in table {
            assert_eq!(role.can_speak(), speak, "{role} speak");
            assert_eq!(role.can_manage(), manage, "{role} manage");
        }
    }

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
