//! The [`MR`] × [`NR`] tile on AVX2's `vpmaddwd` (`_mm256_madd_epi16`): eight columns and two
//! depths in one instruction, twice SSE2's width. Written out rather than through
//! [`super::Vector`]: a tile is 2 vectors wide here, and its 12 accumulators must stay in
//! registers.

use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_set1_epi32,
    _mm256_setzero_si256,
};

use super::{MR, NR};

const _: () = assert!(NR == 16, "a tile's columns are two vectors of eight");

/// One tile over all depths, as [`super::tile`]: `a` holds [`MR`] rows of `2 * pairs` values,
/// `b` one panel of `pairs` pairs of [`NR`] columns.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn tile(a: &[i16], b: &[i16], pairs: usize) -> [[i32; NR]; MR] {
    assert!(a.len() >= MR * 2 * pairs && b.len() >= pairs * 2 * NR);
    let stride = 2 * pairs;
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    for p in 0..pairs {
        // SAFETY: the assertion above keeps every read (16 values of `b` at `2 NR p` and
        // `2 NR p + 16`, 2 values of `a` at `r * stride + 2p`) within the slices.
        unsafe {
            let weights = b.as_ptr().add(2 * NR * p);
            let low = _mm256_loadu_si256(weights.cast());
            let high = _mm256_loadu_si256(weights.add(16).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let pair = a.as_ptr().add(r * stride + 2 * p).cast::<i32>();
                let a = _mm256_set1_epi32(pair.read_unaligned());
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(a, low));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(a, high));
            }
        }
    }
    acc.map(|[low, high]| {
        // SAFETY: 256 bits either way.
        let (low, high) = unsafe {
            (
                std::mem::transmute::<__m256i, [i32; 8]>(low),
                std::mem::transmute::<__m256i, [i32; 8]>(high),
            )
        };
        std::array::from_fn(|c| if c < 8 { low[c] } else { high[c - 8] })
    })
}
