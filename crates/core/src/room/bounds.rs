//! Bounds on everything keyed by outside input: a million identities pass through or crowd
//! in, and the room stays small; who is forgotten and who is remembered; the room's word on
//! authority.

use std::time::Instant;

use super::tests::{T0, at, err, fixture, id, invariants, mute, ok};
use super::*;

/// How many distinct identities the crowd tests push through a room.
const CROWD: usize = 1_000_000;

fn person(n: usize) -> Identity {
    id(&format!("user-{n}"))
}

fn listener() -> Action {
    Action::Join { token_role: Role::Listener }
}

fn check_view(room: &Room) {
    let view = room.view();
    assert!(view.hands.len() <= Room::HAND_SAMPLE, "{} hands listed", view.hands.len());
    assert!(view.invited.len() <= Room::INVITED_SAMPLE);
    assert!(view.audience.len() <= Room::AUDIENCE_SAMPLE);
    assert_eq!(view.hands_total, room.hands_total());
}

#[test]
fn a_million_passers_by_leave_nothing_behind() {
    let started = Instant::now();
    let mut room = Room::new(id("host"), Stage::DEFAULT_SEATS, T0);
    let config = room.config();
    ok(&mut room, "host", Action::Join { token_role: Role::Host });
    for n in 0..CROWD {
        let who = person(n);
        // A hundred people a second; now and then one claps before leaving and is kept until
        // the room fills (see the next test).
        let now = T0.plus((n / 100) as u64);
        room.apply(&who, listener(), now).expect("join");
        room.apply(&who, Action::RequestToSpeak, now).expect("raise a hand");
        if n % 1_000 == 0 {
            room.apply(&who, Action::React { reaction: Reaction::Clap }, now).expect("clap");
        }
        room.apply(&who, Action::Leave, now).expect("leave");
        assert!(room.members.len() <= config.max_members);
        assert!(room.hands_total() <= config.max_hands);
        if n % 10_000 == 0 {
            check_view(&room);
            let _ = room.take_reactions(now);
        }
    }
    let elapsed = started.elapsed();
    eprintln!("{CROWD} passers-by in {elapsed:?}; {} members remembered", room.members.len());
    assert_eq!((room.present_count(), room.hands_total()), (1, 0));
    assert_eq!(room.members.len(), 1 + CROWD / 1_000, "the host and the clappers");
    invariants(&room).expect("invariants");
}

#[test]
fn clappers_who_left_are_swept_when_the_room_fills() {
    let mut room = Room::new(id("host"), Stage::DEFAULT_SEATS, T0);
    let config = room.config();
    let crowd = 5 * config.max_members;
    let mut most = 0;
    for n in 0..crowd {
        let who = person(n);
        let now = T0.plus((n / 100) as u64);
        room.apply(&who, listener(), now).expect("join");
        room.apply(&who, Action::React { reaction: Reaction::Clap }, now).expect("clap");
        room.apply(&who, Action::Leave, now).expect("leave");
        most = most.max(room.members.len());
        if n % 100 == 0 {
            let _ = room.take_reactions(now);
        }
    }
    assert_eq!(most, config.max_members, "filled up, then swept");
    assert!(room.members.len() < config.max_members);
    invariants(&room).expect("invariants");
}

#[test]
fn a_million_who_stay_are_turned_away_at_the_door() {
    let started = Instant::now();
    let mut room = Room::new(id("host"), Stage::DEFAULT_SEATS, T0);
    let config = room.config();
    ok(&mut room, "host", Action::Join { token_role: Role::Host });
    let (mut joined, mut hands, mut hands_full, mut full) = (0, 0, 0, 0);
    for n in 0..CROWD {
        let who = person(n);
        match room.apply(&who, listener(), T0) {
            Ok(_) => joined += 1,
            Err(RoomError::Full(max)) => {
                assert_eq!(max, config.max_members);
                full += 1;
            }
            Err(e) => panic!("join {n}: {e}"),
        }
        match room.apply(&who, Action::RequestToSpeak, T0) {
            Ok(_) => hands += 1,
            Err(RoomError::HandsFull(max)) => {
                assert_eq!(max, config.max_hands);
                hands_full += 1;
            }
            Err(RoomError::NotPresent(_)) => {}
            Err(e) => panic!("raise {n}: {e}"),
        }
        assert!(room.members.len() <= config.max_members);
        assert!(room.hands_total() <= config.max_hands);
        if n % 10_000 == 0 {
            check_view(&room);
        }
    }
    let elapsed = started.elapsed();
    eprintln!("{CROWD} who stay in {elapsed:?}");
    let seats_left = config.max_members - 1;
    assert_eq!((joined, full), (seats_left, CROWD - seats_left));
    assert_eq!((hands, hands_full), (config.max_hands, seats_left - config.max_hands));
    let view = room.view();
    assert_eq!((view.hands.len(), view.hands_total), (Room::HAND_SAMPLE, config.max_hands));
    assert_eq!(view.hands[0].who, person(0), "first come first");
    assert_eq!(view.present, config.max_members);
    invariants(&room).expect("invariants");
    // Someone the room remembers still gets back in, and a leaving listener makes space.
    ok(&mut room, "host", Action::Leave);
    ok(&mut room, "host", Action::Join { token_role: Role::Host });
    assert_eq!(err(&mut room, "late", listener()).code(), "room_full");
    room.apply(&person(CROWD - 1), Action::Leave, T0).expect_err("never got in");
    room.apply(&person(1), Action::Leave, T0).expect("leave");
    ok(&mut room, "late", listener());
}

