//! Distance kernels: dot product and squared L2, dispatched once at runtime to
//! AVX2+FMA (x86_64), NEON (aarch64) or a portable fallback. The HNSW graph and
//! exact search use the same kernels, so both rank documents identically.

use std::sync::OnceLock;

use anndists::dist::Distance;

use super::collection::Metric;

type Kernel = fn(&[f32], &[f32]) -> f32;

struct Kernels {
    dot: Kernel,
    l2sq: Kernel,
    dot_i8: fn(&[f32], &[i8]) -> f32,
}

fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Kernels {
                    dot: x86::dot_avx2,
                    l2sq: x86::l2sq_avx2,
                    dot_i8: x86::dot_i8_avx2,
                };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            return Kernels {
                dot: arm::dot_neon,
                l2sq: arm::l2sq_neon,
                dot_i8: dot_i8_scalar,
            };
        }
        #[allow(unreachable_code)]
        Kernels {
            dot: dot_scalar,
            l2sq: l2sq_scalar,
            dot_i8: dot_i8_scalar,
        }
    })
}

/// Dot product of two equally long slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// Squared Euclidean distance of two equally long slices.
#[inline]
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2sq)(a, b)
}

/// Dot product of an `f32` query and a vector's `int8` codes (before the codes' scale).
#[inline]
pub fn dot_i8(q: &[f32], codes: &[i8]) -> f32 {
    (kernels().dot_i8)(q, codes)
}

/// Portable `f32` x `int8` dot product; eight accumulators so the compiler can
/// vectorise it (with AVX2 where `x86::dot_i8_avx2` compiles it so).
#[inline(always)]
pub fn dot_i8_scalar(q: &[f32], codes: &[i8]) -> f32 {
    let n = q.len().min(codes.len());
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        for j in 0..8 {
            acc[j] += q[i + j] * codes[i + j] as f32;
        }
        i += 8;
    }
    let mut s: f32 = acc.iter().sum();
    while i < n {
        s += q[i] * codes[i] as f32;
        i += 1;
    }
    s
}

/// Hamming distance of two bit strings of equal length.
#[inline]
pub fn hamming(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Portable dot product; eight accumulators so the compiler can vectorise it.
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    s
}

/// Portable squared L2 distance.
pub fn l2sq_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            let d = a[c * 8 + l] - b[c * 8 + l];
            acc[l] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        let d = a[i] - b[i];
        s += d * d;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: selected only after detecting avx2 and fma.
        unsafe { dot_impl(a, b) }
    }

    pub fn l2sq_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: selected only after detecting avx2 and fma.
        unsafe { l2sq_impl(a, b) }
    }

    pub fn dot_i8_avx2(q: &[f32], codes: &[i8]) -> f32 {
        // SAFETY: selected only after detecting avx2 and fma.
        unsafe { dot_i8_impl(q, codes) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_i8_impl(q: &[f32], codes: &[i8]) -> f32 {
        super::dot_i8_scalar(q, codes)
    }

    // Four independent sums, so the FMAs' latency overlaps: a 384-dimension
    // vector is 48 loads of 8 lanes, 12 per chain (two chains made it 24).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut s = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, acc) in s.iter_mut().enumerate() {
                let at = i + 8 * j;
                *acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(at)),
                    _mm256_loadu_ps(pb.add(at)),
                    *acc,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            s[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s[0]);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(
            _mm256_add_ps(s[0], s[1]),
            _mm256_add_ps(s[2], s[3]),
        ));
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2sq_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut s = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, acc) in s.iter_mut().enumerate() {
                let at = i + 8 * j;
                let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(at)), _mm256_loadu_ps(pb.add(at)));
                *acc = _mm256_fmadd_ps(d, d, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            s[0] = _mm256_fmadd_ps(d, d, s[0]);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(
            _mm256_add_ps(s[0], s[1]),
            _mm256_add_ps(s[2], s[3]),
        ));
        while i < n {
            let d = *pa.add(i) - *pb.add(i);
            sum += d * d;
            i += 1;
        }
        sum
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    pub fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: NEON is mandatory on aarch64; loads stay within `n`.
        unsafe {
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut s0 = vdupq_n_f32(0.0);
            let mut s1 = vdupq_n_f32(0.0);
            let mut i = 0;
            while i + 8 <= n {
                s0 = vfmaq_f32(s0, vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
                s1 = vfmaq_f32(s1, vld1q_f32(pa.add(i + 4)), vld1q_f32(pb.add(i + 4)));
                i += 8;
            }
            let mut s = vaddvq_f32(vaddq_f32(s0, s1));
            while i < n {
                s += *pa.add(i) * *pb.add(i);
                i += 1;
            }
            s
        }
    }

    pub fn l2sq_neon(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: as above.
        unsafe {
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut s0 = vdupq_n_f32(0.0);
            let mut s1 = vdupq_n_f32(0.0);
            let mut i = 0;
            while i + 8 <= n {
                let d0 = vsubq_f32(vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
                let d1 = vsubq_f32(vld1q_f32(pa.add(i + 4)), vld1q_f32(pb.add(i + 4)));
                s0 = vfmaq_f32(s0, d0, d0);
                s1 = vfmaq_f32(s1, d1, d1);
                i += 8;
            }
            let mut s = vaddvq_f32(vaddq_f32(s0, s1));
            while i < n {
                let d = *pa.add(i) - *pb.add(i);
                s += d * d;
                i += 1;
            }
            s
        }
    }
}

