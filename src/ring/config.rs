//! The producer's choice of ring size, largest frame and wait strategy.

use super::error::RingError;
use super::layout::{DEFAULT_CAPACITY, MAX_CAPACITY, MIN_CAPACITY, max_frame_limit};
use super::wait::WaitStrategy;

/// How to build a ring.
///
/// ```
/// use daemoneye_lib::ring::{RingConfig, WaitStrategy};
///
/// let config = RingConfig::new(256 << 10)
///     .with_max_frame(64 << 10)
///     .with_wait(WaitStrategy::BusySpin);
/// assert!(config.validate().is_ok());
/// assert!(RingConfig::new(1000).validate().is_err()); // not a power of two
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes in the data area: a power of two from 64 KiB to 1 GiB.
    pub capacity: usize,
    /// The largest payload a frame may carry: 1 to `capacity / 2 - 8`.
    pub max_frame: usize,
    /// How the producer waits for room (and, for [`pair`](super::pair), how
    /// the consumer waits for data).
    pub wait: WaitStrategy,
}

impl RingConfig {
    /// A ring of `capacity` bytes whose largest frame is an eighth of it,
    /// with the default wait strategy.
    pub fn new(capacity: usize) -> RingConfig {
        RingConfig {
            capacity,
            max_frame: capacity / 8,
            wait: WaitStrategy::default(),
        }
    }

    /// Sets the largest frame.
    pub fn with_max_frame(self, max_frame: usize) -> RingConfig {
        RingConfig { max_frame, ..self }
    }

    /// Sets the wait strategy.
    pub fn with_wait(self, wait: WaitStrategy) -> RingConfig {
        RingConfig { wait, ..self }
    }

    /// Checks every field; [`Producer::create`](super::Producer::create)
    /// calls this first.
    pub fn validate(&self) -> Result<(), RingError> {
        let capacity = self.capacity;
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(RingError::InvalidConfig {
                field: "capacity",
                value: capacity as u64,
                reason: "must be a power of two from 64 KiB to 1 GiB",
            });
        }
        if self.max_frame == 0 || self.max_frame > max_frame_limit(capacity) {
            return Err(RingError::InvalidConfig {
                field: "max_frame",
                value: self.max_frame as u64,
                reason: "must be from 1 to capacity / 2 - 8",
            });
        }
        self.wait.validate()
    }
}

impl Default for RingConfig {
    /// A 1 MiB ring with 128 KiB frames.
    fn default() -> RingConfig {
        RingConfig::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        RingConfig::default().validate().unwrap();
        assert_eq!(RingConfig::default().max_frame, 128 << 10);
    }

    #[test]
    fn bounds_are_checked() {
        let field = |config: RingConfig| match config.validate() {
            Err(RingError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        assert_eq!(field(RingConfig::new(MIN_CAPACITY / 2)), "capacity");
        assert_eq!(field(RingConfig::new(MAX_CAPACITY * 2)), "capacity");
        assert_eq!(field(RingConfig::new(MIN_CAPACITY + 8)), "capacity");
        assert_eq!(
            field(RingConfig::new(MIN_CAPACITY).with_max_frame(0)),
            "max_frame"
        );
        let limit = max_frame_limit(MIN_CAPACITY);
        RingConfig::new(MIN_CAPACITY)
            .with_max_frame(limit)
            .validate()
            .unwrap();
        assert_eq!(
            field(RingConfig::new(MIN_CAPACITY).with_max_frame(limit + 1)),
            "max_frame"
        );
        let park = WaitStrategy::Park {
            timeout: std::time::Duration::ZERO,
        };
        assert_eq!(field(RingConfig::default().with_wait(park)), "park timeout");
        RingConfig::new(MAX_CAPACITY).validate().unwrap();
    }
}
