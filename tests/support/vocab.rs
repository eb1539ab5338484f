//! A synthetic byte-level BPE vocabulary for constrained-decoding tests and benchmarks: every
//! single byte, the JSON punctuation runs real BPE vocabularies merge (`{"`, `":`, `", "`),
//! digits, words with and without a leading space, non-ASCII text, and pieces that end inside
//! a multi-byte character, padded with word-like tokens up to the size asked for. Ids from
//! `real` to `size` are left without bytes, like the padding rows of Qwen's logits.

use std::collections::HashSet;

pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

pub fn tokens(real: usize) -> Vec<(u32, Vec<u8>)> {
    let mut seen = HashSet::new();
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(real);
    let mut add = |t: Vec<u8>, out: &mut Vec<Vec<u8>>| {
        if out.len() < real && !t.is_empty() && seen.insert(t.clone()) {
            out.push(t);
        }
    };
    for b in 0..=255u8 {
        add(vec![b], &mut out);
    }
    let punctuation = [
        "{\"", "\"}", "\":", "\": ", "\": \"", "\",", "\", \"", "\"},", "}}", "]}", "[{", "[]", "{}", "\"]",
        "[\"", "\\\"", "\\n", " {", "},", "}]", "\":\"", "\",\"", " [", "],", " \"", "\"\"", ": ", ", ",
        "true", "false", "null", " true", " false", " null", "-1", ".5", "0.", "\n", "\t", "  ", "    ",
    ];
    for p in punctuation {
        add(p.as_bytes().to_vec(), &mut out);
    }
    for n in 0..1000 {
        add(n.to_string().into_bytes(), &mut out);
    }
    for s in ["é", "ü", "日本", "语言", "模型", "🙂", "ß", "ñ", " café", "naïve", "Ω", "→"] {
        add(s.as_bytes().to_vec(), &mut out);
        let b = s.as_bytes();
        if b.len() > 1 {
            add(b[..b.len() - 1].to_vec(), &mut out); // ends inside a character
            add(b[1..].to_vec(), &mut out); // starts inside one
        }
    }
    let syllables = [
        "a", "e", "i", "o", "u", "th", "st", "er", "in", "on", "an", "re", "ing", "ed", "ion", "ly", "ment",
        "pro", "con", "com", "de", "ex", "un", "is", "at", "or", "al", "es", "ar", "le", "ve", "se",
    ];
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    while out.len() < real {
        let n = 1 + rng.below(4);
        let mut w = String::new();
        for _ in 0..n {
            w.push_str(syllables[rng.below(syllables.len())]);
        }
        let w = match rng.below(6) {
            0 => format!(" {w}"),
            1 => format!(" {}{}", w[..1].to_uppercase(), &w[1..]),
            2 => format!("{w}_"),
            3 => format!("/{w}"),
            _ => w,
        };
        add(w.into_bytes(), &mut out);
    }
    out.into_iter().enumerate().map(|(i, b)| (i as u32, b)).collect()
}
