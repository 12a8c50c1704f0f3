//! Dequantisation and 8x8 inverse DCT for the JPEG decoder: libjpeg-turbo's
//! "ISLOW" integer IDCT (`jpeg_idct_islow` in libjpeg-turbo `src/jidctint.c`,
//! the 8x8 case, 8-bit samples), bit for bit. Our own code, written from the
//! arithmetic of jidctint.c / jdct.h:
//!
//! - constants `FIX(x)` = `round(x * 2^13)` (`CONST_BITS` = 13);
//! - pass 1: the Loeffler-Ligtenberg-Moschytz 1-D IDCT down each column of
//!   the dequantised block (`coef * quant`), descaled by
//!   `CONST_BITS - PASS1_BITS` = 11 (`PASS1_BITS` = 2);
//! - pass 2: the same 1-D IDCT along each row of that, descaled by
//!   `CONST_BITS + PASS1_BITS + 3` = 18;
//! - `DESCALE(x, n)` = `(x + (1 << (n - 1))) >> n`, an arithmetic shift;
//! - sample = `clamp(x + 128, 0, 255)`: the saturation libjpeg-turbo's SIMD
//!   IDCTs produce, rather than the C code's `& RANGE_MASK` wrap (the two
//!   differ only for blocks no encoder produces).
//!
//! All arithmetic is wrapping `i32`. Wrapping adds and multiplies are exact
//! modulo 2^32 in any order and grouping, so a computation that only
//! rearranges the adds and multiplies between the shifts gives the same bits
//! as the plain transcription (`idct_islow_reference`, tests only), for every
//! input, even garbage whose products overflow; and nothing panics.
//!
//! Implementations, all giving those bits:
//!
//! - x86-64 with AVX2 (`v3`), libjpeg-turbo's SIMD scheme: the dequantised
//!   coefficients and the pass-1 outputs are held as `i16`, and each 1-D
//!   pass is twelve `vpmaddwd` (pairs of `i16` times `i16` constants, summed
//!   into `i32`): jidctint.c's multiplies expanded so that each output is a
//!   sum of inputs times constants (exact modulo 2^32, see above). That is
//!   exact while those values fit in `i16`, which the kernel ensures by
//!   taking only blocks whose dequantised coefficients are all within
//!   +-`D_MAX` (1092). Every block of real 8-bit samples quantised (to the
//!   nearest step) with values up to 130 is (the largest DCT coefficient of
//!   8-bit samples is 1024 in magnitude); the rest go to the portable code. A block whose AC
//!   coefficients are all zero (common) takes a scalar shortcut: jidctint.c's
//!   arithmetic with the zero terms left out, the same bits.
//! - elsewhere, and for the blocks the kernel declines (`idct_portable`):
//!   plain `i32` loops, eight columns (then rows) as the lanes, so that LLVM
//!   vectorises them.

/// `FIX(x)` = `round(x * 2^13)`: the constants of jidctint.c for
/// `CONST_BITS` = 13.
const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
/// Pass 1 descale.
const SHIFT1: u32 = CONST_BITS - PASS1_BITS;
/// Pass 2 descale.
const SHIFT2: u32 = CONST_BITS + PASS1_BITS + 3;

/// Dequantises `coef` (natural order, i.e. row-major 8x8, NOT zigzag) with `qt` (natural order)
/// and writes the 8x8 block of samples to `out[r * stride + c]` for r, c in 0..8.
/// `out.len() >= 7 * stride + 8` (panics otherwise).
///
/// Fast only when inlined into code compiled for AVX2, i.e. called (directly
/// or through `#[inline(always)]` functions only) from
/// `pulp::WithSimd::with_simd` run by `pulp::Arch::dispatch`. Anywhere else
/// on an AVX2 machine it still gives the right bits, but each vector
/// instruction becomes a function call: ~40x slower (about 1 us a block).
#[inline(always)]
pub(crate) fn idct_islow(coef: &[i16; 64], qt: &[u16; 64], out: &mut [u8], stride: usize) {
    // Its own target-feature function per block (`vectorize`), not relying
    // on being inlined into the caller's dispatch: inlined into a large
    // caller, LLVM left the kernel's helper closures (and with them every
    // intrinsic) as calls.
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new()
        && simd.vectorize(|| v3::idct(simd, coef, qt, out, stride))
    {
        return;
    }
    idct_portable(coef, qt, out, stride);
}

/// The AVX2 kernel (see the module doc).
#[cfg(target_arch = "x86_64")]
mod v3 {
    use super::*;
    use core::arch::x86_64::__m256i;
    use pulp::x86::V3;

    /// `(a, b)` as the `i16` pair `[a, b]` in each 32-bit lane, for
    /// `vpmaddwd`: with `[x, y]` pairs it gives `a * x + b * y`.
    const fn pair(a: i32, b: i32) -> i32 {
        assert!(a >= i16::MIN as i32 && a <= i16::MAX as i32);
        assert!(b >= i16::MIN as i32 && b <= i16::MAX as i32);
        (a as u16 as u32 | (b as u16 as u32) << 16) as i32
    }

