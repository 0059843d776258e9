//! The node's directory of spaces: create, look up, list, start, end.

use std::collections::BTreeMap;

use crate::{Identity, NewSpace, Space, SpaceError, SpaceId, SpaceState, UnixTime};

/// Why a directory operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// No space with that id.
    #[error("no space with id {0:?}")]
    NotFound(SpaceId),
    /// The requested id is taken.
    #[error("a space with id {0:?} already exists")]
    Exists(SpaceId),
    /// The directory holds as many open spaces as it may.
    #[error("this node already holds {0} open spaces")]
    Full(usize),
    /// The space refused the operation.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// No unused id could be derived from the title (ask for one explicitly).
    #[error("no free id derived from this title; choose an id")]
    NoFreeId,
}

/// All spaces known to this node, bounded in size.
///
/// Open (scheduled or live) spaces are capped at `max_open`; ended spaces are kept for listing
/// up to `max_ended`, oldest forgotten first.
#[derive(Debug, Clone)]
pub struct Directory {
    spaces: BTreeMap<SpaceId, Space>,
    max_open: usize,
    max_ended: usize,
}

impl Directory {
    /// An empty directory with the given bounds.
    pub fn new(max_open: usize, max_ended: usize) -> Directory {
        Directory { spaces: BTreeMap::new(), max_open, max_ended }
    }

    /// Creates a space hosted by `host`. Without a requested id, one is derived from the title.
    pub fn create(
        &mut self,
        req: NewSpace,
        host: Identity,
        now: UnixTime,
    ) -> Result<&Space, DirectoryError> {
        self.create_avoiding(req, host, now, |_| false)
    }

    /// Like [`create`](Self::create), but ids for which `used_before` holds (spaces this
    /// directory has forgotten but whose recordings, bans or logs are still kept elsewhere) are
    /// never given out again: a requested one is refused as taken, a derived one skipped.
    pub fn create_avoiding(
        &mut self,
        mut req: NewSpace,
        host: Identity,
        now: UnixTime,
        used_before: impl Fn(&SpaceId) -> bool,
    ) -> Result<&Space, DirectoryError> {
        let open = self.spaces.values().filter(|s| s.state != SpaceState::Ended).count();
        if open >= self.max_open {
            return Err(DirectoryError::Full(self.max_open));
        }
        let id = match req.id.take() {
            Some(id) if self.spaces.contains_key(&id) || used_before(&id) => {
                return Err(DirectoryError::Exists(id));
            }
            Some(id) => id,
            None => self.fresh_id(&req.title, &used_before).ok_or(DirectoryError::NoFreeId)?,
        };
        let space = Space::create(id.clone(), req, host, now)?;
        self.spaces.insert(id.clone(), space);
        self.forget_old_ended();
        self.spaces.get(&id).ok_or(DirectoryError::NotFound(id))
    }

    /// Puts back a space remembered from before a restart, as it was (any state). Refused if
    /// the id is taken; open spaces count against the bound like new ones.
    pub fn restore(&mut self, space: Space) -> Result<&Space, DirectoryError> {
        if self.spaces.contains_key(&space.id) {
            return Err(DirectoryError::Exists(space.id));
        }
        let open = self.spaces.values().filter(|s| s.state != SpaceState::Ended).count();
        if space.state != SpaceState::Ended && open >= self.max_open {
            return Err(DirectoryError::Full(self.max_open));
        }
        let id = space.id.clone();
        self.spaces.insert(id.clone(), space);
        self.forget_old_ended();
        self.get(&id)
    }

    /// Forgets a space entirely (the demo, re-created at every start).
    pub fn forget(&mut self, id: &SpaceId) -> Option<Space> {
        self.spaces.remove(id)
    }

    /// The space with this id.
    pub fn get(&self, id: &SpaceId) -> Result<&Space, DirectoryError> {
        self.spaces.get(id).ok_or_else(|| DirectoryError::NotFound(id.clone()))
    }

    /// All spaces: live ones first (by id), then scheduled ones soonest first, then ended ones
    /// most recent first.
    pub fn list(&self) -> Vec<&Space> {
        let mut all: Vec<&Space> = self.spaces.values().collect();
        all.sort_by_key(|s| listing_order(s));
        all
    }

    /// Starts a scheduled space.
    pub fn start(&mut self, id: &SpaceId, now: UnixTime) -> Result<&Space, DirectoryError> {
        let space = self.spaces.get_mut(id).ok_or_else(|| DirectoryError::NotFound(id.clone()))?;
        space.start(now)?;
        Ok(space)
    }

    /// Ends a space.
    pub fn end(&mut self, id: &SpaceId, now: UnixTime) -> Result<&Space, DirectoryError> {
        let space = self.spaces.get_mut(id).ok_or_else(|| DirectoryError::NotFound(id.clone()))?;
        space.end(now)?;
        let id = id.clone();
        self.forget_old_ended();
        self.get(&id)
    }

    /// The title's slug, or the slug numbered 2, 3, ... up to a bound (so a store that calls
    /// everything used cannot spin this forever).
    fn fresh_id(&self, title: &str, used_before: &impl Fn(&SpaceId) -> bool) -> Option<SpaceId> {
        let base = slug(title);
        (1..=10_000)
            .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
            .filter_map(|candidate| SpaceId::new(candidate).ok())
            .find(|id| !self.spaces.contains_key(id) && !used_before(id))
    }

