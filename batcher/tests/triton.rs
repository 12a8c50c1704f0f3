//! One test per rule of the `triton` policy (crate doc), and a hand-computed
//! trace.

mod common;

use common::{MS, Out, d, simulate};
use preba_batcher::{
    Action, Error, Event, Policy, RejectReason, Request, RequestId, Time, Triton, TritonConfig,
};

fn triton(slices: usize, max: u32, preferred: &[u32], delay: Time, max_queue: usize) -> Triton {
    Triton::new(TritonConfig {
        slices,
        max_batch_size: max,
        preferred: preferred.to_vec(),
        max_queue_delay: delay,
        max_queue,
    })
    .unwrap()
}

fn arrive(p: &mut Triton, now: Time, id: u64) -> Vec<Action> {
    ev(
        p,
        now,
        Event::Arrival(Request {
            id: RequestId(id),
            arrival: now,
            duration_s: None,
            deadline: None,
        }),
    )
}

fn ev(p: &mut Triton, now: Time, e: Event) -> Vec<Action> {
    let mut out = Vec::new();
    p.handle(now, e, &mut out);
    out
}

fn dispatch(slice: usize, batch: &[u64]) -> Action {
    Action::Dispatch {
        slice,
        batch: batch.iter().copied().map(RequestId).collect(),
        bucket: None,
    }
}

#[test]
fn arrivals_go_round_robin_to_per_slice_queues() {
    let mut p = triton(3, 4, &[4], 10 * MS, 100);
    for id in 1..=6 {
        arrive(&mut p, id, id);
    }
    assert_eq!(p.slice_queue_depths(), vec![2, 2, 2]);
    assert_eq!(p.queue_depths(), vec![6]);
    assert_eq!(
        ev(&mut p, 10 * MS + 6, Event::Timer),
        vec![
            dispatch(0, &[1, 4]),
            dispatch(1, &[2, 5]),
            dispatch(2, &[3, 6])
        ]
    );
}

#[test]
fn a_preferred_size_goes_at_once_the_largest_that_fits() {
    let mut p = triton(1, 8, &[4, 2], 10 * MS, 100);
    // One request: no preferred size yet, wait for the oldest's delay.
    assert_eq!(arrive(&mut p, 0, 1), vec![Action::ArmTimer { at: 10 * MS }]);
    // Two: preferred size 2, at once (no waiting for 4).
    assert_eq!(arrive(&mut p, 1, 2), vec![dispatch(0, &[1, 2])]);
    // Seven arrive while busy: the largest preferred size <= 7 is 4.
    for id in 3..=9 {
        assert_eq!(arrive(&mut p, id, id), vec![]);
    }
    assert_eq!(
        ev(&mut p, 20, Event::SliceFree { slice: 0 }),
        vec![dispatch(0, &[3, 4, 5, 6])]
    );
    // Three left: preferred 2.
    assert_eq!(
        ev(&mut p, 21, Event::SliceFree { slice: 0 }),
        vec![dispatch(0, &[7, 8])]
    );
    // The last one waits for its delay once its slice is free (no timer while
    // the slice is busy: only a free slice waits on time).
    assert_eq!(
        ev(&mut p, 22, Event::SliceFree { slice: 0 }),
        vec![Action::ArmTimer { at: 9 + 10 * MS }]
    );
}

#[test]
fn preferred_defaults_to_max_batch_size() {
    let mut p = triton(1, 3, &[], 10 * MS, 100);
    assert_eq!(arrive(&mut p, 0, 1), vec![Action::ArmTimer { at: 10 * MS }]);
    assert_eq!(arrive(&mut p, 1, 2), vec![]);
    assert_eq!(arrive(&mut p, 2, 3), vec![dispatch(0, &[1, 2, 3])]);
}

