//! Turning generated token ids into text pieces as they come, without ever emitting half a
//! UTF-8 character. Byte-level tokenizers split characters across tokens; decoding a partial
//! character yields U+FFFD, so a piece is held back while the decoded text ends in one.
//!
//! The window trick is the one Hugging Face's text-generation-inference uses: decode the last
//! few tokens with and without the new ones and emit the difference. Decoding a window, not the
//! whole sequence, keeps each step O(1), and starting both decodes at the same token keeps
//! decoders that strip a leading space (SentencePiece) from eating real spaces.

use tokenizers::Tokenizer;

/// Incremental detokenizer over one completion.
pub struct TextStream {
    ids: Vec<u32>,
    /// Start of the decode window.
    prefix_offset: usize,
    /// Tokens before this have been turned into emitted text.
    read_offset: usize,
}

impl TextStream {
    pub fn new() -> Self {
        TextStream {
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Adds a token; returns the new text it completes (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, String> {
        self.ids.push(id);
        // SentencePiece's byte fallback (`<0xE2>`) decodes a run of byte tokens as a whole, and
        // an invalid run as one U+FFFD per token: hold a run until a non-byte token ends it, so
        // that a window never starts inside one.
        if is_byte_fallback_token(tokenizer, id) {
            return Ok(String::new());
        }
        let prefix = decode(tokenizer, &self.ids[self.prefix_offset..self.read_offset])?;
        let text = decode(tokenizer, &self.ids[self.prefix_offset..])?;
        if text.len() > prefix.len()
            && !text.ends_with('\u{FFFD}')
            && text.starts_with(&prefix)
        {
            let piece = text[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(piece)
        } else {
            Ok(String::new())
        }
    }

    /// The text still held back at the end of generation (an incomplete character decodes to
    /// U+FFFD here, as it would in a one-shot decode).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String, String> {
        let prefix = decode(tokenizer, &self.ids[self.prefix_offset..self.read_offset])?;
        let text = decode(tokenizer, &self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(match text.get(prefix.len()..) {
            Some(rest) if text.starts_with(&prefix) => rest.to_string(),
            _ => String::new(),
        })
    }
}

impl Default for TextStream {
    fn default() -> Self {
        Self::new()
    }
}

fn is_byte_fallback_token(tokenizer: &Tokenizer, id: u32) -> bool {
    tokenizer.id_to_token(id).is_some_and(|t| {
        t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && t.as_bytes()[3..5].iter().all(u8::is_ascii_hexdigit)
    })
}

fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, String> {
    if ids.is_empty() {
        return Ok(String::new());
    }
    tokenizer.decode(ids, true).map_err(|e| e.to_string())
}
