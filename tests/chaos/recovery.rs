//! Recovering members in the chaos run (docs/recovery.md): what each received, live and
//! recovered, and the check that none lost a room message across its reconnects.
//!
//! A member holds its room in *stretches*: from an enter's offset on, continued by each later
//! enter that answers `recovered: true` in the same epoch, until one does not. Within a stretch
//! offsets only rise, and every chat message (`onChat`, all to `*` here) that any member of
//! the room got at an offset of the stretch, this member got too. Member events are not owed:
//! the ones telling a member put back after a purge what changed meanwhile go to it alone.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// Where a recovering member is in its room's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// What a recovering member received, in the order it did.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// An enter answered. `epoch` is `None` when the answer gave no position.
    Entered {
        epoch: Option<String>,
        offset: u64,
        recovered: bool,
    },
    /// A room message, recovered or live: `what` names it, `about` is the user a member event
    /// is about.
    Message {
        offset: u64,
        what: String,
        about: Option<String>,
        /// Pushed, not recovered.
        live: bool,
        /// When it was received (UTC time of day, as the servers' logs write it).
        at: String,
    },
}

/// The enter of a recovering member: from `position` when it has one.
pub fn enter_body(username: &str, rid: &str, position: Option<&Position>) -> Value {
    let mut body = json!({"username": username, "rid": rid, "recover": true});
    if let Some(p) = position {
        body["epoch"] = Value::from(p.epoch.clone());
        body["offset"] = Value::from(p.offset);
    }
    body
}

/// A room message as `Got`, if it carries an offset.
pub fn message(route: &str, body: &Value, live: bool) -> Option<Got> {
    let offset = body.get("offset")?.as_u64()?;
    let about = match route {
        "onAdd" | "onLeave" => body["user"].as_str().map(str::to_owned),
        _ => None,
    };
    let what = match route {
        "onChat" => format!("onChat:{}", body["msg"].as_str().unwrap_or("?")),
        other => format!("{other}:{}", about.as_deref().unwrap_or("?")),
    };
    Some(Got::Message {
        offset,
        what,
        about,
        live,
        at: super::time_of_day(),
    })
}

/// An enter's answer as `Got`s (the entry, then the messages it recovered), and the position
/// the member holds after it.
pub fn entered(answer: &Value, before: Option<&Position>) -> (Vec<Got>, Option<Position>) {
    let epoch = answer["epoch"].as_str().map(str::to_owned);
    let offset = answer["offset"].as_u64().unwrap_or(0);
    let recovered = answer["recovered"].as_bool().unwrap_or(false);
    let mut got = vec![Got::Entered {
        epoch: epoch.clone(),
        offset,
        recovered,
    }];
    let mut last = offset;
    if recovered {
        for m in answer["messages"].as_array().into_iter().flatten() {
            let mut body = m["body"].clone();
            body["offset"] = m["offset"].clone();
            if let Some(g) = message(m["route"].as_str().unwrap_or(""), &body, false) {
                got.push(g);
            }
        }
        // Recovered from `before`: the position is the answer's unless it is behind (never).
        last = offset.max(before.map(|p| p.offset).unwrap_or(0));
    }
    (got, epoch.map(|epoch| Position { epoch, offset: last }))
}

#[derive(Debug)]
struct Stretch {
    epoch: String,
    from: u64,
    /// The highest offset the member holds to: the last received or entered at.
    to: u64,
    last: u64,
    /// The offset of a recovered enter whose recovered messages are being read: the pushes
    /// after them come after it.
    answered: Option<u64>,
    got: BTreeSet<u64>,
    /// What it got, in order (`e12` entered at 12, `l13` pushed 13, `r14` recovered 14), to
    /// show around a loss.
    trace: Vec<(u64, String)>,
}

impl Stretch {
    /// The member's trace just around `offset`.
    fn around(&self, offset: u64) -> String {
        let i = self
            .trace
            .iter()
            .position(|(at, _)| *at > offset)
            .unwrap_or(self.trace.len());
        let near = &self.trace[i.saturating_sub(2)..(i + 2).min(self.trace.len())];
        near.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" ")
    }
}

/// A room message at an offset, as the first member to get it got it.
#[derive(Debug)]
struct Seen {
    what: String,
    /// The user a member event is about.
    about: Option<String>,
    who: String,
    when: String,
}

