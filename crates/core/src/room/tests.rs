//! The permission matrix and the tricky rules, one test each.

use super::*;

pub(super) fn id(s: &str) -> Identity {
    Identity::new(s).expect("identity")
}

pub(super) const T0: UnixTime = UnixTime(1_000);

/// Everything the room promises about itself, whatever happened before.
pub(super) fn invariants(room: &Room) -> Result<(), String> {
    let members: Vec<&Member> = room.members().collect();
    let hosts: Vec<&Member> = members.iter().copied().filter(|m| m.role == Role::Host).collect();
    if hosts.len() != 1 || &hosts[0].identity != room.host() {
        return Err(format!("expected exactly the host {} as host, got {hosts:?}", room.host()));
    }
    let cohosts: Vec<&Identity> =
        members.iter().filter(|m| m.role == Role::Cohost).map(|m| &m.identity).collect();
    if cohosts != room.cohosts().collect::<Vec<_>>() || cohosts.len() > room.config().max_cohosts {
        return Err(format!("co-hosts {cohosts:?} vs {:?}", room.cohosts().collect::<Vec<_>>()));
    }
    let on_stage = members.iter().filter(|m| m.on_stage).count();
    if on_stage != room.speakers().len() || on_stage > room.config().seats {
        return Err(format!("{on_stage} on stage, {} seats", room.config().seats));
    }
    let present = members.iter().filter(|m| m.is_present()).count();
    if present != room.present_count() || (room.is_ended() && present != 0) {
        return Err(format!("present {present} vs {}", room.present_count()));
    }
    for m in &members {
        member_invariants(room, m)?;
    }
    let hands: Vec<&Member> = room.hands().collect();
    if hands.len() != members.iter().filter(|m| m.hand.is_some()).count() {
        return Err("hand queue and members disagree".into());
    }
    if hands.windows(2).any(|w| w[0].hand.map(|h| h.at) > w[1].hand.map(|h| h.at)) {
        return Err("hands out of order".into());
    }
    let invited = members.iter().filter(|m| m.invitation.is_some()).count();
    if invited != room.invited().count() || invited != room.invited_total() {
        return Err("invitations and members disagree".into());
    }
    bounds(room, &members, hands.len(), invited)
}

/// The bounds on every table keyed by identity, and the view's size.
fn bounds(room: &Room, members: &[&Member], hands: usize, invited: usize) -> Result<(), String> {
    let config = room.config();
    if members.len() > config.max_members.max(1) {
        return Err(format!("{} members, at most {}", members.len(), config.max_members));
    }
    if hands != room.hands_total() || hands > config.max_hands || invited > config.max_hands {
        return Err(format!("{hands} hands ({}), {invited} invited", room.hands_total()));
    }
    if room.removed.len() > Room::MAX_REMOVED || room.blocked.len() > Room::MAX_BLOCKED {
        return Err(format!("{} removed, {} blocked", room.removed.len(), room.blocked.len()));
    }
    if room.sweep_at.is_none()
        && let Some(m) = members.iter().find(|m| idle(m, &room.host, &room.removed, &room.blocked))
    {
        return Err(format!("{} could be forgotten, yet no sweep is due", m.identity));
    }
    let view = room.view();
    if view.hands.len() > Room::HAND_SAMPLE
        || view.invited.len() > Room::INVITED_SAMPLE
        || view.audience.len() > Room::AUDIENCE_SAMPLE
        || (view.hands_total, view.invited_total) != (hands, invited)
    {
        return Err(format!("the view lists too much or miscounts: {view:?}"));
    }
    Ok(())
}

fn member_invariants(room: &Room, m: &Member) -> Result<(), String> {
    let who = &m.identity;
    let banned = room.is_removed(who) || room.is_blocked(who);
    if banned && (m.is_present() || m.on_stage) {
        return Err(format!("{who} is removed or blocked but present or on stage"));
    }
    if m.on_stage && !(m.is_present() && m.role.can_speak()) {
        return Err(format!("{who} on stage as absent or {}", m.role));
    }
    let off_stage_listener = m.is_present() && !m.on_stage && m.role == Role::Listener;
    if m.hand.is_some() && !(off_stage_listener && m.invitation.is_none()) {
        return Err(format!("{who} has a hand up but is not a present listener off stage"));
    }
    if m.invitation.is_some() && !off_stage_listener {
        return Err(format!("{who} is invited but is not a present listener off stage"));
    }
    Ok(())
}

/// A room with a present host, two co-hosts and two speakers on stage, and three listeners,
/// one of them ("hand") with a raised hand.
pub(super) fn fixture() -> Room {
    let mut room = Room::new(id("host"), Stage::DEFAULT_SEATS, T0);
    let joins = [
        ("host", Role::Host),
        ("co1", Role::Cohost),
        ("co2", Role::Cohost),
        ("sp1", Role::Speaker),
        ("sp2", Role::Speaker),
        ("li1", Role::Listener),
        ("li2", Role::Listener),
        ("hand", Role::Listener),
    ];
    for (who, token_role) in joins {
        ok(&mut room, who, Action::Join { token_role });
    }
    ok(&mut room, "hand", Action::RequestToSpeak);
    room
}

