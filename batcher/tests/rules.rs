//! One test per batching rule of the crate doc.

use preba_batcher::{
    Action, Error, Event, Policy, Preba, PrebaConfig, RejectReason, Request, RequestId, Time,
};

const MS: Time = 1_000_000;

fn images(slices: usize, batch_max: u32, time_queue: Time, max_queue: usize) -> Preba {
    Preba::new(PrebaConfig {
        slices,
        batch_max: vec![batch_max],
        time_queue,
        bucket_width_s: None,
        max_queue,
    })
    .unwrap()
}

fn audio(slices: usize, batch_max: &[u32], time_queue: Time) -> Preba {
    Preba::new(PrebaConfig {
        slices,
        batch_max: batch_max.to_vec(),
        time_queue,
        bucket_width_s: Some(2.5),
        max_queue: 1000,
    })
    .unwrap()
}

fn arrive(p: &mut Preba, now: Time, id: u64, duration_s: Option<f32>) -> Vec<Action> {
    let mut out = Vec::new();
    p.handle(
        now,
        Event::Arrival(Request {
            id: RequestId(id),
            arrival: now,
            duration_s,
            deadline: None,
        }),
        &mut out,
    );
    out
}

fn ev(p: &mut Preba, now: Time, e: Event) -> Vec<Action> {
    let mut out = Vec::new();
    p.handle(now, e, &mut out);
    out
}

fn ids(v: &[u64]) -> Vec<RequestId> {
    v.iter().copied().map(RequestId).collect()
}

fn dispatch(slice: usize, batch: &[u64], bucket: Option<usize>) -> Action {
    Action::Dispatch {
        slice,
        batch: ids(batch),
        bucket,
    }
}

#[test]
fn full_bucket_dispatches_at_once() {
    let mut p = images(2, 3, 10 * MS, 100);
    assert_eq!(
        arrive(&mut p, 0, 1, None),
        vec![Action::ArmTimer { at: 10 * MS }]
    );
    assert_eq!(arrive(&mut p, 1, 2, None), vec![]);
    assert_eq!(
        arrive(&mut p, 2, 3, None),
        vec![dispatch(0, &[1, 2, 3], None)]
    );
    assert_eq!(p.queued(), 0);
    // Nothing queued: no timer; a stale Timer does nothing.
    assert_eq!(ev(&mut p, 10 * MS, Event::Timer), vec![]);
}

#[test]
fn timeout_dispatches_an_underfull_batch() {
    let mut p = images(1, 8, 10 * MS, 100);
    arrive(&mut p, 0, 1, None);
    arrive(&mut p, 4 * MS, 2, None);
    // Early or spurious timer: nothing due, and the same deadline is re-armed.
    assert_eq!(
        ev(&mut p, 9 * MS, Event::Timer),
        vec![Action::ArmTimer { at: 10 * MS }]
    );
    assert_eq!(
        ev(&mut p, 10 * MS, Event::Timer),
        vec![dispatch(0, &[1, 2], None)]
    );
}

#[test]
fn full_bucket_sends_only_batch_max_and_rearms_for_the_rest() {
    let mut p = images(2, 2, 10 * MS, 100);
    arrive(&mut p, 0, 1, None);
    arrive(&mut p, 1, 2, None);
    // Busy slice 0 now; 3 waits, its deadline is the new earliest one.
    assert_eq!(
        arrive(&mut p, 5, 3, None),
        vec![Action::ArmTimer { at: 10 * MS + 5 }]
    );
    assert_eq!(arrive(&mut p, 6, 4, None), vec![dispatch(1, &[3, 4], None)]);
}

#[test]
fn arrivals_while_all_slices_busy_wait_and_go_when_a_slice_frees() {
    let mut p = images(1, 2, 10 * MS, 100);
    arrive(&mut p, 0, 1, None);
    arrive(&mut p, 0, 2, None); // slice 0 busy
    arrive(&mut p, 1, 3, None);
    arrive(&mut p, 2, 4, None);
    arrive(&mut p, 3, 5, None);
    assert_eq!(p.queued(), 3);
    // Past 3's deadline, slice still busy: the timer fires, nothing to do.
    assert_eq!(ev(&mut p, 20 * MS, Event::Timer), vec![]);
    // The slice comes back with requests overdue: dispatch immediately, FIFO.
    assert_eq!(
        ev(&mut p, 21 * MS, Event::SliceFree { slice: 0 }),
        vec![
            dispatch(0, &[3, 4], None),
            Action::ArmTimer { at: 10 * MS + 3 }
        ]
    );
    assert_eq!(
        ev(&mut p, 22 * MS, Event::SliceFree { slice: 0 }),
        vec![dispatch(0, &[5], None)]
    );
}

