//! How an edge numbers the frames it relays (sans-IO): the origin's own numbers, passed on as
//! they are, so every edge of the cluster serves the same frame under the same number (WebSocket
//! `seq`, WHEP's RTP time, LL-HLS part names), also after an origin failover: origins number by
//! the space's program clock ([`townhall_media::ProgramClock`]), so a new origin's first frame is
//! ahead of anything an edge passed on, by the length of the outage.
//!
//! Only when a connection's first number would go back (a clock badly skewed between origins,
//! an older origin that numbers afresh from 0, an origin restarted under the same address) does
//! the edge renumber that origin's frames to follow on from the last it passed on: its listeners
//! never see the numbers go back, at the price of this edge numbering apart from the others
//! until the next origin.

/// Numbers further apart than this (half the `u32` range) are read as the later one being
/// behind: numbers wrap (after about 994 days).
const HALF: u32 = 1 << 31;

/// Whether frame number `next` comes after `last` (wrapping).
pub(crate) fn ahead(next: u32, last: u32) -> bool {
    let d = next.wrapping_sub(last);
    d != 0 && d < HALF
}

/// An edge's numbering of one space's relayed frames, across connections and origins.
#[derive(Debug, Default)]
pub(crate) struct Numbering {
    /// Added to the origin's numbers (0: passed on as they are).
    offset: u32,
    /// The last number passed on here.
    last_out: Option<u32>,
    /// The next frame is a connection's first: how to number it is decided there.
    first: Option<Link>,
}

/// What the connection whose first frame is awaited is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// An origin not pulled from before: its own numbers are tried first.
    NewOrigin,
    /// The same origin again (after a broken link): its numbering goes on as before.
    SameOrigin,
}

/// How a connection's first frame was numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// As before (the origin's own numbers, or the same renumbering as before): the number
    /// passed on follows the last one, `jump` frames on (1: none missing).
    Followed {
        /// How far past the last number passed on (0: nothing was passed on before).
        jump: u32,
    },
    /// The origin's number `given` would have gone back: its frames now follow on from
    /// `after`, the last number passed on here.
    Renumbered {
        /// The origin's number.
        given: u32,
        /// The last number passed on here.
        after: u32,
    },
}

impl Numbering {
    /// A connection to an origin is being made (`new_origin`: another one than the last
    /// connection's): its first frame decides how its frames are numbered.
    pub(crate) fn connected(&mut self, new_origin: bool) {
        // A connection that ended before its first frame leaves a new origin's link pending.
        let was_new = self.first == Some(Link::NewOrigin);
        self.first = Some(if new_origin || was_new { Link::NewOrigin } else { Link::SameOrigin });
    }

    /// Whether the numbers of the connection's frames are known before its first frame: they
    /// are unless it is to a new origin.
    pub(crate) fn settled(&self) -> bool {
        self.first != Some(Link::NewOrigin)
    }

    /// The number for the origin's number `n` (as known: see [`Numbering::settled`]).
    pub(crate) fn number_of(&self, n: u32) -> u32 {
        n.wrapping_add(self.offset)
    }

    /// This node's number for the origin's frame `seq`; for a connection's first frame, also
    /// how it was decided.
    pub(crate) fn renumber(&mut self, seq: u32) -> (u32, Option<Start>) {
        let start = self.first.take().map(|link| self.start(link, seq));
        let out = seq.wrapping_add(self.offset);
        self.last_out = Some(out);
        (out, start)
    }

