//! A Qwen2 decoder of our own for GGUF files whose projections are all Q8_0 — the form the
//! image fetches — because Candle's generic path leaves this CPU's speed on the table
//! (BENCHMARKS.md, "Where the Q8_0 generation time goes"): Candle 0.11 takes its AVX-512-VNNI
//! kernels only when a row is a multiple of 256 wide, and Qwen2.5-0.5B's rows are 896 wide.
//!
//! What is different here:
//! - Weights are unpacked once at load into one array of f32 scales and one of i8 quants (rows
//!   of whole 32-value blocks), so the inner loop reads no f16 and no odd 34-byte strides.
//! - The dot product of a quantized weight row and a quantized activation is one `vpdpbusd` per
//!   32 values where the CPU has AVX-512 VNNI (`vpmaddubsw` + `vpmaddwd` with AVX2, plain Rust
//!   elsewhere); four rows share each activation load.
//! - Rows are split between a small pool of threads that spin briefly and then park.
//! - Everything between the matrix products (RMSNorm, RoPE, attention over the KV cache,
//!   SiLU) is plain Rust on flat `f32` slices: no tensor allocated per operation.
//!
//! The arithmetic is the one Candle's quantized Qwen2 does (activations quantized to Q8_0 per
//! 32 values with an f16 scale, RoPE on halves, grouped-query attention), so the logits agree
//! to within float summation order (tests: `q8::tests`, tests/model_generate.rs).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

/// Values per Q8_0 block.
const BLOCK: usize = 32;
/// Bytes of one Q8_0 block in a GGUF file: an f16 scale, then 32 i8 values.
const BLOCK_BYTES: usize = 34;

fn err(msg: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(msg.into())
}

/// One block (32 columns) of four consecutive rows: their scales, then their values. A
/// product walks a row quad's tiles in order, so its reads are one sequential stream.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Tile {
    d: [f32; 4],
    q: [[i8; BLOCK]; 4],
}

/// A Q8_0 matrix of `rows` × `cols`, unpacked into tiles: quad `r / 4`, block `b` is
/// `tiles[(r / 4) * blocks + b]` (rows past the end are zeros).
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    blocks: usize,
    tiles: Vec<Tile>,
}

impl Q8Matrix {
    /// From row-major scales (`rows × blocks`) and values (`rows × cols`).
    fn from_rows(rows: usize, cols: usize, scale: impl Fn(usize, usize) -> f32, value: impl Fn(usize, usize) -> i8) -> Q8Matrix {
        let blocks = cols / BLOCK;
        let quads = rows.div_ceil(4);
        let mut tiles = vec![Tile { d: [0.0; 4], q: [[0; BLOCK]; 4] }; quads * blocks];
        for r in 0..rows {
            for b in 0..blocks {
                let t = &mut tiles[(r / 4) * blocks + b];
                t.d[r % 4] = scale(r, b);
                for i in 0..BLOCK {
                    t.q[r % 4][i] = value(r, b * BLOCK + i);
                }
            }
        }
        Q8Matrix { rows, cols, blocks, tiles }
    }

    /// From a Q8_0 tensor of shape (rows, cols); `None` when it is not one or cols is not a
    /// whole number of blocks.
    fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<Q8Matrix>> {
        let dims = t.shape().dims();
        if t.dtype() != GgmlDType::Q8_0 || dims.len() != 2 || dims[1] % BLOCK != 0 {
            return Ok(None);
        }
        let (rows, cols) = (dims[0], dims[1]);
        let blocks = cols / BLOCK;
        let data = t.data()?;
        if data.len() != rows * blocks * BLOCK_BYTES {
            return Err(err(format!("Q8_0 tensor of {rows}×{cols} holds {} bytes, not {}", data.len(), rows * blocks * BLOCK_BYTES)));
        }
        let block = |r: usize, b: usize| &data[(r * blocks + b) * BLOCK_BYTES..(r * blocks + b + 1) * BLOCK_BYTES];
        Ok(Some(Q8Matrix::from_rows(rows, cols, |r, b| half::f16::from_le_bytes([block(r, b)[0], block(r, b)[1]]).to_f32(), |r, i| block(r, i / BLOCK)[2 + i % BLOCK] as i8)))
    }