// ----- who is forgotten -----

#[test]
fn departing_listeners_are_forgotten_and_speaking_roles_remembered() {
    let mut room = fixture();
    let ev = ok(&mut room, "li1", Action::Leave);
    assert_eq!(ev, vec![RoomEvent::Left { who: id("li1") }]);
    assert!(room.member(&id("li1")).is_none(), "a plain listener is forgotten");
    ok(&mut room, "hand", Action::Leave);
    assert!(room.member(&id("hand")).is_none(), "the hand came down on leaving");
    let ev = ok(&mut room, "li1", Action::Join { token_role: Role::Listener });
    assert_eq!(ev, vec![RoomEvent::Joined { who: id("li1"), role: Role::Listener }]);
    // Everyone above a listener keeps the role the room gave them, whatever the token.
    for who in ["sp1", "co1", "host"] {
        ok(&mut room, who, Action::Leave);
    }
    let role = |room: &Room, who: &str| room.member(&id(who)).map(|m| (m.role, m.is_present()));
    assert_eq!(role(&room, "sp1"), Some((Role::Speaker, false)));
    assert_eq!(role(&room, "co1"), Some((Role::Cohost, false)));
    assert_eq!(role(&room, "host"), Some((Role::Host, false)));
    for who in ["sp1", "co1", "host"] {
        ok(&mut room, who, Action::Join { token_role: Role::Listener });
    }
    assert_eq!(role(&room, "sp1"), Some((Role::Speaker, true)));
    assert_eq!(role(&room, "co1"), Some((Role::Cohost, true)));
    assert_eq!(role(&room, "host"), Some((Role::Host, true)));
    invariants(&room).expect("invariants");
}

#[test]
fn a_listener_the_room_acted_on_is_remembered() {
    let mut room = fixture();
    // A speaker sent to the audience came in higher: their token must not undo the move.
    ok(&mut room, "host", Action::MoveToAudience { target: id("sp1"), reason: None });
    ok(&mut room, "sp1", Action::Leave);
    ok(&mut room, "sp1", Action::Join { token_role: Role::Speaker });
    assert_eq!(room.member(&id("sp1")).map(|m| m.role), Some(Role::Listener));
    // A listener brought on stage, locked and sent back keeps the lock.
    ok(&mut room, "host", Action::AcceptRequest { target: id("hand") });
    ok(&mut room, "host", mute("hand"));
    ok(&mut room, "host", Action::MoveToAudience { target: id("hand"), reason: None });
    ok(&mut room, "hand", Action::Leave);
    assert!(room.member(&id("hand")).is_some_and(|m| m.mute.is_locked()));
    ok(&mut room, "hand", Action::Join { token_role: Role::Listener });
    assert!(room.member(&id("hand")).is_some_and(|m| m.mute.is_locked()));
    // Removed members stay known, so a second removal is still "already removed".
    ok(&mut room, "host", Action::Remove { target: id("li2"), reason: None });
    assert_eq!(
        err(&mut room, "host", Action::Remove { target: id("li2"), reason: None }).code(),
        "already_removed"
    );
    invariants(&room).expect("invariants");
}

