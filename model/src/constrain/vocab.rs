//! A tokenizer's vocabulary as the matcher sees it: the bytes each token id stands for, laid
//! out once in a prefix tree so that one walk judges every token sharing a prefix together.
//! Tokens of plain string text are also kept apart, sorted by length, because inside a JSON
//! string they are judged by their length alone (that is most of the vocabulary).

use super::mask::TokenMask;
use super::matcher::Matcher;
use super::schema::Grammar;

/// Token ids and their bytes, with the indexes the per-step mask needs. Build once per
/// tokenizer and share it.
pub struct Vocabulary {
    size: usize,
    offsets: Vec<usize>,
    bytes: Vec<u8>,
    all: Trie,
    /// Tokens that are not plain string text: they can close a string or escape.
    not_plain: Trie,
    /// Plain string-text tokens, ascending by length in characters.
    plain: Vec<(u32, u32)>,
    plain_mask: TokenMask,
    single_byte: [bool; 256],
    partial_utf8: bool,
}

impl Vocabulary {
    /// `size` is the width of the model's logits (it may exceed the tokenizer's count); `tokens`
    /// gives the bytes of each usable id. Ids left out (special tokens, padding rows) and
    /// tokens without bytes are never allowed.
    pub fn new(size: usize, tokens: impl IntoIterator<Item = (u32, Vec<u8>)>) -> Self {
        let mut per_id: Vec<Vec<u8>> = vec![Vec::new(); size];
        for (id, b) in tokens {
            if let Some(slot) = per_id.get_mut(id as usize) {
                *slot = b;
            }
        }
        let mut offsets = Vec::with_capacity(size + 1);
        let mut bytes = Vec::new();
        offsets.push(0);
        for b in &per_id {
            bytes.extend_from_slice(b);
            offsets.push(bytes.len());
        }

        let mut single_byte = [false; 256];
        let mut partial_utf8 = false;
        let mut plain = Vec::new();
        let mut plain_mask = TokenMask::new(size);
        let mut every: Vec<(&[u8], u32)> = Vec::new();
        let mut others: Vec<(&[u8], u32)> = Vec::new();
        for (id, b) in per_id.iter().enumerate() {
            if b.is_empty() {
                continue;
            }
            let id = id as u32;
            if b.len() == 1 {
                single_byte[b[0] as usize] = true;
            }
            every.push((b, id));
            match plain_chars(b) {
                Some(chars) => {
                    plain.push((chars, id));
                    plain_mask.insert(id);
                }
                None => {
                    partial_utf8 |= std::str::from_utf8(b).is_err();
                    others.push((b, id));
                }
            }
        }
        plain.sort_unstable();
        every.sort_unstable();
        others.sort_unstable();
        Self {
            size,
            all: Trie::build(&every),
            not_plain: Trie::build(&others),
            offsets,
            bytes,
            plain,
            plain_mask,
            single_byte,
            partial_utf8,
        }
    }

    /// Reads the bytes of every token of a Hugging Face tokenizer: byte-level BPE (GPT-2, Qwen,
    /// Llama 3) through the byte-to-character table, SentencePiece (Llama 2, TinyLlama) through
    /// `▁` and `<0xNN>` byte tokens. Special added tokens are left out. `size`: the logits width
    /// when it is larger than the tokenizer's vocabulary.
    pub fn from_tokenizer(tokenizer: &tokenizers::Tokenizer, size: Option<usize>) -> Self {
        let byte_level = tokenizer
            .get_decoder()
            .and_then(|d| serde_json::to_string(d).ok())
            .is_some_and(|d| d.contains("\"ByteLevel\""));
        let added = tokenizer.get_added_tokens_decoder();
        let unicode_to_byte = byte_level_table();
        let vocab = tokenizer.get_vocab(true);
        let count = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let tokens = vocab.into_iter().filter_map(|(text, id)| {
            let bytes = match added.get(&id) {
                Some(t) if t.special => return None,
                Some(t) => t.content.as_bytes().to_vec(),
                None if byte_level => {
                    text.chars().map(|c| unicode_to_byte.get(&c).copied()).collect::<Option<Vec<u8>>>()?
                }
                None => sentencepiece_bytes(&text),
            };
            Some((id, bytes))
        });
        Self::new(size.unwrap_or(count).max(count), tokens)
    }

    /// Width of the masks this vocabulary makes.
    pub fn len(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The bytes of `id`; empty for ids that are never allowed.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i >= self.size {
            return &[];
        }
        &self.bytes[self.offsets[i]..self.offsets[i + 1]]
    }

    pub(crate) fn has_single_byte(&self, b: u8) -> bool {
        self.single_byte[b as usize]
    }

    /// Some token ends inside a multi-byte character, so the matcher may stand between the
    /// bytes of one.
    pub(crate) fn has_partial_utf8(&self) -> bool {
        self.partial_utf8
    }

    /// Adds to `mask` every token whose bytes `start` accepts and after which the value can
    /// still be completed in `remaining - 1` more single-byte tokens.
    pub(crate) fn allowed(
        &self,
        g: &Grammar,
        start: &Matcher,
        remaining: usize,
        scratch: &mut Vec<Matcher>,
        mask: &mut TokenMask,
    ) {
        if remaining == 0 {
            return;
        }
        let trie = match start.in_string_body(g) {
            Some((chars, min, max)) => {
                // Plain text never lengthens the shortest completion, and shortens it while
                // the string is below its minimum length; either way it keeps the budget.
                if start.distance(g) < remaining || chars < min {
                    self.insert_plain(max - chars, mask);
                }
                &self.not_plain
            }
            None => &self.all,
        };
        if scratch.len() < trie.depth + 1 {
            scratch.resize(trie.depth + 1, Matcher::default());
        }
        scratch[0].clone_from(start);
        trie.walk(0, 0, g, scratch, remaining, mask);
    }

