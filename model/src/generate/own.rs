//! A Qwen2 decoder of our own for the GGUF forms the image fetches (llama.cpp's Q8_0 and Q4_K_M
//! of Qwen2.5), because Candle's generic path leaves this CPU's speed on the table
//! (BENCHMARKS.md, "Where the Q8_0 generation time went in Candle"): Candle 0.11 takes its AVX-512-VNNI
//! kernels only when a row is a multiple of 256 wide, Qwen2.5-0.5B's rows are 896 wide, and it
//! has no SIMD Q5_0 product at all — and Q5_0 is what most of a Q4_K_M file of a model that
//! narrow holds (llama.cpp's fallback for rows that are not whole k-quant super-blocks).
//!
//! What is different here:
//! - Weights are repacked once at load into tiles: one 32-column block of four consecutive
//!   rows, scales first, in a layout that unpacks to bytes with a few shifts and masks. A
//!   product walks a row quad's tiles in order, so its reads are one sequential stream, and
//!   the tiles keep the file's bits per weight (Q8_0 8.5, Q5_0 5.5, Q4_K 5, Q6_K 7), because
//!   generation on two cores waits on memory.
//! - The dot product of a weight row and a quantized activation is one `vpdpbusd` per 32
//!   values where the CPU has AVX-512 VNNI (`vpmaddubsw` + `vpmaddwd` with AVX2, plain Rust
//!   elsewhere); four rows share each activation load.
//! - Rows are split between a small pool of threads that spin briefly and then park.
//! - Everything between the matrix products (RMSNorm, RoPE, attention over the KV cache,
//!   SiLU) is plain Rust on flat `f32` slices: no tensor allocated per operation.
//!
//! The arithmetic is Candle's quantized Qwen2's (RoPE on halves, grouped-query attention,
//! activations quantized to 8 bits), except that activations are always quantized per 32
//! values (Candle takes 256 for k-quants) and k-quant sub-block scales are kept as f16
//! products; the logits stay as close to the f32 model's as Candle's (tests: `own::tests`,
//! tests/model_generate.rs).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use half::f16;

/// Values per block: one tile column, one quantized-activation scale.
const BLOCK: usize = 32;
/// Values per k-quant super-block.
const SUPER: usize = 256;

fn err(msg: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(msg.into())
}

/// The kernel `k` picks for one tile type.
macro_rules! dispatch {
    ($k:expr, $w:expr, $x:expr, $vnni:ident, $avx2:ident) => {
        match $k {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: chosen only where the CPU has these features; the activation has one
            // block (and one scale and sum) per tile.
            Kernel::Vnni => unsafe { x86::$vnni($w, $x) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Kernel::Avx2 => unsafe { x86::$avx2($w, $x) },
            Kernel::Scalar => $x.map(|x| dot4_scalar($w, x)),
        }
    };
}

/// One block (32 columns) of four consecutive rows, in one of the layouts below. Row `j` of a
/// tile holds, for each of its 32 values `i`, a small integer `int(j, i)`; the weight is
/// `scale(j, i / 16) · int(j, i) − min(j)`.
trait Tile: Copy + Send + Sync + 'static {
    const ZERO: Self;
    /// Whether several tokens share one unpacking of each tile (prompt processing): worth it
    /// where unpacking costs work (nibbles, high bits); Q8_0's rows are loaded as they are and
    /// four tokens at once only crowd the registers (measured: 6 % slower prompts).
    const GROUP: bool = true;
    fn int(&self, j: usize, i: usize) -> i32;
    /// The scale of row `j`'s values `16·half .. 16·half + 16`.
    fn scale(&self, j: usize, half: usize) -> f32;
    fn min(&self, _j: usize) -> f32 {
        0.0
    }
    fn weight(&self, j: usize, i: usize) -> f32 {
        self.scale(j, i / 16) * self.int(j, i) as f32 - self.min(j)
    }
    /// The dot products of one row quad (its tiles) with `N` activations: `[token][row]`.
    fn dot<const N: usize>(k: Kernel, w: &[Self], xs: &[&Acts; N]) -> [[f32; 4]; N];
}

/// Nibbles of a tile's four rows: byte `i` of `q[p]` holds row `2p`'s value `i` in its low
/// nibble and row `2p + 1`'s in its high one, so one load, a shift and two masks give two rows.
type Nibbles = [[u8; BLOCK]; 2];

fn nibble(q: &Nibbles, j: usize, i: usize) -> i32 {
    ((q[j / 2][i] >> (4 * (j % 2))) & 0xf) as i32
}

fn set_nibbles(q: &mut Nibbles, j: usize, v: impl Fn(usize) -> u8) {
    for (i, byte) in q[j / 2].iter_mut().enumerate() {
        *byte |= (v(i) & 0xf) << (4 * (j % 2));
    }
}

/// Q8_0: values as they are.
#[derive(Clone, Copy)]
#[repr(C)]
struct T8 {
    d: [f16; 4],
    q: [[i8; BLOCK]; 4],
}

/// Q5_0: four low bits as nibbles; the fifth of row `j`'s value `i` is bit `j` of byte `i` of
/// `h` for `i < 16`, bit `4 + j` of byte `i − 16` above. The integer is that less 16.
#[derive(Clone, Copy)]
#[repr(C)]
struct T5 {
    d: [f16; 4],
    h: [u8; 16],
    q: Nibbles,
}

/// Q4_K: nibbles, with the sub-block's scale and min (both already multiplied by the
/// super-block's).
#[derive(Clone, Copy)]
#[repr(C)]
struct T4 {
    d: [f16; 4],
    m: [f16; 4],
    q: Nibbles,
}

/// Q6_K: four low bits as nibbles; the two high bits of row `j`'s value `i` at bits `2j, 2j + 1`
/// of byte `i` of `h`; the integer is that less 32; a scale per 16 values (`d[2j]`, `d[2j + 1]`).
#[derive(Clone, Copy)]
#[repr(C)]
struct T6 {
    d: [f16; 8],
    h: [u8; BLOCK],
    q: Nibbles,
}