/// Every violation in what the members received: a message lost within a stretch, offsets
/// not rising, or two members given different messages at one offset.
pub fn check(members: &[(String, String, Vec<Got>)]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut truth: BTreeMap<(String, String, u64), Seen> = BTreeMap::new();
    let mut stretches: Vec<(String, String, Stretch)> = Vec::new();
    for (name, room, log) in members {
        let mut current: Option<Stretch> = None;
        let mut suspect: Option<(String, String)> = None;
        for g in log {
            match g {
                Got::Entered {
                    epoch,
                    offset,
                    recovered,
                } => {
                    if let Some((was, what)) = suspect.take()
                        && epoch.as_ref() == Some(&was)
                    {
                        violations.push(format!("{what}, in one epoch ({was})"));
                    }
                    let continues =
                        *recovered && current.as_ref().is_some_and(|s| Some(&s.epoch) == epoch.as_ref());
                    if continues {
                        if let Some(s) = current.as_mut() {
                            s.to = s.to.max(*offset);
                            s.trace.push((*offset, format!("e{offset}")));
                            // Its recovered messages follow; then pushes after its offset.
                            s.answered = Some(*offset);
                        }
                        continue;
                    }
                    if let Some(s) = current.take() {
                        stretches.push((name.clone(), room.clone(), s));
                    }
                    current = epoch.as_ref().map(|e| Stretch {
                        epoch: e.clone(),
                        from: *offset,
                        to: *offset,
                        // Pushes after an enter come after its offset: one at or below it
                        // is a suspect (a history started again, or a late push).
                        last: *offset,
                        answered: None,
                        got: BTreeSet::new(),
                        trace: vec![(*offset, format!("e{offset}"))],
                    });
                }
                Got::Message {
                    offset,
                    what,
                    about,
                    live,
                    at,
                } => {
                    let Some(s) = current.as_mut() else { continue };
                    if *live && let Some(answered) = s.answered.take() {
                        s.last = s.last.max(answered);
                    }
                    // Pushes carry no epoch: a history that started again (a store that lost
                    // its data) shows as offsets going back. Held as a suspect until the next
                    // enter tells the epoch: the same one means they went back within it.
                    if *live && *offset <= s.last {
                        suspect = Some((
                            s.epoch.clone(),
                            format!(
                                "{name} got offset {offset} of {room} ({what}) live after {} at {at}",
                                s.last
                            ),
                        ));
                        if let Some(s) = current.take() {
                            stretches.push((name.clone(), room.clone(), s));
                        }
                        continue;
                    }
                    if *offset <= s.last {
                        violations.push(format!(
                            "{name} got offset {offset} of {room} ({what}) after {}",
                            s.last
                        ));
                        continue;
                    }
                    s.last = *offset;
                    s.to = s.to.max(*offset);
                    let how = if *live { 'l' } else { 'r' };
                    s.trace.push((*offset, format!("{how}{offset}@{at}")));
                    s.got.insert(*offset);
                    let key = (room.clone(), s.epoch.clone(), *offset);
                    match truth.get(&key) {
                        None => {
                            let seen = Seen {
                                what: what.clone(),
                                about: about.clone(),
                                who: name.clone(),
                                when: at.clone(),
                            };
                            truth.insert(key, seen);
                        }
                        Some(seen) if &seen.what != what => violations.push(format!(
                            "{name} got {what} at offset {offset} of {room}, {} got {}",
                            seen.who, seen.what
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        if let Some(s) = current {
            stretches.push((name.clone(), room.clone(), s));
        }
    }
    for (name, room, s) in &stretches {
        let from = (room.clone(), s.epoch.clone(), s.from + 1);
        let to = (room.clone(), s.epoch.clone(), s.to);
        if from > to {
            continue;
        }
        for ((_, _, offset), seen) in truth.range(from..=to) {
            let Seen {
                what,
                about,
                who,
                when,
            } = seen;
            if !s.got.contains(offset) && about.is_none() {
                violations.push(format!(
                    "{name} lost offset {offset} of {room} ({what}, which {who} got at {when}) while \
                     holding {}..={} of epoch {}; it got: {}",
                    s.from,
                    s.to,
                    s.epoch,
                    s.around(*offset)
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(offset: u64, msg: &str) -> Got {
        Got::Message {
            offset,
            what: format!("onChat:{msg}"),
            about: None,
            live: true,
            at: String::new(),
        }
    }

    fn entered_at(epoch: &str, offset: u64, recovered: bool) -> Got {
        Got::Entered {
            epoch: Some(epoch.into()),
            offset,
            recovered,
        }
    }

    fn member(name: &str, log: Vec<Got>) -> (String, String, Vec<Got>) {
        (name.into(), "room".into(), log)
    }

    #[test]
    fn a_message_missed_between_two_recovered_enters_is_a_loss() {
        let a = member(
            "a",
            vec![
                entered_at("e", 0, false),
                chat(1, "x"),
                entered_at("e", 2, true),
                chat(3, "z"),
            ],
        );
        let b = member(
            "b",
            vec![
                entered_at("e", 0, false),
                chat(1, "x"),
                chat(2, "y"),
                chat(3, "z"),
            ],
        );
        let v = check(&[a, b]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("a lost offset 2"), "{v:?}");
    }

    #[test]
    fn an_enter_not_recovered_starts_afresh_and_own_events_are_not_owed() {
        let a = member(
            "a",
            vec![
                entered_at("e", 0, false),
                chat(1, "x"),
                entered_at("e", 4, false),
                chat(5, "w"),
            ],
        );
        let b = member(
            "b",
            vec![
                entered_at("e", 0, false),
                chat(1, "x"),
                chat(2, "y"),
                chat(3, "z"),
                Got::Message {
                    offset: 4,
                    what: "onAdd:a".into(),
                    about: Some("a".into()),
                    live: true,
                    at: String::new(),
                },
                chat(5, "w"),
            ],
        );
        assert_eq!(check(&[a, b]), Vec::<String>::new());
    }

    #[test]
    fn two_members_given_different_messages_at_one_offset_or_one_twice_are_caught() {
        let a = member(
            "a",
            vec![
                entered_at("e", 0, false),
                chat(1, "x"),
                chat(1, "x"),
                entered_at("e", 1, true),
            ],
        );
        let b = member("b", vec![entered_at("e", 0, false), chat(1, "y")]);
        let v = check(&[a, b]);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn offsets_starting_again_live_are_a_new_epoch_held_from_the_next_enter() {
        let a = member(
            "a",
            vec![
                entered_at("e", 0, false),
                chat(1, "x"),
                chat(2, "y"),
                chat(1, "p"),
                chat(3, "q"),
            ],
        );
        let b = member(
            "b",
            vec![
                entered_at("f", 0, false),
                chat(1, "p"),
                chat(2, "o"),
                chat(3, "q"),
            ],
        );
        assert_eq!(check(&[a, b]), Vec::<String>::new());
    }

    #[test]
    fn offsets_going_back_live_within_one_epoch_are_caught_at_the_next_enter() {
        let a = member(
            "a",
            vec![
                entered_at("e", 0, false),
                chat(1, "x"),
                chat(2, "y"),
                chat(1, "x"),
                entered_at("e", 3, true),
            ],
        );
        let v = check(&[a]);
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn a_push_the_recovered_answer_already_covered_is_caught_at_the_next_enter() {
        let late = Got::Message {
            offset: 4,
            what: "onChat:y".into(),
            about: None,
            live: true,
            at: String::new(),
        };
        let a = member(
            "a",
            vec![
                entered_at("e", 0, false),
                chat(1, "x"),
                entered_at("e", 5, true),
                late,
                entered_at("e", 5, true),
            ],
        );
        let v = check(&[a]);
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn an_answer_reads_into_its_entry_and_recovered_messages() {
        let answer = json!({"users": ["a"], "epoch": "e", "offset": 9, "recovered": true,
            "messages": [{"route": "onChat", "offset": 8, "body": {"msg": "hi", "from": "b"}}]});
        let before = Position {
            epoch: "e".into(),
            offset: 7,
        };
        let (got, position) = entered(&answer, Some(&before));
        assert_eq!(got[0], entered_at("e", 9, true));
        assert!(
            matches!(&got[1], Got::Message { offset: 8, what, live: false, .. } if what == "onChat:hi"),
            "{got:?}"
        );
        assert_eq!(
            position,
            Some(Position {
                epoch: "e".into(),
                offset: 9
            })
        );
    }
}
