//! Requests on the card: staging (card memory, input DMA, media probe),
//! dispatch to CUs, CU completion, watchdog, output DMA.

use crate::Platform;
use crate::fw::{Firmware, Job, SG_BOUNCE, Stage, WD_BASE_TICKS, WD_TICKS_PER_BYTE, indirect};
use crate::hw::{self, CardBytes, cu_reg};
use heapless::Vec;
use preba_protocol::admin::{PROFILE_SIZE, encode_profile};
use preba_protocol::card::{self, CuStatus};
use preba_protocol::io::{IoOpcode, MAX_SG, SG_ENTRY_SIZE, SgEntry, validate_sg_list};
use preba_protocol::limits;
use preba_protocol::media::{probe_jpeg, probe_wav};
use preba_protocol::profile::{AudioNorm, AudioProfile, Profile};
use preba_protocol::status::Status;

const fn align64(v: u64) -> u64 {
    (v + 63) & !63
}

/// Largest Mel output any input within the limits can produce for `a`
/// (MAX_AUDIO_SECONDS at the target rate, plus a frame of slack).
fn max_mel_bytes(a: &AudioProfile) -> u64 {
    let samples = limits::MAX_AUDIO_SECONDS * a.sample_rate as u64 + a.hop as u64;
    a.output_len(samples) + a.n_mels as u64 * 4
}

/// Card-memory layout of one request: [profile 64][input][output][norm output].
struct Layout {
    total: u64,
    input: u64,
    out: u64,
    out_cap: u32,
    norm: u64,
}

fn layout(op: IoOpcode, prof: &Profile, in_len: u32, out_len: u32) -> Layout {
    let input = PROFILE_SIZE as u64;
    let out = input + align64(in_len as u64);
    let (out_cap, norm_cap) = match (op, prof) {
        (IoOpcode::PreprocessImage, Profile::Image(ip)) => {
            let need = ip.output_len() as u64;
            // Too small an output fails after the probe; stage nothing for it.
            (if out_len as u64 >= need { need } else { 0 }, 0)
        }
        (_, Profile::Audio(a)) => {
            let cap = (out_len as u64).min(max_mel_bytes(a));
            (
                cap,
                if a.norm == AudioNorm::PerFeature {
                    cap
                } else {
                    0
                },
            )
        }
        _ => (0, 0),
    };
    let norm = out + align64(out_cap);
    Layout {
        total: norm + norm_cap,
        input,
        out,
        out_cap: out_cap as u32,
        norm,
    }
}

impl<P: Platform> Firmware<P> {
    /// Stages requests in arrival order: card memory (head-of-line: a request
    /// that does not fit yet waits, bounded by its deadline), input DMA, probe;
    /// each staged request is dispatched at once.
    pub(crate) fn stage(&mut self) -> bool {
        let mut progress = false;
        for _ in 0..crate::fw::STAGE_PER_POLL {
            let Some(&idx) = self.staging.front() else {
                break;
            };
            let i = idx as usize;
            let Some(r) = self.reqs[i] else {
                self.staging.pop_front();
                continue;
            };
            let Some(prof) = r.profile else {
                self.staging.pop_front();
                self.complete(i, Status::InvalidField);
                continue;
            };
            let l = layout(r.op, &prof, r.sqe.in_len, r.sqe.out_len);
            if !self.alloc.fits_ever(l.total) {
                self.staging.pop_front();
                self.complete(i, Status::InputTooLarge);
                progress = true;
                continue;
            }
            let Some(base) = self.alloc.alloc(l.total) else {
                if self.p.now() >= r.deadline {
                    self.staging.pop_front();
                    fw_log!(warn, "cid {=u16}: no card memory in time", r.cid);
                    self.complete(i, Status::Timeout);
                    progress = true;
                    continue;
                }
                break;
            };
            self.staging.pop_front();
            progress = true;
            if let Some(m) = self.reqs[i].as_mut() {
                m.mem = base;
                m.mem_len = l.total;
                m.prof_addr = base;
                m.in_addr = base + l.input as u32;
                m.out_addr = base + l.out as u32;
                m.out_cap = l.out_cap;
                m.norm_addr = base + l.norm as u32;
            }
            match self.load_input(i, &prof) {
                Ok(job) => {
                    if let Some(m) = self.reqs[i].as_mut() {
                        m.stage = Stage::Ready;
                        m.job = job;
                    }
                    let _ = self.ready[job as usize].push_back(idx);
                    self.dispatch();
                }
                Err(s) => self.complete(i, s),
            }
        }
        progress
    }

