//! Hybrid logical clock and cell versions.
//!
//! An [`Hlc`] packs wall-clock milliseconds (48 bits, good until year 10889) and a logical
//! counter (16 bits) into one `u64`, so timestamps order as integers and encode in 8 bytes.
//! The clock never runs backwards: across restarts the last issued value is persisted and the
//! next one is strictly greater, whatever the wall clock says.

use std::fmt;

use crate::NodeId;

/// A hybrid logical timestamp: `wall_ms << 16 | logical`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

impl Hlc {
    /// The smallest timestamp; no real write carries it.
    pub const ZERO: Hlc = Hlc(0);

    /// A timestamp from its parts.
    pub fn new(wall_ms: u64, logical: u16) -> Hlc {
        Hlc((wall_ms << LOGICAL_BITS) | u64::from(logical))
    }

    /// Wall-clock part, milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter part.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({}.{})", self.wall_ms(), self.logical())
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms(), self.logical())
    }
}

/// The version of a cell: the total order in which last-writer-wins picks a winner.
/// Ordered by timestamp, then by node id, so every replica picks the same winner.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Version {
    /// When the write happened (hybrid logical time at its origin).
    pub hlc: Hlc,
    /// The node that made the write.
    pub node: NodeId,
}

/// The clock state of one node. Sans-IO: the caller passes the wall time in.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    last: Hlc,
    skew_ms_max: u64,
}

/// A remote timestamp was too far ahead of the local wall clock to adopt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "remote timestamp {remote} is {ahead_ms} ms ahead of this node's clock (limit {limit_ms} ms): \
     fix the clock of the node that wrote it, or raise the skew limit"
)]
pub struct ClockSkewError {
    /// The refused timestamp.
    pub remote: Hlc,
    /// How far ahead of local wall time it was.
    pub ahead_ms: u64,
    /// The configured limit.
    pub limit_ms: u64,
}

impl Clock {
    /// A clock that continues after `last` (the persisted high-water mark).
    pub fn new(last: Hlc, skew_ms_max: u64) -> Clock {
        Clock { last, skew_ms_max }
    }

    /// The skew limit in ms.
    pub fn skew_ms_max(&self) -> u64 {
        self.skew_ms_max
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The next timestamp for a local event: strictly greater than anything seen before.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        let candidate = Hlc::new(wall_ms, 0);
        self.last = if candidate > self.last {
            candidate
        } else {
            // Wall clock did not advance (or went back): bump the logical counter. When the
            // counter would overflow, borrow the next millisecond; the order is what matters.
            Hlc(self.last.0 + 1)
        };
        self.last
    }

    /// Take a remote timestamp into account so that later local events order after it.
    /// Refuses timestamps more than the skew limit ahead of `wall_ms`.
    pub fn observe(&mut self, remote: Hlc, wall_ms: u64) -> Result<(), ClockSkewError> {
        self.check(remote, wall_ms)?;
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }

    /// Check a remote timestamp against the skew limit without adopting it.
    pub fn check(&self, remote: Hlc, wall_ms: u64) -> Result<(), ClockSkewError> {
        let ahead_ms = remote.wall_ms().saturating_sub(wall_ms);
        if ahead_ms > self.skew_ms_max {
            return Err(ClockSkewError {
                remote,
                ahead_ms,
                limit_ms: self.skew_ms_max,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_strictly_monotonic_even_when_wall_clock_goes_back() {
        let mut c = Clock::new(Hlc::ZERO, 1000);
        let a = c.tick(5000);
        let b = c.tick(4000);
        let d = c.tick(5000);
        assert!(a < b && b < d);
        assert_eq!(a.wall_ms(), 5000);
        assert_eq!(b.wall_ms(), 5000);
        assert_eq!(b.logical(), 1);
    }

    #[test]
    fn observe_adopts_remote_and_refuses_far_future() {
        let mut c = Clock::new(Hlc::ZERO, 1000);
        c.observe(Hlc::new(1500, 3), 1000).unwrap();
        assert!(c.tick(1000) > Hlc::new(1500, 3));
        let err = c.observe(Hlc::new(5000, 0), 1000).unwrap_err();
        assert_eq!(err.ahead_ms, 4000);
        assert!(err.to_string().contains("fix the clock"));
    }

    #[test]
    fn version_orders_by_time_then_node() {
        let n1 = NodeId([1; 16]);
        let n2 = NodeId([2; 16]);
        let a = Version {
            hlc: Hlc::new(10, 0),
            node: n2,
        };
        let b = Version {
            hlc: Hlc::new(10, 0),
            node: n1,
        };
        let c = Version {
            hlc: Hlc::new(11, 0),
            node: n1,
        };
        assert!(b < a && a < c);
    }
}