#[test]
fn leaving_and_rejoining_does_not_reset_the_reaction_limit() {
    let config = RoomConfig { max_members: 3, ..RoomConfig::default() };
    let mut room = Room::with_config(id("host"), config, T0);
    let clap = || Action::React { reaction: Reaction::Clap };
    at(&mut room, "host", Action::Join { token_role: Role::Host }, 10).expect("host");
    at(&mut room, "fan", listener(), 10).expect("fan");
    for _ in 0..config.reactions_per_second {
        at(&mut room, "fan", clap(), 10).expect("clap");
    }
    at(&mut room, "fan", Action::Leave, 10).expect("leave");
    assert!(room.member(&id("fan")).is_some(), "kept until the second is over");
    at(&mut room, "x", listener(), 10).expect("x");
    let e = at(&mut room, "y", listener(), 10).expect_err("full this second");
    assert_eq!((e.code(), e.http_status()), ("room_full", 503));
    at(&mut room, "fan", listener(), 10).expect("a known member gets back in");
    let e = at(&mut room, "fan", clap(), 10).expect_err("still limited");
    assert_eq!(e.code(), "rate_limited");
    at(&mut room, "fan", Action::Leave, 10).expect("leave");
    invariants(&room).expect("invariants");
    at(&mut room, "y", listener(), 11).expect("the next second the fan is forgotten");
    assert!(room.member(&id("fan")).is_none());
    invariants(&room).expect("invariants");
}

// ----- limits -----

#[test]
fn a_full_room_forgets_leftovers_then_refuses_with_503() {
    let config = RoomConfig { max_members: 4, ..RoomConfig::default() };
    let mut room = Room::with_config(id("host"), config, T0);
    ok(&mut room, "host", Action::Join { token_role: Role::Host });
    for who in ["a", "b", "c"] {
        ok(&mut room, who, listener());
    }
    let before = format!("{room:?}");
    let e = err(&mut room, "d", listener());
    assert_eq!(e, RoomError::Full(4));
    assert_eq!(
        (e.code(), e.http_status(), e.kind()),
        ("room_full", 503, RoomErrorKind::Unavailable)
    );
    assert_eq!(e.retry_after_secs(), Some(RoomError::FULL_RETRY_SECS));
    assert_eq!(format!("{room:?}"), before, "a refusal changes nothing");
    ok(&mut room, "a", Action::Leave);
    ok(&mut room, "d", listener());
    // A speaker the room made is remembered after leaving, so the room stays full.
    ok(&mut room, "host", Action::InviteToSpeak { target: id("b") });
    ok(&mut room, "b", Action::AcceptInvitation);
    ok(&mut room, "b", Action::Leave);
    assert_eq!(err(&mut room, "e", listener()).code(), "room_full");
    // A listener blocked and unblocked while away is a leftover the next join forgets.
    ok(&mut room, "host", Action::Block { target: id("c"), reason: None });
    ok(&mut room, "host", Action::Unblock { target: id("c") });
    assert!(room.member(&id("c")).is_some());
    ok(&mut room, "e", listener());
    assert!(room.member(&id("c")).is_none());
    // A returning member gets in whatever the count.
    ok(&mut room, "b", listener());
    assert_eq!(room.member(&id("b")).map(|m| m.role), Some(Role::Speaker));
    invariants(&room).expect("invariants");
}

#[test]
fn raised_hands_and_invitations_are_capped() {
    let config = RoomConfig { max_hands: 2, ..RoomConfig::default() };
    let mut room = Room::with_config(id("host"), config, T0);
    ok(&mut room, "host", Action::Join { token_role: Role::Host });
    for who in ["l1", "l2", "l3", "l4", "l5"] {
        ok(&mut room, who, listener());
    }
    ok(&mut room, "l1", Action::RequestToSpeak);
    ok(&mut room, "l2", Action::RequestToSpeak);
    let e = err(&mut room, "l3", Action::RequestToSpeak);
    assert_eq!((e.code(), e.http_status()), ("hands_full", 409));
    ok(&mut room, "l1", Action::CancelRequest);
    ok(&mut room, "l3", Action::RequestToSpeak);
    ok(&mut room, "host", Action::InviteToSpeak { target: id("l4") });
    ok(&mut room, "host", Action::InviteToSpeak { target: id("l5") });
    let e = err(&mut room, "host", Action::InviteToSpeak { target: id("l1") });
    assert_eq!((e.code(), e.http_status()), ("invitations_full", 409));
    ok(&mut room, "l5", Action::DeclineInvitation);
    ok(&mut room, "host", Action::InviteToSpeak { target: id("l1") });
    invariants(&room).expect("invariants");
}

