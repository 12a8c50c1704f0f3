//! One test per rule of the `deadline` policy (crate doc), and a
//! hand-computed trace on mixed slices.

mod common;

use common::{MS, Out, d, simulate};
use preba_batcher::{
    Action, Deadline, DeadlineConfig, Error, Event, Policy, ProfileTable, RejectReason, Request,
    RequestId, SliceModel, Time,
};

/// lat(b) = a + c*b ms, as two points (extrapolated linearly).
fn linear(a: Time, c: Time) -> SliceModel {
    SliceModel {
        latency_ns: vec![(1, (a + c) * MS), (2, (a + 2 * c) * MS)],
    }
}

fn policy(slices: Vec<SliceModel>, max_batch: u32, sla_ms: Time) -> Deadline {
    Deadline::new(DeadlineConfig {
        slices,
        by_length: Vec::new(),
        max_batch,
        default_sla: sla_ms * MS,
        max_queue: 100,
    })
    .unwrap()
}

fn arrive(p: &mut Deadline, now: Time, id: u64, deadline: Option<Time>) -> Vec<Action> {
    ev(
        p,
        now,
        Event::Arrival(Request {
            id: RequestId(id),
            arrival: now,
            duration_s: None,
            deadline,
        }),
    )
}

fn ev(p: &mut Deadline, now: Time, e: Event) -> Vec<Action> {
    let mut out = Vec::new();
    p.handle(now, e, &mut out);
    out
}

/// The actions without the timers.
fn work(v: Vec<Action>) -> Vec<Action> {
    v.into_iter()
        .filter(|a| !matches!(a, Action::ArmTimer { .. }))
        .collect()
}

fn dispatch(slice: usize, batch: &[u64]) -> Action {
    Action::Dispatch {
        slice,
        batch: batch.iter().copied().map(RequestId).collect(),
        bucket: None,
    }
}

#[test]
fn slice_model_interpolates_like_the_profile_entry() {
    let table = ProfileTable::builtin();
    for e in table.entries().iter().take(12) {
        let m = SliceModel::from_entry(e);
        for b in 1..=300 {
            let (x, y) = (m.latency(b), e.latency_ns(b));
            assert!(
                x.abs_diff(y) <= 1,
                "{} {} b={b}: {x} vs {y}",
                e.model(),
                e.slice()
            );
        }
    }
    let one = SliceModel {
        latency_ns: vec![(2, 4 * MS)],
    };
    assert_eq!(
        (one.latency(1), one.latency(2), one.latency(6)),
        (4 * MS, 4 * MS, 12 * MS)
    );
}

#[test]
fn the_batch_goes_to_the_slice_that_finishes_it_earliest() {
    // Slice 0 slow (lat 6 + 2b), slice 1 fast (lat 2 + b): both free, the
    // fast one is chosen though it has the higher index.
    let mut p = policy(vec![linear(6, 2), linear(2, 1)], 4, 10);
    arrive(&mut p, 0, 1, None);
    // Waits on slice 1 until its latest start 10 - 3 = 7 ms.
    assert_eq!(ev(&mut p, 7 * MS, Event::Timer), vec![dispatch(1, &[1])]);
    // Now the fast slice is busy until 10 ms. A request due at 20: fast
    // finishes it at 10 + 3 = 13, slow (free now, at 8) at 8 + 8 = 16: it
    // waits for the fast slice, leaving the slow one idle.
    assert_eq!(work(arrive(&mut p, 8 * MS, 2, Some(20 * MS))), vec![]);
    assert_eq!(work(ev(&mut p, 9 * MS, Event::Timer)), vec![]);
    // Fast slice back at 10: latest start there 20 - 3 = 17.
    assert_eq!(
        work(ev(&mut p, 10 * MS, Event::SliceFree { slice: 1 })),
        vec![]
    );
    assert_eq!(
        work(ev(&mut p, 17 * MS, Event::Timer)),
        vec![dispatch(1, &[2])]
    );
    // A request due 25 while the fast slice is busy until 20: fast finishes
    // it at 23, the free slow one at 17 + 8 = 25: reserved for the fast one.
    assert_eq!(work(arrive(&mut p, 17 * MS, 3, Some(25 * MS))), vec![]);
    assert_eq!(
        work(ev(&mut p, 20 * MS, Event::SliceFree { slice: 1 })),
        vec![],
        "latest start 25 - 3 = 22"
    );
    assert_eq!(
        work(ev(&mut p, 22 * MS, Event::Timer)),
        vec![dispatch(1, &[3])]
    );
}