pub(super) fn ok(room: &mut Room, actor: &str, action: Action) -> Vec<RoomEvent> {
    let shown = format!("{action:?}");
    room.apply(&id(actor), action, T0)
        .unwrap_or_else(|e| panic!("{actor} {shown}: expected success, got {e}"))
}

pub(super) fn err(room: &mut Room, actor: &str, action: Action) -> RoomError {
    let shown = format!("{action:?}");
    match room.apply(&id(actor), action, T0) {
        Ok(ev) => panic!("{actor} {shown}: expected a refusal, got {ev:?}"),
        Err(e) => e,
    }
}

pub(super) fn at(
    room: &mut Room,
    actor: &str,
    action: Action,
    secs: u64,
) -> Result<Vec<RoomEvent>, RoomError> {
    room.apply(&id(actor), action, UnixTime(secs))
}

pub(super) fn mute(target: &str) -> Action {
    Action::Mute { target: id(target), reason: None }
}

fn unmute(target: &str) -> Action {
    Action::Unmute { target: id(target) }
}

// ----- the permission matrix -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Ok,
    E403,
    E404,
    E409,
    E429,
    E503,
}
use Out::{E403, E404, E409, Ok as Y};

fn outcome(r: &Result<Vec<RoomEvent>, RoomError>) -> Out {
    match r {
        Ok(_) => Out::Ok,
        Err(e) => match e.kind() {
            RoomErrorKind::Forbidden => E403,
            RoomErrorKind::NotFound => E404,
            RoomErrorKind::Conflict => E409,
            RoomErrorKind::RateLimited => Out::E429,
            RoomErrorKind::Unavailable => Out::E503,
        },
    }
}

/// The actors of the matrix, one per role: host, co-host, speaker (on stage), listener.
const ACTORS: [&str; 4] = ["host", "co1", "sp1", "li1"];

type Prep = fn(&mut Room, &Identity);
type Make = fn(&Identity) -> Action;

fn nothing(_: &mut Room, _: &Identity) {}

/// Applies a setup step, ignoring refusals (it may not apply to every role).
fn try_apply(room: &mut Room, actor: &str, action: Action) {
    let _ = room.apply(&id(actor), action, T0);
}