    /// Decides the offset at a connection's first frame: the origin's own numbers (a new
    /// origin) or the offset so far (the same one), unless that would go back.
    fn start(&mut self, link: Link, seq: u32) -> Start {
        let offset = match link {
            Link::NewOrigin => 0,
            Link::SameOrigin => self.offset,
        };
        let Some(last) = self.last_out else {
            self.offset = offset;
            return Start::Followed { jump: 0 };
        };
        let out = seq.wrapping_add(offset);
        if ahead(out, last) {
            self.offset = offset;
            return Start::Followed { jump: out.wrapping_sub(last) };
        }
        self.offset = last.wrapping_add(1).wrapping_sub(seq);
        Start::Renumbered { given: seq, after: last }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_new_origins_numbers_ahead_are_passed_on_as_they_are() {
        let mut n = Numbering::default();
        n.connected(true);
        assert_eq!(n.renumber(7), (7, Some(Start::Followed { jump: 0 })), "the first origin's own");
        assert_eq!(n.renumber(8), (8, None));
        // The origin died; the new one numbers by the program clock: 200 frames on.
        n.connected(true);
        assert!(!n.settled(), "a new origin's numbers are known at its first frame");
        assert_eq!(n.renumber(208), (208, Some(Start::Followed { jump: 200 })));
        assert!(n.settled());
        assert_eq!(n.renumber(209), (209, None));
    }

    #[test]
    fn numbers_that_would_go_back_follow_on_from_the_last_passed_on() {
        let mut n = Numbering::default();
        n.connected(true);
        n.renumber(7);
        n.renumber(8);
        // An older origin numbering afresh.
        n.connected(true);
        assert_eq!(n.renumber(0), (9, Some(Start::Renumbered { given: 0, after: 8 })));
        assert_eq!(n.renumber(1), (10, None));
        // The same origin after a broken link: its renumbering goes on (it resumed at 5).
        n.connected(false);
        assert!(n.settled(), "the same origin: the same numbering");
        assert_eq!(n.number_of(5), 14);
        assert_eq!(n.renumber(5), (14, Some(Start::Followed { jump: 4 })));
        // The next origin numbers by the clock again, ahead: its own numbers, as every edge.
        n.connected(true);
        assert_eq!(n.renumber(400), (400, Some(Start::Followed { jump: 386 })));
        // A restarted origin at the same address, numbering from 0 again.
        n.connected(false);
        assert_eq!(n.renumber(0), (401, Some(Start::Renumbered { given: 0, after: 400 })));
        // Wrapping numbers too.
        n.connected(true);
        assert_eq!(n.renumber(u32::MAX).0, 402);
        assert_eq!(n.renumber(0).0, 403);
    }

    #[test]
    fn a_new_origin_stays_new_until_its_first_frame() {
        let mut n = Numbering::default();
        n.connected(true);
        n.renumber(100);
        n.connected(true);
        // That link broke before a frame; the next one is to the same (new) origin.
        n.connected(false);
        assert!(!n.settled());
        assert_eq!(n.renumber(50), (101, Some(Start::Renumbered { given: 50, after: 100 })));
    }

    /// One connection: to a new origin or not, and the origin's numbers (consecutive from a
    /// start, any gaps an origin may leave).
    fn connection() -> impl Strategy<Value = (bool, u32, Vec<u8>)> {
        (any::<bool>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 1..20))
    }

    proptest! {
        /// Whatever numbers origins send (they come from the network), what an edge passes on
        /// never goes back, and a new origin's numbers ahead of it are passed on as they are.
        #[test]
        fn numbers_passed_on_never_go_back(links in proptest::collection::vec(connection(), 1..12)) {
            let mut n = Numbering::default();
            let mut last: Option<u32> = None;
            for (new_origin, start, steps) in links {
                n.connected(new_origin);
                let as_given = new_origin && last.is_none_or(|l| ahead(start, l));
                let mut seq = start;
                for step in steps {
                    let (out, _) = n.renumber(seq);
                    if let Some(l) = last {
                        prop_assert!(ahead(out, l), "{} after {}", out, l);
                    }
                    if as_given {
                        prop_assert_eq!(out, seq, "a new origin's numbers ahead, as they are");
                    }
                    last = Some(out);
                    seq = seq.wrapping_add(1 + u32::from(step % 4));
                }
            }
        }
    }
}