#[test]
fn a_batch_reserved_for_a_busy_slice_does_not_idle_the_free_ones() {
    // max_batch 1: slow slice 0 (6 + 2b), fast slice 1 (2 + b).
    let mut p = policy(vec![linear(6, 2), linear(2, 1)], 1, 100);
    assert_eq!(arrive(&mut p, 0, 1, None), vec![dispatch(1, &[1])]); // fast, to 3
    // 2 (due 30): fast finishes it at 6, slow at 8: reserved for fast. 3 (due
    // 40) is the next batch: only the slow slice is left, and a batch of
    // max_batch is full: it goes there at once.
    assert_eq!(work(arrive(&mut p, MS, 2, Some(30 * MS))), vec![]);
    assert_eq!(
        work(arrive(&mut p, MS, 3, Some(40 * MS))),
        vec![dispatch(0, &[3])]
    );
    assert_eq!(
        work(ev(&mut p, 3 * MS, Event::SliceFree { slice: 1 })),
        vec![dispatch(1, &[2])]
    );
}

#[test]
fn a_batch_grows_only_while_its_most_urgent_request_makes_its_deadline() {
    // lat = 2 + b ms, max_batch 8, SLA 10 ms.
    let mut p = policy(vec![linear(2, 1)], 8, 10);
    // Arrivals at 0..=5 ms: at 4 ms, 5 queued and 4 + lat(5) = 11 > 10, so
    // the batch stops at 4 (4 + 6 = 10): sent at once, the fifth waits.
    for (t, id) in [(0, 1), (1, 2), (2, 3), (3, 4)] {
        assert_eq!(work(arrive(&mut p, t * MS, id, None)), vec![]);
    }
    assert_eq!(
        work(arrive(&mut p, 4 * MS, 5, None)),
        vec![dispatch(0, &[1, 2, 3, 4])]
    );
    assert_eq!(p.queued(), 1);
    // Never above max_batch either: 10 urgent-free requests (SLA far away).
    let mut p = policy(vec![linear(2, 1)], 3, 1000);
    for id in 1..=3 {
        arrive(&mut p, id, id, None);
    }
    assert_eq!(p.queued(), 0, "a full batch (max_batch) goes at once");
}

#[test]
fn waiting_until_the_latest_start_then_dispatching_what_there_is() {
    let mut p = policy(vec![linear(2, 1)], 8, 10);
    // 1 alone: latest start 10 - 3 = 7 ms; a second arrival moves it to 6.
    assert_eq!(
        arrive(&mut p, 0, 1, None),
        vec![Action::ArmTimer { at: 7 * MS }]
    );
    assert_eq!(
        arrive(&mut p, MS, 2, None),
        vec![Action::ArmTimer { at: 6 * MS }]
    );
    // Early timer: re-armed, nothing sent.
    assert_eq!(
        ev(&mut p, 5 * MS, Event::Timer),
        vec![Action::ArmTimer { at: 6 * MS }]
    );
    assert_eq!(ev(&mut p, 6 * MS, Event::Timer), vec![dispatch(0, &[1, 2])]);
}

#[test]
fn hopeless_requests_are_rejected_early_with_the_prediction() {
    // Two slices, lat 2 + b, max_batch 1; both busy until 10 ms.
    let mut p = policy(vec![linear(2, 1), linear(2, 1)], 1, 100);
    assert_eq!(
        work(arrive(&mut p, 7 * MS, 1, Some(10 * MS))),
        vec![dispatch(0, &[1])]
    );
    assert_eq!(
        work(arrive(&mut p, 7 * MS, 2, Some(10 * MS))),
        vec![dispatch(1, &[2])]
    );
    // Both busy until 10: alone it would finish at 13 > 12.
    let out = work(arrive(&mut p, 8 * MS, 3, Some(12 * MS)));
    let reason = RejectReason::DeadlineMiss {
        deadline: 12 * MS,
        predicted: 13 * MS,
    };
    assert_eq!(
        out,
        vec![Action::Reject {
            id: RequestId(3),
            reason: reason.clone()
        }]
    );
    let text = reason.to_string();
    assert!(
        text.contains("would finish at 13.000 ms, 1.000 ms after its deadline"),
        "{text}"
    );
    assert_eq!(p.queued(), 0);
}