    /// Profile copy, SG list, input DMA and the media probe of a staged request.
    fn load_input(&mut self, i: usize, prof: &Profile) -> Result<Job, Status> {
        let r = self.reqs[i].ok_or(Status::Internal)?;
        hw::write_card(&mut self.p, r.prof_addr, &encode_profile(prof));
        let sqe = r.sqe;
        let mut list: Vec<SgEntry, MAX_SG> = Vec::new();
        if indirect(&sqe) {
            let n = sqe.sg_count as u32;
            hw::dma(
                &mut self.p,
                sqe.sg[0].iova,
                SG_BOUNCE,
                n * SG_ENTRY_SIZE as u32,
                false,
            )
            .map_err(Self::dma_status)?;
            for k in 0..n {
                let mut b = [0u8; SG_ENTRY_SIZE];
                hw::read_card(&mut self.p, SG_BOUNCE + k * SG_ENTRY_SIZE as u32, &mut b);
                let e = SgEntry::parse(&b).map_err(|e| e.status())?;
                list.push(e).map_err(|_| Status::InvalidField)?;
            }
            validate_sg_list(&list, sqe.in_len).map_err(|e| e.status())?;
        } else {
            for e in sqe.sg.iter().take(sqe.sg_count as usize) {
                list.push(*e).map_err(|_| Status::InvalidField)?;
            }
        }
        let mut off = 0u32;
        for e in &list {
            hw::dma(&mut self.p, e.iova, r.in_addr + off, e.len, false)
                .map_err(Self::dma_status)?;
            off += e.len;
        }
        let mut src = CardBytes::new(&mut self.p, r.in_addr, sqe.in_len);
        match prof {
            Profile::Image(ip) => {
                let probe = probe_jpeg(&mut src).map_err(|e| e.status())?;
                probe.card_check().map_err(|e| e.status())?;
                if (sqe.out_len as u64) < ip.output_len() as u64 {
                    return Err(Status::OutputTooSmall);
                }
                if let Some(m) = self.reqs[i].as_mut() {
                    m.result0 = probe.header.width;
                    m.result1 = probe.header.height;
                }
                Ok(Job::Image)
            }
            Profile::Audio(_) => {
                let wav = probe_wav(&mut src).map_err(|e| e.status())?;
                if let Some(m) = self.reqs[i].as_mut() {
                    m.result0 = wav.sample_rate;
                    m.result1 = wav.frames.min(u32::MAX as u64) as u32;
                }
                Ok(Job::Mel)
            }
        }
    }

    fn free_cu(&self, job: Job) -> Option<usize> {
        self.cus
            .iter()
            .position(|c| c.kind == job as u8 && c.busy.is_none())
    }

    /// Starts ready requests on free CUs of their kind (arrival order).
    pub(crate) fn dispatch(&mut self) -> bool {
        let mut progress = false;
        for j in [Job::Image, Job::Mel, Job::Norm] {
            while let Some(&idx) = self.ready[j as usize].front() {
                let Some(cu) = self.free_cu(j) else { break };
                self.ready[j as usize].pop_front();
                self.start_job(cu, idx as usize, j);
                progress = true;
            }
        }
        progress
    }

