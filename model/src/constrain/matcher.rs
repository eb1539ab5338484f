//! The byte-level matcher: a pushdown automaton over compact JSON (one optional space after
//! `:` and `,`) driven by a `Grammar`. Every prefix it accepts can still be completed, and it
//! knows the fewest bytes that complete it, which is what lets the decoder keep a token budget.
//!
//! Alternatives (`anyOf`) run side by side as separate stacks until the bytes tell them apart.

use super::schema::{Grammar, Node, NodeId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A value of `node` comes next; `space`: one space may come first.
    Pending { node: NodeId, space: bool },
    Object { node: NodeId, phase: ObjectPhase },
    Map { node: NodeId, count: u32, phase: MapPhase },
    Array { node: NodeId, count: u32, phase: ArrayPhase },
    String { node: NodeId, chars: u32, phase: StringPhase },
    /// Options `lo..hi` of the literal set still match the `pos` bytes written.
    Literal { node: NodeId, lo: u32, hi: u32, pos: u32 },
    Number { node: NodeId, neg: bool, int: u64, int_digits: u32, phase: NumberPhase },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectPhase {
    ExpectOpen,
    /// After `{`: a key or (when nothing is required) `}`.
    AfterOpen,
    /// After `,`: a key of a property from `next` on.
    ExpectKey { next: u16, space: bool },
    /// Inside a key: `cand` (a bit per property) still match the `pos` bytes written.
    Key { cand: u64, pos: u16 },
    Colon { prop: u16 },
    Value { prop: u16 },
    AfterValue { prop: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapPhase {
    ExpectOpen,
    AfterOpen,
    ExpectKey { space: bool },
    Key,
    Colon,
    Value,
    AfterValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArrayPhase {
    ExpectOpen,
    AfterOpen,
    Item,
    AfterItem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StringPhase {
    ExpectOpen,
    Body,
    Escape,
    /// Inside a multi-byte character: `need` continuation bytes, the next within `lo..=hi`.
    Utf8 { need: u8, lo: u8, hi: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberPhase {
    Start,
    Sign,
    Int,
    Dot,
    Frac(u32),
}

/// What a frame did with a byte.
enum Step {
    Consumed,
    /// Consumed, and a child value starts after it.
    ConsumedPush(Frame),
    /// Consumed; the frame's value is complete.
    Done,
    /// Not consumed; the frame's value was already complete, the byte belongs to the parent.
    Pop,
    /// Not consumed; a child value starts with this byte.
    Push(Frame),
    Reject,
}

/// The matcher's state: one stack per live alternative.
#[derive(Debug, Default)]
pub(crate) struct Matcher {
    stacks: Vec<Vec<Frame>>,
}

impl Clone for Matcher {
    fn clone(&self) -> Self {
        Self { stacks: self.stacks.clone() }
    }

    /// Reuses the stacks' allocations: the vocabulary walk copies a matcher per trie edge.
    fn clone_from(&mut self, source: &Self) {
        self.stacks.clone_from(&source.stacks);
    }
}

impl Matcher {
    pub fn new(g: &Grammar) -> Self {
        Self { stacks: vec![vec![Frame::Pending { node: g.root, space: false }]] }
    }

    /// Feeds one byte; false (and a dead matcher) when no alternative accepts it.
    pub fn feed(&mut self, g: &Grammar, b: u8) -> bool {
        let mut forks = Vec::new();
        let mut i = 0;
        while i < self.stacks.len() {
            if feed_stack(g, &mut self.stacks[i], b, &mut forks) {
                i += 1;
            } else {
                self.stacks.swap_remove(i);
            }
        }
        self.stacks.append(&mut forks);
        if self.stacks.len() > 1 {
            // Alternatives that reach the same state are one: without this, arrays of anyOf
            // items would multiply stacks with every item.
            let mut j = 1;
            while j < self.stacks.len() {
                if self.stacks[..j].contains(&self.stacks[j]) {
                    self.stacks.swap_remove(j);
                } else {
                    j += 1;
                }
            }
        }
        !self.stacks.is_empty()
    }

    pub fn feed_all(&mut self, g: &Grammar, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed(g, b))
    }

    /// The bytes so far form a complete value.
    pub fn is_complete(&self, g: &Grammar) -> bool {
        self.stacks.iter().any(|s| match s.as_slice() {
            [] => true,
            [only] => only.may_end(g),
            _ => false,
        })
    }

    /// Fewest bytes that complete the value.
    pub fn distance(&self, g: &Grammar) -> usize {
        self.stacks
            .iter()
            .map(|s| s.iter().map(|f| f.distance(g)).sum())
            .min()
            .unwrap_or(usize::MAX)
    }

    /// When the only live alternative is inside a string's text: the characters written and the
    /// string's bounds. Whole tokens of plain text can then be judged by their length alone.
    pub fn in_string_body(&self, g: &Grammar) -> Option<(u32, u32, u32)> {
        match self.stacks.as_slice() {
            [stack] => match stack.last() {
                Some(Frame::String { node, chars, phase: StringPhase::Body }) => match g.node(*node) {
                    Node::String { min, max } => Some((*chars, *min, *max)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }
}

fn feed_stack(g: &Grammar, stack: &mut Vec<Frame>, b: u8, forks: &mut Vec<Vec<Frame>>) -> bool {
    loop {
        let Some(top) = stack.last_mut() else { return false };
        if let Frame::Pending { node, space } = *top {
            if b == b' ' && space {
                *top = Frame::Pending { node, space: false };
                return true;
            }
            let alts = g.alternatives(&node);
            for &alt in &alts[1..] {
                let mut fork = stack.clone();
                *fork.last_mut().expect("fork of a non-empty stack") = Frame::start(g, alt);
                if feed_stack(g, &mut fork, b, forks) {
                    forks.push(fork);
                }
            }
            *stack.last_mut().expect("non-empty stack") = Frame::start(g, alts[0]);
            continue;
        }
        match top.step(g, b) {
            Step::Consumed => return true,
            Step::ConsumedPush(child) => {
                stack.push(child);
                return true;
            }
            Step::Done => {
                stack.pop();
                if let Some(parent) = stack.last_mut() {
                    parent.child_done();
                }
                return true;
            }
            Step::Pop => {
                stack.pop();
                match stack.last_mut() {
                    Some(parent) => parent.child_done(),
                    None => return false,
                }
            }
            Step::Push(child) => stack.push(child),
            Step::Reject => return false,
        }
    }
}

impl Frame {
    fn start(g: &Grammar, node: NodeId) -> Frame {
        match g.node(node) {
            Node::Object { .. } => Frame::Object { node, phase: ObjectPhase::ExpectOpen },
            Node::Map { .. } => Frame::Map { node, count: 0, phase: MapPhase::ExpectOpen },
            Node::Array { .. } => Frame::Array { node, count: 0, phase: ArrayPhase::ExpectOpen },
            Node::String { .. } => Frame::String { node, chars: 0, phase: StringPhase::ExpectOpen },
            Node::Literal { options } => Frame::Literal { node, lo: 0, hi: options.len() as u32, pos: 0 },
            Node::Number { .. } => {
                Frame::Number { node, neg: false, int: 0, int_digits: 0, phase: NumberPhase::Start }
            }
            Node::AnyOf(_) => Frame::Pending { node, space: false },
        }
    }

    /// The value is complete as it stands, though more bytes could extend it (a number, or a
    /// literal that is a prefix of another).
    fn may_end(&self, g: &Grammar) -> bool {
        match *self {
            Frame::Literal { node, lo, pos, .. } => pos > 0 && options(g, node)[lo as usize].len() == pos as usize,
            Frame::Number { neg, int, int_digits, phase, node } => match phase {
                NumberPhase::Int => {
                    let (lo, hi, _, _) = number(g, node);
                    // "-0" is left to become "-0.x"; as an integer it would read as a float.
                    !(neg && int == 0) && int_min_extra(neg, int, int_digits, lo, hi, int_digits) == Some(0)
                }
                NumberPhase::Frac(n) => n > 0,
                _ => false,
            },
            _ => false,
        }
    }

    /// A child value this frame was waiting for is complete.
    fn child_done(&mut self) {
        match self {
            Frame::Object { phase, .. } => {
                if let ObjectPhase::Value { prop } = *phase {
                    *phase = ObjectPhase::AfterValue { prop };
                }
            }
            Frame::Map { count, phase, .. } => match *phase {
                MapPhase::Key => *phase = MapPhase::Colon,
                MapPhase::Value => {
                    *count += 1;
                    *phase = MapPhase::AfterValue;
                }
                _ => {}
            },
            Frame::Array { count, phase, .. } if *phase == ArrayPhase::Item => {
                *count += 1;
                *phase = ArrayPhase::AfterItem;
            }
            _ => {}
        }
    }

    fn step(&mut self, g: &Grammar, b: u8) -> Step {
        match self {
            Frame::Pending { .. } => Step::Reject,
            Frame::Object { node, phase } => step_object(g, *node, phase, b),
            Frame::Map { node, count, phase } => step_map(g, *node, *count, phase, b),
            Frame::Array { node, count, phase } => step_array(g, *node, *count, phase, b),
            Frame::String { node, chars, phase } => step_string(g, *node, chars, phase, b),
            Frame::Literal { node, lo, hi, pos } => {
                let opts = options(g, *node);
                let p = *pos as usize;
                let mut new_lo = *lo;
                while new_lo < *hi && opts[new_lo as usize].get(p).is_none_or(|&c| c < b) {
                    new_lo += 1;
                }
                let mut new_hi = new_lo;
                while new_hi < *hi && opts[new_hi as usize].get(p) == Some(&b) {
                    new_hi += 1;
                }
                if new_lo == new_hi {
                    return if p > 0 && opts[*lo as usize].len() == p { Step::Pop } else { Step::Reject };
                }
                *lo = new_lo;
                *hi = new_hi;
                *pos += 1;
                if new_hi - new_lo == 1 && opts[new_lo as usize].len() == p + 1 {
                    Step::Done
                } else {
                    Step::Consumed
                }
            }
            Frame::Number { node, neg, int, int_digits, phase } => {
                step_number(g, *node, neg, int, int_digits, phase, b)
            }
        }
    }

    fn distance(&self, g: &Grammar) -> usize {
        match *self {
            Frame::Pending { node, .. } => g.min_len[node],
            Frame::Object { node, phase } => {
                let Node::Object { props, tail } = g.node(node) else { return 0 };
                let via = |c: usize, pos: usize| props[c].key.len() - pos + 1 + g.min_len[props[c].value] + tail[c];
                match phase {
                    ObjectPhase::ExpectOpen => g.min_len[node],
                    ObjectPhase::AfterOpen => tail[props.len()],
                    ObjectPhase::ExpectKey { next, .. } => {
                        bits(key_candidates(props, next as usize)).map(|c| via(c, 0)).min().unwrap_or(1)
                    }
                    ObjectPhase::Key { cand, pos } => bits(cand).map(|c| via(c, pos as usize)).min().unwrap_or(1),
                    ObjectPhase::Colon { prop } => {
                        let p = prop as usize;
                        1 + g.min_len[props[p].value] + tail[p]
                    }
                    ObjectPhase::Value { prop } | ObjectPhase::AfterValue { prop } => tail[prop as usize],
                }
            }
            Frame::Map { node, phase, .. } => {
                let Node::Map { value, .. } = g.node(node) else { return 0 };
                match phase {
                    MapPhase::ExpectOpen => 2,
                    MapPhase::AfterOpen | MapPhase::Value | MapPhase::AfterValue => 1,
                    MapPhase::ExpectKey { .. } => 2 + 1 + g.min_len[*value] + 1,
                    MapPhase::Key | MapPhase::Colon => 1 + g.min_len[*value] + 1,
                }
            }
            Frame::Array { node, count, phase } => {
                let Node::Array { item, min, .. } = g.node(node) else { return 0 };
                let per_item = 1 + g.min_len[*item];
                match phase {
                    ArrayPhase::ExpectOpen => g.min_len[node],
                    ArrayPhase::AfterOpen if *min == 0 => 1,
                    ArrayPhase::AfterOpen => *min as usize * per_item,
                    ArrayPhase::Item => min.saturating_sub(count + 1) as usize * per_item + 1,
                    ArrayPhase::AfterItem => min.saturating_sub(count) as usize * per_item + 1,
                }
            }
            Frame::String { node, chars, phase } => {
                let Node::String { min, .. } = g.node(node) else { return 0 };
                let rest = min.saturating_sub(chars) as usize + 1;
                match phase {
                    StringPhase::ExpectOpen => g.min_len[node],
                    StringPhase::Body => rest,
                    StringPhase::Escape => 1 + rest,
                    StringPhase::Utf8 { need, .. } => need as usize + rest,
                }
            }
            Frame::Literal { node, lo, hi, pos } => options(g, node)[lo as usize..hi as usize]
                .iter()
                .map(|o| o.len() - pos as usize)
                .min()
                .unwrap_or(0),
            Frame::Number { node, neg, int, int_digits, phase } => {
                let (lo, hi, digits, _) = number(g, node);
                match phase {
                    NumberPhase::Start => g.min_len[node],
                    NumberPhase::Sign => int_min_extra(true, 0, 0, lo, hi, digits).unwrap_or(1),
                    NumberPhase::Int if neg && int == 0 => 2,
                    NumberPhase::Int => int_min_extra(neg, int, int_digits, lo, hi, digits).unwrap_or(0),
                    NumberPhase::Dot => 1,
                    NumberPhase::Frac(_) => 0,
                }
            }
        }
    }
}

fn options(g: &Grammar, node: NodeId) -> &[Vec<u8>] {
    match g.node(node) {
        Node::Literal { options } => options,
        _ => &[],
    }
}

fn number(g: &Grammar, node: NodeId) -> (i64, i64, u32, u32) {
    match *g.node(node) {
        Node::Number { lo, hi, digits, frac_digits } => (lo, hi, digits, frac_digits),
        _ => (0, 0, 1, 0),
    }
}

fn bits(mut set: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (set != 0).then(|| {
            let i = set.trailing_zeros() as usize;
            set &= set - 1;
            i
        })
    })
}

/// Properties whose key may come next when `next` is the first unwritten index: any up to and
/// including the first required one (keys are written in declaration order).
fn key_candidates(props: &[super::schema::Property], next: usize) -> u64 {
    let mut set = 0u64;
    for (i, p) in props.iter().enumerate().skip(next) {
        set |= 1 << i;
        if p.required {
            break;
        }
    }
    set
}

fn step_object(g: &Grammar, node: NodeId, phase: &mut ObjectPhase, b: u8) -> Step {
    let Node::Object { props, .. } = g.node(node) else { return Step::Reject };
    let start_key = |phase: &mut ObjectPhase, next: usize| {
        let cand = key_candidates(props, next);
        let matching = bits(cand).filter(|&c| props[c].key[0] == b).fold(0u64, |s, c| s | 1 << c);
        if matching == 0 {
            return Step::Reject;
        }
        *phase = ObjectPhase::Key { cand: matching, pos: 1 };
        Step::Consumed
    };
    match *phase {
        ObjectPhase::ExpectOpen if b == b'{' => {
            *phase = ObjectPhase::AfterOpen;
            Step::Consumed
        }
        ObjectPhase::AfterOpen if b == b'}' && !props.iter().any(|p| p.required) => Step::Done,
        ObjectPhase::AfterOpen => start_key(phase, 0),
        ObjectPhase::ExpectKey { next, space: true } if b == b' ' => {
            *phase = ObjectPhase::ExpectKey { next, space: false };
            Step::Consumed
        }
        ObjectPhase::ExpectKey { next, .. } => start_key(phase, next as usize),
        ObjectPhase::Key { cand, pos } => {
            let p = pos as usize;
            let matching = bits(cand).filter(|&c| props[c].key.get(p) == Some(&b)).fold(0u64, |s, c| s | 1 << c);
            if matching == 0 {
                return Step::Reject;
            }
            // Keys are quoted and distinct, so a fully matched key is the only candidate left.
            let first = matching.trailing_zeros() as usize;
            *phase = if props[first].key.len() == p + 1 {
                ObjectPhase::Colon { prop: first as u16 }
            } else {
                ObjectPhase::Key { cand: matching, pos: pos + 1 }
            };
            Step::Consumed
        }
        ObjectPhase::Colon { prop } if b == b':' => {
            *phase = ObjectPhase::Value { prop };
            Step::ConsumedPush(Frame::Pending { node: props[prop as usize].value, space: true })
        }
        ObjectPhase::AfterValue { prop } => {
            let next = prop as usize + 1;
            if b == b',' && next < props.len() {
                *phase = ObjectPhase::ExpectKey { next: next as u16, space: true };
                Step::Consumed
            } else if b == b'}' && !props[next..].iter().any(|p| p.required) {
                Step::Done
            } else {
                Step::Reject
            }
        }
        _ => Step::Reject,
    }
}

fn step_map(g: &Grammar, node: NodeId, count: u32, phase: &mut MapPhase, b: u8) -> Step {
    let Node::Map { key, value, max } = *g.node(node) else { return Step::Reject };
    let key_frame = Frame::String { node: key, chars: 0, phase: StringPhase::ExpectOpen };
    match *phase {
        MapPhase::ExpectOpen if b == b'{' => {
            *phase = MapPhase::AfterOpen;
            Step::Consumed
        }
        MapPhase::AfterOpen if b == b'}' => Step::Done,
        MapPhase::AfterOpen if b == b'"' && max > 0 => {
            *phase = MapPhase::Key;
            Step::Push(key_frame)
        }
        MapPhase::ExpectKey { space: true } if b == b' ' => {
            *phase = MapPhase::ExpectKey { space: false };
            Step::Consumed
        }
        MapPhase::ExpectKey { .. } if b == b'"' => {
            *phase = MapPhase::Key;
            Step::Push(key_frame)
        }
        MapPhase::Colon if b == b':' => {
            *phase = MapPhase::Value;
            Step::ConsumedPush(Frame::Pending { node: value, space: true })
        }
        MapPhase::AfterValue if b == b',' && count < max => {
            *phase = MapPhase::ExpectKey { space: true };
            Step::Consumed
        }
        MapPhase::AfterValue if b == b'}' => Step::Done,
        _ => Step::Reject,
    }
}

fn step_array(g: &Grammar, node: NodeId, count: u32, phase: &mut ArrayPhase, b: u8) -> Step {
    let Node::Array { item, min, max } = *g.node(node) else { return Step::Reject };
    match *phase {
        ArrayPhase::ExpectOpen if b == b'[' => {
            *phase = ArrayPhase::AfterOpen;
            Step::Consumed
        }
        ArrayPhase::AfterOpen if b == b']' && min == 0 => Step::Done,
        ArrayPhase::AfterOpen if max > 0 && b != b' ' => {
            *phase = ArrayPhase::Item;
            Step::Push(Frame::Pending { node: item, space: false })
        }
        ArrayPhase::AfterItem if b == b',' && count < max => {
            *phase = ArrayPhase::Item;
            Step::ConsumedPush(Frame::Pending { node: item, space: true })
        }
        ArrayPhase::AfterItem if b == b']' && count >= min => Step::Done,
        _ => Step::Reject,
    }
}

fn step_string(g: &Grammar, node: NodeId, chars: &mut u32, phase: &mut StringPhase, b: u8) -> Step {
    let Node::String { min, max } = *g.node(node) else { return Step::Reject };
    match *phase {
        StringPhase::ExpectOpen if b == b'"' => {
            *phase = StringPhase::Body;
            Step::Consumed
        }
        StringPhase::ExpectOpen => Step::Reject,
        StringPhase::Body => {
            if b == b'"' {
                return if *chars >= min { Step::Done } else { Step::Reject };
            }
            if b < 0x20 || *chars >= max {
                return Step::Reject;
            }
            let next = match b {
                b'\\' => StringPhase::Escape,
                0x20..=0x7f => StringPhase::Body,
                0xc2..=0xdf => StringPhase::Utf8 { need: 1, lo: 0x80, hi: 0xbf },
                0xe0 => StringPhase::Utf8 { need: 2, lo: 0xa0, hi: 0xbf },
                0xe1..=0xec | 0xee..=0xef => StringPhase::Utf8 { need: 2, lo: 0x80, hi: 0xbf },
                0xed => StringPhase::Utf8 { need: 2, lo: 0x80, hi: 0x9f },
                0xf0 => StringPhase::Utf8 { need: 3, lo: 0x90, hi: 0xbf },
                0xf1..=0xf3 => StringPhase::Utf8 { need: 3, lo: 0x80, hi: 0xbf },
                0xf4 => StringPhase::Utf8 { need: 3, lo: 0x80, hi: 0x8f },
                _ => return Step::Reject,
            };
            *chars += 1;
            *phase = next;
            Step::Consumed
        }
        // `\u` escapes are left out: surrogate pairs are not worth checking here.
        StringPhase::Escape if b"\"\\/bfnrt".contains(&b) => {
            *phase = StringPhase::Body;
            Step::Consumed
        }
        StringPhase::Escape => Step::Reject,
        StringPhase::Utf8 { need, lo, hi } if (lo..=hi).contains(&b) => {
            *phase = if need == 1 { StringPhase::Body } else { StringPhase::Utf8 { need: need - 1, lo: 0x80, hi: 0xbf } };
            Step::Consumed
        }
        StringPhase::Utf8 { .. } => Step::Reject,
    }
}

fn step_number(
    g: &Grammar,
    node: NodeId,
    neg: &mut bool,
    int: &mut u64,
    int_digits: &mut u32,
    phase: &mut NumberPhase,
    b: u8,
) -> Step {
    let (lo, hi, digits, frac_digits) = number(g, node);
    let ended = |neg: bool, int: u64, int_digits: u32, phase: NumberPhase| {
        let f = Frame::Number { node, neg, int, int_digits, phase };
        if f.may_end(g) { Step::Pop } else { Step::Reject }
    };
    match *phase {
        NumberPhase::Start if b == b'-' => {
            if int_min_extra(true, 0, 0, lo, hi, digits).is_none() {
                return Step::Reject;
            }
            *neg = true;
            *phase = NumberPhase::Sign;
            Step::Consumed
        }
        NumberPhase::Start | NumberPhase::Sign if b.is_ascii_digit() => {
            let d = (b - b'0') as u64;
            // "-0" only as the start of "-0.x".
            let ok = if *neg && d == 0 {
                frac_digits > 0
            } else {
                int_min_extra(*neg, d, 1, lo, hi, digits).is_some()
            };
            if !ok {
                return Step::Reject;
            }
            *int = d;
            *int_digits = 1;
            *phase = NumberPhase::Int;
            Step::Consumed
        }
        NumberPhase::Int if b.is_ascii_digit() && *int != 0 => {
            let v = *int * 10 + (b - b'0') as u64;
            if int_min_extra(*neg, v, *int_digits + 1, lo, hi, digits).is_none() {
                return ended(*neg, *int, *int_digits, *phase);
            }
            *int = v;
            *int_digits += 1;
            Step::Consumed
        }
        NumberPhase::Int if b == b'.' && frac_digits > 0 => {
            *phase = NumberPhase::Dot;
            Step::Consumed
        }
        NumberPhase::Dot if b.is_ascii_digit() => {
            *phase = NumberPhase::Frac(1);
            Step::Consumed
        }
        NumberPhase::Frac(n) if b.is_ascii_digit() && n < frac_digits => {
            *phase = NumberPhase::Frac(n + 1);
            Step::Consumed
        }
        NumberPhase::Int | NumberPhase::Frac(_) => ended(*neg, *int, *int_digits, *phase),
        _ => Step::Reject,
    }
}

/// Fewest further bytes that turn the integer prefix (sign `neg`, the `k` digits of `v`) into an
/// integer within `lo..=hi` of at most `max_digits` digits; `None` when no such integer exists.
/// With nothing written (`k == 0`, not `neg`) the answer counts a `-` where one is needed.
pub(crate) fn int_min_extra(neg: bool, v: u64, k: u32, lo: i64, hi: i64, max_digits: u32) -> Option<usize> {
    if k == 0 && !neg {
        let positive = int_min_extra_signed(false, 0, 0, lo, hi, max_digits);
        let negative = int_min_extra_signed(true, 0, 0, lo, hi, max_digits).map(|j| j + 1);
        return match (positive, negative) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    int_min_extra_signed(neg, v, k, lo, hi, max_digits)
}

fn int_min_extra_signed(neg: bool, v: u64, k: u32, lo: i64, hi: i64, max_digits: u32) -> Option<usize> {
    let (lo, hi) = (lo as i128, hi as i128);
    for j in 0..=max_digits.saturating_sub(k) {
        let (a, b): (i128, i128) = if k == 0 {
            if j == 0 {
                continue;
            }
            let first = if j == 1 { i128::from(neg) } else { 10i128.pow(j - 1) };
            (first, 10i128.pow(j) - 1)
        } else {
            if j > 0 && v == 0 {
                break; // a leading zero is the whole integer part
            }
            let p = 10i128.pow(j);
            (v as i128 * p, v as i128 * p + p - 1)
        };
        let (a, b) = if neg { (-b, -a) } else { (a, b) };
        if a.max(lo) <= b.min(hi) {
            return Some(j as usize);
        }
    }
    None
}