#[test]
fn no_reject_when_the_deadline_can_be_met_exactly() {
    let mut p = policy(vec![linear(2, 1), linear(2, 1)], 1, 100);
    arrive(&mut p, 7 * MS, 1, Some(10 * MS));
    arrive(&mut p, 7 * MS, 2, Some(10 * MS));
    // Both busy until 10: alone it finishes at 13 = its deadline. Admitted,
    // and sent when a slice frees, finishing exactly on time.
    assert_eq!(work(arrive(&mut p, 8 * MS, 3, Some(13 * MS))), vec![]);
    assert_eq!(p.queued(), 1);
    assert_eq!(
        work(ev(&mut p, 10 * MS, Event::SliceFree { slice: 1 })),
        vec![dispatch(1, &[3])]
    );
}

#[test]
fn a_queued_request_that_becomes_hopeless_is_rejected_by_the_timer() {
    let mut p = policy(vec![linear(2, 1)], 1, 100);
    // Slice 0 gets 1 (predicted busy until 3 ms) and never reports back.
    assert_eq!(work(arrive(&mut p, 0, 1, None)), vec![dispatch(0, &[1])]);
    // Due at 120: fine at 98 (the slice should be free), hopeless from
    // 120 - 3 ms + 1 ns on, when the timer the policy armed fires.
    let out = arrive(&mut p, 98 * MS, 2, Some(120 * MS));
    assert_eq!(out, vec![Action::ArmTimer { at: 117 * MS + 1 }]);
    assert_eq!(
        ev(&mut p, 117 * MS + 1, Event::Timer),
        vec![Action::Reject {
            id: RequestId(2),
            reason: RejectReason::DeadlineMiss {
                deadline: 120 * MS,
                predicted: 120 * MS + 1
            }
        }]
    );
}

#[test]
fn requests_without_a_deadline_get_the_default_sla_and_edf_orders_them() {
    let mut p = policy(vec![linear(2, 1)], 3, 50);
    assert_eq!(
        arrive(&mut p, 0, 1, None),
        vec![Action::ArmTimer { at: 47 * MS }]
    );
    // Due 20: it goes first, and bounds the batch: latest start 20 - 4 = 16.
    assert_eq!(
        arrive(&mut p, 0, 2, Some(20 * MS)),
        vec![Action::ArmTimer { at: 16 * MS }]
    );
    assert_eq!(
        ev(&mut p, 16 * MS, Event::Timer),
        vec![dispatch(0, &[2, 1])]
    );
}

#[test]
fn down_slices_get_nothing_and_with_none_up_requests_wait() {
    let mut p = policy(vec![linear(2, 1), linear(1, 1)], 4, 10);
    ev(&mut p, 0, Event::SliceDown { slice: 1 });
    // The fast slice is down: the slow one takes it.
    arrive(&mut p, 0, 1, None);
    assert_eq!(
        work(ev(&mut p, 7 * MS, Event::Timer)),
        vec![dispatch(0, &[1])]
    );
    ev(&mut p, 7 * MS, Event::SliceDown { slice: 0 });
    // Nothing up: no prediction, no reject, no dispatch.
    assert_eq!(work(arrive(&mut p, 8 * MS, 2, None)), vec![]);
    assert_eq!(work(ev(&mut p, 30 * MS, Event::Timer)), vec![]);
    assert_eq!(p.queued(), 1);
    // Back up, past its deadline (18): rejected.
    assert!(matches!(
        &work(ev(&mut p, 30 * MS, Event::SliceFree { slice: 1 }))[..],
        [Action::Reject {
            reason: RejectReason::DeadlineMiss { .. },
            ..
        }]
    ));
}