#[rustfmt::skip]
fn matrix() -> Vec<(&'static str, Prep, Make, [Out; 4])> {
    vec![
        // (what, setup given the actor, action given the actor, [host, co-host, speaker, listener])
        ("rejoin", |r, a| try_apply(r, a.as_str(), Action::Leave),
            |_| Action::Join { token_role: Role::Listener }, [Y, Y, Y, Y]),
        ("join while present", nothing, |_| Action::Join { token_role: Role::Listener }, [E409; 4]),
        ("leave", nothing, |_| Action::Leave, [Y, Y, Y, Y]),
        ("request to speak", nothing, |_| Action::RequestToSpeak, [E409, E409, E409, Y]),
        ("cancel own request", |r, a| try_apply(r, a.as_str(), Action::RequestToSpeak),
            |_| Action::CancelRequest, [E409, E409, E409, Y]),
        ("take the stage after stepping down",
            |r, a| try_apply(r, a.as_str(), Action::MoveToAudience { target: a.clone(), reason: None }),
            |_| Action::TakeStage, [Y, Y, E403, E403]),
        ("invite a listener", nothing, |_| Action::InviteToSpeak { target: id("li2") }, [Y, Y, E403, E403]),
        ("accept own invitation", |r, a| try_apply(r, "host", Action::InviteToSpeak { target: a.clone() }),
            |_| Action::AcceptInvitation, [E409, E409, E409, Y]),
        ("decline own invitation", |r, a| try_apply(r, "host", Action::InviteToSpeak { target: a.clone() }),
            |_| Action::DeclineInvitation, [E409, E409, E409, Y]),
        ("accept a request", nothing, |_| Action::AcceptRequest { target: id("hand") }, [Y, Y, E403, E403]),
        ("decline a request", nothing, |_| Action::DeclineRequest { target: id("hand") }, [Y, Y, E403, E403]),
        ("mute a speaker", nothing, |_| mute("sp2"), [Y, Y, E403, E403]),
        ("mute a co-host", nothing, |_| mute("co2"), [Y, E403, E403, E403]),
        ("mute the host (host: self-mute)", nothing, |_| mute("host"), [Y, E403, E403, E403]),
        ("mute oneself", nothing, |a| mute(a.as_str()), [Y, Y, Y, E409]),
        ("unmute oneself after a self-mute", |r, a| try_apply(r, a.as_str(), mute(a.as_str())),
            |a| unmute(a.as_str()), [Y, Y, Y, E409]),
        ("unmute oneself after the host's mute (host: own self-mute)",
            |r, a| try_apply(r, "host", mute(a.as_str())),
            |a| unmute(a.as_str()), [Y, E403, E403, E409]),
        ("lift a co-host's mute of a speaker", |r, _| try_apply(r, "co2", mute("sp2")),
            |_| unmute("sp2"), [Y, Y, E403, E403]),
        ("lift the host's mute of a speaker", |r, _| try_apply(r, "host", mute("sp2")),
            |_| unmute("sp2"), [Y, E403, E403, E403]),
        ("open a self-muted speaker's microphone", |r, _| try_apply(r, "sp2", mute("sp2")),
            |_| unmute("sp2"), [E403, E403, E403, E403]),
        ("unmute someone not muted", nothing, |_| unmute("sp2"), [E409, E409, E403, E403]),
        ("move a speaker to the audience", nothing,
            |_| Action::MoveToAudience { target: id("sp2"), reason: None }, [Y, Y, E403, E403]),
        ("move a co-host to the audience", nothing,
            |_| Action::MoveToAudience { target: id("co2"), reason: None }, [Y, E403, E403, E403]),
        ("move the host to the audience", nothing,
            |_| Action::MoveToAudience { target: id("host"), reason: None }, [Y, E403, E403, E403]),
        ("leave the stage oneself", nothing,
            |a| Action::MoveToAudience { target: a.clone(), reason: None }, [Y, Y, Y, E409]),
        ("promote a speaker", |r, _| try_apply(r, "host", Action::DemoteCohost { target: id("co2") }),
            |_| Action::PromoteCohost { target: id("sp2") }, [Y, E403, E403, E403]),
        ("promote past the co-host limit", nothing,
            |_| Action::PromoteCohost { target: id("sp2") }, [E409, E403, E403, E403]),
        ("demote a co-host", nothing, |_| Action::DemoteCohost { target: id("co2") }, [Y, E403, E403, E403]),
        ("demote oneself", nothing, |a| Action::DemoteCohost { target: a.clone() }, [E409, Y, E409, E409]),
        ("transfer host to a co-host", nothing,
            |_| Action::TransferHost { target: id("co2") }, [Y, E403, E403, E403]),
        ("transfer host to a speaker", nothing,
            |_| Action::TransferHost { target: id("sp2") }, [E409, E403, E403, E403]),
        ("remove a speaker", nothing, |_| Action::Remove { target: id("sp2"), reason: None }, [Y, Y, E403, E403]),
        ("remove a co-host", nothing, |_| Action::Remove { target: id("co2"), reason: None }, [Y, E403, E403, E403]),
        ("remove the host", nothing, |_| Action::Remove { target: id("host"), reason: None }, [E409, E403, E403, E403]),
        ("remove oneself", nothing, |a| Action::Remove { target: a.clone(), reason: None }, [E409, E409, E403, E403]),
        ("remove an unknown identity", nothing,
            |_| Action::Remove { target: id("ghost"), reason: None }, [E404, E404, E403, E403]),
        ("block a listener", nothing, |_| Action::Block { target: id("li2"), reason: None }, [Y, Y, E403, E403]),
        ("block an unknown identity", nothing,
            |_| Action::Block { target: id("ghost"), reason: None }, [Y, Y, E403, E403]),
        ("block a co-host", nothing, |_| Action::Block { target: id("co2"), reason: None }, [Y, E403, E403, E403]),
        ("block the host", nothing, |_| Action::Block { target: id("host"), reason: None }, [E409, E403, E403, E403]),
        ("unblock", |r, _| try_apply(r, "host", Action::Block { target: id("troll"), reason: None }),
            |_| Action::Unblock { target: id("troll") }, [Y, Y, E403, E403]),
        ("unblock someone not blocked", nothing, |_| Action::Unblock { target: id("li2") }, [E409, E409, E403, E403]),
        ("react", nothing, |_| Action::React { reaction: Reaction::Clap }, [Y, Y, Y, Y]),
        ("end the space", nothing, |_| Action::End, [Y, E403, E403, E403]),
    ]
}