impl Tile for T8 {
    const ZERO: T8 = T8 { d: [f16::ZERO; 4], q: [[0; BLOCK]; 4] };
    const GROUP: bool = false;
    fn int(&self, j: usize, i: usize) -> i32 {
        self.q[j][i] as i32
    }
    fn scale(&self, j: usize, _: usize) -> f32 {
        self.d[j].to_f32()
    }
    fn dot<const N: usize>(k: Kernel, w: &[T8], xs: &[&Acts; N]) -> [[f32; 4]; N] {
        dispatch!(k, w, xs, dot8_vnni, dot8_avx2)
    }
}

impl Tile for T5 {
    const ZERO: T5 = T5 { d: [f16::ZERO; 4], h: [0; 16], q: [[0; BLOCK]; 2] };
    fn int(&self, j: usize, i: usize) -> i32 {
        let high = (self.h[i % 16] >> (4 * (i / 16) + j)) & 1;
        nibble(&self.q, j, i) + ((high as i32) << 4) - 16
    }
    fn scale(&self, j: usize, _: usize) -> f32 {
        self.d[j].to_f32()
    }
    fn dot<const N: usize>(k: Kernel, w: &[T5], xs: &[&Acts; N]) -> [[f32; 4]; N] {
        dispatch!(k, w, xs, dot5_vnni, dot5_avx2)
    }
}

impl Tile for T4 {
    const ZERO: T4 = T4 { d: [f16::ZERO; 4], m: [f16::ZERO; 4], q: [[0; BLOCK]; 2] };
    fn int(&self, j: usize, i: usize) -> i32 {
        nibble(&self.q, j, i)
    }
    fn scale(&self, j: usize, _: usize) -> f32 {
        self.d[j].to_f32()
    }
    fn min(&self, j: usize) -> f32 {
        self.m[j].to_f32()
    }
    fn dot<const N: usize>(k: Kernel, w: &[T4], xs: &[&Acts; N]) -> [[f32; 4]; N] {
        dispatch!(k, w, xs, dot4k_vnni, dot4k_avx2)
    }
}

impl Tile for T6 {
    const ZERO: T6 = T6 { d: [f16::ZERO; 8], h: [0; BLOCK], q: [[0; BLOCK]; 2] };
    fn int(&self, j: usize, i: usize) -> i32 {
        let high = (self.h[i] >> (2 * j)) & 3;
        nibble(&self.q, j, i) + ((high as i32) << 4) - 32
    }
    fn scale(&self, j: usize, half: usize) -> f32 {
        self.d[2 * j + half].to_f32()
    }
    fn dot<const N: usize>(k: Kernel, w: &[T6], xs: &[&Acts; N]) -> [[f32; 4]; N] {
        dispatch!(k, w, xs, dot6_vnni, dot6_avx2)
    }
}

/// Builds the tiles of a `rows × cols` matrix; `fill(tile, j, r, b)` writes row `r`'s block `b`
/// as row `j` of its tile. Rows past the end stay zero.
fn tiles<T: Tile>(rows: usize, cols: usize, mut fill: impl FnMut(&mut T, usize, usize, usize)) -> Vec<T> {
    let blocks = cols / BLOCK;
    let mut tiles = vec![T::ZERO; rows.div_ceil(4) * blocks];
    for r in 0..rows {
        for b in 0..blocks {
            fill(&mut tiles[(r / 4) * blocks + b], r % 4, r, b);
        }
    }
    tiles
}

enum Weights {
    Q8(Vec<T8>),
    Q5(Vec<T5>),
    Q4K(Vec<T4>),
    Q6K(Vec<T6>),
}

/// A quantized matrix of `rows` × `cols`, repacked into tiles: quad `r / 4`, block `b` is
/// tile `(r / 4) * blocks + b`.
pub struct QMatrix {
    rows: usize,
    cols: usize,
    blocks: usize,
    weights: Weights,
}

/// The GGUF types this decoder runs, and the values per block of each.
fn supported(t: GgmlDType) -> Option<usize> {
    match t {
        GgmlDType::Q8_0 | GgmlDType::Q5_0 => Some(BLOCK),
        GgmlDType::Q4K | GgmlDType::Q6K => Some(SUPER),
        _ => None,
    }
}

fn f16_at(b: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([b[at], b[at + 1]])
}

/// Q4_K's 6-bit scale and min of sub-block `s` (0..8) from its 12 packed bytes.
fn q4k_scale_min(s: usize, sc: &[u8]) -> (u8, u8) {
    if s < 4 {
        (sc[s] & 63, sc[s + 4] & 63)
    } else {
        ((sc[s + 4] & 0xf) | ((sc[s - 4] >> 6) << 4), (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4))
    }
}