#[test]
fn queue_full_rejects_with_the_limit() {
    let mut p = Deadline::new(DeadlineConfig {
        slices: vec![linear(2, 1)],
        by_length: Vec::new(),
        max_batch: 8,
        default_sla: 100 * MS,
        max_queue: 2,
    })
    .unwrap();
    arrive(&mut p, 0, 1, None);
    arrive(&mut p, 0, 2, None);
    assert_eq!(
        work(arrive(&mut p, 0, 3, None)),
        vec![Action::Reject {
            id: RequestId(3),
            reason: RejectReason::QueueFull { limit: 2 }
        }]
    );
}

#[test]
fn bad_configs_are_refused() {
    let cfg = DeadlineConfig {
        slices: vec![linear(2, 1)],
        by_length: Vec::new(),
        max_batch: 4,
        default_sla: MS,
        max_queue: 1,
    };
    assert!(Deadline::new(cfg.clone()).is_ok());
    let model = |v: Vec<(u32, Time)>| vec![SliceModel { latency_ns: v }];
    for bad in [
        DeadlineConfig {
            slices: vec![],
            by_length: Vec::new(),
            ..cfg.clone()
        },
        DeadlineConfig {
            slices: model(vec![]),
            by_length: Vec::new(),
            ..cfg.clone()
        },
        DeadlineConfig {
            slices: model(vec![(0, 1)]),
            by_length: Vec::new(),
            ..cfg.clone()
        },
        DeadlineConfig {
            slices: model(vec![(2, 1), (2, 3)]),
            by_length: Vec::new(),
            ..cfg.clone()
        },
        DeadlineConfig {
            max_batch: 0,
            ..cfg.clone()
        },
        DeadlineConfig {
            max_queue: 0,
            ..cfg.clone()
        },
    ] {
        assert!(matches!(Deadline::new(bad), Err(Error::Config(_))));
    }
}

/// Mixed slices: slice 0 "3g" lat = 2 + b ms, slice 1 "2g" lat = 4 + 2b ms;
/// max_batch 4, SLA 10 ms; slices finish exactly on the prediction.
/// Hand-computed (times in ms, d = deadline, a = when a slice can start):
///
/// | t  | event        | reasoning                                               | action            |
/// |----|--------------|---------------------------------------------------------|-------------------|
/// | 0  | 1 (d 10)     | s0 finishes 1 at 3, s1 at 6: s0; latest start 10-3 = 7  | wait              |
/// | 1  | 2 (d 11)     | head d 10; s0 latest start 10-4 = 6                     | wait              |
/// | 2  | 3 (d 12)     | latest start 10-5 = 5                                   | wait              |
/// | 3  | 4 (d 13)     | s0 cap at 3: 3+lat(4) = 9 <= 10, max_batch 4: full      | s0 [1 2 3 4] to 9 |
/// | 4  | 5 (d 14)     | s0 a 9: 12; s1 a 4: 10: s1; latest start 14-6 = 8       | wait              |
/// | 5  | 6 (d 15)     | s0 9+4 = 13, s1 5+8 = 13: tie, s1 (free); cap 2: full    | s1 [5 6] to 13    |
/// | 6  | 7 (d 16)     | s0 a 9: 12; s1 a 13: 19 > 16, out: reserved for s0      | wait              |
/// | 7  | 8 (d 17)     | s0 9+4 = 13: reserved for s0                            |                   |
/// | 9  | s0 free      | s0 latest start for 2: 16-4 = 12                        | wait              |
/// | 10 | 9 (d 20)     | for 3: 16-5 = 11                                        | wait              |
/// | 11 | timer        | cap at 11: 11+5 = 16: full                              | s0 [7 8 9] to 16  |
/// | 12 | 10 (d 14!)   | alone: s0 16+3 = 19, s1 13+6 = 19 > 14                  | reject (19)       |
/// | 13 | s1 free      |                                                         |                   |
/// | 14 | 11 (d 24)    | s0 a 16: 19; s1 a 14: 20: reserved for s0 (s1 idles)    | wait              |
/// | 16 | s0 free      | latest start 24-3 = 21                                  | wait              |
/// | 21 | timer        |                                                         | s0 [11] to 24     |
#[test]
fn hand_computed_trace_on_mixed_slices() {
    let mut p = policy(vec![linear(2, 1), linear(4, 2)], 4, 10);
    let mut arrivals: Vec<(Time, u64, Option<Time>)> = [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 5),
        (5, 6),
        (6, 7),
        (7, 8),
        (10, 9),
    ]
    .iter()
    .map(|&(t, id)| (t * MS, id, None))
    .collect();
    arrivals.push((12 * MS, 10, Some(14 * MS)));
    arrivals.push((14 * MS, 11, None));
    let model = p.config().slices.clone();
    let log = simulate(&mut p, &arrivals, |s, b| model[s].latency(b as u32));
    let want: Vec<Out> = vec![
        d(3, 0, &[1, 2, 3, 4]),
        d(5, 1, &[5, 6]),
        d(11, 0, &[7, 8, 9]),
        Out::Reject {
            at: 12 * MS,
            id: 10,
            reason: RejectReason::DeadlineMiss {
                deadline: 14 * MS,
                predicted: 19 * MS,
            },
        },
        d(21, 0, &[11]),
    ];
    assert_eq!(log, want);
}