    /// Row `r` as floats (embedding lookups).
    fn row_f32(&self, r: usize, out: &mut [f32]) {
        for b in 0..self.blocks {
            let t = &self.tiles[(r / 4) * self.blocks + b];
            for i in 0..BLOCK {
                out[b * BLOCK + i] = t.d[r % 4] * t.q[r % 4][i] as f32;
            }
        }
    }

    /// The tiles of row quad `quad`.
    fn quad(&self, quad: usize) -> &[Tile] {
        &self.tiles[quad * self.blocks..(quad + 1) * self.blocks]
    }
}

/// Activations quantized the way Candle's Q8_0 matmul does it: per 32 values, the scale
/// amax / 127 (kept as f16), values rounded to i8.
struct Q8Acts {
    scales: Vec<f32>,
    quants: Vec<i8>,
}

fn quantize(x: &[f32], out: &mut Q8Acts) {
    out.scales.clear();
    out.quants.clear();
    for chunk in x.chunks_exact(BLOCK) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.scales.push(half::f16::from_f32(d).to_f32());
        out.quants.extend(chunk.iter().map(|v| (v * id).round() as i8));
    }
}

/// Which dot-product kernel this CPU runs.
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
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("avx512bw") {
            return Kernel::Vnni;
        }
        if avx2 {
            return Kernel::Avx2;
        }
    }
    Kernel::Scalar
}

/// One row quad (its tiles) against one activation: four dot products.
fn dot4(k: Kernel, w: &[Tile], x: &Q8Acts) -> [f32; 4] {
    match k {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: chosen only where the CPU has these features; the activation has one block
        // per tile.
        Kernel::Vnni => unsafe { x86::dot4_vnni(w, &x.quants, &x.scales) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx2 => unsafe { x86::dot4_avx2(w, &x.quants, &x.scales) },
        Kernel::Scalar => dot4_scalar(w, &x.quants, &x.scales),
    }
}

fn dot4_scalar(w: &[Tile], xq: &[i8], xs: &[f32]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (b, t) in w.iter().enumerate() {
        for (j, o) in out.iter_mut().enumerate() {
            let acc: i32 = (0..BLOCK).map(|i| t.q[j][i] as i32 * xq[b * BLOCK + i] as i32).sum();
            *o += acc as f32 * t.d[j] * xs[b];
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Tile, BLOCK};

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// One kernel per instruction set: the same walk over a row quad's tiles, with `$dot`
    /// the sum of four products of `$ax` (|x| as unsigned bytes) and `$sw` (w carrying x's
    /// sign), |x|·(w·sign x) = w·x, in each 32-bit lane.
    macro_rules! dot4_kernel {
        ($name:ident, $features:literal, |$ax:ident, $sw:ident| $dot:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(w: &[Tile], xq: &[i8], xs: &[f32]) -> [f32; 4] {
                let mut acc = [_mm256_setzero_ps(); 4];
                for (b, t) in w.iter().enumerate() {
                    let xv = _mm256_loadu_si256(xq.as_ptr().add(b * BLOCK) as *const __m256i);
                    let $ax = _mm256_sign_epi8(xv, xv);
                    let xd = *xs.get_unchecked(b);
                    for j in 0..4 {
                        let wv = _mm256_loadu_si256(t.q[j].as_ptr() as *const __m256i);
                        let $sw = _mm256_sign_epi8(wv, xv);
                        let scale = _mm256_set1_ps(xd * t.d[j]);
                        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps($dot), scale, acc[j]);
                    }
                }
                [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
            }
        };
    }

    dot4_kernel!(dot4_vnni, "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni", |ax, sw| _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sw));
    // 127·127·2 fits an i16: no saturation with values in [-127, 127].
    dot4_kernel!(dot4_avx2, "avx2,fma", |ax, sw| _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1)));
}