    fn forget_old_ended(&mut self) {
        let mut ended: Vec<(UnixTime, SpaceId)> = self
            .spaces
            .values()
            .filter(|s| s.state == SpaceState::Ended)
            .map(|s| (s.ended_at.unwrap_or(s.created_at), s.id.clone()))
            .collect();
        if ended.len() <= self.max_ended {
            return;
        }
        ended.sort();
        let excess = ended.len() - self.max_ended;
        for (_, id) in ended.into_iter().take(excess) {
            self.spaces.remove(&id);
        }
    }
}

/// Lowercase ASCII letters and digits of `title`, words joined by '-', at most 48 characters.
fn slug(title: &str) -> String {
    let mut out = String::new();
    for word in title.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
        if out.len() + word.len() + 1 > 48 {
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    if out.is_empty() { "space".to_owned() } else { out }
}

/// Where a space comes in a listing: live ones first, then scheduled ones soonest first, then
/// ended ones most recent first (ties: by id, as a stable sort of spaces in id order leaves them).
pub fn listing_order(s: &Space) -> (u8, u64) {
    match s.state {
        SpaceState::Live => (0, 0),
        SpaceState::Scheduled => (1, s.scheduled_for.map_or(u64::MAX, |t| t.0)),
        SpaceState::Ended => (2, u64::MAX - s.ended_at.map_or(0, |t| t.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_used_before_are_never_given_out_again() {
        let mut d = Directory::new(10, 10);
        let host = Identity::new("h").expect("id");
        let used = |id: &SpaceId| id.as_str() == "town-hall" || id.as_str() == "old";
        let req = |id: Option<&str>| NewSpace {
            id: id.map(|i| SpaceId::new(i).expect("id")),
            title: "Town hall".into(),
            description: None,
            live: true,
            public: true,
            scheduled_for: None,
        };
        let derived = d.create_avoiding(req(None), host.clone(), UnixTime(0), used).expect("ok");
        assert_eq!(derived.id.as_str(), "town-hall-2", "a forgotten space's id is skipped");
        let taken = d.create_avoiding(req(Some("old")), host, UnixTime(0), used);
        assert!(matches!(taken, Err(DirectoryError::Exists(_))));
    }
    use proptest::prelude::*;

    fn host() -> Identity {
        Identity::new("host").expect("identity")
    }

    fn new(title: &str) -> NewSpace {
        NewSpace { title: title.into(), public: true, ..NewSpace::default() }
    }

    #[test]
    fn ids_derive_from_titles_and_stay_unique() {
        let mut d = Directory::new(10, 10);
        let a = d.create(new("Launch Day!"), host(), UnixTime(1)).expect("a").id.clone();
        let b = d.create(new("Launch day"), host(), UnixTime(1)).expect("b").id.clone();
        let c = d.create(new("¿¿"), host(), UnixTime(1)).expect("c").id.clone();
        assert_eq!((a.as_str(), b.as_str(), c.as_str()), ("launch-day", "launch-day-2", "space"));
    }

    #[test]
    fn explicit_ids_must_be_free() {
        let mut d = Directory::new(10, 10);
        let req = NewSpace { id: Some(SpaceId::new("x").expect("id")), ..new("X") };
        d.create(req.clone(), host(), UnixTime(1)).expect("first");
        assert!(matches!(d.create(req, host(), UnixTime(1)), Err(DirectoryError::Exists(_))));
    }

    #[test]
    fn open_spaces_are_capped_and_ended_ones_pruned() {
        let mut d = Directory::new(2, 1);
        let a = d.create(new("a"), host(), UnixTime(1)).expect("a").id.clone();
        let b = d.create(new("b"), host(), UnixTime(1)).expect("b").id.clone();
        assert!(matches!(d.create(new("c"), host(), UnixTime(1)), Err(DirectoryError::Full(2))));
        d.end(&a, UnixTime(2)).expect("end a");
        d.end(&b, UnixTime(3)).expect("end b");
        assert!(d.get(&a).is_err(), "oldest ended space is forgotten");
        assert_eq!(d.get(&b).expect("b").state, SpaceState::Ended);
    }

    #[test]
    fn list_puts_live_first() {
        let mut d = Directory::new(10, 10);
        d.create(new("a"), host(), UnixTime(1)).expect("a");
        let live = NewSpace { live: true, ..new("b") };
        d.create(live, host(), UnixTime(1)).expect("b");
        let states: Vec<SpaceState> = d.list().iter().map(|s| s.state).collect();
        assert_eq!(states, vec![SpaceState::Live, SpaceState::Scheduled]);
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let mut d = Directory::new(1, 1);
        let id = SpaceId::new("nope").expect("id");
        assert!(matches!(d.start(&id, UnixTime(0)), Err(DirectoryError::NotFound(_))));
        assert!(matches!(d.end(&id, UnixTime(0)), Err(DirectoryError::NotFound(_))));
    }

    proptest! {
        #[test]
        fn slugs_are_always_valid_ids(title in ".{0,300}") {
            prop_assert!(SpaceId::new(slug(&title)).is_ok());
        }
    }
}