/// With slack, a batch that waits to grow leaves `slack` before its latest
/// start (a real-time timer that fires late then still makes the deadline).
#[test]
fn slack_moves_the_latest_start_earlier() {
    let mk = |slack| {
        Deadline::new(DeadlineConfig {
            slices: vec![SliceModel {
                latency_ns: vec![(1, 2 * MS), (8, 9 * MS)],
            }],
            by_length: Vec::new(),
            max_batch: 8,
            default_sla: 20 * MS,
            max_queue: 100,
        })
        .unwrap()
        .with_slack(slack)
    };
    for (slack, want) in [(0, 18 * MS), (3 * MS, 15 * MS)] {
        let mut p = mk(slack);
        let mut out = Vec::new();
        p.handle(
            0,
            Event::Arrival(Request {
                id: RequestId(1),
                arrival: 0,
                duration_s: None,
                deadline: None,
            }),
            &mut out,
        );
        assert!(
            out.contains(&Action::ArmTimer { at: want }),
            "slack {slack}: {out:?}"
        );
    }
}

/// Audio with length buckets: a batch is predicted at the length it pads to
/// (its longest input), and a long request is judged hopeless by the long
/// model while a short one with the same room still waits.
#[test]
fn audio_batches_are_predicted_at_their_longest_input() {
    let m = |l1: Time, l2: Time| SliceModel {
        latency_ns: vec![(1, l1 * MS), (2, l2 * MS)],
    };
    let mut p = Deadline::new(DeadlineConfig {
        slices: vec![m(2, 3)],
        by_length: vec![vec![m(2, 3), m(10, 15)]],
        max_batch: 2,
        default_sla: 20 * MS,
        max_queue: 100,
    })
    .unwrap();
    let audio = |p: &mut Deadline, now: Time, id: u64, secs: f32, deadline: Option<Time>| {
        work(ev(
            p,
            now,
            Event::Arrival(Request {
                id: RequestId(id),
                arrival: now,
                duration_s: Some(secs),
                deadline,
            }),
        ))
    };
    // Short (bucket 0) waits to grow: alone it has room until 20 - 2 ms.
    assert_eq!(audio(&mut p, 0, 1, 1.0, None), vec![]);
    // Long (6 s: bucket 2, past the last, so the last): the pair pads to
    // bucket 1 and takes 15 ms <= 20: full at max_batch, sent at once.
    assert_eq!(
        audio(&mut p, 0, 2, 6.0, None),
        vec![Action::Dispatch {
            slice: 0,
            batch: vec![RequestId(1), RequestId(2)],
            bucket: Some(1),
        }]
    );
    // Busy until 15 ms. A long request due at 1 + 12 ms: 15 + 10 > 13,
    // hopeless; a short one due at 1 + 17 ms: 15 + 2 <= 18, waits.
    assert_eq!(
        audio(&mut p, MS, 3, 4.0, Some(13 * MS)),
        vec![Action::Reject {
            id: RequestId(3),
            reason: RejectReason::DeadlineMiss {
                deadline: 13 * MS,
                predicted: 25 * MS,
            },
        }]
    );
    assert_eq!(audio(&mut p, MS, 4, 2.0, Some(18 * MS)), vec![]);
    assert_eq!(p.queued(), 1);
}