impl QMatrix {
    /// From a tensor of shape (rows, cols) in one of the types [`supported`] lists; `None` for
    /// any other type, or when cols is not a whole number of its blocks.
    fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<QMatrix>> {
        let dims = t.shape().dims();
        let dtype = t.dtype();
        let Some(per_block) = supported(dtype) else { return Ok(None) };
        if dims.len() != 2 || dims[1] % per_block != 0 {
            return Ok(None);
        }
        let (rows, cols) = (dims[0], dims[1]);
        let block_bytes = dtype.type_size();
        let data = t.data()?;
        let row_bytes = cols / per_block * block_bytes;
        if data.len() != rows * row_bytes {
            return Err(err(format!("{dtype:?} tensor of {rows}×{cols} holds {} bytes, not {}", data.len(), rows * row_bytes)));
        }
        // The file's block (of `per_block` values) holding row r's 32-value block b.
        let block = |r: usize, b: usize| {
            let at = r * row_bytes + (b * BLOCK / per_block) * block_bytes;
            &data[at..at + block_bytes]
        };
        let weights = match dtype {
            GgmlDType::Q8_0 => Weights::Q8(tiles(rows, cols, |t: &mut T8, j, r, b| {
                let x = block(r, b);
                t.d[j] = f16_at(x, 0);
                t.q[j] = std::array::from_fn(|i| x[2 + i] as i8);
            })),
            GgmlDType::Q5_0 => Weights::Q5(tiles(rows, cols, |t: &mut T5, j, r, b| {
                let x = block(r, b);
                t.d[j] = f16_at(x, 0);
                // d, 4 bytes of fifth bits, 16 bytes of nibbles: value i < 16 low, i + 16 high.
                let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
                set_nibbles(&mut t.q, j, |i| x[6 + i % 16] >> (4 * (i / 16)));
                for i in 0..BLOCK {
                    t.h[i % 16] |= (((qh >> i) & 1) as u8) << (4 * (i / 16) + j);
                }
            })),
            GgmlDType::Q4K => Weights::Q4K(tiles(rows, cols, |t: &mut T4, j, r, b| {
                // d, dmin, 12 bytes of scales, then 128 of nibbles: each 32 bytes hold two
                // sub-blocks, the first in the low nibbles.
                let x = block(r, b);
                let s = b % (SUPER / BLOCK);
                let (sc, m) = q4k_scale_min(s, &x[4..16]);
                t.d[j] = f16::from_f32(f16_at(x, 0).to_f32() * sc as f32);
                t.m[j] = f16::from_f32(f16_at(x, 2).to_f32() * m as f32);
                let qs = &x[16 + 32 * (s / 2)..16 + 32 * (s / 2) + 32];
                set_nibbles(&mut t.q, j, |i| qs[i] >> (4 * (s % 2)));
            })),
            GgmlDType::Q6K => Weights::Q6K(tiles(rows, cols, |t: &mut T6, j, r, b| {
                // 128 bytes of low nibbles, 64 of high bit pairs, 16 i8 scales (one per 16
                // values), d. Value v of the super-block: half n = v / 128, quarter g, lane l.
                let x = block(r, b);
                let d = f16_at(x, 208).to_f32();
                let q6 = |v: usize| {
                    let (n, g, l) = (v / 128, (v % 128) / 32, v % 32);
                    let low = (x[64 * n + l + 32 * (g % 2)] >> (4 * (g / 2))) & 0xf;
                    let high = (x[128 + 32 * n + l] >> (2 * g)) & 3;
                    low | (high << 4)
                };
                let v0 = (b % (SUPER / BLOCK)) * BLOCK;
                set_nibbles(&mut t.q, j, |i| q6(v0 + i));
                for i in 0..BLOCK {
                    t.h[i] |= (q6(v0 + i) >> 4) << (2 * j);
                }
                for half in 0..2 {
                    t.d[2 * j + half] = f16::from_f32(d * x[192 + (v0 / 16) + half] as i8 as f32);
                }
            })),
            _ => unreachable!("types outside `supported` returned above"),
        };
        Ok(Some(QMatrix { rows, cols, blocks: cols / BLOCK, weights }))
    }

    /// Row `r` as floats (embedding lookups).
    fn row_f32(&self, r: usize, out: &mut [f32]) {
        fn row<T: Tile>(tiles: &[T], blocks: usize, r: usize, out: &mut [f32]) {
            for (b, t) in tiles[(r / 4) * blocks..(r / 4 + 1) * blocks].iter().enumerate() {
                for i in 0..BLOCK {
                    out[b * BLOCK + i] = t.weight(r % 4, i);
                }
            }
        }
        match &self.weights {
            Weights::Q8(t) => row(t, self.blocks, r, out),
            Weights::Q5(t) => row(t, self.blocks, r, out),
            Weights::Q4K(t) => row(t, self.blocks, r, out),
            Weights::Q6K(t) => row(t, self.blocks, r, out),
        }
    }
}

/// Activations quantized per 32 values the way Candle's Q8_0 matmul does it: the scale
/// amax / 127 (kept as f16), values rounded to i8; and each block's sum (scale × Σ values),
/// which the Q4_K min needs.
struct Acts {
    scales: Vec<f32>,
    quants: Vec<i8>,
    sums: Vec<f32>,
}

impl Acts {
    fn new() -> Acts {
        Acts { scales: Vec::new(), quants: Vec::new(), sums: Vec::new() }
    }
}

fn quantize(x: &[f32], out: &mut Acts) {
    out.scales.clear();
    out.quants.clear();
    out.sums.clear();
    for chunk in x.chunks_exact(BLOCK) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let d = f16::from_f32(d).to_f32();
        let start = out.quants.len();
        out.quants.extend(chunk.iter().map(|v| (v * id).round() as i8));
        out.scales.push(d);
        out.sums.push(d * out.quants[start..].iter().map(|&q| q as i32).sum::<i32>() as f32);
    }
}

/// Which dot-product kernels this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Vnni,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Scalar,
}

fn kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        if avx2 && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("avx512bw") {
            return Kernel::Vnni;
        }
        if avx2 {
            return Kernel::Avx2;
        }
    }
    Kernel::Scalar
}

