//! A flaky link: for five seconds (longer, until two client sessions have timed out), while
//! both sides write, every segment may break the link (seeded fail and repair rates),
//! stalling whatever connection is up; sessions time out and reconnect again and again
//! while both sides keep writing, and once the link is steady the
//! replicas converge without losing or re-applying anything.

mod turmoil_common;

use std::time::Duration;

use turmoil_common::*;

#[test]
fn a_flaky_link_converges_without_loss_or_duplicates() {
    let seed = seed(0x5eed_0004);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(90))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .build();
    let h = Harness::new(
        Writes {
            before: 1_000,
            during: 400,
            per_tx: 1,
            every: Duration::from_millis(20),
        },
        Writes {
            before: 1_000,
            during: 400,
            per_tx: 1,
            every: Duration::from_millis(15),
        },
    );
    h.install(&mut sim, Conn::plain);

    run_until(&mut sim, Duration::from_millis(5));
    sim.set_fail_rate(0.01);
    run_until(&mut sim, Duration::from_secs(5));
    // Flaky for longer where the seed's faults happened to break fewer than two sessions by
    // idle timeout in the first five seconds (one seed in ~60 did), so that every seed
    // tests what this test is about.
    run_until_cond(&mut sim, FLAKY_FOR_AT_MOST, || {
        idle_timeouts(&h) >= IDLE_TIMEOUTS_MIN
    });
    sim.set_fail_rate(0.0);
    sim.repair(CLIENT, SERVER);
    let flaky_sessions = h.accepted();
    run_to_end(&mut sim);
    h.print_sessions();
    println!(
        "{flaky_sessions} connections while flaky; simulated {:?}",
        sim.elapsed()
    );

    let timeouts = idle_timeouts(&h);
    assert!(
        timeouts >= IDLE_TIMEOUTS_MIN,
        "the link broke sessions repeatedly ({timeouts} timeouts)"
    );
    h.assert_converged_without_loss_or_duplicates();
}

/// Client sessions the flaky link must end by idle timeout.
const IDLE_TIMEOUTS_MIN: usize = 2;
/// Simulated time by which it has (the run fails otherwise).
const FLAKY_FOR_AT_MOST: Duration = Duration::from_secs(40);

/// Client sessions that ended by their own idle timeout so far.
fn idle_timeouts(h: &Harness) -> usize {
    h.sessions(Side::Client)
        .iter()
        .filter(|e| is_idle_timeout(&e.report.end))
        .count()
}