#[test]
fn permission_matrix_every_role_by_every_action() {
    let mut failures = Vec::new();
    for (what, prep, make, expected) in matrix() {
        for (actor, want) in ACTORS.into_iter().zip(expected) {
            let mut room = fixture();
            let who = id(actor);
            prep(&mut room, &who);
            let before = format!("{room:?}");
            let result = room.apply(&who, make(&who), T0);
            let got = outcome(&result);
            if got != want {
                failures.push(format!("{what} by {actor}: want {want:?}, got {result:?}"));
            }
            if result.is_err() && format!("{room:?}") != before {
                failures.push(format!("{what} by {actor}: a refusal changed the room"));
            }
            if let Err(e) = invariants(&room) {
                failures.push(format!("{what} by {actor}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_matrix_covers_every_action() {
    let names: BTreeSet<&str> =
        matrix().iter().map(|(_, _, make, _)| make(&id("x")).name()).collect();
    let all = [
        Action::Join { token_role: Role::Listener },
        Action::Leave,
        Action::RequestToSpeak,
        Action::CancelRequest,
        Action::TakeStage,
        Action::InviteToSpeak { target: id("x") },
        Action::AcceptInvitation,
        Action::DeclineInvitation,
        Action::AcceptRequest { target: id("x") },
        Action::DeclineRequest { target: id("x") },
        mute("x"),
        unmute("x"),
        Action::MoveToAudience { target: id("x"), reason: None },
        Action::PromoteCohost { target: id("x") },
        Action::DemoteCohost { target: id("x") },
        Action::TransferHost { target: id("x") },
        Action::Remove { target: id("x"), reason: None },
        Action::Block { target: id("x"), reason: None },
        Action::Unblock { target: id("x") },
        Action::React { reaction: Reaction::Fire },
        Action::End,
    ];
    for action in all {
        assert!(names.contains(action.name()), "no matrix row for {}", action.name());
    }
}

// ----- joining -----

#[test]
fn the_token_role_is_a_ceiling_for_a_first_join() {
    let mut room = Room::new(id("host"), 13, T0);
    let joined = |ev: Vec<RoomEvent>| match ev.first() {
        Some(RoomEvent::Joined { role, .. }) => *role,
        other => panic!("expected a join, got {other:?}"),
    };
    assert_eq!(joined(ok(&mut room, "host", Action::Join { token_role: Role::Host })), Role::Host);
    assert_eq!(
        joined(ok(&mut room, "l", Action::Join { token_role: Role::Listener })),
        Role::Listener
    );
    assert_eq!(joined(ok(&mut room, "op", Action::Join { token_role: Role::Host })), Role::Cohost);
    assert_eq!(joined(ok(&mut room, "c", Action::Join { token_role: Role::Cohost })), Role::Cohost);
    assert_eq!(
        joined(ok(&mut room, "c3", Action::Join { token_role: Role::Cohost })),
        Role::Speaker
    );
    assert_eq!(room.host(), &id("host"));
    assert!(invariants(&room).is_ok());
}

#[test]
fn speaking_roles_take_a_seat_on_joining_while_one_is_free() {
    let mut room = Room::new(id("host"), 2, T0);
    ok(&mut room, "host", Action::Join { token_role: Role::Host });
    ok(&mut room, "s1", Action::Join { token_role: Role::Speaker });
    let ev = ok(&mut room, "s2", Action::Join { token_role: Role::Speaker });
    assert_eq!(ev, vec![RoomEvent::Joined { who: id("s2"), role: Role::Speaker }], "stage full");
    assert!(!room.member(&id("s2")).is_some_and(|m| m.on_stage));
    assert_eq!(err(&mut room, "s2", Action::TakeStage).code(), "stage_full");
    ok(&mut room, "s1", Action::Leave);
    ok(&mut room, "s2", Action::TakeStage);
    assert!(room.member(&id("s2")).is_some_and(|m| m.on_stage));
}

#[test]
fn room_decisions_outlive_a_rejoin_whatever_the_token() {
    let mut room = fixture();
    ok(&mut room, "host", Action::DemoteCohost { target: id("co2") });
    ok(&mut room, "host", Action::PromoteCohost { target: id("li1") });
    ok(&mut room, "host", Action::MoveToAudience { target: id("sp1"), reason: None });
    for who in ["co2", "li1", "sp1"] {
        ok(&mut room, who, Action::Leave);
    }
    ok(&mut room, "co2", Action::Join { token_role: Role::Cohost });
    ok(&mut room, "li1", Action::Join { token_role: Role::Listener });
    ok(&mut room, "sp1", Action::Join { token_role: Role::Speaker });
    let role = |room: &Room, who: &str| room.member(&id(who)).map(|m| m.role);
    assert_eq!(role(&room, "co2"), Some(Role::Speaker), "a demotion persists");
    assert_eq!(role(&room, "li1"), Some(Role::Cohost), "a promotion persists");
    assert_eq!(role(&room, "sp1"), Some(Role::Listener), "a move to the audience persists");
}

#[test]
fn the_host_stays_host_while_away() {
    let mut room = fixture();
    ok(&mut room, "host", Action::Leave);
    assert_eq!(room.member(&id("host")).map(|m| (m.role, m.on_stage)), Some((Role::Host, false)));
    assert_eq!(err(&mut room, "host", Action::End).code(), "not_present");
    ok(&mut room, "host", Action::Join { token_role: Role::Listener });
    assert_eq!(room.member(&id("host")).map(|m| (m.role, m.on_stage)), Some((Role::Host, true)));
}

#[test]
fn absent_actors_cannot_act() {
    let mut room = fixture();
    ok(&mut room, "co1", Action::Leave);
    assert_eq!(err(&mut room, "co1", mute("sp1")).code(), "not_present");
    assert_eq!(err(&mut room, "stranger", Action::RequestToSpeak).code(), "not_present");
}

// ----- removal and blocks -----

#[test]
fn removed_people_cannot_rejoin_with_any_token() {
    let mut room = fixture();
    let ev =
        ok(&mut room, "co1", Action::Remove { target: id("sp1"), reason: Some("spam".into()) });
    assert!(ev.contains(&RoomEvent::SpeakerRemoved { who: id("sp1") }));
    assert!(ev.contains(&RoomEvent::Left { who: id("sp1") }));
    assert!(ev.contains(&RoomEvent::Removed { who: id("sp1"), by: id("co1") }));
    for token_role in Role::ALL {
        let e = err(&mut room, "sp1", Action::Join { token_role });
        assert_eq!((e.code(), e.http_status()), ("removed", 403));
    }
    assert_eq!(err(&mut room, "sp1", Action::React { reaction: Reaction::Fire }).code(), "removed");
    assert_eq!(
        err(&mut room, "host", Action::Remove { target: id("sp1"), reason: None }).code(),
        "already_removed"
    );
    // Block and unblock do not lift a removal.
    ok(&mut room, "host", Action::Block { target: id("sp1"), reason: None });
    ok(&mut room, "host", Action::Unblock { target: id("sp1") });
    assert_eq!(
        err(&mut room, "sp1", Action::Join { token_role: Role::Listener }).code(),
        "removed"
    );
}

#[test]
fn removing_a_cohost_frees_the_slot() {
    let mut room = fixture();
    ok(&mut room, "host", Action::Remove { target: id("co2"), reason: None });
    assert_eq!(room.cohosts().collect::<Vec<_>>(), vec![&id("co1")]);
    ok(&mut room, "host", Action::PromoteCohost { target: id("sp1") });
}

#[test]
fn blocked_identities_are_refused_until_unblocked() {
    let mut room = fixture();
    ok(&mut room, "co1", Action::Block { target: id("troll"), reason: None });
    assert!(room.is_blocked(&id("troll")));
    let e = err(&mut room, "troll", Action::Join { token_role: Role::Host });
    assert_eq!((e.code(), e.http_status()), ("blocked", 403));
    assert_eq!(
        err(&mut room, "co1", Action::Block { target: id("troll"), reason: None }).code(),
        "already_blocked"
    );
    ok(&mut room, "co1", Action::Unblock { target: id("troll") });
    ok(&mut room, "troll", Action::Join { token_role: Role::Listener });
}

#[test]
fn blocking_a_present_member_takes_them_out() {
    let mut room = fixture();
    ok(&mut room, "host", Action::Block { target: id("co2"), reason: None });
    let m = room.member(&id("co2")).cloned().expect("known");
    assert_eq!((m.presence, m.on_stage, m.role), (Presence::Left, false, Role::Listener));
    assert_eq!(err(&mut room, "co2", Action::Join { token_role: Role::Cohost }).code(), "blocked");
    ok(&mut room, "host", Action::Unblock { target: id("co2") });
    ok(&mut room, "co2", Action::Join { token_role: Role::Cohost });
    assert_eq!(
        room.member(&id("co2")).map(|m| m.role),
        Some(Role::Listener),
        "powers are not restored"
    );
}

#[test]
fn the_host_cannot_remove_block_or_demote_themselves() {
    let mut room = fixture();
    for action in [
        Action::Remove { target: id("host"), reason: None },
        Action::Block { target: id("host"), reason: None },
        Action::DemoteCohost { target: id("host") },
        Action::TransferHost { target: id("host") },
    ] {
        assert_eq!(err(&mut room, "host", action).code(), "self_target");
    }
}

#[test]
fn a_cohost_cannot_act_on_the_host_or_another_cohost() {
    let mut room = fixture();
    for target in ["host", "co2"] {
        for action in [
            mute(target),
            Action::MoveToAudience { target: id(target), reason: None },
            Action::Remove { target: id(target), reason: None },
            Action::Block { target: id(target), reason: None },
        ] {
            let e = err(&mut room, "co1", action);
            assert_eq!((e.code(), e.http_status()), ("outranked", 403), "{target}");
        }
    }
    assert_eq!(
        err(&mut room, "co1", Action::DemoteCohost { target: id("co2") }).code(),
        "not_permitted"
    );
}

// ----- mutes -----

#[test]
fn a_moderators_mute_locks_the_speaker_out_until_lifted() {
    let mut room = fixture();
    let ev = ok(&mut room, "co1", mute("sp1"));
    assert_eq!(ev, vec![RoomEvent::Muted { who: id("sp1"), by: Some(id("co1")) }]);
    let e = err(&mut room, "sp1", unmute("sp1"));
    assert_eq!((e.code(), e.http_status()), ("muted_by_moderator", 403));
    assert_eq!(err(&mut room, "sp1", mute("sp1")).code(), "already_muted");
    assert_eq!(err(&mut room, "co2", mute("sp1")).code(), "already_muted");
    // Any moderator who may act on the speaker lifts it; the speaker stays self-muted.
    let ev = ok(&mut room, "co2", unmute("sp1"));
    assert_eq!(ev, vec![RoomEvent::MuteLifted { who: id("sp1"), by: id("co2") }]);
    assert_eq!(room.member(&id("sp1")).map(|m| m.mute.clone()), Some(Mute::SelfMuted));
    assert_eq!(err(&mut room, "co1", unmute("sp1")).code(), "not_your_microphone");
    ok(&mut room, "sp1", unmute("sp1"));
    assert_eq!(room.member(&id("sp1")).map(|m| m.mute.clone()), Some(Mute::Unmuted));
}

#[test]
fn a_cohost_cannot_lift_the_hosts_mute() {
    let mut room = fixture();
    ok(&mut room, "host", mute("sp1"));
    assert_eq!(err(&mut room, "co1", unmute("sp1")).code(), "muted_by_host");
    ok(&mut room, "host", unmute("sp1"));
}

#[test]
fn a_moderator_mute_upgrades_a_self_mute_and_survives_leaving() {
    let mut room = fixture();
    ok(&mut room, "sp1", mute("sp1"));
    ok(&mut room, "host", mute("sp1"));
    ok(&mut room, "sp1", Action::Leave);
    ok(&mut room, "sp1", Action::Join { token_role: Role::Speaker });
    assert!(room.member(&id("sp1")).is_some_and(|m| m.on_stage && m.mute.is_locked()));
    assert_eq!(err(&mut room, "sp1", unmute("sp1")).code(), "muted_by_moderator");
}

#[test]
fn only_people_on_stage_can_be_muted() {
    let mut room = fixture();
    assert_eq!(err(&mut room, "host", mute("li1")).code(), "not_on_stage");
    assert_eq!(err(&mut room, "li1", mute("li1")).code(), "not_on_stage");
    assert_eq!(err(&mut room, "li1", mute("sp1")).code(), "not_permitted");
    assert_eq!(err(&mut room, "host", mute("ghost")).code(), "unknown_member");
}

// ----- hands and invitations -----

#[test]
fn hands_are_served_first_come_first_served() {
    let mut room = fixture();
    for (who, t) in [("li1", 1_001), ("li2", 1_002)] {
        at(&mut room, who, Action::RequestToSpeak, t).expect("raise");
    }
    let order = |room: &Room| room.hands().map(|m| m.identity.to_string()).collect::<Vec<_>>();
    assert_eq!(order(&room), ["hand", "li1", "li2"]);
    assert_eq!(err(&mut room, "li1", Action::RequestToSpeak).code(), "hand_already_raised");
    at(&mut room, "hand", Action::CancelRequest, 1_003).expect("cancel");
    at(&mut room, "hand", Action::RequestToSpeak, 1_003).expect("raise again");
    assert_eq!(order(&room), ["li1", "li2", "hand"], "raising again goes to the back");
    let view = room.view();
    assert_eq!(view.hands.iter().map(|h| h.at.0).collect::<Vec<_>>(), [1_001, 1_002, 1_003]);
    let ev = ok(&mut room, "co1", Action::AcceptRequest { target: id("li2") });
    assert_eq!(
        ev,
        vec![
            RoomEvent::HandLowered { who: id("li2"), reason: HandLowered::Accepted },
            RoomEvent::RoleChanged { who: id("li2"), from: Role::Listener, to: Role::Speaker },
            RoomEvent::SpeakerAdded { who: id("li2"), role: Role::Speaker },
        ]
    );
    assert_eq!(order(&room), ["li1", "hand"]);
    ok(&mut room, "co1", Action::DeclineRequest { target: id("li1") });
    assert_eq!(
        err(&mut room, "co1", Action::DeclineRequest { target: id("li1") }).code(),
        "no_hand_raised"
    );
    assert_eq!(order(&room), ["hand"]);
}

#[test]
fn accepting_a_request_on_a_full_stage_is_a_conflict() {
    let mut room = Room::new(id("host"), 2, T0);
    ok(&mut room, "host", Action::Join { token_role: Role::Host });
    ok(&mut room, "sp", Action::Join { token_role: Role::Speaker });
    ok(&mut room, "li", Action::Join { token_role: Role::Listener });
    ok(&mut room, "li", Action::RequestToSpeak);
    let e = err(&mut room, "host", Action::AcceptRequest { target: id("li") });
    assert_eq!((e.code(), e.http_status()), ("stage_full", 409));
    assert_eq!(room.hands().count(), 1, "the hand stays up");
    ok(&mut room, "host", Action::MoveToAudience { target: id("sp"), reason: None });
    ok(&mut room, "host", Action::AcceptRequest { target: id("li") });
}

#[test]
fn invitations_are_answered_by_the_invited_only() {
    let mut room = fixture();
    ok(&mut room, "co1", Action::InviteToSpeak { target: id("li1") });
    assert_eq!(
        err(&mut room, "co1", Action::InviteToSpeak { target: id("li1") }).code(),
        "already_invited"
    );
    assert_eq!(err(&mut room, "li1", Action::RequestToSpeak).code(), "already_invited");
    assert_eq!(
        err(&mut room, "co1", Action::InviteToSpeak { target: id("hand") }).code(),
        "hand_raised"
    );
    assert_eq!(
        err(&mut room, "co1", Action::InviteToSpeak { target: id("sp1") }).code(),
        "already_on_stage"
    );
    assert_eq!(err(&mut room, "li2", Action::AcceptInvitation).code(), "not_invited");
    let ev = ok(&mut room, "li1", Action::AcceptInvitation);
    assert_eq!(ev[0], RoomEvent::InvitationClosed { who: id("li1"), accepted: true });
    assert!(room.member(&id("li1")).is_some_and(|m| m.on_stage && m.role == Role::Speaker));
    ok(&mut room, "co1", Action::InviteToSpeak { target: id("li2") });
    ok(&mut room, "li2", Action::Leave);
    assert_eq!(room.invited().count(), 0, "leaving drops the invitation");
}

#[test]
fn a_speaker_who_steps_down_must_ask_again() {
    let mut room = fixture();
    ok(&mut room, "sp1", Action::MoveToAudience { target: id("sp1"), reason: None });
    assert_eq!(room.member(&id("sp1")).map(|m| m.role), Some(Role::Listener));
    assert_eq!(err(&mut room, "sp1", Action::TakeStage).code(), "not_permitted");
    ok(&mut room, "sp1", Action::RequestToSpeak);
}

// ----- co-hosts and the host -----

#[test]
fn at_most_two_cohosts() {
    let mut room = fixture();
    let e = err(&mut room, "host", Action::PromoteCohost { target: id("sp1") });
    assert_eq!((e.code(), e.http_status()), ("cohosts_full", 409));
    ok(&mut room, "co2", Action::DemoteCohost { target: id("co2") });
    assert_eq!(room.member(&id("co2")).map(|m| m.role), Some(Role::Speaker), "on stage: speaker");
    ok(&mut room, "host", Action::PromoteCohost { target: id("hand") });
    assert_eq!(room.hands().count(), 0, "a co-host has no hand up");
    assert_eq!(
        err(&mut room, "host", Action::PromoteCohost { target: id("co1") }).code(),
        "already_cohost"
    );
    assert_eq!(
        err(&mut room, "host", Action::PromoteCohost { target: id("sp1") }).code(),
        "cohosts_full"
    );
}

#[test]
fn transferring_the_host_role_swaps_host_and_cohost() {
    let mut room = fixture();
    ok(&mut room, "host", Action::TransferHost { target: id("co1") });
    assert_eq!(room.host(), &id("co1"));
    assert_eq!(room.member(&id("host")).map(|m| m.role), Some(Role::Cohost));
    assert_eq!(err(&mut room, "host", Action::End).code(), "not_permitted");
    ok(&mut room, "co1", Action::Remove { target: id("host"), reason: None });
    assert!(invariants(&room).is_ok());
}

// ----- reactions -----

#[test]
fn reactions_are_rate_limited_per_identity_and_tallied_per_second() {
    let mut room = fixture();
    let limit = room.config().reactions_per_second;
    for _ in 0..limit {
        at(&mut room, "li1", Action::React { reaction: Reaction::Clap }, 2_000).expect("react");
    }
    let e = at(&mut room, "li1", Action::React { reaction: Reaction::Clap }, 2_000)
        .expect_err("limited");
    assert_eq!((e.code(), e.http_status(), e.retry_after_secs()), ("rate_limited", 429, Some(1)));
    at(&mut room, "li2", Action::React { reaction: Reaction::Fire }, 2_000)
        .expect("others still may");
    at(&mut room, "li1", Action::React { reaction: Reaction::Heart }, 2_001).expect("next second");
    let pending: Vec<_> = room.pending_reactions().map(|(s, c)| (s, c.clone())).collect();
    assert_eq!(pending.len(), 2);
    let taken = room.take_reactions(UnixTime(2_001));
    let counts = BTreeMap::from([(Reaction::Clap, limit), (Reaction::Fire, 1)]);
    assert_eq!(taken, vec![RoomEvent::Reactions { second: UnixTime(2_000), counts }]);
    assert_eq!(room.pending_reactions().count(), 1, "the current second stays");
    assert!(room.take_reactions(UnixTime(2_001)).is_empty(), "taking resets");
}

#[test]
fn reactions_parse_from_emoji_or_name_and_serialise_as_emoji() {
    for r in Reaction::ALL {
        assert_eq!(r.emoji().parse::<Reaction>(), Ok(r));
        assert_eq!(r.name().parse::<Reaction>(), Ok(r));
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(json, format!("\"{}\"", r.emoji()));
    }
    assert_eq!(
        "\u{2764}".parse::<Reaction>(),
        Ok(Reaction::Heart),
        "without the variation selector"
    );
    assert!("💩".parse::<Reaction>().is_err());
    assert!("".parse::<Reaction>().is_err());
}

// ----- ending, the log, errors, the view -----

#[test]
fn after_the_end_everything_is_a_conflict() {
    let mut room = fixture();
    let ev = ok(&mut room, "host", Action::End);
    assert_eq!(ev, vec![RoomEvent::Ended { by: id("host") }]);
    assert!(room.is_ended() && room.speakers().is_empty() && room.present_count() == 0);
    assert!(invariants(&room).is_ok());
    for (who, action) in [
        ("host", Action::End),
        ("sp1", Action::Join { token_role: Role::Speaker }),
        ("li1", Action::React { reaction: Reaction::Clap }),
    ] {
        let e = err(&mut room, who, action);
        assert_eq!((e.code(), e.http_status()), ("ended", 409));
    }
}

#[test]
fn moderation_is_logged_with_time_actor_target_and_reason() {
    let mut room = fixture();
    at(
        &mut room,
        "co1",
        Action::Mute { target: id("sp1"), reason: Some("  echo  ".into()) },
        1_010,
    )
    .expect("mute");
    at(&mut room, "co1", Action::Mute { target: id("sp1"), reason: None }, 1_011)
        .expect_err("twice");
    at(&mut room, "sp2", mute("sp2"), 1_012).expect("self-mute is not moderation");
    let long = "x".repeat(Room::MAX_REASON_CHARS + 10);
    at(&mut room, "host", Action::Remove { target: id("li1"), reason: Some(long) }, 1_013)
        .expect("remove");
    at(&mut room, "host", Action::Block { target: id("troll"), reason: Some(" ".into()) }, 1_014)
        .expect("block");
    at(&mut room, "host", Action::End, 1_015).expect("end");
    let log: Vec<_> = room.log().cloned().collect();
    let kinds: Vec<_> = log.iter().map(|e| (e.at.0, e.actor.to_string(), e.action)).collect();
    assert_eq!(
        kinds,
        vec![
            (1_010, "co1".to_owned(), ModAction::Mute),
            (1_013, "host".to_owned(), ModAction::Remove),
            (1_014, "host".to_owned(), ModAction::Block),
            (1_015, "host".to_owned(), ModAction::End),
        ]
    );
    assert_eq!(log[0].target, Some(id("sp1")));
    assert_eq!(log[0].reason.as_deref(), Some("echo"));
    assert_eq!(log[1].reason.as_ref().map(|r| r.chars().count()), Some(Room::MAX_REASON_CHARS));
    assert_eq!((log[2].reason.as_ref(), log[3].target.as_ref()), (None, None));
    let json = serde_json::to_value(&log[0]).expect("json");
    assert_eq!(json["action"], "mute");
}

#[test]
fn error_codes_are_unique_and_statuses_match_their_kind() {
    let who = id("x");
    let all = [
        RoomError::NotPermitted { role: Role::Listener, action: "mute others" },
        RoomError::Outranked { target: who.clone(), role: Role::Host },
        RoomError::MutedByModerator,
        RoomError::MutedByHost(who.clone()),
        RoomError::NotYourMicrophone(who.clone()),
        RoomError::Removed(who.clone()),
        RoomError::Blocked(who.clone()),
        RoomError::UnknownMember(who.clone()),
        RoomError::Ended,
        RoomError::NotPresent(who.clone()),
        RoomError::AlreadyPresent(who.clone()),
        RoomError::SelfTarget("remove"),
        RoomError::StageFull(13),
        RoomError::AlreadyOnStage(who.clone()),
        RoomError::NotOnStage(who.clone()),
        RoomError::HandAlreadyRaised(who.clone()),
        RoomError::HandRaised(who.clone()),
        RoomError::NoHandRaised(who.clone()),
        RoomError::AlreadyInvited(who.clone()),
        RoomError::NotInvited(who.clone()),
        RoomError::CanTakeStage(who.clone()),
        RoomError::AlreadyMuted(who.clone()),
        RoomError::NotMuted(who.clone()),
        RoomError::CohostsFull(2),
        RoomError::AlreadyCohost(who.clone()),
        RoomError::NotCohost(who.clone()),
        RoomError::AlreadyRemoved(who.clone()),
        RoomError::AlreadyBlocked(who.clone()),
        RoomError::NotBlocked(who.clone()),
        RoomError::BlockListFull(1),
        RoomError::RemovedListFull(1),
        RoomError::HandsFull(1),
        RoomError::InvitationsFull(1),
        RoomError::ReactionRateLimited(5),
        RoomError::Full(1),
    ];
    let codes: BTreeSet<&str> = all.iter().map(RoomError::code).collect();
    assert_eq!(codes.len(), all.len(), "codes are unique");
    for e in &all {
        assert!(!e.to_string().is_empty());
        assert!([403, 404, 409, 429, 503].contains(&e.http_status()), "{e:?}");
        assert!(e.code().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    }
    assert_eq!(
        RoomError::NotPermitted { role: Role::Listener, action: "mute others" }.to_string(),
        "a listener may not mute others"
    );
}

#[test]
fn the_view_serialises_for_the_api() {
    let mut room = fixture();
    ok(&mut room, "co1", mute("sp2"));
    let view = room.view();
    let stage: Vec<&str> = view.speakers.iter().map(|m| m.identity.as_str()).collect();
    assert_eq!(stage, ["host", "co1", "co2", "sp1", "sp2"], "host, co-hosts, then speakers");
    assert_eq!((view.present, view.listeners), (8, 3));
    let json = serde_json::to_value(&view).expect("json");
    assert_eq!(json["host"], "host");
    assert_eq!(json["hands"][0]["who"], "hand");
    assert_eq!(json["speakers"][4]["mute"]["state"], "moderator");
    assert_eq!(json["speakers"][4]["mute"]["by"], "co1");
    assert_eq!(json["speakers"][0]["presence"], "joined");
    let ev = serde_json::to_value(RoomEvent::SpeakerAdded { who: id("a"), role: Role::Speaker })
        .expect("json");
    assert_eq!(ev, serde_json::json!({"type": "speaker_added", "who": "a", "role": "speaker"}));
}

#[test]
fn the_view_names_the_present_audience_up_to_its_sample() {
    let mut room = fixture();
    ok(&mut room, "li2", Action::Leave);
    let v = room.view();
    assert_eq!(v.audience, vec![id("hand"), id("li1")], "present, off stage, by identity");
    assert_eq!(v.listeners, 2);
    for n in 0..Room::AUDIENCE_SAMPLE + 10 {
        ok(&mut room, &format!("x{n:03}"), Action::Join { token_role: Role::Listener });
    }
    let v = room.view();
    assert_eq!(v.audience.len(), Room::AUDIENCE_SAMPLE);
    assert_eq!(v.listeners, Room::AUDIENCE_SAMPLE + 12);
}