fn dot4_scalar<T: Tile>(w: &[T], x: &Acts) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (b, t) in w.iter().enumerate() {
        let xq = &x.quants[b * BLOCK..(b + 1) * BLOCK];
        for (j, o) in out.iter_mut().enumerate() {
            let half = |h: usize| (16 * h..16 * h + 16).map(|i| t.int(j, i) * xq[i] as i32).sum::<i32>() as f32 * t.scale(j, h);
            *o += (half(0) + half(1)) * x.scales[b] - t.min(j) * x.sums[b];
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Acts, Nibbles, T4, T5, T6, T8, BLOCK};

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Two rows' values 0..15 from their shared nibble bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn pair(q: &[u8; BLOCK]) -> (__m256i, __m256i) {
        let v = _mm256_loadu_si256(q.as_ptr() as *const __m256i);
        let low = _mm256_set1_epi8(0xf);
        (_mm256_and_si256(v, low), _mm256_and_si256(_mm256_srli_epi16(v, 4), low))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn nibbles(q: &Nibbles) -> [__m256i; 4] {
        let (a, b) = pair(&q[0]);
        let (c, d) = pair(&q[1]);
        [a, b, c, d]
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn w8(t: &T8) -> [__m256i; 4] {
        t.q.map(|q| _mm256_loadu_si256(q.as_ptr() as *const __m256i))
    }

    /// Unsigned, 0..31 (the 16 comes off with the min).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn w5(t: &T5) -> [__m256i; 4] {
        let h = _mm_loadu_si128(t.h.as_ptr() as *const __m128i);
        // Byte i of 32: the four rows' fifth bits of value i in bits 0..3.
        let h = _mm256_set_m128i(_mm_srli_epi16(h, 4), h);
        let bit = |j: i8| _mm256_and_si256(h, _mm256_set1_epi8(1 << j));
        let [a, b, c, d] = nibbles(&t.q);
        [
            _mm256_or_si256(a, _mm256_slli_epi16(bit(0), 4)),
            _mm256_or_si256(b, _mm256_slli_epi16(bit(1), 3)),
            _mm256_or_si256(c, _mm256_slli_epi16(bit(2), 2)),
            _mm256_or_si256(d, _mm256_slli_epi16(bit(3), 1)),
        ]
    }

    /// Unsigned, 0..15.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn w4(t: &T4) -> [__m256i; 4] {
        nibbles(&t.q)
    }

    /// Signed, −32..31.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn w6(t: &T6) -> [__m256i; 4] {
        let h = _mm256_loadu_si256(t.h.as_ptr() as *const __m256i);
        let pair = |mask: i8| _mm256_and_si256(h, _mm256_set1_epi8(mask));
        let [a, b, c, d] = nibbles(&t.q);
        let high = [_mm256_slli_epi16(pair(0x03), 4), _mm256_slli_epi16(pair(0x0c), 2), pair(0x30), _mm256_srli_epi16(pair(0xc0u8 as i8), 2)];
        let mut w = [a, b, c, d];
        for (w, h) in w.iter_mut().zip(high) {
            *w = _mm256_sub_epi8(_mm256_or_si256(*w, h), _mm256_set1_epi8(32));
        }
        w
    }

    /// Four f16 scales, each broadcast over a row's eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn scales4(d: &[half::f16; 4]) -> [__m256; 4] {
        let v = _mm_cvtph_ps(_mm_loadl_epi64(d.as_ptr() as *const __m128i));
        let mut s = [0f32; 4];
        _mm_storeu_ps(s.as_mut_ptr(), v);
        s.map(|s| _mm256_set1_ps(s))
    }

    /// Two scales per row: lanes 0–3 of a product hold values 0–15, lanes 4–7 values 16–31.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn sc6(t: &T6) -> [__m256; 4] {
        let v = _mm256_cvtph_ps(_mm_loadu_si128(t.d.as_ptr() as *const __m128i));
        [
            _mm256_permutevar8x32_ps(v, _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0)),
            _mm256_permutevar8x32_ps(v, _mm256_set_epi32(3, 3, 3, 3, 2, 2, 2, 2)),
            _mm256_permutevar8x32_ps(v, _mm256_set_epi32(5, 5, 5, 5, 4, 4, 4, 4)),
            _mm256_permutevar8x32_ps(v, _mm256_set_epi32(7, 7, 7, 7, 6, 6, 6, 6)),
        ]
    }

    /// `acc` + `factor` · `sum` · the four f16 `m`: the Σ min · block sum of the tiles that have
    /// a min (Q4_K's, and Q5_0's 16 · d).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mins4(m: &[half::f16; 4], factor: f32, sum: f32, acc: __m128) -> __m128 {
        _mm_fmadd_ps(_mm_cvtph_ps(_mm_loadl_epi64(m.as_ptr() as *const __m128i)), _mm_set1_ps(factor * sum), acc)
    }

    /// One kernel per tile type and instruction set: the same walk over a row quad's tiles
    /// for `N` tokens at once (each tile's rows unpacked once for all of them), with `$dot` the
    /// sums of four products of activation `$x` (signed, `$ax` = |x|) and weights `$w` in each
    /// 32-bit lane.
    macro_rules! dot4_kernel {
        ($name:ident, $tile:ty, $weights:ident, |$st:ident| $scales:expr, |$mt:ident, $ms:ident, $macc:ident| $min:expr, $features:literal, |$x:ident, $ax:ident, $w:ident| $dot:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const N: usize>(w: &[$tile], xs: &[&Acts; N]) -> [[f32; 4]; N] {
                let mut acc = [[_mm256_setzero_ps(); 4]; N];
                let mut mins = [_mm_setzero_ps(); N];
                for (b, t) in w.iter().enumerate() {
                    let rows = $weights(t);
                    let sc = {
                        let $st = t;
                        $scales
                    };
                    for n in 0..N {
                        let x = xs[n];
                        let $x = _mm256_loadu_si256(x.quants.as_ptr().add(b * BLOCK) as *const __m256i);
                        let $ax = _mm256_sign_epi8($x, $x);
                        let xd = _mm256_set1_ps(*x.scales.get_unchecked(b));
                        for j in 0..4 {
                            let $w = rows[j];
                            acc[n][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps($dot), _mm256_mul_ps(sc[j], xd), acc[n][j]);
                        }
                        mins[n] = {
                            let ($mt, $ms, $macc) = (t, *x.sums.get_unchecked(b), mins[n]);
                            $min
                        };
                    }
                }
                std::array::from_fn(|n| {
                    let mut m = [0f32; 4];
                    _mm_storeu_ps(m.as_mut_ptr(), mins[n]);
                    std::array::from_fn(|j| hsum(acc[n][j]) - m[j])
                })
            }
        };
    }

    /// The VNNI and AVX2 kernels of one tile type. Signed weights carry x's sign onto |x|
    /// (|x|·(w·sign x) = w·x, the instructions take one unsigned operand); unsigned ones (at
    /// most 31) go in as they are. Either way a product is at most 127·127, and two of them fit
    /// the i16 of `vpmaddubsw`: no saturation.
    macro_rules! kernels {
        ($vnni:ident, $avx2:ident, $tile:ty, $weights:ident, |$st:ident| $scales:expr, |$mt:ident, $ms:ident, $macc:ident| $min:expr, signed) => {
            dot4_kernel!($vnni, $tile, $weights, |$st| $scales, |$mt, $ms, $macc| $min, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", |x, ax, w| _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, _mm256_sign_epi8(w, x)));
            dot4_kernel!($avx2, $tile, $weights, |$st| $scales, |$mt, $ms, $macc| $min, "avx2,fma,f16c", |x, ax, w| _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w, x)), _mm256_set1_epi16(1)));
        };
        ($vnni:ident, $avx2:ident, $tile:ty, $weights:ident, |$st:ident| $scales:expr, |$mt:ident, $ms:ident, $macc:ident| $min:expr, unsigned) => {
            dot4_kernel!($vnni, $tile, $weights, |$st| $scales, |$mt, $ms, $macc| $min, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", |x, _ax, w| _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x));
            dot4_kernel!($avx2, $tile, $weights, |$st| $scales, |$mt, $ms, $macc| $min, "avx2,fma,f16c", |x, _ax, w| _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)));
        };
    }

    // Per type: its weights, its scales, and the min it takes off (`acc` where it has none).
    kernels!(dot8_vnni, dot8_avx2, T8, w8, |t| scales4(&t.d), |_t, _s, acc| acc, signed);
    kernels!(dot5_vnni, dot5_avx2, T5, w5, |t| scales4(&t.d), |t, s, acc| mins4(&t.d, 16.0, s, acc), unsigned);
    kernels!(dot4k_vnni, dot4k_avx2, T4, w4, |t| scales4(&t.d), |t, s, acc| mins4(&t.m, 1.0, s, acc), unsigned);
    kernels!(dot6_vnni, dot6_avx2, T6, w6, |t| sc6(t), |_t, _s, acc| acc, signed);
}