    fn insert_plain(&self, max_chars: u32, mask: &mut TokenMask) {
        let fits = self.plain.partition_point(|&(chars, _)| chars <= max_chars);
        if fits * 2 > self.plain.len() {
            // Most fit: take the whole set a word at a time, then drop the long ones.
            mask.union_with(&self.plain_mask);
            for &(_, id) in &self.plain[fits..] {
                mask.remove(id);
            }
        } else {
            for &(_, id) in &self.plain[..fits] {
                mask.insert(id);
            }
        }
    }
}

/// Characters of `b` when it is text that can stand inside a JSON string as is: valid UTF-8,
/// no control characters, no `"` or `\`.
fn plain_chars(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b).ok()?;
    if b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\') {
        return None;
    }
    Some(s.chars().count() as u32)
}

/// GPT-2's byte-level BPE writes each byte as a printable character; this is its inverse.
fn byte_level_table() -> std::collections::HashMap<char, u8> {
    let mut table = std::collections::HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
        let c = if printable {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("below the surrogate range")
        };
        table.insert(c, b);
    }
    table
}

/// SentencePiece pieces: `▁` is a space, `<0xNN>` is the byte NN.
fn sentencepiece_bytes(piece: &str) -> Vec<u8> {
    if let Some(hex) = piece.strip_prefix("<0x").and_then(|p| p.strip_suffix('>')) {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            if hex.len() == 2 {
                return vec![b];
            }
        }
    }
    piece.replace('\u{2581}', " ").into_bytes()
}

/// A prefix tree over token bytes. Node 0 is the root (the empty prefix).
struct Trie {
    /// Per node: its edges `edges[e.0..e.1]` and the tokens ending there `ends[t.0..t.1]`.
    nodes: Vec<((u32, u32), (u32, u32))>,
    edges: Vec<(u8, u32)>,
    ends: Vec<u32>,
    depth: usize,
}

impl Trie {
    /// `items` sorted by bytes.
    fn build(items: &[(&[u8], u32)]) -> Self {
        let mut t = Trie { nodes: Vec::new(), edges: Vec::new(), ends: Vec::new(), depth: 0 };
        t.depth = items.iter().map(|(b, _)| b.len()).max().unwrap_or(0);
        t.add(items, 0);
        t
    }

    fn add(&mut self, items: &[(&[u8], u32)], depth: usize) -> u32 {
        let node = self.nodes.len();
        self.nodes.push(((0, 0), (0, 0)));
        let ending = items.iter().take_while(|(b, _)| b.len() == depth).count();
        let ends_start = self.ends.len() as u32;
        self.ends.extend(items[..ending].iter().map(|(_, id)| *id));
        let ends = (ends_start, self.ends.len() as u32);

        let mut children = Vec::new();
        let mut rest = &items[ending..];
        while let Some(&(first, _)) = rest.first() {
            let b = first[depth];
            let n = rest.iter().take_while(|(x, _)| x[depth] == b).count();
            let child = self.add(&rest[..n], depth + 1);
            children.push((b, child));
            rest = &rest[n..];
        }
        let edges_start = self.edges.len() as u32;
        self.edges.extend(children);
        self.nodes[node] = ((edges_start, self.edges.len() as u32), ends);
        node as u32
    }

    fn walk(
        &self,
        node: u32,
        depth: usize,
        g: &Grammar,
        scratch: &mut [Matcher],
        remaining: usize,
        mask: &mut TokenMask,
    ) {
        let ((e0, e1), _) = self.nodes[node as usize];
        for &(b, child) in &self.edges[e0 as usize..e1 as usize] {
            let (done, next) = scratch.split_at_mut(depth + 1);
            let m = &mut next[0];
            m.clone_from(&done[depth]);
            if !m.feed(g, b) {
                continue;
            }
            let ((c0, c1), (t0, t1)) = self.nodes[child as usize];
            if t0 < t1 && m.distance(g) < remaining {
                for &id in &self.ends[t0 as usize..t1 as usize] {
                    mask.insert(id);
                }
            }
            if c0 < c1 {
                self.walk(child, depth + 1, g, scratch, remaining, mask);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_matches_gpt2() {
        let t = byte_level_table();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'a'], b'a');
    }

    #[test]
    fn byte_level_tokenizer_tokens_become_their_bytes() {
        let json = r#"{
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 5, "content": "<|im_end|>", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "vocab": {"a": 0, "Ġ": 1, "Ġa": 2, "{\"": 3, "Ã©": 4}, "merges": ["Ġ a"]}
        }"#;
        let tokenizer: tokenizers::Tokenizer = json.parse().unwrap();
        let v = Vocabulary::from_tokenizer(&tokenizer, Some(8));
        assert_eq!(v.len(), 8);
        assert_eq!(v.token_bytes(0), b"a");
        assert_eq!(v.token_bytes(2), b" a");
        assert_eq!(v.token_bytes(3), b"{\"");
        assert_eq!(v.token_bytes(4), "é".as_bytes());
        assert_eq!(v.token_bytes(5), b"", "special tokens are never allowed");
        assert_eq!(v.token_bytes(7), b"");
    }

    #[test]
    fn sentencepiece_pieces() {
        assert_eq!(sentencepiece_bytes("▁hello"), b" hello");
        assert_eq!(sentencepiece_bytes("<0x0A>"), b"\n");
        assert_eq!(sentencepiece_bytes("<0xZZ>"), b"<0xZZ>");
    }
}