#[test]
fn a_slice_never_gets_a_second_batch_before_slice_free() {
    let mut p = images(1, 1, 10 * MS, 100);
    assert_eq!(arrive(&mut p, 0, 1, None), vec![dispatch(0, &[1], None)]);
    assert_eq!(
        arrive(&mut p, 1, 2, None),
        vec![Action::ArmTimer { at: 10 * MS + 1 }]
    );
    assert_eq!(ev(&mut p, 11 * MS, Event::Timer), vec![]);
    assert_eq!(p.queued(), 1);
}

#[test]
fn a_down_slice_gets_nothing_until_slice_free() {
    let mut p = images(2, 1, 10 * MS, 100);
    assert_eq!(ev(&mut p, 0, Event::SliceDown { slice: 0 }), vec![]);
    assert_eq!(arrive(&mut p, 1, 1, None), vec![dispatch(1, &[1], None)]);
    arrive(&mut p, 2, 2, None);
    assert_eq!(p.queued(), 1);
    // A free report for slice 0 brings it back and it takes the waiting request.
    assert_eq!(
        ev(&mut p, 3, Event::SliceFree { slice: 0 }),
        vec![dispatch(0, &[2], None)]
    );
    // A busy slice that dies is down, not free.
    ev(&mut p, 4, Event::SliceDown { slice: 1 });
    ev(&mut p, 5, Event::SliceDown { slice: 0 });
    arrive(&mut p, 6, 3, None);
    assert_eq!(ev(&mut p, 20 * MS, Event::Timer), vec![]);
    assert_eq!(
        ev(&mut p, 21 * MS, Event::SliceFree { slice: 1 }),
        vec![dispatch(1, &[3], None)]
    );
    // Unknown slices are ignored.
    assert_eq!(ev(&mut p, 22 * MS, Event::SliceDown { slice: 9 }), vec![]);
    assert_eq!(ev(&mut p, 22 * MS, Event::SliceFree { slice: 9 }), vec![]);
}

#[test]
fn spurious_timers_are_harmless() {
    let mut p = images(1, 4, 10 * MS, 100);
    assert_eq!(ev(&mut p, 0, Event::Timer), vec![]);
    arrive(&mut p, 5, 1, None);
    for t in [6, 7, 8] {
        assert_eq!(
            ev(&mut p, t, Event::Timer),
            vec![Action::ArmTimer { at: 10 * MS + 5 }]
        );
    }
    assert_eq!(p.queued(), 1);
}

#[test]
fn queue_full_rejects_with_the_limit() {
    let mut p = images(1, 10, 10 * MS, 2);
    arrive(&mut p, 0, 1, None);
    arrive(&mut p, 0, 2, None);
    let out = arrive(&mut p, 0, 3, None);
    let reason = RejectReason::QueueFull { limit: 2 };
    assert_eq!(
        out,
        vec![Action::Reject {
            id: RequestId(3),
            reason: reason.clone()
        }]
    );
    assert!(reason.to_string().contains('2'));
    assert_eq!(p.queued(), 2);
    // Dispatch frees room.
    ev(&mut p, 10 * MS, Event::Timer);
    assert_eq!(arrive(&mut p, 10 * MS, 4, None).len(), 1);
    assert_eq!(p.queued(), 1);
}

#[test]
fn oldest_due_bucket_goes_first() {
    let mut p = audio(1, &[8, 8, 8], 10 * MS);
    ev(&mut p, 0, Event::SliceDown { slice: 0 });
    arrive(&mut p, 0, 1, Some(6.0)); // bucket 2, oldest
    arrive(&mut p, 1, 2, Some(1.0)); // bucket 0
    assert_eq!(p.queue_depths(), vec![1, 0, 1]);
    let out = ev(&mut p, 20 * MS, Event::SliceFree { slice: 0 });
    // Bucket 2 is oldest; it borrows the nearest: distance 2 is bucket 0.
    assert_eq!(out, vec![dispatch(0, &[1, 2], Some(2))]);
}

#[test]
fn audio_buckets_by_duration_and_last_takes_the_rest() {
    let mut p = audio(1, &[4, 4, 4], 10 * MS);
    ev(&mut p, 0, Event::SliceDown { slice: 0 });
    for (id, d) in [
        (1, Some(0.0)),
        (2, Some(2.49)),
        (3, Some(2.5)),
        (4, Some(5.0)),
        (5, Some(100.0)),
        (6, None),
        (7, Some(f32::NAN)),
        (8, Some(-1.0)),
    ] {
        arrive(&mut p, 0, id, d);
    }
    assert_eq!(p.queue_depths(), vec![5, 1, 2]);
}

#[test]
fn audio_merge_borrows_nearest_shorter_first() {
    // Buckets 0..5, time-out on bucket 2: order 1, 3, 0, 4.
    let mut p = audio(1, &[16, 16, 16, 16, 16], 10 * MS);
    ev(&mut p, 0, Event::SliceDown { slice: 0 });
    arrive(&mut p, 0, 20, Some(6.0)); // bucket 2, the oldest
    arrive(&mut p, 1, 40, Some(11.0)); // bucket 4
    arrive(&mut p, 2, 0, Some(1.0)); // bucket 0
    arrive(&mut p, 3, 30, Some(8.0)); // bucket 3
    arrive(&mut p, 4, 10, Some(3.0)); // bucket 1
    arrive(&mut p, 5, 11, Some(3.0)); // bucket 1
    let out = ev(&mut p, 20 * MS, Event::SliceFree { slice: 0 });
    assert_eq!(out, vec![dispatch(0, &[20, 10, 11, 30, 0, 40], Some(4))]);
}