fn matrix_of<R: std::io::Read + std::io::Seek>(content: &gguf_file::Content, reader: &mut R, name: &str) -> candle_core::Result<Option<QMatrix>> {
    QMatrix::from_qtensor(&content.tensor(reader, name, &Device::Cpu)?)
}

fn f32_of<R: std::io::Read + std::io::Seek>(content: &gguf_file::Content, reader: &mut R, name: &str) -> candle_core::Result<Vec<f32>> {
    content.tensor(reader, name, &Device::Cpu)?.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()
}

/// A job of `tasks` numbered pieces that the pool's threads and the caller take in turn.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    /// Workers that have not finished with this job yet.
    pending: AtomicUsize,
    /// A task panicked (caught, so that every thread still counts itself out).
    panicked: AtomicBool,
}

impl Job<'_> {
    /// Takes and runs tasks until none are left.
    fn work(&self) {
        loop {
            let t = self.next.fetch_add(1, Ordering::AcqRel);
            if t >= self.tasks {
                break;
            }
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.f)(t))).is_err() {
                self.panicked.store(true, Ordering::Release);
            }
        }
    }
}

struct Shared {
    epoch: AtomicU64,
    job: AtomicPtr<()>,
    stop: AtomicBool,
}

/// Worker threads for the matrix products: they spin a while for the next job (decoding
/// sends one every few dozen microseconds) and then park, so an idle model costs no CPU.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// Spins before a worker parks: about 50–100 µs.
const SPINS: u32 = 20_000;

impl Pool {
    /// `threads` in all, the caller included.
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared { epoch: AtomicU64::new(0), job: AtomicPtr::new(std::ptr::null_mut()), stop: AtomicBool::new(false) });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("ghost-mm-{i}")).spawn(move || worker(&s)).expect("spawn a matmul thread")
            })
            .collect();
        Pool { shared, workers }
    }

    /// Threads that take part in a job, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0..tasks)` across the pool and the calling thread; returns when all are done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || tasks <= 1 {
            (0..tasks).for_each(f);
            return;
        }
        let job = Job { f, tasks, next: AtomicUsize::new(0), pending: AtomicUsize::new(self.workers.len()), panicked: AtomicBool::new(false) };
        self.shared.job.store(&job as *const Job as *mut (), Ordering::Release);
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        for w in &self.workers {
            w.thread().unpark();
        }
        job.work();
        // Every worker acknowledges the job before it may go: nobody touches `job` afterwards.
        while job.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        // Only now, with every thread done with `job`, may a panic leave this frame.
        if job.panicked.load(Ordering::Acquire) {
            panic!("a task of the matrix-product pool panicked");
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::park();
            }
        }
        // SAFETY: the caller of `run` keeps the job alive until every worker has counted
        // itself out of `pending`, which is the last thing done with it here.
        let job = unsafe { &*(s.job.load(Ordering::Acquire) as *const Job) };
        job.work();
        job.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

/// Tasks per thread of one product: few, so that each thread streams long contiguous runs of
/// rows (the hardware prefetcher's best case), and more than one, so that a thread that was
/// late takes fewer.
const TASKS_PER_THREAD: usize = 4;

/// `out[t * w.rows + r] = w[r] · x[t]` for every token `t` of `xs` (quantized), in parallel
/// over the rows.
fn matmul(pool: &Pool, k: Kernel, w: &QMatrix, xs: &[Acts], out: &mut [f32]) {
    matmuls(pool, k, &mut [(w, out)], xs);
}

