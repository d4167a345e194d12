//! The stream marker carried in a ring frame's user flags.
//!
//! ```text
//!  bit  15 ........ 6    5      4       3   2   1   0
//!       reserved (zero)  FULL  CANCELLED │   kind    │ END
//! ```
//!
//! END (bit 0) marks the last frame of a task's stream; without it more
//! frames of the same task follow. The kind (bits 1–3) says what the
//! records are. CANCELLED (bit 4, only with END) says the stream ended
//! because the client cancelled the task. FULL (bit 5, on every frame of a
//! changes-only enumerate that is a whole result: the first on its
//! connection, or the first after one that did not finish) tells the agent
//! to replace what it holds rather than apply changes. Reserved bits, and
//! kind codes not listed, must be zero: a frame with any set is refused.

use super::error::SessionError;

const END: u16 = 0x0001;
const CANCELLED: u16 = 0x0010;
const FULL: u16 = 0x0020;
const KIND_SHIFT: u16 = 1;
const KIND_MASK: u16 = 0b111 << KIND_SHIFT;

/// What the records of a frame are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// The records of a one-shot result (enumerate, verify, hash check).
    Result,
    /// MONITOR_PROCESS_TREE: members of the tree when monitoring began.
    Snapshot,
    /// MONITOR_PROCESS_TREE: processes that joined the tree.
    Started,
    /// MONITOR_PROCESS_TREE: members that exited.
    Exited,
    /// MONITOR_PROCESS_TREE: members that replaced their image (the records
    /// carry the new one).
    Exec,
}

impl RecordKind {
    const fn bits(self) -> u16 {
        let code = match self {
            RecordKind::Result => 0,
            RecordKind::Snapshot => 1,
            RecordKind::Started => 2,
            RecordKind::Exited => 3,
            RecordKind::Exec => 4,
        };
        code << KIND_SHIFT
    }
}

/// A frame's place in its stream and what its records are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The last frame of this task's stream.
    pub end: bool,
    /// What the records are.
    pub kind: RecordKind,
    /// The stream ended because the client cancelled the task (only with
    /// `end`).
    pub cancelled: bool,
    /// A changes-only enumerate's result is whole: replace, do not apply.
    pub full: bool,
}

impl Marker {
    /// The ring frame flags for this marker.
    pub const fn to_flags(self) -> u16 {
        self.kind.bits()
            | if self.end { END } else { 0 }
            | if self.cancelled { CANCELLED } else { 0 }
            | if self.full { FULL } else { 0 }
    }

    /// Reads ring frame flags; reserved bits set is
    /// [`SessionError::BadFlags`].
    pub const fn from_flags(flags: u16) -> Result<Marker, SessionError> {
        let cancelled = flags & CANCELLED != 0;
        if flags & !(END | KIND_MASK | CANCELLED | FULL) != 0 || (cancelled && flags & END == 0) {
            return Err(SessionError::BadFlags { flags });
        }
        let kind = match (flags & KIND_MASK) >> KIND_SHIFT {
            0 => RecordKind::Result,
            1 => RecordKind::Snapshot,
            2 => RecordKind::Started,
            3 => RecordKind::Exited,
            4 => RecordKind::Exec,
            _ => return Err(SessionError::BadFlags { flags }),
        };
        Ok(Marker {
            end: flags & END != 0,
            kind,
            cancelled,
            full: flags & FULL != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_marker_round_trips() {
        for kind in [
            RecordKind::Result,
            RecordKind::Snapshot,
            RecordKind::Started,
            RecordKind::Exited,
            RecordKind::Exec,
        ] {
            for (end, cancelled) in [(false, false), (true, false), (true, true)] {
                for full in [false, true] {
                    let marker = Marker {
                        end,
                        kind,
                        cancelled,
                        full,
                    };
                    assert_eq!(Marker::from_flags(marker.to_flags()).unwrap(), marker);
                }
            }
        }
    }

    #[test]
    fn reserved_bits_are_refused() {
        for flags in [5u16 << KIND_SHIFT, 7 << KIND_SHIFT] {
            assert!(matches!(
                Marker::from_flags(flags),
                Err(SessionError::BadFlags { flags: f }) if f == flags
            ));
        }
        // CANCELLED without END, and every reserved bit.
        assert!(Marker::from_flags(CANCELLED).is_err());
        for bit in 6..16 {
            let flags = 1u16 << bit;
            assert!(matches!(
                Marker::from_flags(flags),
                Err(SessionError::BadFlags { flags: f }) if f == flags
            ));
        }
    }
}