#[test]
fn merged_batch_never_exceeds_its_longest_inputs_batch_max() {
    // Batch_max falls with length, as the knees do.
    let mut p = audio(1, &[8, 4, 2], 10 * MS);
    ev(&mut p, 0, Event::SliceDown { slice: 0 });
    arrive(&mut p, 0, 1, Some(1.0)); // bucket 0
    arrive(&mut p, 1, 2, Some(1.0));
    arrive(&mut p, 2, 3, Some(1.0));
    arrive(&mut p, 3, 10, Some(3.0)); // bucket 1
    arrive(&mut p, 4, 20, Some(6.0)); // bucket 2
    // Bucket 0 times out with 3: borrowing 10 caps the batch at 4, so 4 in
    // all; bucket 2 (cap 2) cannot join a batch of 4.
    let out = ev(&mut p, 20 * MS, Event::SliceFree { slice: 0 });
    assert_eq!(out[0], dispatch(0, &[1, 2, 3, 10], Some(1)));
    assert_eq!(p.queue_depths(), vec![0, 0, 1]);

    // A short-bucket batch below the longer cap can take one longer input.
    let mut p = audio(1, &[8, 4, 2], 10 * MS);
    ev(&mut p, 0, Event::SliceDown { slice: 0 });
    arrive(&mut p, 0, 1, Some(1.0));
    arrive(&mut p, 1, 20, Some(6.0));
    arrive(&mut p, 2, 21, Some(6.0));
    let out = ev(&mut p, 20 * MS, Event::SliceFree { slice: 0 });
    assert_eq!(out[0], dispatch(0, &[1, 20], Some(2)));
    assert_eq!(p.queue_depths(), vec![0, 0, 1]);
}

#[test]
fn a_full_bucket_does_not_borrow() {
    let mut p = audio(1, &[2, 2], 10 * MS);
    arrive(&mut p, 0, 10, Some(3.0));
    let out = arrive(&mut p, 1, 11, Some(3.0));
    assert_eq!(out, vec![dispatch(0, &[10, 11], Some(1))]);
}

#[test]
fn fifo_by_arrival_even_when_admitted_out_of_order() {
    let mut p = images(1, 3, 10 * MS, 100);
    let mut out = Vec::new();
    for (id, arrival) in [(1, 5), (2, 3), (3, 4)] {
        p.handle(
            6,
            Event::Arrival(Request {
                id: RequestId(id),
                arrival,
                duration_s: None,
                deadline: None,
            }),
            &mut out,
        );
    }
    assert_eq!(
        out,
        vec![
            Action::ArmTimer { at: 10 * MS + 5 },
            Action::ArmTimer { at: 10 * MS + 3 },
            dispatch(0, &[2, 3, 1], None)
        ]
    );
}

#[test]
fn zero_time_queue_dispatches_every_arrival_to_a_free_slice() {
    let mut p = images(1, 8, 0, 100);
    assert_eq!(arrive(&mut p, 7, 1, None), vec![dispatch(0, &[1], None)]);
    // All busy: the deadline is already past; one timer at it, not a loop.
    assert_eq!(arrive(&mut p, 8, 2, None), vec![Action::ArmTimer { at: 8 }]);
    assert_eq!(ev(&mut p, 8, Event::Timer), vec![]);
    assert_eq!(ev(&mut p, 9, Event::Timer), vec![]);
}

#[test]
fn bad_configs_are_refused() {
    let ok = PrebaConfig {
        slices: 1,
        batch_max: vec![4],
        time_queue: 1,
        bucket_width_s: None,
        max_queue: 10,
    };
    assert!(Preba::new(ok.clone()).is_ok());
    let cases = [
        PrebaConfig {
            slices: 0,
            ..ok.clone()
        },
        PrebaConfig {
            batch_max: vec![],
            ..ok.clone()
        },
        PrebaConfig {
            batch_max: vec![0],
            ..ok.clone()
        },
        PrebaConfig {
            batch_max: vec![4, 2],
            ..ok.clone()
        },
        PrebaConfig {
            bucket_width_s: Some(0.0),
            ..ok.clone()
        },
        PrebaConfig {
            bucket_width_s: Some(f32::NAN),
            ..ok.clone()
        },
        PrebaConfig {
            max_queue: 0,
            ..ok.clone()
        },
    ];
    for cfg in cases {
        assert!(
            matches!(Preba::new(cfg.clone()), Err(Error::Config(_))),
            "{cfg:?}"
        );
    }
    assert_eq!(Preba::new(ok).unwrap().name(), "preba");
}