/// Several products of the same activations as one job of the pool (one hand-off, and a
/// thread that finishes one matrix's rows goes on with the next one's).
fn matmuls(pool: &Pool, k: Kernel, products: &mut [(&QMatrix, &mut [f32])], xs: &[Acts]) {
    // (product, first row, end row) per task.
    let mut tasks = Vec::with_capacity(products.len() * pool.threads() * TASKS_PER_THREAD);
    for (i, (w, out)) in products.iter().enumerate() {
        assert_eq!(out.len(), w.rows * xs.len(), "output of a {}-row product for {} tokens", w.rows, xs.len());
        let per_task = w.rows.div_ceil(pool.threads() * TASKS_PER_THREAD).next_multiple_of(4).max(16);
        tasks.extend((0..w.rows).step_by(per_task).map(|r0| (i, r0, (r0 + per_task).min(w.rows))));
    }
    let targets: Vec<(&QMatrix, usize)> = products.iter_mut().map(|(w, out)| (*w, out.as_mut_ptr() as usize)).collect();
    pool.run(tasks.len(), &|task| {
        let (i, r0, r1) = tasks[task];
        let (w, out) = targets[i];
        // SAFETY: each (token, row) cell of an output is written by exactly one task.
        match &w.weights {
            Weights::Q8(t) => unsafe { rows(k, w, t, xs, out as *mut f32, r0, r1) },
            Weights::Q5(t) => unsafe { rows(k, w, t, xs, out as *mut f32, r0, r1) },
            Weights::Q4K(t) => unsafe { rows(k, w, t, xs, out as *mut f32, r0, r1) },
            Weights::Q6K(t) => unsafe { rows(k, w, t, xs, out as *mut f32, r0, r1) },
        }
    });
}