#[test]
fn after_the_max_queue_delay_what_there_is_goes_up_to_max_batch_size() {
    let mut p = triton(1, 4, &[4], 5 * MS, 100);
    assert_eq!(arrive(&mut p, 0, 1), vec![Action::ArmTimer { at: 5 * MS }]);
    assert_eq!(arrive(&mut p, MS, 2), vec![]);
    // Early timer: re-armed, nothing sent.
    assert_eq!(
        ev(&mut p, 4 * MS, Event::Timer),
        vec![Action::ArmTimer { at: 5 * MS }]
    );
    assert_eq!(ev(&mut p, 5 * MS, Event::Timer), vec![dispatch(0, &[1, 2])]);
    // While busy six arrive; by the time the slice frees the oldest is
    // overdue, so max_batch_size goes, then the remaining two (still overdue).
    for id in 3..=8 {
        arrive(&mut p, 6 * MS, id);
    }
    assert_eq!(
        ev(&mut p, 12 * MS, Event::SliceFree { slice: 0 }),
        vec![dispatch(0, &[3, 4, 5, 6])]
    );
    assert_eq!(
        ev(&mut p, 13 * MS, Event::SliceFree { slice: 0 }),
        vec![dispatch(0, &[7, 8])]
    );
}

#[test]
fn zero_delay_sends_whatever_is_there() {
    let mut p = triton(1, 8, &[4, 8], 0, 100);
    assert_eq!(arrive(&mut p, 0, 1), vec![dispatch(0, &[1])]);
    for id in 2..=4 {
        assert_eq!(arrive(&mut p, id, id), vec![]);
    }
    assert_eq!(
        ev(&mut p, 9, Event::SliceFree { slice: 0 }),
        vec![dispatch(0, &[2, 3, 4])]
    );
}

#[test]
fn queues_are_not_shared_a_request_on_a_busy_slice_waits_while_another_is_free() {
    let mut p = triton(2, 4, &[1], 0, 100);
    assert_eq!(arrive(&mut p, 0, 1), vec![dispatch(0, &[1])]);
    assert_eq!(arrive(&mut p, 1, 2), vec![dispatch(1, &[2])]);
    assert_eq!(ev(&mut p, 2, Event::SliceFree { slice: 1 }), vec![]);
    // Round robin puts 3 on busy slice 0, though slice 1 is free.
    assert_eq!(arrive(&mut p, 3, 3), vec![]);
    assert_eq!(p.slice_queue_depths(), vec![1, 0]);
    assert_eq!(ev(&mut p, 4, Event::Timer), vec![]);
    assert_eq!(
        ev(&mut p, 5, Event::SliceFree { slice: 0 }),
        vec![dispatch(0, &[3])]
    );
}

#[test]
fn the_balancer_skips_down_slices_and_they_get_nothing() {
    let mut p = triton(3, 4, &[1], 0, 100);
    assert_eq!(ev(&mut p, 0, Event::SliceDown { slice: 1 }), vec![]);
    assert_eq!(arrive(&mut p, 1, 1), vec![dispatch(0, &[1])]);
    assert_eq!(arrive(&mut p, 2, 2), vec![dispatch(2, &[2])]);
    // Slice 0 busy: 3 waits there, not on the down slice.
    assert_eq!(arrive(&mut p, 3, 3), vec![]);
    assert_eq!(p.slice_queue_depths(), vec![1, 0, 0]);
    // All down: the balancer has no healthy slice and keeps its turn order.
    for s in [0, 2] {
        ev(&mut p, 4, Event::SliceDown { slice: s });
    }
    // (next in turn: slice 1)
    assert_eq!(arrive(&mut p, 5, 4), vec![]);
    assert_eq!(p.slice_queue_depths(), vec![1, 1, 0]);
    assert_eq!(ev(&mut p, 6, Event::SliceFree { slice: 2 }), vec![]);
    assert_eq!(
        ev(&mut p, 7, Event::SliceFree { slice: 1 }),
        vec![dispatch(1, &[4])]
    );
}