#[test]
fn removals_are_capped_like_blocks() {
    let mut room = fixture();
    for n in 0..Room::MAX_REMOVED + 5 {
        room.restore_removed(id(&format!("r{n}")));
    }
    assert_eq!(room.removed.len(), Room::MAX_REMOVED);
    assert!(!room.is_removed(&id(&format!("r{}", Room::MAX_REMOVED))), "beyond the cap");
    let e = err(&mut room, "host", Action::Remove { target: id("sp1"), reason: None });
    assert_eq!((e.code(), e.http_status()), ("removed_list_full", 409));
    assert!(room.member(&id("sp1")).is_some_and(|m| m.on_stage), "nothing changed");
    ok(&mut room, "host", Action::Block { target: id("sp1"), reason: None });
    invariants(&room).expect("invariants");
}

#[test]
fn the_view_lists_a_sample_of_hands_and_invitations_with_totals() {
    let mut room = Room::new(id("host"), Stage::DEFAULT_SEATS, T0);
    ok(&mut room, "host", Action::Join { token_role: Role::Host });
    let name = |n: usize| format!("l{n:03}");
    for n in 0..Room::HAND_SAMPLE + 10 {
        ok(&mut room, &name(n), listener());
        at(&mut room, &name(n), Action::RequestToSpeak, 2_000 + n as u64).expect("raise");
    }
    let invitees = Room::INVITED_SAMPLE + 5;
    for n in 0..invitees {
        ok(&mut room, &format!("i{n:03}"), listener());
        ok(&mut room, "host", Action::InviteToSpeak { target: id(&format!("i{n:03}")) });
    }
    let view = room.view();
    assert_eq!(view.hands.len(), Room::HAND_SAMPLE);
    assert_eq!(view.hands_total, Room::HAND_SAMPLE + 10);
    let first: Vec<String> = view.hands.iter().map(|h| h.who.to_string()).collect();
    assert_eq!(first, (0..Room::HAND_SAMPLE).map(name).collect::<Vec<_>>(), "first come first");
    assert_eq!((view.invited.len(), view.invited_total), (Room::INVITED_SAMPLE, invitees));
    let json = serde_json::to_value(&view).expect("json");
    assert_eq!(json["hands_total"], Room::HAND_SAMPLE + 10);
    assert_eq!(json["invited_total"], invitees);
}

#[test]
fn configs_serialised_before_the_limits_still_parse() {
    let old: RoomConfig =
        serde_json::from_str(r#"{"seats":5,"max_cohosts":1,"reactions_per_second":3}"#)
            .expect("old config");
    let want =
        RoomConfig { seats: 5, max_cohosts: 1, reactions_per_second: 3, ..RoomConfig::default() };
    assert_eq!(old, want);
    assert_eq!((old.max_members, old.max_hands), (20_000, 1_000));
    let json = serde_json::to_string(&want).expect("json");
    assert_eq!(serde_json::from_str::<RoomConfig>(&json).expect("round trip"), want);
}

// ----- authority -----

#[test]
fn authority_is_the_rooms_word_not_the_tokens() {
    let mut room = fixture();
    let before = format!("{room:?}");
    assert_eq!(room.authority(&id("co1"), Role::Cohost), Ok(Role::Cohost));
    assert_eq!(room.authority(&id("stranger"), Role::Host), Ok(Role::Speaker), "co-hosts full");
    assert_eq!(room.authority(&id("stranger"), Role::Listener), Ok(Role::Listener));
    assert_eq!(room.authority(&id("host"), Role::Listener), Ok(Role::Host));
    assert_eq!(format!("{room:?}"), before, "authority changes nothing");

    ok(&mut room, "host", Action::DemoteCohost { target: id("co2") });
    assert_eq!(room.authority(&id("co2"), Role::Cohost), Ok(Role::Speaker), "demoted");
    assert_eq!(room.authority(&id("stranger"), Role::Host), Ok(Role::Cohost), "a seat is free");

    ok(&mut room, "co1", Action::Remove { target: id("sp2"), reason: None });
    assert_eq!(room.authority(&id("sp2"), Role::Host), Err(RoomError::Removed(id("sp2"))));
    ok(&mut room, "co1", Action::Block { target: id("troll"), reason: None });
    assert_eq!(room.authority(&id("troll"), Role::Host), Err(RoomError::Blocked(id("troll"))));

    ok(&mut room, "host", Action::TransferHost { target: id("co1") });
    assert_eq!(room.authority(&id("co1"), Role::Cohost), Ok(Role::Host), "the new host");
    assert_eq!(room.authority(&id("host"), Role::Host), Ok(Role::Cohost), "the old host");
    ok(&mut room, "co1", Action::Leave);
    assert_eq!(room.authority(&id("co1"), Role::Listener), Ok(Role::Host), "absent, still host");
}