/// Rows `r0..r1` (`r0` a multiple of 4) of `w` times every token of `xs`, into `out`
/// (token-major, `w.rows` per token).
///
/// # Safety
/// `out` holds `w.rows * xs.len()` floats, and nobody else touches these rows of it meanwhile.
unsafe fn rows<T: Tile>(k: Kernel, w: &QMatrix, tiles: &[T], xs: &[Acts], out: *mut f32, r0: usize, r1: usize) {
    let mut r = r0;
    while r < r1 {
        let quad = &tiles[(r / 4) * w.blocks..(r / 4 + 1) * w.blocks];
        // Tokens four at a time (each tile unpacked once for the four) where that pays, then
        // one by one.
        let put = |t: usize, d: [f32; 4]| {
            for (j, v) in d.iter().enumerate().take(r1 - r) {
                *out.add(t * w.rows + r + j) = *v;
            }
        };
        let mut t = 0;
        while T::GROUP && t + 4 <= xs.len() {
            let d = T::dot(k, quad, &[&xs[t], &xs[t + 1], &xs[t + 2], &xs[t + 3]]);
            for (i, d) in d.into_iter().enumerate() {
                put(t + i, d);
            }
            t += 4;
        }
        for (t, x) in xs.iter().enumerate().skip(t) {
            put(t, T::dot(k, quad, &[x])[0]);
        }
        r += 4;
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    q: QMatrix,
    q_bias: Vec<f32>,
    k: QMatrix,
    k_bias: Vec<f32>,
    v: QMatrix,
    v_bias: Vec<f32>,
    o: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
    /// Keys and values of every position so far: position-major, (kv head, head dim) inside.
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// The whole model.
pub struct OwnQwen2 {
    embed: QMatrix,
    /// The output projection; `None`: tied to the embeddings.
    output: Option<QMatrix>,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    inv_freq: Vec<f32>,
    context_length: usize,
    /// Positions in the KV cache.
    cached: usize,
    pool: Pool,
    kernel: Kernel,
}

impl OwnQwen2 {
    /// From a Qwen2 GGUF whose projections are all of the types [`supported`] lists, with rows
    /// of whole blocks; `Ok(None)` for any other file (Candle's own model then runs it).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(content: &gguf_file::Content, reader: &mut R, threads: usize) -> candle_core::Result<Option<OwnQwen2>> {
        let md = |k: &str| content.metadata.get(k).ok_or_else(|| err(format!("no `{k}` in the metadata")));
        let heads = md("qwen2.attention.head_count")?.to_u32()? as usize;
        let kv_heads = md("qwen2.attention.head_count_kv")?.to_u32()? as usize;
        let hidden = md("qwen2.embedding_length")?.to_u32()? as usize;
        let blocks = md("qwen2.block_count")?.to_u32()? as usize;
        let eps = md("qwen2.attention.layer_norm_rms_epsilon")?.to_f32()?;
        let base = content.metadata.get("qwen2.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0);
        let context_length = md("qwen2.context_length")?.to_u32()? as usize;
        if heads == 0 || kv_heads == 0 || hidden % heads != 0 || heads % kv_heads != 0 {
            return Ok(None);
        }
        let head_dim = hidden / heads;
        // Only when every projection is of a type we run (all of llama.cpp's Q8_0 and Q4_K_M).
        let mut names = vec!["token_embd.weight".to_string()];
        for i in 0..blocks {
            for t in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
                names.push(format!("blk.{i}.{t}.weight"));
            }
        }
        if content.tensor_infos.contains_key("output.weight") {
            names.push("output.weight".into());
        }
        if names.iter().any(|n| content.tensor_infos.get(n).is_none_or(|t| supported(t.ggml_dtype).is_none())) {
            return Ok(None);
        }
        let Some(embed) = matrix_of(content, reader, "token_embd.weight")? else { return Ok(None) };
        let output = match content.tensor_infos.contains_key("output.weight") {
            true => match matrix_of(content, reader, "output.weight")? {
                Some(m) => Some(m),
                None => return Ok(None),
            },
            false => None,
        };
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = format!("blk.{i}");
            let mut m = |t: &str| -> candle_core::Result<QMatrix> {
                matrix_of(content, reader, &format!("{p}.{t}.weight"))?.ok_or_else(|| err(format!("{p}.{t}.weight: rows are not whole blocks of its type")))
            };
            let (q, k, v, o) = (m("attn_q")?, m("attn_k")?, m("attn_v")?, m("attn_output")?);
            let (gate, up, down) = (m("ffn_gate")?, m("ffn_up")?, m("ffn_down")?);
            let mut f = |n: &str| f32_of(content, reader, &format!("{p}.{n}"));
            layers.push(Layer {
                attn_norm: f("attn_norm.weight")?,
                q_bias: f("attn_q.bias")?,
                k_bias: f("attn_k.bias")?,
                v_bias: f("attn_v.bias")?,
                ffn_norm: f("ffn_norm.weight")?,
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                k_cache: Vec::new(),
                v_cache: Vec::new(),
            });
        }
        let output_norm = f32_of(content, reader, "output_norm.weight")?;
        let kv = kv_heads * head_dim;
        for (i, l) in layers.iter().enumerate() {
            let shapes = [(l.q.rows, l.q.cols, hidden, hidden), (l.k.rows, l.k.cols, kv, hidden), (l.v.rows, l.v.cols, kv, hidden), (l.o.rows, l.o.cols, hidden, hidden), (l.gate.cols, l.up.cols, hidden, hidden), (l.down.rows, l.gate.rows, hidden, l.up.rows)];
            if shapes.iter().any(|&(a, b, c, d)| a != c || b != d) || l.q_bias.len() != hidden || l.k_bias.len() != kv || l.v_bias.len() != kv || l.down.cols != l.gate.rows {
                return Err(err(format!("blk.{i}: tensor shapes do not fit hidden {hidden}, {heads} heads, {kv_heads} KV heads")));
            }
        }
        let inv_freq = (0..head_dim / 2).map(|i| 1.0 / base.powf(2.0 * i as f32 / head_dim as f32)).collect();
        Ok(Some(OwnQwen2 { embed, output, output_norm, layers, hidden, heads, kv_heads, head_dim, eps, inv_freq, context_length, cached: 0, pool: Pool::new(threads), kernel: kernel() }))
    }

    /// Keeps the first `n` cached positions (at most those cached); `true` when all `n` are.
    pub fn truncate_kv_cache(&mut self, n: usize) -> bool {
        if n > self.cached {
            return false;
        }
        let kvd = self.kv_heads * self.head_dim;
        for l in &mut self.layers {
            l.k_cache.truncate(n * kvd);
            l.v_cache.truncate(n * kvd);
        }
        self.cached = n;
        true
    }

    pub fn clear_kv_cache(&mut self) {
        self.cached = 0;
        for l in &mut self.layers {
            l.k_cache.clear();
            l.v_cache.clear();
        }
    }

    /// Runs `tokens` at positions `pos..` (`pos` must be the number of positions cached) and
    /// returns the logits of the last one.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        if pos != self.cached {
            // The generator always continues where it stopped or starts again at 0.
            if pos == 0 {
                self.clear_kv_cache();
            } else {
                return Err(err(format!("position {pos} does not follow the {} cached", self.cached)));
            }
        }
        let n = tokens.len();
        if n == 0 {
            return Err(err("no tokens to run"));
        }
        if pos + n > self.context_length {
            return Err(err(format!("{} positions exceed the context of {}", pos + n, self.context_length)));
        }
        let (h, hd, kvd) = (self.hidden, self.head_dim, self.kv_heads * self.head_dim);
        let mut x = vec![0f32; n * h];
        for (t, &tok) in tokens.iter().enumerate() {
            if tok as usize >= self.embed.rows {
                return Err(err(format!("token {tok} is outside the vocabulary of {}", self.embed.rows)));
            }
            self.embed.row_f32(tok as usize, &mut x[t * h..(t + 1) * h]);
        }
        // cos/sin per position and frequency.
        let half = hd / 2;
        let mut cos = vec![0f32; n * half];
        let mut sin = vec![0f32; n * half];
        for t in 0..n {
            for (i, f) in self.inv_freq.iter().enumerate() {
                let a = (pos + t) as f32 * f;
                cos[t * half + i] = a.cos();
                sin[t * half + i] = a.sin();
            }
        }
        let mut normed = vec![0f32; n * h];
        let mut acts: Vec<Acts> = (0..n).map(|_| Acts::new()).collect();
        let mut q = vec![0f32; n * h];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut attn = vec![0f32; n * h];
        let mut proj = vec![0f32; n * h];
        let inter = self.layers.first().map_or(0, |l| l.gate.rows);
        let mut gate = vec![0f32; n * inter];
        let mut up = vec![0f32; n * inter];
        let group = self.heads / self.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        for l in &mut self.layers {
            rms_norm(&x, &l.attn_norm, self.eps, h, &mut normed);
            for t in 0..n {
                quantize(&normed[t * h..(t + 1) * h], &mut acts[t]);
            }
            matmuls(&self.pool, self.kernel, &mut [(&l.q, &mut q), (&l.k, &mut k), (&l.v, &mut v)], &acts);
            for t in 0..n {
                add(&mut q[t * h..(t + 1) * h], &l.q_bias);
                add(&mut k[t * kvd..(t + 1) * kvd], &l.k_bias);
                add(&mut v[t * kvd..(t + 1) * kvd], &l.v_bias);
                let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
                for head in q[t * h..(t + 1) * h].chunks_exact_mut(hd).chain(k[t * kvd..(t + 1) * kvd].chunks_exact_mut(hd)) {
                    rope(head, c, s);
                }
            }
            l.k_cache.extend_from_slice(&k);
            l.v_cache.extend_from_slice(&v);
            // Attention of each new token over every cached position up to its own, one task
            // per head.
            let attn_ptr = attn.as_mut_ptr() as usize;
            let (k_cache, v_cache, q) = (&l.k_cache, &l.v_cache, &q);
            self.pool.run(self.heads, &|head| {
                let kvh = head / group;
                let mut scores = Vec::with_capacity(pos + n);
                for t in 0..n {
                    let qh = &q[t * h + head * hd..t * h + (head + 1) * hd];
                    scores.clear();
                    for p in 0..pos + t + 1 {
                        scores.push(dot(qh, &k_cache[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd]) * scale);
                    }
                    softmax(&mut scores);
                    // SAFETY: this task alone writes head `head`'s slice of each token's output.
                    let out = unsafe { std::slice::from_raw_parts_mut((attn_ptr as *mut f32).add(t * h + head * hd), hd) };
                    out.fill(0.0);
                    for (p, w) in scores.iter().enumerate() {
                        for (o, vv) in out.iter_mut().zip(&v_cache[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd]) {
                            *o += w * vv;
                        }
                    }
                }
            });
            for t in 0..n {
                quantize(&attn[t * h..(t + 1) * h], &mut acts[t]);
            }
            matmul(&self.pool, self.kernel, &l.o, &acts, &mut proj);
            add(&mut x, &proj);
            rms_norm(&x, &l.ffn_norm, self.eps, h, &mut normed);
            for t in 0..n {
                quantize(&normed[t * h..(t + 1) * h], &mut acts[t]);
            }
            matmuls(&self.pool, self.kernel, &mut [(&l.gate, &mut gate), (&l.up, &mut up)], &acts);
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            for t in 0..n {
                quantize(&gate[t * inter..(t + 1) * inter], &mut acts[t]);
            }
            matmul(&self.pool, self.kernel, &l.down, &acts, &mut proj);
            add(&mut x, &proj);
        }
        self.cached = pos + n;
        let last = &x[(n - 1) * h..];
        let mut out_norm = vec![0f32; h];
        rms_norm(last, &self.output_norm, self.eps, h, &mut out_norm);
        let mut one = [Acts::new()];
        quantize(&out_norm, &mut one[0]);
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0f32; head.rows];
        matmul(&self.pool, self.kernel, head, &one, &mut logits);
        Ok(logits)
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, h: usize, out: &mut [f32]) {
    for (row, o) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in o.iter_mut().zip(row).zip(w) {
            *o = v * r * g;
        }
    }
}

