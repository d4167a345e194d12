//! Who may hold procmond's connections: places for connections in their
//! handshake and for clients served, a cap per peer uid, and one place of
//! each kind that only root (or procmond's own uid) may take.
//!
//! Without the cap, one allowed uid could hold every client slot and keep
//! every handshake place busy with idle connects, and root's own agent
//! would be refused. A connection counts against its uid from accept to
//! close, whichever stage it is in, so idle connects cannot be cycled past
//! the cap either. Root and procmond's own uid are not capped: they are
//! whom the reserved places are for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// How many connections of each kind, and per uid, may exist at once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Clients served (welcomed) at once.
    pub(super) clients: usize,
    /// Connections in their handshake at once.
    pub(super) handshakes: usize,
    /// Connections of one unprivileged uid, in any stage.
    pub(super) per_uid: usize,
    /// procmond's own uid: privileged like root.
    pub(super) owner: u32,
}

impl Limits {
    fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner
    }

    /// The places of `total` a peer with `uid` may fill: all for a
    /// privileged one; for anyone else one fewer, when there is more than
    /// one (with a single place, reserving it would lock everyone else out).
    fn open_to(&self, uid: u32, total: usize) -> usize {
        if self.privileged(uid) || total < 2 {
            total
        } else {
            total - 1
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    handshaking: usize,
    clients: usize,
    per_uid: HashMap<u32, usize>,
}

/// The server's connection places; see the [module documentation](self).
#[derive(Debug)]
pub(super) struct Slots {
    limits: Limits,
    counts: Mutex<Counts>,
}

/// Where a held connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Handshake,
    Client,
}

/// One connection's place, given back when dropped.
#[derive(Debug)]
pub(super) struct Held {
    slots: Arc<Slots>,
    uid: u32,
    stage: Stage,
}

impl Slots {
    pub(super) fn new(limits: Limits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            counts: Mutex::default(),
        })
    }

    /// The counts; a panic elsewhere while they were held left them whole
    /// (each update is one step).
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Clients served now (handshakes not counted).
    pub(super) fn clients(&self) -> usize {
        self.counts().clients
    }

    /// A handshake place for a just-accepted connection of `uid`, or why
    /// there is none (a reason for the peer, naming the limit).
    pub(super) fn admit(self: &Arc<Self>, uid: u32) -> Result<Held, String> {
        let mut counts = self.counts();
        let mine = counts.per_uid.get(&uid).copied().unwrap_or(0);
        if mine >= self.limits.per_uid && !self.limits.privileged(uid) {
            return Err(format!(
                "uid {uid} already holds {mine} of procmond's connections, its limit per uid \
                 (--max-clients-per-uid); close one first"
            ));
        }
        let open = self.limits.open_to(uid, self.limits.handshakes);
        if counts.handshaking >= open {
            return Err(full(
                counts.handshaking,
                self.limits.handshakes,
                "connections in their handshake",
            ));
        }
        counts.handshaking += 1;
        *counts.per_uid.entry(uid).or_insert(0) += 1;
        Ok(Held {
            slots: Arc::clone(self),
            uid,
            stage: Stage::Handshake,
        })
    }
}

impl Held {
    /// Moves a connection that finished its handshake to a client slot, or
    /// says why there is none (it then stays a handshake, given back when
    /// dropped).
    pub(super) fn serve(&mut self) -> Result<(), String> {
        if self.stage == Stage::Client {
            return Ok(());
        }
        let limits = self.slots.limits;
        let mut counts = self.slots.counts();
        let open = limits.open_to(self.uid, limits.clients);
        if counts.clients >= open {
            return Err(full(counts.clients, limits.clients, "clients served"));
        }
        counts.clients += 1;
        counts.handshaking -= 1;
        self.stage = Stage::Client;
        Ok(())
    }
}

/// Why a peer found no place: `held` of `total` places of `kind` are
/// taken, and the last one, when free, is kept for root.
fn full(held: usize, total: usize, kind: &str) -> String {
    if held < total {
        format!(
            "procmond has {held} of its {total} {kind} and keeps the last place for root; \
             try again later"
        )
    } else {
        format!("procmond already has its maximum of {total} {kind}; try again later")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.slots.counts();
        match self.stage {
            Stage::Handshake => counts.handshaking -= 1,
            Stage::Client => counts.clients -= 1,
        }
        if let Some(mine) = counts.per_uid.get_mut(&self.uid) {
            *mine -= 1;
            if *mine == 0 {
                counts.per_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_is_capped_and_root_keeps_a_place_of_each_kind() {
        let slots = Slots::new(Limits {
            clients: 2,
            handshakes: 3,
            per_uid: 3,
            owner: 0,
        });
        let mut first = slots.admit(1000).unwrap();
        first.serve().unwrap();
        let mut second = slots.admit(1000).unwrap();
        let refused = second.serve().unwrap_err();
        assert!(refused.contains("last place for root"), "{refused}");
        let _third = slots.admit(1000).unwrap();
        let refused = slots.admit(1000).unwrap_err();
        assert!(refused.contains("limit per uid"), "{refused}");
        // Handshakes: 2 of 3 held; the last is root's.
        let refused = slots.admit(1001).unwrap_err();
        assert!(refused.contains("last place for root"), "{refused}");
        let mut root = slots.admit(0).unwrap();
        root.serve().unwrap();
        // Places come back when dropped.
        drop(first);
        drop(second);
        drop(root);
        second = slots.admit(1001).unwrap();
        second.serve().unwrap();
        assert_eq!(slots.counts().per_uid.get(&1000), Some(&1));
        drop(second);
        // Root is not capped per uid.
        let roots: Vec<Held> = (0..2).map(|_| slots.admit(0).unwrap()).collect();
        assert_eq!(roots.len(), 2);
    }
}