#[test]
fn a_full_slice_queue_rejects_even_if_another_has_room() {
    let mut p = triton(2, 4, &[4], 10 * MS, 1);
    arrive(&mut p, 0, 1); // slice 0
    arrive(&mut p, 1, 2); // slice 1
    assert_eq!(
        arrive(&mut p, 2, 3), // slice 0: full
        vec![Action::Reject {
            id: RequestId(3),
            reason: RejectReason::QueueFull { limit: 1 }
        }]
    );
    assert_eq!(p.queued(), 2);
}

#[test]
fn bad_configs_are_refused() {
    let cfg = TritonConfig {
        slices: 1,
        max_batch_size: 4,
        preferred: vec![2],
        max_queue_delay: 0,
        max_queue: 1,
    };
    assert!(Triton::new(cfg.clone()).is_ok());
    for bad in [
        TritonConfig {
            slices: 0,
            ..cfg.clone()
        },
        TritonConfig {
            max_batch_size: 0,
            ..cfg.clone()
        },
        TritonConfig {
            preferred: vec![5],
            ..cfg.clone()
        },
        TritonConfig {
            preferred: vec![0],
            ..cfg.clone()
        },
        TritonConfig {
            max_queue: 0,
            ..cfg.clone()
        },
    ] {
        assert!(matches!(Triton::new(bad), Err(Error::Config(_))));
    }
}

/// Two slices, max_batch_size 4, preferred [2, 4], max_queue_delay 5 ms,
/// every batch takes 3 ms. Hand-computed (times in ms; rr = round robin):
///
/// | t  | event           | slice 0 queue | slice 1 queue | dispatch          |
/// |----|-----------------|---------------|---------------|-------------------|
/// | 0  | 1 (rr s0)       | 1             |               | wait till 5       |
/// | 1  | 2 (rr s1)       | 1             | 2             | wait till 6       |
/// | 2  | 3 (rr s0)       | 1 3           | 2             | s0 [1 3] pref 2   |
/// | 3  | 4 (rr s1)       |               | 2 4           | s1 [2 4] pref 2   |
/// | 4  | 5 (s0), 6 (s1)  | 5             | 6             | both busy         |
/// | 5  | s0 free         | 5             | 6             | wait till 9       |
/// | 7  | 7 (rr s0)       | 5 7           | 6             | s0 [5 7]          |
/// | 8  | 8 (rr s1)       |               | 6 8           | s1 [6 8]          |
/// | 20 | 9 (s0)          | 9             |               | wait till 25      |
/// | 21 | 10 (s1)         | 9             | 10            | wait till 26      |
/// | 25 | timer           |               | 10            | s0 [9] (delay)    |
/// | 26 | timer           |               |               | s1 [10] (delay)   |
/// | 30 | 11 (s0)         | 11            |               | wait till 35      |
/// | 31 | 12 (s1)         | 11            | 12            | wait till 36      |
/// | 32 | 13 (s0)         |               | 12            | s0 [11 13]        |
/// | 36 | timer           |               |               | s1 [12] (delay)   |
#[test]
fn hand_computed_trace() {
    let mut p = triton(2, 4, &[2, 4], 5 * MS, 100);
    let arrivals: Vec<(Time, u64, Option<Time>)> = [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 5),
        (4, 6),
        (7, 7),
        (8, 8),
        (20, 9),
        (21, 10),
        (30, 11),
        (31, 12),
        (32, 13),
    ]
    .iter()
    .map(|&(t, id)| (t * MS, id, None))
    .collect();
    let log = simulate(&mut p, &arrivals, |_, _| 3 * MS);
    let want: Vec<Out> = vec![
        d(2, 0, &[1, 3]),
        d(3, 1, &[2, 4]),
        d(7, 0, &[5, 7]),
        d(8, 1, &[6, 8]),
        d(25, 0, &[9]),
        d(26, 1, &[10]),
        d(32, 0, &[11, 13]),
        d(36, 1, &[12]),
    ];
    assert_eq!(log, want);
}