/// A dot product in eight independent sums, so that it vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y.iter().cycle()) {
        *a += b;
    }
}

/// RoPE on halves: (x[i], x[i + d/2]) rotated by the position's angle for frequency i.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i] + a * sin[i];
    }
}

fn softmax(s: &mut [f32]) {
    let max = s.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0.0;
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in s.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acts(x: &[f32]) -> Acts {
        let mut a = Acts::new();
        quantize(x, &mut a);
        a
    }

    fn random(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn kernels() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if kernel() == Kernel::Vnni {
                kernels.push(Kernel::Vnni);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                kernels.push(Kernel::Avx2);
            }
        }
        kernels
    }

    /// For every type we run, from tensors Candle quantized: the repacked rows are Candle's
    /// dequantized rows (up to the f16 rounding of k-quant sub-block scales), and every kernel
    /// on any number of threads computes the products of those weights with the quantized
    /// activation, for one token, three (one by one) and six (four at once, then two).
    #[test]
    fn every_type_is_repacked_to_candles_values_and_every_kernel_multiplies_them() {
        let (rows, cols) = (7, 512);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        // Weights of mixed magnitude, as real rows are: some blocks ten times the others.
        let w: Vec<f32> = random(rows * cols, &mut seed).iter().enumerate().map(|(i, v)| if (i / 48) % 5 == 0 { v * 0.5 } else { v * 0.05 }).collect();
        let wt = candle_core::Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        let xs: Vec<Acts> = (0..6).map(|_| acts(&random(cols, &mut seed))).collect();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let q = QTensor::quantize(&wt, dtype).unwrap();
            let candle: Vec<f32> = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let m = QMatrix::from_qtensor(&q).unwrap().expect("a type we run");
            let mut ours = vec![0f32; rows * cols];
            for (r, row) in ours.chunks_exact_mut(cols).enumerate() {
                m.row_f32(r, row);
            }
            let exact = matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q5_0);
            for (r, (a, b)) in ours.chunks_exact(cols).zip(candle.chunks_exact(cols)).enumerate() {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in a.iter().zip(b).enumerate() {
                    let tolerance = if exact { 0.0 } else { amax * 2e-3 };
                    assert!((a - b).abs() <= tolerance, "{dtype:?} row {r} value {i}: ours {a}, Candle's {b}");
                }
            }
            // The products, in f64 from the repacked weights and the quantized activations.
            let want: Vec<(f64, f64)> = xs
                .iter()
                .flat_map(|x| {
                    ours.chunks_exact(cols).map(move |row| {
                        let terms = row.iter().enumerate().map(|(i, w)| *w as f64 * x.quants[i] as f64 * x.scales[i / BLOCK] as f64);
                        terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()))
                    })
                })
                .collect();
            for k in kernels() {
                for threads in [1, 2, 3] {
                    let pool = Pool::new(threads);
                    for tokens in [1, 3, 6] {
                        let mut out = vec![0f32; rows * tokens];
                        matmul(&pool, k, &m, &xs[..tokens], &mut out);
                        for (c, (got, (want, size))) in out.iter().zip(&want).enumerate() {
                            assert!((*got as f64 - want).abs() <= 1e-5 * size + 1e-6, "{dtype:?}, {k:?}, {threads} threads, token {} row {}: {got} vs {want}", c / rows, c % rows);
                        }
                    }
                }
            }
        }
    }

    /// A panicking task neither hangs the caller (waiting for a worker that died) nor leaves
    /// the frame while workers still read the job: the caller panics once all are done, and the
    /// pool keeps working.
    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(3);
        let ran = AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(60, &|t| {
                ran.fetch_add(1, Ordering::Relaxed);
                assert!(t % 7 != 3, "task {t} fails on purpose");
            })
        }));
        assert!(caught.is_err(), "the caller sees the panic");
        assert_eq!(ran.load(Ordering::Relaxed), 60, "every task still ran");
        let sum = AtomicUsize::new(0);
        pool.run(100, &|t| {
            sum.fetch_add(t, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn quantized_activations_match_candles_q8_0_rounding() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 7.0).collect();
        let a = acts(&x);
        assert_eq!((a.quants.len(), a.scales.len()), (64, 2));
        // The block's largest magnitude maps to ±127; its scale is kept as f16, as Candle does.
        assert_eq!(a.quants[0], -127);
        assert_eq!(a.scales[0], half::f16::from_f32(31.5 / 7.0 / 127.0).to_f32());
        for (i, (q, v)) in a.quants.iter().zip(&x).enumerate() {
            let d = a.scales[i / BLOCK];
            assert!((*q as f32 * d - v).abs() <= d * 0.5 + v.abs() * 1e-3, "value {i}: {q} × {d} for {v}");
        }
        let zero = acts(&[0.0; 32]);
        assert_eq!((zero.scales[0], zero.quants.iter().all(|q| *q == 0)), (0.0, true));
    }
}