    fn start_job(&mut self, cu: usize, i: usize, job: Job) {
        let Some(r) = self.reqs[i].as_mut() else {
            return;
        };
        let (src, src_len, dst) = match job {
            Job::Image | Job::Mel => (r.in_addr, r.sqe.in_len, r.out_addr),
            Job::Norm => (r.out_addr, r.mel_written, r.norm_addr),
        };
        r.stage = Stage::Running;
        r.job = job;
        r.cu = cu as u8;
        let (prof, cap) = (r.prof_addr, r.out_cap);
        let p = &mut self.p;
        p.write32(cu_reg(cu, card::CU_SRC), src);
        p.write32(cu_reg(cu, card::CU_SRC_LEN), src_len);
        p.write32(cu_reg(cu, card::CU_DST), dst);
        p.write32(cu_reg(cu, card::CU_DST_LEN), cap);
        p.write32(cu_reg(cu, card::CU_PROFILE), prof);
        p.write32(cu_reg(cu, card::CU_CTRL), card::CU_CTRL_START);
        let now = p.now();
        let c = &mut self.cus[cu];
        c.busy = Some(i as u8);
        c.deadline = now + WD_BASE_TICKS + src_len as u64 * WD_TICKS_PER_BYTE;
    }

    /// Collects finished CUs and resets stuck ones (watchdog).
    pub(crate) fn cu_poll(&mut self) -> bool {
        let mut progress = false;
        for cu in 0..self.cus.len() {
            let Some(idx) = self.cus[cu].busy else {
                continue;
            };
            let st = self.p.read32(cu_reg(cu, card::CU_STATUS));
            if st == CuStatus::Done as u32 || st == CuStatus::Error as u32 {
                self.cus[cu].busy = None;
                self.finish(cu, idx as usize, st == CuStatus::Done as u32);
                progress = true;
            } else if self.p.now() >= self.cus[cu].deadline {
                self.p
                    .write32(cu_reg(cu, card::CU_CTRL), card::CU_CTRL_RESET);
                let c = &mut self.cus[cu];
                c.busy = None;
                c.resets += 1;
                c.errors += 1;
                fw_log!(warn, "watchdog: CU {=usize} reset", cu);
                self.complete(idx as usize, Status::Internal);
                progress = true;
            }
        }
        progress
    }

    fn finish(&mut self, cu: usize, i: usize, ok: bool) {
        let p = &mut self.p;
        let cycles = p.read32(cu_reg(cu, card::CU_CYCLES_LO)) as u64
            | (p.read32(cu_reg(cu, card::CU_CYCLES_HI)) as u64) << 32;
        let energy = p.read32(cu_reg(cu, card::CU_ENERGY_NJ)) as u64;
        let c = &mut self.cus[cu];
        c.requests += 1;
        c.busy_cycles += cycles;
        c.energy_nj += energy;
        let Some(r) = self.reqs[i].as_mut() else {
            return;
        };
        r.cycles += cycles;
        if !ok {
            self.cus[cu].errors += 1;
            let e = self.p.read32(cu_reg(cu, card::CU_ERROR));
            let s = Status::from_u16(e.min(0xffff) as u16)
                .filter(|s| *s != Status::Success)
                .unwrap_or(Status::Internal);
            self.complete(i, s);
            return;
        }
        let written = self.p.read32(cu_reg(cu, card::CU_WRITTEN));
        let r = self.reqs[i].as_mut().expect("request");
        r.written = written;
        if r.job != Job::Norm {
            r.result0 = self.p.read32(cu_reg(cu, card::CU_RESULT0));
            r.result1 = self.p.read32(cu_reg(cu, card::CU_RESULT1));
        }
        let r = *self.reqs[i].as_ref().expect("request");
        if written > r.sqe.out_len || written > r.out_cap {
            self.complete(i, Status::OutputTooSmall);
            return;
        }
        let needs_norm =
            matches!(r.profile, Some(Profile::Audio(a)) if a.norm == AudioNorm::PerFeature);
        let from = match r.job {
            Job::Mel if needs_norm => {
                if let Some(m) = self.reqs[i].as_mut() {
                    m.mel_written = written;
                    m.stage = Stage::Ready;
                }
                let _ = self.ready[Job::Norm as usize].push_back(i as u8);
                self.dispatch();
                return;
            }
            Job::Image | Job::Mel => r.out_addr,
            Job::Norm => r.norm_addr,
        };
        let s = match hw::dma(&mut self.p, r.sqe.out_iova, from, written, true) {
            Ok(()) => Status::Success,
            Err(e) => Self::dma_status(e),
        };
        self.complete(i, s);
    }
}