fn q8_of<R: std::io::Read + std::io::Seek>(content: &gguf_file::Content, reader: &mut R, name: &str) -> candle_core::Result<Option<Q8Matrix>> {
    Q8Matrix::from_qtensor(&content.tensor(reader, name, &Device::Cpu)?)
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
                std::thread::Builder::new().name(format!("ghost-q8-{i}")).spawn(move || worker(&s)).expect("spawn a matmul thread")
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
        let job = Job { f, tasks, next: AtomicUsize::new(0), pending: AtomicUsize::new(self.workers.len()) };
        self.shared.job.store(&job as *const Job as *mut (), Ordering::Release);
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        for w in &self.workers {
            w.thread().unpark();
        }
        loop {
            let t = job.next.fetch_add(1, Ordering::AcqRel);
            if t >= tasks {
                break;
            }
            f(t);
        }
        // Every worker acknowledges the job before it may go: nobody touches `job` afterwards.
        while job.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
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
        loop {
            let t = job.next.fetch_add(1, Ordering::AcqRel);
            if t >= job.tasks {
                break;
            }
            (job.f)(t);
        }
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
fn matmul(pool: &Pool, k: Kernel, w: &Q8Matrix, xs: &[Q8Acts], out: &mut [f32]) {
    let rows = w.rows;
    debug_assert_eq!(out.len(), rows * xs.len());
    let out_ptr = out.as_mut_ptr() as usize;
    let per_task = rows.div_ceil(pool.threads() * TASKS_PER_THREAD).next_multiple_of(4).max(16);
    let tasks = rows.div_ceil(per_task);
    pool.run(tasks, &|task| {
        let r0 = task * per_task;
        let r1 = (r0 + per_task).min(rows);
        let mut r = r0;
        while r < r1 {
            let quad = w.quad(r / 4);
            for (t, x) in xs.iter().enumerate() {
                let d = dot4(k, quad, x);
                for (j, v) in d.iter().enumerate().take(r1 - r) {
                    // SAFETY: each (token, row) cell is written by exactly one task.
                    unsafe { *(out_ptr as *mut f32).add(t * rows + r + j) = *v };
                }
            }
            r += 4;
        }
    });
}

struct Layer {
    attn_norm: Vec<f32>,
    q: Q8Matrix,
    q_bias: Vec<f32>,
    k: Q8Matrix,
    k_bias: Vec<f32>,
    v: Q8Matrix,
    v_bias: Vec<f32>,
    o: Q8Matrix,
    ffn_norm: Vec<f32>,
    gate: Q8Matrix,
    up: Q8Matrix,
    down: Q8Matrix,
    /// Keys and values of every position so far: position-major, (kv head, head dim) inside.
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// The whole model.
pub struct Q8Qwen2 {
    embed: Q8Matrix,
    /// The output projection; `None`: tied to the embeddings.
    output: Option<Q8Matrix>,
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

impl Q8Qwen2 {
    /// From a Qwen2 GGUF whose projections are all Q8_0 with whole-block rows; `Ok(None)` for
    /// any other file (Candle's own model then runs it).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(content: &gguf_file::Content, reader: &mut R, threads: usize) -> candle_core::Result<Option<Q8Qwen2>> {
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
        // Only when every projection is Q8_0 (what a Q8_0 file of llama.cpp's holds).
        let mut names = vec!["token_embd.weight".to_string()];
        for i in 0..blocks {
            for t in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
                names.push(format!("blk.{i}.{t}.weight"));
            }
        }
        if content.tensor_infos.contains_key("output.weight") {
            names.push("output.weight".into());
        }
        if names.iter().any(|n| content.tensor_infos.get(n).is_none_or(|t| t.ggml_dtype != GgmlDType::Q8_0)) {
            return Ok(None);
        }
        let Some(embed) = q8_of(content, reader, "token_embd.weight")? else { return Ok(None) };
        let output = match content.tensor_infos.contains_key("output.weight") {
            true => match q8_of(content, reader, "output.weight")? {
                Some(m) => Some(m),
                None => return Ok(None),
            },
            false => None,
        };
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = format!("blk.{i}");
            let mut m = |t: &str| -> candle_core::Result<Q8Matrix> {
                q8_of(content, reader, &format!("{p}.{t}.weight"))?.ok_or_else(|| err(format!("{p}.{t}.weight: rows are not whole Q8_0 blocks")))
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
        Ok(Some(Q8Qwen2 { embed, output, output_norm, layers, hidden, heads, kv_heads, head_dim, eps, inv_freq, context_length, cached: 0, pool: Pool::new(threads), kernel: kernel() }))
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
        let mut acts: Vec<Q8Acts> = (0..n).map(|_| Q8Acts { scales: Vec::new(), quants: Vec::new() }).collect();
        let mut q = vec![0f32; n * h];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut attn = vec![0f32; n * h];
        let mut proj = vec![0f32; n * h];
        let inter = self.layers.first().map_or(0, |l| l.gate.rows);
        let mut gate = vec![0f32; n * inter];
        let mut up = vec![0f32; n * inter];
        let mut scores = Vec::new();
        let group = self.heads / self.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        for l in &mut self.layers {
            rms_norm(&x, &l.attn_norm, self.eps, h, &mut normed);
            for t in 0..n {
                quantize(&normed[t * h..(t + 1) * h], &mut acts[t]);
            }
            matmul(&self.pool, self.kernel, &l.q, &acts, &mut q);
            matmul(&self.pool, self.kernel, &l.k, &acts, &mut k);
            matmul(&self.pool, self.kernel, &l.v, &acts, &mut v);
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
            // Attention of each new token over every cached position up to its own.
            for t in 0..n {
                let upto = pos + t + 1;
                for head in 0..self.heads {
                    let kvh = head / group;
                    let qh = &q[t * h + head * hd..t * h + (head + 1) * hd];
                    scores.clear();
                    for p in 0..upto {
                        let kp = &l.k_cache[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd];
                        scores.push(qh.iter().zip(kp).map(|(a, b)| a * b).sum::<f32>() * scale);
                    }
                    softmax(&mut scores);
                    let out = &mut attn[t * h + head * hd..t * h + (head + 1) * hd];
                    out.fill(0.0);
                    for (p, w) in scores.iter().enumerate() {
                        let vp = &l.v_cache[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd];
                        for (o, vv) in out.iter_mut().zip(vp) {
                            *o += w * vv;
                        }
                    }
                }
            }
            for t in 0..n {
                quantize(&attn[t * h..(t + 1) * h], &mut acts[t]);
            }
            matmul(&self.pool, self.kernel, &l.o, &acts, &mut proj);
            add(&mut x, &proj);
            rms_norm(&x, &l.ffn_norm, self.eps, h, &mut normed);
            for t in 0..n {
                quantize(&normed[t * h..(t + 1) * h], &mut acts[t]);
            }
            matmul(&self.pool, self.kernel, &l.gate, &acts, &mut gate);
            matmul(&self.pool, self.kernel, &l.up, &acts, &mut up);
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
        let mut one = [Q8Acts { scales: Vec::new(), quants: Vec::new() }];
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

    fn acts(x: &[f32]) -> Q8Acts {
        let mut a = Q8Acts { scales: Vec::new(), quants: Vec::new() };
        quantize(x, &mut a);
        a
    }

    #[test]
    fn every_kernel_computes_the_same_dot_products_as_plain_integer_arithmetic() {
        let (rows, cols) = (7, 96);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let scales: Vec<f32> = (0..rows * cols / BLOCK).map(|_| (next() % 1000) as f32 / 1e4 + 1e-4).collect();
        let quants: Vec<i8> = (0..rows * cols).map(|_| ((next() % 255) as i32 - 127) as i8).collect();
        let w = Q8Matrix::from_rows(rows, cols, |r, b| scales[r * 3 + b], |r, i| quants[r * cols + i]);
        let x: Vec<f32> = (0..cols).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
        let a = acts(&x);
        // Plain integer arithmetic on the rows as given.
        let want: Vec<f32> = (0..rows)
            .map(|r| (0..3).map(|b| (0..BLOCK).map(|i| quants[r * cols + b * BLOCK + i] as i32 * a.quants[b * BLOCK + i] as i32).sum::<i32>() as f32 * scales[r * 3 + b] * a.scales[b]).sum())
            .collect();
        let mut row = vec![0f32; cols];
        w.row_f32(5, &mut row);
        assert_eq!(row[33], scales[5 * 3 + 1] * quants[5 * cols + 33] as f32);
        let mut kernels = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if kernel() == Kernel::Vnni {
                kernels.push(Kernel::Vnni);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                kernels.push(Kernel::Avx2);
            }
        }
        for k in kernels {
            for threads in [1, 2, 3] {
                let pool = Pool::new(threads);
                let mut out = vec![0f32; rows];
                matmul(&pool, k, &w, std::slice::from_ref(&a), &mut out);
                for (r, (got, want)) in out.iter().zip(&want).enumerate() {
                    assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{k:?}, {threads} threads, row {r}: {got} vs {want}");
                }
            }
        }
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
