//! A tiny virtual-time driver: arrivals from a table, slices that finish
//! exactly `lat(slice, batch)` after a dispatch, and the one timer.

#![allow(dead_code)]

use preba_batcher::{Action, Event, Policy, RejectReason, Request, RequestId, Time};

pub const MS: Time = 1_000_000;

/// What came out, in order: dispatches and rejections with their time.
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    Dispatch {
        at: Time,
        slice: usize,
        batch: Vec<u64>,
    },
    Reject {
        at: Time,
        id: u64,
        reason: RejectReason,
    },
}

/// `arrivals`: (time, id, deadline); ties at one instant: slice frees first,
/// then arrivals, then the timer.
pub fn simulate(
    p: &mut dyn Policy,
    arrivals: &[(Time, u64, Option<Time>)],
    lat: impl Fn(usize, usize) -> Time,
) -> Vec<Out> {
    let mut log = Vec::new();
    let mut frees: Vec<(Time, usize)> = Vec::new();
    let mut timer: Option<Time> = None;
    let mut next = 0;
    let mut now = 0;
    loop {
        let free_at = frees.iter().map(|f| f.0).min();
        let arr_at = arrivals.get(next).map(|a| a.0);
        let Some(t) = [free_at, arr_at, timer].into_iter().flatten().min() else {
            break;
        };
        now = now.max(t);
        let ev = if free_at == Some(t) {
            let k = frees.iter().position(|f| f.0 == t).unwrap();
            let (_, slice) = frees.remove(k);
            Event::SliceFree { slice }
        } else if arr_at == Some(t) {
            let (arrival, id, deadline) = arrivals[next];
            next += 1;
            Event::Arrival(Request {
                id: RequestId(id),
                arrival,
                duration_s: None,
                deadline,
            })
        } else {
            timer = None;
            Event::Timer
        };
        let mut out = Vec::new();
        p.handle(now, ev, &mut out);
        for a in out {
            match a {
                Action::Dispatch { slice, batch, .. } => {
                    frees.push((now + lat(slice, batch.len()), slice));
                    log.push(Out::Dispatch {
                        at: now,
                        slice,
                        batch: batch.iter().map(|r| r.0).collect(),
                    });
                }
                Action::ArmTimer { at } => timer = Some(at.max(now)),
                Action::Reject { id, reason } => log.push(Out::Reject {
                    at: now,
                    id: id.0,
                    reason,
                }),
            }
        }
    }
    log
}

pub fn d(at_ms: Time, slice: usize, batch: &[u64]) -> Out {
    Out::Dispatch {
        at: at_ms * MS,
        slice,
        batch: batch.to_vec(),
    }
}