    // jidctint.c's 1-D IDCT, inputs x0..x7, as sums of products. Even part:
    //   tmp0 = (x0 + x4) << 13, tmp1 = (x0 - x4) << 13,
    //   z1 = (x2 + x6) * F0_541,
    //   tmp2 = z1 - x6 * F1_847 = x2 * F0_541 + x6 * (F0_541 - F1_847),
    //   tmp3 = z1 + x2 * F0_765 = x2 * (F0_541 + F0_765) + x6 * F0_541.
    const K04_0: i32 = pair(1 << CONST_BITS, 1 << CONST_BITS);
    const K04_1: i32 = pair(1 << CONST_BITS, -(1 << CONST_BITS));
    const K26_2: i32 = pair(FIX_0_541196100, FIX_0_541196100 - FIX_1_847759065);
    const K26_3: i32 = pair(FIX_0_541196100 + FIX_0_765366865, FIX_0_541196100);
    // Odd part: t0..t3 = x7, x5, x3, x1; z1 = t0 + t3, z2 = t1 + t2,
    // z3 = t0 + t2, z4 = t1 + t3, z5 = (z3 + z4) * F1_175, and
    //   o0 = t0 * F0_298 - z1 * F0_899 - z3 * F1_961 + z5
    //   o1 = t1 * F2_053 - z2 * F2_562 - z4 * F0_390 + z5
    //   o2 = t2 * F3_072 - z2 * F2_562 - z3 * F1_961 + z5
    //   o3 = t3 * F1_501 - z1 * F0_899 - z4 * F0_390 + z5
    // (jidctint.c's final tmp0..tmp3). Per input, in pairs (x1, x5) = (t3, t1)
    // and (x3, x7) = (t2, t0):
    const A: i32 = FIX_1_175875602;
    const K15_0: i32 = pair(A - FIX_0_899976223, A);
    const K37_0: i32 = pair(
        A - FIX_1_961570560,
        FIX_0_298631336 - FIX_0_899976223 - FIX_1_961570560 + A,
    );
    const K15_1: i32 = pair(
        A - FIX_0_390180644,
        FIX_2_053119869 - FIX_2_562915447 - FIX_0_390180644 + A,
    );
    const K37_1: i32 = pair(A - FIX_2_562915447, A);
    const K15_2: i32 = pair(A, A - FIX_2_562915447);
    const K37_2: i32 = pair(
        FIX_3_072711026 - FIX_2_562915447 - FIX_1_961570560 + A,
        A - FIX_1_961570560,
    );
    const K15_3: i32 = pair(
        FIX_1_501321110 - FIX_0_899976223 - FIX_0_390180644 + A,
        A - FIX_0_390180644,
    );
    const K37_3: i32 = pair(A, A - FIX_0_899976223);

    /// The largest |dequantised coefficient| the kernel takes: then every
    /// pass-1 sum is at most `D_MAX * ABS_SUM_MAX + 2^10 < 2^15 * 2^11` in
    /// magnitude, so pass 1's outputs fit in i16 (and pass 2's sums, at most
    /// `2^15 * ABS_SUM_MAX + 2^17 + 2^25`, fit in i32). The checks against
    /// it use `round(d * 15 / 2^15) == 0`, i.e. `|d| <= 1092`.
    pub(super) const D_MAX: i32 = 1092;
    /// The largest sum of |constants| over one output of the 1-D IDCT
    /// (checked by a test).
    pub(super) const ABS_SUM_MAX: i32 = 61214;
    const _: () = assert!(D_MAX as i64 * ABS_SUM_MAX as i64 + (1 << 10) < 1 << (15 + SHIFT1));
    const _: () = assert!(
        (1i64 << 15) * ABS_SUM_MAX as i64 + (1 << (SHIFT2 - 1)) + (128 << SHIFT2) < 1 << 31
    );

    /// One 1-D IDCT on eight lanes, from pair vectors `p04` (`[x0, x4]` per
    /// 32-bit lane), `p26`, `p15`, `p37`. `round` is added before the shift
    /// right by `SHIFT`; returns outputs 0..7.
    #[inline(always)]
    fn pass<const SHIFT: i32>(
        simd: V3,
        [p04, p26, p15, p37]: [__m256i; 4],
        round: i32,
    ) -> [__m256i; 8] {
        let a = simd.avx2;
        let k = |c: i32| simd.avx._mm256_set1_epi32(c);
        let rnd = k(round);
        let tmp0 = a._mm256_add_epi32(a._mm256_madd_epi16(p04, k(K04_0)), rnd);
        let tmp1 = a._mm256_add_epi32(a._mm256_madd_epi16(p04, k(K04_1)), rnd);
        let tmp2 = a._mm256_madd_epi16(p26, k(K26_2));
        let tmp3 = a._mm256_madd_epi16(p26, k(K26_3));
        let tmp10 = a._mm256_add_epi32(tmp0, tmp3);
        let tmp13 = a._mm256_sub_epi32(tmp0, tmp3);
        let tmp11 = a._mm256_add_epi32(tmp1, tmp2);
        let tmp12 = a._mm256_sub_epi32(tmp1, tmp2);
        let odd = |k15: i32, k37: i32| {
            a._mm256_add_epi32(
                a._mm256_madd_epi16(p15, k(k15)),
                a._mm256_madd_epi16(p37, k(k37)),
            )
        };
        let o0 = odd(K15_0, K37_0);
        let o1 = odd(K15_1, K37_1);
        let o2 = odd(K15_2, K37_2);
        let o3 = odd(K15_3, K37_3);
        let d = |x| a._mm256_srai_epi32::<SHIFT>(x);
        [
            d(a._mm256_add_epi32(tmp10, o3)),
            d(a._mm256_add_epi32(tmp11, o2)),
            d(a._mm256_add_epi32(tmp12, o1)),
            d(a._mm256_add_epi32(tmp13, o0)),
            d(a._mm256_sub_epi32(tmp13, o0)),
            d(a._mm256_sub_epi32(tmp12, o1)),
            d(a._mm256_sub_epi32(tmp11, o2)),
            d(a._mm256_sub_epi32(tmp10, o3)),
        ]
    }

