//! A space and its life cycle: scheduled → live → ended.

use serde::{Deserialize, Serialize};

use crate::{Identity, SpaceId, UnixTime};

/// Where a space is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpaceState {
    /// Created, not started yet.
    Scheduled,
    /// On air.
    Live,
    /// Over; nothing more will be heard.
    Ended,
}

/// What a creator supplies for a new space.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSpace {
    /// The wanted id; derived from the title when absent.
    #[serde(default)]
    pub id: Option<SpaceId>,
    /// Shown in lists; 1 to 200 characters.
    pub title: String,
    /// Optional longer text, up to 2,000 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// When the space is meant to start; informational.
    #[serde(default)]
    pub scheduled_for: Option<UnixTime>,
    /// Start live at once instead of scheduled.
    #[serde(default)]
    pub live: bool,
    /// Anyone may listen without a token (default true).
    #[serde(default = "default_true")]
    pub public: bool,
}

fn default_true() -> bool {
    true
}

/// A space: one conversation with a host, speakers and listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// Unique id, used in URLs.
    pub id: SpaceId,
    /// Shown in lists.
    pub title: String,
    /// Optional longer text.
    pub description: Option<String>,
    /// Who created it.
    pub host: Identity,
    /// Scheduled, live or ended.
    pub state: SpaceState,
    /// Anyone may listen without a token.
    pub public: bool,
    /// When it was created.
    pub created_at: UnixTime,
    /// When it is meant to start, if scheduled.
    pub scheduled_for: Option<UnixTime>,
    /// When it went live.
    pub started_at: Option<UnixTime>,
    /// When it ended.
    pub ended_at: Option<UnixTime>,
}

/// A space operation that its current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    /// Start or end asked of a space in a state that does not allow it.
    #[error("space is {from:?}; cannot {action}")]
    InvalidTransition {
        /// The current state.
        from: SpaceState,
        /// What was asked.
        action: &'static str,
    },
    /// A field of a new space is out of bounds.
    #[error("{0}")]
    Invalid(&'static str),
}

impl Space {
    /// The longest title, in characters.
    pub const MAX_TITLE: usize = 200;
    /// The longest description, in characters.
    pub const MAX_DESCRIPTION: usize = 2_000;
    /// How far ahead a space may be scheduled, in seconds (a year).
    pub const MAX_SCHEDULE_AHEAD_SECS: u64 = 366 * 86_400;

    /// Builds a space from a request, validating its fields.
    pub fn create(
        id: SpaceId,
        req: NewSpace,
        host: Identity,
        now: UnixTime,
    ) -> Result<Space, SpaceError> {
        let title = req.title.trim().to_owned();
        if title.is_empty() || title.chars().count() > Self::MAX_TITLE {
            return Err(SpaceError::Invalid("title must be 1 to 200 characters"));
        }
        if let Some(d) = &req.description
            && d.chars().count() > Self::MAX_DESCRIPTION
        {
            return Err(SpaceError::Invalid("description must be at most 2000 characters"));
        }
        if let Some(at) = req.scheduled_for
            && !req.live
        {
            if at < now {
                return Err(SpaceError::Invalid("scheduled_for must not be in the past"));
            }
            if at.0 - now.0 > Self::MAX_SCHEDULE_AHEAD_SECS {
                return Err(SpaceError::Invalid("scheduled_for must be within a year"));
            }
        }
        let mut space = Space {
            id,
            title,
            description: req.description,
            host,
            state: SpaceState::Scheduled,
            public: req.public,
            created_at: now,
            scheduled_for: req.scheduled_for,
            started_at: None,
            ended_at: None,
        };
        if req.live {
            space.start(now)?;
        }
        Ok(space)
    }

    /// Goes live. Only a scheduled space can start.
    pub fn start(&mut self, now: UnixTime) -> Result<(), SpaceError> {
        match self.state {
            SpaceState::Scheduled => {
                self.state = SpaceState::Live;
                self.started_at = Some(now);
                Ok(())
            }
            from => Err(SpaceError::InvalidTransition { from, action: "start" }),
        }
    }

    /// Ends the space, live or scheduled. Ending twice is an error.
    pub fn end(&mut self, now: UnixTime) -> Result<(), SpaceError> {
        match self.state {
            SpaceState::Scheduled | SpaceState::Live => {
                self.state = SpaceState::Ended;
                self.ended_at = Some(now);
                Ok(())
            }
            from => Err(SpaceError::InvalidTransition { from, action: "end" }),
        }
    }

    /// On air.
    pub fn is_live(&self) -> bool {
        self.state == SpaceState::Live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_must_be_ahead_and_within_a_year() {
        let req = |at| NewSpace {
            title: "t".into(),
            scheduled_for: Some(UnixTime(at)),
            ..NewSpace::default()
        };
        let id = || SpaceId::new("s").expect("id");
        let host = || Identity::new("h").expect("host");
        let now = UnixTime(1_000);
        assert!(Space::create(id(), req(999), host(), now).is_err(), "past");
        assert!(Space::create(id(), req(1_000), host(), now).is_ok(), "now");
        let year = Space::MAX_SCHEDULE_AHEAD_SECS;
        assert!(Space::create(id(), req(1_000 + year), host(), now).is_ok());
        assert!(Space::create(id(), req(1_001 + year), host(), now).is_err(), "too far");
        let live = NewSpace { live: true, ..req(1) };
        assert!(
            Space::create(id(), live, host(), now).is_ok(),
            "a live start ignores the schedule"
        );
    }

    fn space(live: bool) -> Space {
        let req = NewSpace { title: "Town hall".into(), live, public: true, ..NewSpace::default() };
        Space::create(
            SpaceId::new("t").expect("id"),
            req,
            Identity::new("h").expect("identity"),
            UnixTime(10),
        )
        .expect("space")
    }

    #[test]
    fn life_cycle() {
        let mut s = space(false);
        assert_eq!(s.state, SpaceState::Scheduled);
        s.start(UnixTime(20)).expect("start");
        assert_eq!((s.state, s.started_at), (SpaceState::Live, Some(UnixTime(20))));
        assert!(s.start(UnixTime(21)).is_err(), "cannot start twice");
        s.end(UnixTime(30)).expect("end");
        assert_eq!((s.state, s.ended_at), (SpaceState::Ended, Some(UnixTime(30))));
        assert!(s.end(UnixTime(31)).is_err(), "cannot end twice");
        assert!(s.start(UnixTime(32)).is_err(), "cannot restart");
    }

    #[test]
    fn scheduled_space_can_end_without_starting() {
        let mut s = space(false);
        s.end(UnixTime(11)).expect("end");
        assert_eq!(s.started_at, None);
    }

    #[test]
    fn live_flag_starts_at_creation() {
        let s = space(true);
        assert!(s.is_live());
        assert_eq!(s.started_at, Some(UnixTime(10)));
    }

    #[test]
    fn titles_are_validated() {
        let id = SpaceId::new("t").expect("id");
        let host = Identity::new("h").expect("identity");
        for title in ["", "   ", &"x".repeat(201)] {
            let req = NewSpace { title: title.to_owned(), ..NewSpace::default() };
            assert!(Space::create(id.clone(), req, host.clone(), UnixTime(0)).is_err());
        }
    }
}