/// The graph's distance for a metric: non-negative, smaller is closer, never NaN
/// (hnsw_rs asserts distances are `>= 0`).
///
/// - cosine: vectors are unit-normalised on insert, distance `1 - dot` clamped to `[0, 2]`;
/// - dot: a strictly decreasing positive map of the dot product `x`:
///   `1 / (1 + x)` for `x >= 0`, `1 - x` otherwise;
/// - l2: squared Euclidean distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDistance(pub Metric);

impl MetricDistance {
    /// The distance between two stored (already normalised for cosine) vectors.
    #[inline]
    pub fn distance(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = match self.0 {
            Metric::Cosine => (1.0 - dot(a, b)).clamp(0.0, 2.0),
            Metric::Dot => {
                let x = dot(a, b);
                if x >= 0.0 {
                    1.0 / (1.0 + x)
                } else {
                    1.0 - x
                }
            }
            Metric::L2 => l2sq(a, b),
        };
        if d.is_nan() {
            f32::MAX
        } else {
            d.min(f32::MAX)
        }
    }

    /// The distance for a dot product `x` of two vectors with squared norms
    /// `qn` and `xn` (the same value [`Self::distance`] gives, computed from
    /// parts, as a quantized vector's are).
    #[inline]
    pub fn from_dot(&self, x: f32, qn: f32, xn: f32) -> f32 {
        let d = match self.0 {
            Metric::Cosine => (1.0 - x).clamp(0.0, 2.0),
            Metric::Dot => {
                if x >= 0.0 {
                    1.0 / (1.0 + x)
                } else {
                    1.0 - x
                }
            }
            Metric::L2 => (qn - 2.0 * x + xn).max(0.0),
        };
        if d.is_nan() {
            f32::MAX
        } else {
            d.min(f32::MAX)
        }
    }

    /// Converts a distance to the score users see (higher is better): cosine
    /// similarity, dot product, or negative Euclidean distance.
    pub fn score(&self, d: f32) -> f32 {
        match self.0 {
            Metric::Cosine => 1.0 - d,
            Metric::Dot => {
                if d <= 1.0 {
                    1.0 / d.max(f32::MIN_POSITIVE) - 1.0
                } else {
                    1.0 - d
                }
            }
            Metric::L2 => -d.max(0.0).sqrt(),
        }
    }
}

impl Distance<f32> for MetricDistance {
    #[inline]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        self.distance(va, vb)
    }
}

/// Scales `v` to unit length in place; returns false when it has no direction (zero norm).
pub fn normalize(v: &mut [f32]) -> bool {
    let n = dot(v, v).sqrt();
    if !(n > 0.0 && n.is_finite()) {
        return false;
    }
    let inv = 1.0 / n;
    for x in v.iter_mut() {
        *x *= inv;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn simd_matches_scalar(v in proptest::collection::vec((-100f32..100f32, -100f32..100f32), 0..300)) {
            let a: Vec<f32> = v.iter().map(|p| p.0).collect();
            let b: Vec<f32> = v.iter().map(|p| p.1).collect();
            let tol = |x: f32| 1e-3 * (1.0 + x.abs());
            let (d, ds) = (dot(&a, &b), dot_scalar(&a, &b));
            prop_assert!((d - ds).abs() <= tol(ds), "{d} vs {ds}");
            let (l, ls) = (l2sq(&a, &b), l2sq_scalar(&a, &b));
            prop_assert!((l - ls).abs() <= tol(ls), "{l} vs {ls}");
        }

        #[test]
        fn dot_distance_is_monotone_and_scores_round_trip(x in -1e6f32..1e6f32, y in -1e6f32..1e6f32) {
            let m = MetricDistance(Metric::Dot);
            let d = |v: f32| m.distance(&[v], &[1.0]);
            prop_assert!(d(x) >= 0.0);
            if x < y { prop_assert!(d(x) >= d(y)); }
            let s = m.score(d(x));
            prop_assert!((s - x).abs() <= 1e-2 * (1.0 + x.abs()), "{s} vs {x}");
        }
    }

    #[test]
    fn cosine_distance_is_clamped_and_finite() {
        let m = MetricDistance(Metric::Cosine);
        let mut a = vec![1.0f32, 1e-7, 0.0];
        assert!(normalize(&mut a));
        assert!(m.distance(&a, &a) >= 0.0);
        assert!(!normalize(&mut [0.0, 0.0]));
        let l2 = MetricDistance(Metric::L2);
        assert_eq!(l2.score(l2.distance(&[0.0, 3.0], &[4.0, 0.0])), -5.0);
    }
}
