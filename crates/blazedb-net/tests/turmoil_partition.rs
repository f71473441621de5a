//! A network partition in the middle of a sync, longer than the idle timeout, then healed:
//! both sessions notice the silence, the client reconnects once the link is back, and the
//! sync resumes from the persisted cursors without losing or re-applying anything.

mod turmoil_common;

use std::time::Duration;

use turmoil_common::*;

const BULK: usize = 3_000;

#[test]
fn partition_then_heal_resumes_without_loss_or_duplicates() {
    let seed = seed(0x5eed_0001);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(90))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build();
    let h = Harness::new(
        Writes {
            before: BULK,
            during: 200,
            per_tx: 2,
            every: Duration::from_millis(25),
        },
        Writes {
            before: 300,
            during: 200,
            per_tx: 1,
            every: Duration::from_millis(30),
        },
    );
    h.install(&mut sim, Conn::plain);

    // Cut once a third of the initial bulk arrived.
    run_until_cond(&mut sim, Duration::from_secs(10), || {
        h.server_db.count("from_client").unwrap_or(0) >= (BULK / 3) as u64
    });
    let cut_at = sim.elapsed();
    sim.partition(CLIENT, SERVER);
    run_until(&mut sim, cut_at + Duration::from_millis(4_000));
    let during_cut = h.server_db.count("from_client").unwrap();
    sim.repair(CLIENT, SERVER);
    run_to_end(&mut sim);
    h.print_sessions();
    println!(
        "cut at {cut_at:?} with {during_cut} of {BULK} records; simulated {:?}",
        sim.elapsed()
    );

    assert!(
        (during_cut as usize) < BULK,
        "the partition must fall mid-sync"
    );
    let client = h.sessions(Side::Client);
    assert!(
        client.iter().any(|e| is_idle_timeout(&e.report.end)),
        "the client noticed the silence"
    );
    assert!(h.accepted() >= 2, "the client reconnected");
    h.assert_converged_without_loss_or_duplicates();
}
