//! Connections reset in the middle of a sync: the server drops its first two connections
//! with the client's bytes still unread, which sends a TCP RST (the client reads
//! `ConnectionReset`, or meets `BrokenPipe` writing); the client reconnects at once and the sync resumes from the
//! persisted cursors without losing or re-applying anything.

mod turmoil_common;

use std::io::ErrorKind;
use std::time::Duration;

use blazedb_net::EndReason;
use turmoil::net::TcpStream;
use turmoil_common::*;

const BULK: usize = 3_000;

/// Reset the first connection after 40 KB from the client and the second after 25 KB.
fn reset_first_two(index: usize, stream: TcpStream) -> Conn {
    match index {
        0 => Conn::Reset(ResetAfter::new(stream, 40_000)),
        1 => Conn::Reset(ResetAfter::new(stream, 25_000)),
        _ => Conn::Plain(stream),
    }
}

#[test]
fn resets_mid_sync_resume_without_loss_or_duplicates() {
    let seed = seed(0x5eed_0003);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(90))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .build();
    let h = Harness::new(
        Writes {
            before: BULK,
            during: 200,
            per_tx: 2,
            every: Duration::from_millis(10),
        },
        Writes {
            before: 400,
            during: 200,
            per_tx: 1,
            every: Duration::from_millis(10),
        },
    );
    h.install(&mut sim, reset_first_two);
    run_to_end(&mut sim);
    h.print_sessions();
    println!("simulated {:?}", sim.elapsed());

    // A reset reaches the side that reads as `ConnectionReset`, and the side that writes
    // first as `BrokenPipe` (which of the two the client meets first depends on the seed).
    let reset_by_peer = |side| {
        h.sessions(side)
            .iter()
            .filter(|e| {
                matches!(
                    e.report.end,
                    EndReason::Io {
                        kind: ErrorKind::ConnectionReset | ErrorKind::BrokenPipe,
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(
        reset_by_peer(Side::Server),
        2,
        "the server reset two connections"
    );
    assert_eq!(reset_by_peer(Side::Client), 2, "the client met both resets");
    let first = &h.sessions(Side::Server)[0];
    assert!(
        first.report.stats.cells_applied > 0
            && first.report.stats.cells_applied < (BULK * 4) as u64,
        "the first reset fell mid-sync: {first:?}"
    );
    assert_eq!(h.accepted(), 3);
    h.assert_converged_without_loss_or_duplicates();
}
