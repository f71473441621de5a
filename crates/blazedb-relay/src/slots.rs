//! Connection slots: one per open connection, over all listeners (`Limits::connections_max`),
//! and, when `Limits::connections_per_address_max` is set, at most that many per client IP
//! address — so that one address cannot take every slot and lock everyone else out.
//!
//! A [`Slot`] is taken when a connection is accepted and released when it is dropped (when
//! the connection closes; a WebSocket upgrade moves it from the HTTP connection to the sync
//! session). Unix socket connections have no address and count only towards the total.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every slot of the relay.
#[derive(Debug)]
pub(crate) struct Slots {
    total: Arc<Semaphore>,
    /// What `total` was sized with: the permits it lacks are the slots held.
    total_max: usize,
    /// Beyond `total`, for the status endpoints only (`STATUS_CONNECTIONS_RESERVED`).
    status: Arc<Semaphore>,
    /// 0: no limit per address.
    per_address_max: usize,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Refused {
    /// The relay holds `connections_max` connections.
    Total,
    /// The client's address holds `connections_per_address_max` of them.
    Address,
}

impl Refused {
    /// Every limit, for metrics that start at 0.
    pub const ALL: [Refused; 2] = [Refused::Total, Refused::Address];

    /// The error code a client sees (HTTP 503 body).
    pub fn code(self) -> &'static str {
        match self {
            Refused::Total => "too_many_connections",
            Refused::Address => "too_many_connections_from_address",
        }
    }

    /// The metric's label value.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::Address => "per_address",
        }
    }

    /// What the client is told.
    pub fn message(self, per_address_max: usize) -> String {
        match self {
            Refused::Total => "the relay is at its connection limit: retry later".into(),
            Refused::Address => format!(
                "your address holds {per_address_max} connections, the most this relay \
                 allows one address: close one, or ask its operator to raise \
                 --max-connections-per-address (clients behind one NAT or proxy share it)"
            ),
        }
    }
}

/// A connection's place, released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    _total: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
}

#[derive(Debug)]
struct AddressSlot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Slots {
    pub fn new(total: usize, per_address_max: usize) -> Slots {
        Slots {
            total: Arc::new(Semaphore::new(total)),
            total_max: total,
            status: Arc::new(Semaphore::new(crate::limits::STATUS_CONNECTIONS_RESERVED)),
            per_address_max,
            per_address: Arc::default(),
        }
    }

    /// The most connections one address may hold (0: no such limit).
    pub fn per_address_max(&self) -> usize {
        self.per_address_max
    }

    /// The connection limit (`Limits::connections_max`), the status reserve not included.
    pub fn max(&self) -> usize {
        self.total_max
    }

    /// Slots held now, of [`Slots::max`]: every accepted connection of every listener, but
    /// those on the status reserve. Read from the semaphore itself, so it cannot drift from
    /// what the limit enforces.
    pub fn used(&self) -> usize {
        self.total_max
            .saturating_sub(self.total.available_permits())
    }

    /// Take a slot for a connection from `ip` (`None`: a Unix socket).
    pub fn take(&self, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Total)?;
        let address = match ip {
            Some(ip) if self.per_address_max > 0 => {
                let ip = canonical(ip);
                let mut counts = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
                let n = counts.entry(ip).or_insert(0);
                if *n >= self.per_address_max {
                    return Err(Refused::Address);
                }
                *n += 1;
                Some(AddressSlot {
                    ip,
                    counts: self.per_address.clone(),
                })
            }
            _ => None,
        };
        Ok(Slot {
            _total: total,
            _address: address,
        })
    }

    /// A slot of the status reserve, for a connection that may only ask `/health` or
    /// `/metrics` (the relay is at its limit).
    pub fn take_status(&self) -> Option<Slot> {
        let permit = self.status.clone().try_acquire_owned().ok()?;
        Some(Slot {
            _total: permit,
            _address: None,
        })
    }

    /// Addresses holding at least one connection (for tests and metrics).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`: the same address as
/// `a.b.c.d`, so it counts as one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_at_its_limit_is_refused_and_others_are_not() {
        let slots = Slots::new(10, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.take(Some(a)).unwrap();
        let _a2 = slots.take(Some(a)).unwrap();
        assert_eq!(slots.take(Some(a)).unwrap_err(), Refused::Address);
        // The same address written as an IPv4-mapped IPv6 one.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(slots.take(Some(mapped)).unwrap_err(), Refused::Address);
        let _b1 = slots.take(Some(b)).unwrap();
        // Unix sockets count only towards the total.
        let _u = slots.take(None).unwrap();
        drop(a1);
        let _a3 = slots.take(Some(a)).unwrap();
        assert_eq!(slots.addresses(), 2);
    }

    #[test]
    fn the_total_is_refused_first_and_a_refusal_takes_nothing() {
        let slots = Slots::new(2, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let _a = slots.take(Some(a)).unwrap();
        // Refused for its address: the total permit it took is given back.
        assert_eq!(slots.take(Some(a)).unwrap_err(), Refused::Address);
        let b1 = slots.take(Some(b)).unwrap();
        assert_eq!(slots.take(Some(c)).unwrap_err(), Refused::Total);
        drop(b1);
        let _c = slots.take(Some(c)).unwrap();
        assert_eq!(slots.addresses(), 2, "b's count is gone with its slot");
    }

    /// `used` is what the limit counts: slots taken, given back on drop, a refusal taking
    /// none; the status reserve is beyond `max` and not in it.
    #[test]
    fn used_counts_the_slots_held_of_max_and_not_the_status_reserve() {
        let slots = Slots::new(3, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!((slots.used(), slots.max()), (0, 3));
        let a1 = slots.take(Some(a)).unwrap();
        let _unix = slots.take(None).unwrap();
        assert_eq!(slots.used(), 2);
        assert_eq!(slots.take(Some(a)).unwrap_err(), Refused::Address);
        assert_eq!(slots.used(), 2, "a refusal holds nothing");
        let _b1 = slots.take(Some(b)).unwrap();
        assert_eq!(slots.used(), 3);
        let _status = slots.take_status().unwrap();
        assert_eq!(
            (slots.used(), slots.max()),
            (3, 3),
            "the reserve is beyond max"
        );
        drop(a1);
        assert_eq!(slots.used(), 2);
    }

    #[test]
    fn without_a_per_address_limit_only_the_total_counts() {
        let slots = Slots::new(3, 0);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| slots.take(Some(a)).unwrap()).collect();
        assert_eq!(slots.take(Some(a)).unwrap_err(), Refused::Total);
        assert_eq!(slots.addresses(), 0);
        drop(held);
    }
}
