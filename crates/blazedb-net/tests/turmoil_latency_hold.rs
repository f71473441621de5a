//! Added latency, then a link that holds every segment for longer than the idle timeout
//! and releases them all at once: latency alone slows the sync without breaking the
//! session; the hold makes both sides give up, the late segments reach closed sockets
//! (reset), and the reconnected sync resumes without losing or re-applying anything.

mod turmoil_common;

use std::time::Duration;

use turmoil_common::*;

const BULK: usize = 3_000;

#[test]
fn latency_then_hold_and_release_resumes_without_loss_or_duplicates() {
    let seed = seed(0x5eed_0002);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(90))
        .min_message_latency(Duration::from_millis(20))
        .max_message_latency(Duration::from_millis(120))
        .build();
    let h = Harness::new(
        Writes {
            before: BULK,
            during: 300,
            per_tx: 3,
            every: Duration::from_millis(30),
        },
        Writes {
            before: 500,
            during: 300,
            per_tx: 1,
            every: Duration::from_millis(20),
        },
    );
    h.install(&mut sim, Conn::plain);

    // A slow link (700 ms one way, so nearly one idle timeout per round trip) from a tenth
    // of the bulk on.
    let arrived = || h.server_db.count("from_client").unwrap_or(0);
    run_until_cond(&mut sim, Duration::from_secs(10), || {
        arrived() >= (BULK / 10) as u64
    });
    sim.set_link_latency(CLIENT, SERVER, Duration::from_millis(700));
    let (slow_from, accepted_before) = (arrived(), h.accepted());
    let slow_at = sim.elapsed();
    run_until(&mut sim, slow_at + Duration::from_secs(3));
    let slow_to = arrived();
    assert_eq!(
        h.accepted(),
        accepted_before,
        "latency alone broke the session"
    );
    assert!(slow_to > slow_from, "no progress over the slow link");

    // Hold everything in flight for longer than the idle timeout, then deliver it late.
    sim.set_link_latency(CLIENT, SERVER, Duration::from_millis(30));
    let hold_at = sim.elapsed();
    sim.hold(CLIENT, SERVER);
    run_until(&mut sim, hold_at + Duration::from_millis(2_500));
    let held = arrived();
    sim.release(CLIENT, SERVER);
    run_to_end(&mut sim);
    h.print_sessions();
    println!(
        "slow link {slow_from}..{slow_to} records, hold at {hold_at:?} with {held} of {BULK}; \
         simulated {:?}",
        sim.elapsed()
    );

    assert!((held as usize) < BULK, "the hold must fall mid-sync");
    assert!(
        h.sessions(Side::Client)
            .iter()
            .any(|e| is_idle_timeout(&e.report.end)),
        "the client gave up during the hold"
    );
    assert!(h.accepted() > accepted_before, "the client reconnected");
    h.assert_converged_without_loss_or_duplicates();
}
