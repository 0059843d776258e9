//! Who is on stage (publishing audio) in a space, and the rules for taking a seat.

use std::collections::BTreeMap;

use crate::{Identity, Role};

/// Why someone could not take the stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// The role does not allow speaking.
    #[error("role {0} may not speak")]
    NotAllowed(Role),
    /// Every seat is taken.
    #[error("the stage is full ({0} speakers)")]
    Full(usize),
}

/// What taking a seat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seated {
    /// A new speaker joined the stage.
    New,
    /// The identity was already on stage (a reconnect); the new session replaces the old one.
    Replaced,
}

/// The speakers of one space, keyed by identity, bounded by a seat count.
#[derive(Debug, Clone)]
pub struct Stage {
    seats: usize,
    speakers: BTreeMap<Identity, Role>,
}

impl Stage {
    /// The default number of seats (host, co-hosts and speakers together), as on X Spaces.
    pub const DEFAULT_SEATS: usize = 13;

    /// An empty stage with `seats` seats.
    pub fn new(seats: usize) -> Stage {
        Stage { seats, speakers: BTreeMap::new() }
    }

    /// Seats `who` with `role`, or says why not. A reconnect keeps the seat.
    pub fn take_seat(&mut self, who: Identity, role: Role) -> Result<Seated, StageError> {
        if !role.can_speak() {
            return Err(StageError::NotAllowed(role));
        }
        if let Some(existing) = self.speakers.get_mut(&who) {
            *existing = role;
            return Ok(Seated::Replaced);
        }
        if self.speakers.len() >= self.seats {
            return Err(StageError::Full(self.seats));
        }
        self.speakers.insert(who, role);
        Ok(Seated::New)
    }

    /// Frees `who`'s seat; returns whether they were on stage.
    pub fn leave(&mut self, who: &Identity) -> bool {
        self.speakers.remove(who).is_some()
    }

    /// Speakers on stage with their roles.
    pub fn speakers(&self) -> impl Iterator<Item = (&Identity, Role)> {
        self.speakers.iter().map(|(who, role)| (who, *role))
    }

    /// How many are on stage.
    pub fn len(&self) -> usize {
        self.speakers.len()
    }

    /// Nobody on stage.
    pub fn is_empty(&self) -> bool {
        self.speakers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: usize) -> Identity {
        Identity::new(format!("p{n}")).expect("identity")
    }

    #[test]
    fn listeners_cannot_take_the_stage() {
        let mut s = Stage::new(13);
        assert_eq!(s.take_seat(id(0), Role::Listener), Err(StageError::NotAllowed(Role::Listener)));
        for role in [Role::Host, Role::Cohost, Role::Speaker] {
            assert_eq!(s.take_seat(id(role as usize + 1), role), Ok(Seated::New));
        }
    }

    #[test]
    fn seats_are_bounded_but_reconnects_keep_theirs() {
        let mut s = Stage::new(2);
        assert_eq!(s.take_seat(id(1), Role::Speaker), Ok(Seated::New));
        assert_eq!(s.take_seat(id(2), Role::Speaker), Ok(Seated::New));
        assert_eq!(s.take_seat(id(3), Role::Speaker), Err(StageError::Full(2)));
        assert_eq!(s.take_seat(id(2), Role::Host), Ok(Seated::Replaced));
        assert!(s.leave(&id(1)));
        assert!(!s.leave(&id(1)));
        assert_eq!(s.take_seat(id(3), Role::Speaker), Ok(Seated::New));
    }

    proptest! {
        #[test]
        fn never_more_speakers_than_seats(ops in proptest::collection::vec((0usize..20, any::<bool>()), 0..200)) {
            let mut s = Stage::new(Stage::DEFAULT_SEATS);
            for (who, join) in ops {
                if join {
                    let _ = s.take_seat(id(who), Role::Speaker);
                } else {
                    s.leave(&id(who));
                }
                prop_assert!(s.len() <= Stage::DEFAULT_SEATS);
            }
        }
    }
}