    /// The whole block; `false` (and `out` untouched) if it is out of the
    /// range where the `i16` scheme is exact.
    #[inline(always)]
    pub(super) fn idct(
        simd: V3,
        coef: &[i16; 64],
        qt: &[u16; 64],
        out: &mut [u8],
        stride: usize,
    ) -> bool {
        let a = simd.avx2;
        let x = simd.avx;

        // Rows (0, 1), (2, 3), (4, 5), (6, 7), 16 x i16 each.
        let c: [__m256i; 4] = pulp::cast(*coef);
        let q: [__m256i; 4] = pulp::cast(*qt);

        // All AC zero (common): every sample is the same, computed exactly
        // as the full transform would (the other terms are all zero).
        let no_dc = x._mm256_setr_epi16(
            0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let ac = a._mm256_or_si256(
            a._mm256_or_si256(a._mm256_and_si256(c[0], no_dc), c[1]),
            a._mm256_or_si256(c[2], c[3]),
        );
        if x._mm256_testz_si256(ac, ac) != 0 {
            // (The DC from the vectors: reading `coef[0]` too makes LLVM
            // rebuild the vectors from pieces.)
            let dc = x._mm256_castsi256_si128(c[0]);
            let qdc = x._mm256_castsi256_si128(q[0]);
            let dc = simd.sse2._mm_cvtsi128_si32(dc) as i16;
            let qdc = simd.sse2._mm_cvtsi128_si32(qdc) as u16;
            dc_only(dc, qdc, out, stride);
            return true;
        }
        // Dequantise: the low 16 bits of each product...
        // (Written out: `array::map` is not always inlined, and would then
        // run without AVX2.)
        let mul = |i: usize| a._mm256_mullo_epi16(c[i], q[i]);
        let d = [mul(0), mul(1), mul(2), mul(3)];
        // ... which are the product if |coef * quant| < 2^14, i.e.
        // round(coef * quant / 2^15) == 0, with quant < 2^15 (vpmulhrsw
        // takes it as signed). Then pass 1's outputs fit in i16 if every
        // |product| <= D_MAX, i.e. round(product * 15 / 2^15) == 0.
        let k15 = x._mm256_set1_epi16(15);
        let big = |i: usize| {
            a._mm256_or_si256(
                a._mm256_mulhrs_epi16(c[i], q[i]),
                a._mm256_mulhrs_epi16(d[i], k15),
            )
        };
        let qor = a._mm256_or_si256(a._mm256_or_si256(q[0], q[1]), a._mm256_or_si256(q[2], q[3]));
        let bad = a._mm256_or_si256(
            a._mm256_or_si256(
                a._mm256_or_si256(big(0), big(1)),
                a._mm256_or_si256(big(2), big(3)),
            ),
            a._mm256_srli_epi16::<15>(qor),
        );
        if x._mm256_testz_si256(bad, bad) == 0 {
            return false;
        }

        // Pass 1, 32-bit lane = column, in the order c0 c4 c1 c5 | c2 c6 c3 c7
        // (so that packing pass 1's output pairs columns c, c + 4 for pass 2).
        // Each row's words to that order, then [row k: c0 c4 c1 c5, row k+1:
        // c0 c4 c1 c5 | row k: c2 c6 c3 c7, row k+1: ...], then interleave
        // rows k and k + 4.
        let w_order = x._mm256_setr_epi8(
            0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15, //
            0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
        );
        let r = |i: usize| a._mm256_permute4x64_epi64::<0xD8>(a._mm256_shuffle_epi8(d[i], w_order));
        let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
        let p04 = a._mm256_unpacklo_epi16(r0, r2);
        let p15 = a._mm256_unpackhi_epi16(r0, r2);
        let p26 = a._mm256_unpacklo_epi16(r1, r3);
        let p37 = a._mm256_unpackhi_epi16(r1, r3);
        let w = pass::<{ SHIFT1 as i32 }>(simd, [p04, p26, p15, p37], 1 << (SHIFT1 - 1));

        // To i16 (exact: they fit): [i.p04, i.p15, j.p04, j.p15 | i.p26,
        // i.p37, j.p26, j.p37] where i.p04 is the pair (row i col 0, row i
        // col 4).
        let pk = |i: usize, j: usize| a._mm256_packs_epi32(w[i], w[j]);
        let (s01, s23, s45, s67) = (pk(0, 1), pk(2, 3), pk(4, 5), pk(6, 7));
        // Transpose for pass 2, 32-bit lane = row, in the order 0 2 4 6 | 1 3
        // 5 7. [0.p04, 2.p04, 0.p15, 2.p15 | 0.p26, 2.p26, 0.p37, 2.p37] ...
        let l0 = a._mm256_unpacklo_epi32(s01, s23);
        let h0 = a._mm256_unpackhi_epi32(s01, s23);
        let l1 = a._mm256_unpacklo_epi32(s45, s67);
        let h1 = a._mm256_unpackhi_epi32(s45, s67);
        // [rows 0 2 4 6 .p04 | .p26], [.p15 | .p37], and rows 1 3 5 7
        let e0426 = a._mm256_unpacklo_epi64(l0, l1);
        let e1537 = a._mm256_unpackhi_epi64(l0, l1);
        let o0426 = a._mm256_unpacklo_epi64(h0, h1);
        let o1537 = a._mm256_unpackhi_epi64(h0, h1);
        let q04 = a._mm256_permute2x128_si256::<0x20>(e0426, o0426);
        let q26 = a._mm256_permute2x128_si256::<0x31>(e0426, o0426);
        let q15 = a._mm256_permute2x128_si256::<0x20>(e1537, o1537);
        let q37 = a._mm256_permute2x128_si256::<0x31>(e1537, o1537);

        // Pass 2, 32-bit lane = row; +128 folded into the rounding (exact:
        // no sum comes near wrapping, see D_MAX).
        let o = pass::<{ SHIFT2 as i32 }>(
            simd,
            [q04, q26, q15, q37],
            (1 << (SHIFT2 - 1)) + (128 << SHIFT2),
        );

        // Saturate to u8: [col c rows 0 2 4 6 (4 bytes) for c in 0..4 | rows
        // 1 3 5 7] for columns 0-3 and 4-7, then transpose each 4x4 to
        // row-major and interleave the halves.
        let b0 = a._mm256_packus_epi16(
            a._mm256_packs_epi32(o[0], o[1]),
            a._mm256_packs_epi32(o[2], o[3]),
        );
        let b1 = a._mm256_packus_epi16(
            a._mm256_packs_epi32(o[4], o[5]),
            a._mm256_packs_epi32(o[6], o[7]),
        );
        let t4 = x._mm256_setr_epi8(
            0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, //
            0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
        );
        let b0 = a._mm256_shuffle_epi8(b0, t4);
        let b1 = a._mm256_shuffle_epi8(b1, t4);
        // Rows [0, 2 | 1, 3] and [4, 6 | 5, 7].
        let e: [[u8; 8]; 4] = pulp::cast(a._mm256_unpacklo_epi32(b0, b1));
        let f: [[u8; 8]; 4] = pulp::cast(a._mm256_unpackhi_epi32(b0, b1));
        for (r, row) in [e[0], e[2], e[1], e[3], f[0], f[2], f[1], f[3]]
            .iter()
            .enumerate()
        {
            out[r * stride..r * stride + 8].copy_from_slice(row);
        }
        true
    }
}

/// The block when only `coef[0]` may be nonzero: jidctint.c's arithmetic
/// with the zero terms left out (still wrapping, so the same bits for any
/// input).
#[inline(always)]
fn dc_only(coef: i16, qt: u16, out: &mut [u8], stride: usize) {
    let ds = |a: i32, n: u32| a.wrapping_add(1 << (n - 1)) >> n;
    let v = i32::from(coef).wrapping_mul(i32::from(qt));
    let w = ds(v.wrapping_shl(CONST_BITS), SHIFT1);
    let px = (ds(w.wrapping_shl(CONST_BITS), SHIFT2) + 128).clamp(0, 255) as u8;
    for r in 0..8 {
        out[r * stride..r * stride + 8].copy_from_slice(&[px; 8]);
    }
}

/// Portable version: pass 1 over columns, pass 2 over rows, each a loop
/// whose iterations (lanes) LLVM runs eight at a time.
#[inline(always)]
fn idct_portable(coef: &[i16; 64], qt: &[u16; 64], out: &mut [u8], stride: usize) {
    // Pass 1, lane = column.
    let mut ws = [[0i32; 8]; 8];
    for c in 0..8 {
        let mut x = [0; 8];
        for k in 0..8 {
            x[k] = i32::from(coef[k * 8 + c]).wrapping_mul(i32::from(qt[k * 8 + c]));
        }
        let o = idct_1d(x, SHIFT1);
        for r in 0..8 {
            ws[r][c] = o[r];
        }
    }
    // Pass 2, lane = row.
    let mut t = [[0u8; 8]; 8];
    for r in 0..8 {
        let o = idct_1d(ws[r], SHIFT2);
        for c in 0..8 {
            t[r][c] = (o[c] + 128).clamp(0, 255) as u8;
        }
    }
    for r in 0..8 {
        out[r * stride..r * stride + 8].copy_from_slice(&t[r]);
    }
}

/// jidctint.c's 1-D IDCT of `i[0..8]`, descaled by `shift`.
#[inline(always)]
fn idct_1d(i: [i32; 8], shift: u32) -> [i32; 8] {
    let m = |a: i32, b: i32| a.wrapping_mul(b);
    let ad = |a: i32, b: i32| a.wrapping_add(b);
    let sb = |a: i32, b: i32| a.wrapping_sub(b);
    let ds = |a: i32| a.wrapping_add(1 << (shift - 1)) >> shift;
    // Even part.
    let z2 = i[2];
    let z3 = i[6];
    let z1 = m(ad(z2, z3), FIX_0_541196100);
    let tmp2 = ad(z1, m(z3, -FIX_1_847759065));
    let tmp3 = ad(z1, m(z2, FIX_0_765366865));
    let tmp0 = ad(i[0], i[4]).wrapping_shl(CONST_BITS);
    let tmp1 = sb(i[0], i[4]).wrapping_shl(CONST_BITS);
    let tmp10 = ad(tmp0, tmp3);
    let tmp13 = sb(tmp0, tmp3);
    let tmp11 = ad(tmp1, tmp2);
    let tmp12 = sb(tmp1, tmp2);
    // Odd part.
    let (t0, t1, t2, t3) = (i[7], i[5], i[3], i[1]);
    let z1 = ad(t0, t3);
    let z2 = ad(t1, t2);
    let z3 = ad(t0, t2);
    let z4 = ad(t1, t3);
    let z5 = m(ad(z3, z4), FIX_1_175875602);
    let t0 = m(t0, FIX_0_298631336);
    let t1 = m(t1, FIX_2_053119869);
    let t2 = m(t2, FIX_3_072711026);
    let t3 = m(t3, FIX_1_501321110);
    let z1 = m(z1, -FIX_0_899976223);
    let z2 = m(z2, -FIX_2_562915447);
    let z3 = ad(m(z3, -FIX_1_961570560), z5);
    let z4 = ad(m(z4, -FIX_0_390180644), z5);
    let t0 = ad(t0, ad(z1, z3));
    let t1 = ad(t1, ad(z2, z4));
    let t2 = ad(t2, ad(z2, z3));
    let t3 = ad(t3, ad(z1, z4));
    [
        ds(ad(tmp10, t3)),
        ds(ad(tmp11, t2)),
        ds(ad(tmp12, t1)),
        ds(ad(tmp13, t0)),
        ds(sb(tmp13, t0)),
        ds(sb(tmp12, t1)),
        ds(sb(tmp11, t2)),
        ds(sb(tmp10, t3)),
    ]
}

/// The plain transcription of `jpeg_idct_islow`: columns, then rows, one
/// value at a time (tests only).
#[cfg(test)]
pub(crate) fn idct_islow_reference(
    coef: &[i16; 64],
    qt: &[u16; 64],
    out: &mut [u8],
    stride: usize,
) {
    fn m(a: i32, b: i32) -> i32 {
        a.wrapping_mul(b)
    }
    fn ad(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }
    fn sb(a: i32, b: i32) -> i32 {
        a.wrapping_sub(b)
    }
    fn ds(a: i32, n: u32) -> i32 {
        a.wrapping_add(1 << (n - 1)) >> n
    }
    /// One 1-D IDCT of `i[0..8]`, descaled by `n`.
    fn one(i: [i32; 8], n: u32) -> [i32; 8] {
        let z2 = i[2];
        let z3 = i[6];
        let z1 = m(ad(z2, z3), FIX_0_541196100);
        let tmp2 = ad(z1, m(z3, -FIX_1_847759065));
        let tmp3 = ad(z1, m(z2, FIX_0_765366865));
        let tmp0 = ad(i[0], i[4]).wrapping_shl(CONST_BITS);
        let tmp1 = sb(i[0], i[4]).wrapping_shl(CONST_BITS);
        let tmp10 = ad(tmp0, tmp3);
        let tmp13 = sb(tmp0, tmp3);
        let tmp11 = ad(tmp1, tmp2);
        let tmp12 = sb(tmp1, tmp2);

        let mut tmp0 = i[7];
        let mut tmp1 = i[5];
        let mut tmp2 = i[3];
        let mut tmp3 = i[1];
        let mut z1 = ad(tmp0, tmp3);
        let mut z2 = ad(tmp1, tmp2);
        let mut z3 = ad(tmp0, tmp2);
        let mut z4 = ad(tmp1, tmp3);
        let z5 = m(ad(z3, z4), FIX_1_175875602);
        tmp0 = m(tmp0, FIX_0_298631336);
        tmp1 = m(tmp1, FIX_2_053119869);
        tmp2 = m(tmp2, FIX_3_072711026);
        tmp3 = m(tmp3, FIX_1_501321110);
        z1 = m(z1, -FIX_0_899976223);
        z2 = m(z2, -FIX_2_562915447);
        z3 = m(z3, -FIX_1_961570560);
        z4 = m(z4, -FIX_0_390180644);
        z3 = ad(z3, z5);
        z4 = ad(z4, z5);
        tmp0 = ad(tmp0, ad(z1, z3));
        tmp1 = ad(tmp1, ad(z2, z4));
        tmp2 = ad(tmp2, ad(z2, z3));
        tmp3 = ad(tmp3, ad(z1, z4));

        let mut o = [0; 8];
        o[0] = ds(ad(tmp10, tmp3), n);
        o[7] = ds(sb(tmp10, tmp3), n);
        o[1] = ds(ad(tmp11, tmp2), n);
        o[6] = ds(sb(tmp11, tmp2), n);
        o[2] = ds(ad(tmp12, tmp1), n);
        o[5] = ds(sb(tmp12, tmp1), n);
        o[3] = ds(ad(tmp13, tmp0), n);
        o[4] = ds(sb(tmp13, tmp0), n);
        o
    }

    let mut ws = [0i32; 64];
    for c in 0..8 {
        let mut col = [0i32; 8];
        for k in 0..8 {
            col[k] = m(i32::from(coef[k * 8 + c]), i32::from(qt[k * 8 + c]));
        }
        let o = one(col, SHIFT1);
        for r in 0..8 {
            ws[r * 8 + c] = o[r];
        }
    }
    for r in 0..8 {
        let mut row = [0i32; 8];
        row.copy_from_slice(&ws[r * 8..r * 8 + 8]);
        let o = one(row, SHIFT2);
        for c in 0..8 {
            out[r * stride + c] = (o[c] + 128).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: i64, hi: i64) -> i64 {
            lo + (self.next() % (hi - lo + 1) as u64) as i64
        }
    }

    /// A JPEG-like quantisation table (q ~ 90): small at low frequencies.
    fn quant_q90(rng: &mut Rng) -> [u16; 64] {
        core::array::from_fn(|i| {
            let (r, c) = (i / 8, i % 8);
            (2 + r + c + rng.range(0, 3) as usize) as u16
        })
    }

    /// A block with q90-like statistics for quant table `qt`: DC from a mean
    /// level in -1024..=1016, about a dozen nonzero low-frequency AC of
    /// magnitude 1..50, the rest zero; one block in four DC-only.
    fn block_q90(rng: &mut Rng, qt: &[u16; 64]) -> [i16; 64] {
        let mut b = [0i16; 64];
        b[0] = (rng.range(-1024, 1016) as f64 / f64::from(qt[0])).round() as i16;
        if rng.range(0, 3) != 0 {
            for _ in 0..12 {
                let r = rng.range(0, 3) as usize;
                let c = rng.range(0, 3) as usize;
                if r + c == 0 {
                    continue;
                }
                let mut v = rng.range(1, 50);
                if rng.next() & 1 == 1 {
                    v = -v;
                }
                b[r * 8 + c] = v as i16;
            }
        }
        b
    }

    /// JPEG's forward DCT of 8-bit samples, quantised with rounding (what
    /// an encoder stores), in natural order.
    fn fdct_quantise(px: &[[u8; 8]; 8], qt: &[u16; 64]) -> [i16; 64] {
        use std::f64::consts::{FRAC_1_SQRT_2, PI};
        let cu = |u: usize| if u == 0 { FRAC_1_SQRT_2 } else { 1.0 };
        let cos = |x: usize, u: usize| ((2 * x + 1) as f64 * u as f64 * PI / 16.0).cos();
        core::array::from_fn(|i| {
            let (v, u) = (i / 8, i % 8);
            let mut f = 0.0;
            for (y, row) in px.iter().enumerate() {
                for (x, &p) in row.iter().enumerate() {
                    f += (f64::from(p) - 128.0) * cos(x, u) * cos(y, v);
                }
            }
            (0.25 * cu(u) * cu(v) * f / f64::from(qt[i])).round() as i16
        })
    }

    /// A random (coefficients, quant table) from a mixture of kinds, from
    /// realistic to garbage. All must match the reference bit for bit
    /// (wrapping arithmetic makes even overflowing ones well defined).
    fn random_case(rng: &mut Rng) -> ([i16; 64], [u16; 64]) {
        let mut coef = [0i16; 64];
        let qt;
        match rng.range(0, 9) {
            0 => {
                // all zero
                qt = core::array::from_fn(|_| rng.range(1, 255) as u16);
            }
            1 => {
                // DC only
                coef[0] = rng.range(-1024, 1023) as i16;
                qt = core::array::from_fn(|_| rng.range(1, 255) as u16);
            }
            2 => {
                // sparse low frequency, q90-like
                qt = quant_q90(rng);
                coef = block_q90(rng, &qt);
            }
            3 => {
                // dense, full range
                coef = core::array::from_fn(|_| rng.range(-1024, 1023) as i16);
                qt = core::array::from_fn(|_| rng.range(1, 255) as u16);
            }
            4 => {
                // sparse, random positions and magnitudes
                for _ in 0..rng.range(1, 10) {
                    coef[rng.range(0, 63) as usize] = rng.range(-2048, 2047) as i16;
                }
                qt = core::array::from_fn(|_| rng.range(1, 64) as u16);
            }
            5 => {
                // extreme: overflowing products (garbage)
                coef = core::array::from_fn(|_| match rng.range(0, 3) {
                    0 => i16::MAX,
                    1 => i16::MIN,
                    2 => -i16::MAX,
                    _ => rng.next() as i16,
                });
                qt = core::array::from_fn(|_| match rng.range(0, 2) {
                    0 => u16::MAX,
                    _ => rng.next() as u16,
                });
            }
            7 => {
                // near the edge of the AVX2 kernel's range: a few
                // coefficients around +-D_MAX dequantised
                for _ in 0..rng.range(1, 4) {
                    coef[rng.range(0, 63) as usize] = rng.range(-1200, 1200) as i16;
                }
                qt = [1; 64];
            }
            8 => {
                // dense, each within the AVX2 kernel's range
                coef = core::array::from_fn(|_| rng.range(-1092, 1092) as i16);
                qt = [1; 64];
            }
            _ => {
                // single coefficient at a random position, any quant
                coef[rng.range(0, 63) as usize] = rng.next() as i16;
                qt = core::array::from_fn(|_| rng.next() as u16);
            }
        }
        (coef, qt)
    }

    fn run_ref(coef: &[i16; 64], qt: &[u16; 64], stride: usize) -> Vec<u8> {
        let mut out = vec![0xA5; 7 * stride + 8];
        idct_islow_reference(coef, qt, &mut out, stride);
        out
    }

    /// Runs `idct_islow` on each case inside `pulp::Arch::dispatch`, i.e.
    /// with the best vector extension the CPU has.
    fn run_dispatched(cases: &[([i16; 64], [u16; 64])], stride: usize) -> Vec<Vec<u8>> {
        struct Job<'a>(&'a [([i16; 64], [u16; 64])], usize);
        impl pulp::WithSimd for Job<'_> {
            type Output = Vec<Vec<u8>>;
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, _simd: S) -> Vec<Vec<u8>> {
                self.0
                    .iter()
                    .map(|(c, q)| {
                        let mut out = vec![0xA5; 7 * self.1 + 8];
                        idct_islow(c, q, &mut out, self.1);
                        out
                    })
                    .collect()
            }
        }
        pulp::Arch::new().dispatch(Job(cases, stride))
    }

    /// The portable code, called directly: compiled for the target's
    /// baseline (no AVX2).
    fn run_portable(cases: &[([i16; 64], [u16; 64])], stride: usize) -> Vec<Vec<u8>> {
        cases
            .iter()
            .map(|(c, q)| {
                let mut out = vec![0xA5; 7 * stride + 8];
                idct_portable(c, q, &mut out, stride);
                out
            })
            .collect()
    }

    #[test]
    fn idct_matches_reference_on_random_blocks() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for &stride in &[8usize, 13, 64] {
            let cases: Vec<_> = (0..20_000).map(|_| random_case(&mut rng)).collect();
            let fast = run_dispatched(&cases, stride);
            let portable = run_portable(&cases, stride);
            for (i, (c, q)) in cases.iter().enumerate() {
                let want = run_ref(c, q, stride);
                assert_eq!(fast[i], want, "dispatched, case {i}: {c:?} {q:?}");
                assert_eq!(portable[i], want, "portable, case {i}: {c:?} {q:?}");
            }
        }
    }

    /// The AVX2 kernel alone: it takes every realistic block, declines some
    /// edge cases, and is exact whenever it takes one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn idct_v3_kernel_takes_real_blocks_and_is_exact() {
        let Some(simd) = pulp::x86::V3::try_new() else {
            eprintln!("no AVX2: kernel not tested");
            return;
        };
        let mut rng = Rng(0xDEAD_BEEF);
        let mut real: Vec<_> = (0..5000)
            .map(|_| {
                let q = quant_q90(&mut rng);
                (block_q90(&mut rng, &q), q)
            })
            .collect();
        // The largest coefficients real 8-bit samples give: flat black and
        // white, and for each frequency the 0 / 255 pattern that matches its
        // cosine's signs (both ways round), at quant values up to 130.
        for q in [1u16, 2, 3, 7, 8, 16, 50, 99, 127, 130] {
            let qt = [q; 64];
            for v in [0u8, 255] {
                real.push((fdct_quantise(&[[v; 8]; 8], &qt), qt));
            }
            for f in 1..64 {
                let (fv, fu) = (f / 8, f % 8);
                for hi in [true, false] {
                    let px: [[u8; 8]; 8] = core::array::from_fn(|y| {
                        core::array::from_fn(|x| {
                            let s = (((2 * x + 1) * fu) as f64 * std::f64::consts::PI / 16.0).cos()
                                * (((2 * y + 1) * fv) as f64 * std::f64::consts::PI / 16.0).cos();
                            if (s > 0.0) == hi { 255 } else { 0 }
                        })
                    });
                    real.push((fdct_quantise(&px, &qt), qt));
                }
            }
        }
        // The largest pass-1 outputs the kernel allows: every dequantised
        // coefficient +-D_MAX, with the signs of one output's basis.
        for r in 0..8 {
            for sign in [1, -1] {
                let c: [i16; 64] = core::array::from_fn(|i| {
                    let k = i / 8;
                    let b = (((2 * r + 1) * k) as f64 * std::f64::consts::PI / 16.0).cos();
                    (sign * b.signum() as i32 * v3::D_MAX) as i16
                });
                real.push((c, [1; 64]));
            }
        }
        // ... and random noise.
        for _ in 0..2000 {
            let px = core::array::from_fn(|_| core::array::from_fn(|_| rng.next() as u8));
            let qt = quant_q90(&mut rng);
            real.push((fdct_quantise(&px, &qt), qt));
        }
        let edge: Vec<_> = (0..20_000)
            .map(|_| {
                loop {
                    let case = random_case(&mut rng);
                    if case.1[0] <= 2 && case.1[1] <= 2 {
                        break case;
                    }
                }
            })
            .collect();
        let (mut taken, mut declined) = (0, 0);
        simd.vectorize(|| {
            for (i, (c, q)) in real.iter().chain(&edge).enumerate() {
                let mut out = vec![0xA5; 7 * 9 + 8];
                if v3::idct(simd, c, q, &mut out, 9) {
                    assert_eq!(out, run_ref(c, q, 9), "case {i}: {c:?} {q:?}");
                    taken += usize::from(i >= real.len());
                } else {
                    assert!(out.iter().all(|&v| v == 0xA5));
                    assert!(i >= real.len(), "declined a real block: {c:?} {q:?}");
                    declined += 1;
                }
            }
        });
        // Both sides of the edge are exercised.
        eprintln!("edge cases: kernel took {taken}, declined {declined}");
        assert!(taken > 1000 && declined > 1000, "{taken} {declined}");
    }

    /// `v3::ABS_SUM_MAX`, on which the kernel's range rests, is right.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn idct_v3_bound_constant() {
        // Output j of the 1-D IDCT of 2 * (unit vector k), descaled by 1, is
        // exactly its constant M[j][k].
        let m = |j: usize, k: usize| {
            let mut x = [0; 8];
            x[k] = 2;
            idct_1d(x, 1)[j]
        };
        assert_eq!(m(0, 0), 1 << CONST_BITS);
        assert_eq!(
            m(0, 1),
            FIX_1_501321110 - FIX_0_899976223 - FIX_0_390180644 + FIX_1_175875602
        );
        let max = (0..8)
            .map(|j| (0..8).map(|k| m(j, k).abs()).sum::<i32>())
            .max();
        assert_eq!(max, Some(v3::ABS_SUM_MAX));
    }

    #[test]
    fn idct_leaves_the_rest_of_out_alone() {
        let mut rng = Rng(7);
        let q = quant_q90(&mut rng);
        let c = block_q90(&mut rng, &q);
        let stride = 11;
        let mut out = vec![0xA5; 7 * stride + 8];
        idct_islow(&c, &q, &mut out, stride);
        for (i, &v) in out.iter().enumerate() {
            if i % stride >= 8 {
                assert_eq!(v, 0xA5, "byte {i}");
            }
        }
    }

    #[test]
    fn idct_known_values() {
        let all = |coef: &[i16; 64], qt: &[u16; 64]| {
            let mut a = [0u8; 64];
            let mut b = [0u8; 64];
            idct_islow(coef, qt, &mut a, 8);
            idct_islow_reference(coef, qt, &mut b, 8);
            assert_eq!(a, b);
            a
        };
        let qt = [16u16; 64];
        // All zero: mid-grey.
        assert_eq!(all(&[0; 64], &qt), [128; 64]);
        // DC only: 8 * 16 = 128 -> pass 1: 128 << 2 = 512 -> pass 2:
        // (512 + 16) >> 5 = 16 -> 128 + 16.
        let mut c = [0i16; 64];
        c[0] = 8;
        assert_eq!(all(&c, &qt), [144; 64]);
        // DC rounding: 1 * 16 = 16 -> 64 -> (64 + 16) >> 5 = 2.
        c[0] = 1;
        assert_eq!(all(&c, &qt), [130; 64]);
        // Saturation both ways.
        c[0] = 1000;
        assert_eq!(all(&c, &qt), [255; 64]);
        c[0] = -1000;
        assert_eq!(all(&c, &qt), [0; 64]);
        // One horizontal cosine (coef (0, 1)): rows equal, columns fall
        // from left to right, antisymmetric about the centre.
        let mut c = [0i16; 64];
        c[1] = 10;
        let out = all(&c, &[8; 64]);
        for r in 1..8 {
            assert_eq!(out[r * 8..r * 8 + 8], out[..8]);
        }
        for x in 0..7 {
            assert!(out[x] > out[x + 1], "{out:?}");
        }
        assert!(out[3] > 128 && out[4] < 128, "{out:?}");
    }

    /// `cargo test --release -p preba-preprocess --lib idct_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn idct_speed() {
        let mut rng = Rng(42);
        let n = 4096;
        let qts = [quant_q90(&mut rng), quant_q90(&mut rng)];
        // Block i is decoded with qts[i & 1].
        let mix: Vec<[i16; 64]> = (0..n).map(|i| block_q90(&mut rng, &qts[i & 1])).collect();
        let (dc, ac): (Vec<_>, Vec<_>) = mix.iter().partition(|b| b[1..].iter().all(|&v| v == 0));

        struct Job<'a>(&'a [[i16; 64]], &'a [[u16; 64]; 2], usize, bool);
        impl pulp::WithSimd for Job<'_> {
            type Output = (f64, u64);
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, _simd: S) -> (f64, u64) {
                let stride = 512;
                let mut out = vec![0u8; 8 * stride];
                let mut sum = 0u64;
                let t = std::time::Instant::now();
                for _ in 0..self.2 {
                    for (i, b) in self.0.iter().enumerate() {
                        let o = &mut out[(i % 64) * 8..];
                        if self.3 {
                            idct_islow_reference(b, &self.1[i & 1], o, stride);
                        } else {
                            idct_islow(b, &self.1[i & 1], o, stride);
                        }
                    }
                    sum += u64::from(out[7 * stride + 3]);
                }
                let ns = t.elapsed().as_nanos() as f64 / (self.2 * self.0.len()) as f64;
                (ns, sum)
            }
        }
        // Called from code not compiled for AVX2 (the slow case to avoid).
        {
            let stride = 512;
            let mut out = vec![0u8; 8 * stride];
            let ns = (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    for _ in 0..50 {
                        for (i, b) in ac.iter().enumerate() {
                            idct_islow(b, &qts[i & 1], &mut out[(i % 64) * 8..], stride);
                        }
                    }
                    std::hint::black_box(&out);
                    t.elapsed().as_nanos() as f64 / (50 * ac.len()) as f64
                })
                .fold(f64::INFINITY, f64::min);
            println!("idct_islow with AC, not dispatched: {ns:.2} ns/block");
        }
        let arch = pulp::Arch::new();
        let sets = [("q90 mix", &mix), ("with AC", &ac), ("DC only", &dc)];
        for (name, blocks) in sets {
            for (kind, reps, reference) in [("idct_islow", 200, false), ("reference", 20, true)] {
                // Best of 5 (the machine is shared).
                let ns = (0..5)
                    .map(|_| arch.dispatch(Job(blocks, &qts, reps, reference)))
                    .map(|(ns, sum)| std::hint::black_box((ns, sum)).0)
                    .fold(f64::INFINITY, f64::min);
                println!("{kind} {name} ({} blocks): {ns:.2} ns/block", blocks.len());
            }
        }
    }
}
