//! Compiles a JSON schema into a `Grammar`: a small graph of value kinds (object, array, string,
//! number, literal set, alternatives) with every bound made finite, so that any prefix the
//! matcher accepts can still be finished in a known, bounded number of bytes.

use serde_json::{Map, Value};

pub(crate) type NodeId = usize;

/// Bounds the schema leaves open. A random model would otherwise write strings, arrays and
/// free-form values forever; with these every value has a finite longest form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest string, in characters, where the schema gives no `maxLength`.
    pub max_string_chars: u32,
    /// Most array items where the schema gives no `maxItems`.
    pub max_array_items: u32,
    /// Most properties of a free-form object (one without `properties`).
    pub max_object_properties: u32,
    /// Nesting allowed inside a value the schema leaves unconstrained (`{}`, `true`).
    pub max_free_depth: u32,
    /// Most digits of an integer (or a number's integer part) without bounds. At most 18.
    pub max_integer_digits: u32,
    /// Most digits after the decimal point of an unbounded `number`.
    pub max_fraction_digits: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_string_chars: 256,
            max_array_items: 16,
            max_object_properties: 8,
            max_free_depth: 3,
            max_integer_digits: 12,
            max_fraction_digits: 6,
        }
    }
}

/// A schema the compiler cannot honour, with the JSON pointer of the offending place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema at '{pointer}': {reason}")]
pub struct SchemaError {
    pub pointer: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Property {
    /// The key as it appears in the output, quotes included: `"path"`.
    pub key: Vec<u8>,
    pub value: NodeId,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// Properties are written in declaration order; optional ones may be left out.
    Object {
        props: Vec<Property>,
        /// `tail[i]`: fewest bytes that close the object once property `i`'s value is written
        /// (the later required properties with their commas, then `}`); `tail[len]` is for an
        /// object that has written nothing yet.
        tail: Vec<usize>,
    },
    /// An object with free keys (no `properties`): keys are strings, values follow `value`.
    Map { key: NodeId, value: NodeId, max: u32 },
    Array { item: NodeId, min: u32, max: u32 },
    /// Lengths in characters (Unicode scalar values), as JSON schema counts them.
    String { min: u32, max: u32 },
    /// Exact JSON texts, sorted and without duplicates: enum, const, booleans, null.
    Literal { options: Vec<Vec<u8>> },
    /// `frac_digits == 0` means an integer. `digits` bounds the integer part's length.
    Number { lo: i64, hi: i64, digits: u32, frac_digits: u32 },
    /// anyOf / oneOf / a list of types; never nested (alternatives are flattened).
    AnyOf(Vec<NodeId>),
}

/// A compiled schema. Build once per tool list and share it between generations.
#[derive(Debug, Clone)]
pub struct Grammar {
    pub(crate) nodes: Vec<Node>,
    /// Fewest bytes of a complete value of each node.
    pub(crate) min_len: Vec<usize>,
    pub(crate) root: NodeId,
}

/// Keywords that only annotate; they never make a value invalid here.
const ANNOTATIONS: &[&str] = &[
    "$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated",
    "readOnly", "writeOnly", "format", "additionalProperties", "unevaluatedProperties",
    "contentMediaType", "contentEncoding", "strict",
];

const MAX_DIGITS: u32 = 18;

impl Grammar {
    /// Compiles `schema`. Supported: `type` (one or a list), `enum`, `const`, `anyOf`, `oneOf`
    /// (alternatives must not overlap for oneOf to hold), objects with `properties` and
    /// `required` (or free-form with `additionalProperties` as the value schema), arrays with
    /// `items`, `minItems`, `maxItems`, strings with `minLength`, `maxLength`, integers and
    /// numbers with `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (a bounded
    /// `number` is written as an integer). Keywords that would constrain values in ways the
    /// matcher cannot follow (`pattern`, `$ref`, `allOf`, `not`, `uniqueItems`, …) are errors
    /// rather than silently ignored, so a compiled grammar never produces an invalid value.
    /// Extra properties are never written, whatever `additionalProperties` says.
    pub fn from_schema(schema: &Value, limits: &Limits) -> Result<Self, SchemaError> {
        let mut c = Compiler { nodes: Vec::new(), limits: limits.clone(), free: Vec::new() };
        let root = c.compile(schema, "")?;
        Ok(c.finish(root))
    }

    /// One object per `(tag, body)`: `{"<tag_key>": tag, "<body_key>": body}`, both required,
    /// in that order; alternatives of one another. The tool-call grammar.
    pub(crate) fn from_ordered_objects(
        pairs: &[(Value, &Value)],
        tag_key: &str,
        body_key: &str,
        limits: &Limits,
    ) -> Result<Self, SchemaError> {
        let mut c = Compiler { nodes: Vec::new(), limits: limits.clone(), free: Vec::new() };
        let mut alts = Vec::with_capacity(pairs.len());
        for (i, (tag, body)) in pairs.iter().enumerate() {
            let tag_text = serde_json::to_vec(tag).expect("a JSON value always serialises");
            let tag = c.push(Node::Literal { options: vec![tag_text] });
            let body = c.compile(body, &format!("/anyOf/{i}/properties/{}", escape_pointer(body_key)))?;
            let key = |k: &str| serde_json::to_vec(k).expect("a string always serialises");
            let props = vec![
                Property { key: key(tag_key), value: tag, required: true },
                Property { key: key(body_key), value: body, required: true },
            ];
            alts.push(c.push(Node::Object { props, tail: Vec::new() }));
        }
        let root = c.any_of(alts);
        Ok(c.finish(root))
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The alternatives a value of `*id` may take (itself unless it is an `AnyOf`).
    pub(crate) fn alternatives<'a>(&'a self, id: &'a NodeId) -> &'a [NodeId] {
        match &self.nodes[*id] {
            Node::AnyOf(alts) => alts,
            _ => std::slice::from_ref(id),
        }
    }

    /// Bytes that a shortest completion may need as single-byte tokens: every byte of every
    /// key and literal, and JSON's own punctuation and digits.
    pub(crate) fn completion_bytes(&self) -> Vec<u8> {
        let mut seen = [false; 256];
        for b in b"{}[],:\"0123456789-.a" {
            seen[*b as usize] = true;
        }
        for node in &self.nodes {
            match node {
                Node::Object { props, .. } => {
                    props.iter().flat_map(|p| &p.key).for_each(|b| seen[*b as usize] = true)
                }
                Node::Literal { options } => {
                    options.iter().flatten().for_each(|b| seen[*b as usize] = true)
                }
                _ => {}
            }
        }
        (0..=255u8).filter(|b| seen[*b as usize]).collect()
    }
}

struct Compiler {
    nodes: Vec<Node>,
    limits: Limits,
    /// Free-form value nodes by remaining depth, built on first use.
    free: Vec<Option<NodeId>>,
}

impl Compiler {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn finish(self, root: NodeId) -> Grammar {
        let nodes = self.nodes;
        // Children always have smaller ids than their parents (they are compiled first), so
        // one forward pass computes every minimum length.
        let mut min_len = vec![0usize; nodes.len()];
        for (id, node) in nodes.iter().enumerate() {
            min_len[id] = node_min_len(node, &min_len);
        }
        let mut nodes = nodes;
        for node in &mut nodes {
            if let Node::Object { props, tail } = node {
                *tail = object_tails(props, &min_len);
            }
        }
        Grammar { nodes, min_len, root }
    }

    fn compile(&mut self, schema: &Value, at: &str) -> Result<NodeId, SchemaError> {
        let obj = match schema {
            Value::Bool(true) => return Ok(self.free_value(self.limits.max_free_depth)),
            Value::Bool(false) => return Err(err(at, "`false` admits no value")),
            Value::Object(o) => o,
            _ => return Err(err(at, "a schema must be an object or a boolean")),
        };
        for key in obj.keys() {
            if !KNOWN.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                return Err(err(at, format!("keyword `{key}` is not supported")));
            }
        }

        if let Some(alts) = obj.get("anyOf").or_else(|| obj.get("oneOf")) {
            let which = if obj.contains_key("anyOf") { "anyOf" } else { "oneOf" };
            if obj.contains_key("anyOf") && obj.contains_key("oneOf") {
                return Err(err(at, "anyOf together with oneOf is not supported"));
            }
            if let Some(k) = obj.keys().find(|k| KNOWN.contains(&k.as_str()) && *k != which) {
                return Err(err(at, format!("`{k}` beside `{which}` is not supported")));
            }
            let list = alts.as_array().filter(|a| !a.is_empty());
            let list = list.ok_or_else(|| err(at, format!("`{which}` must be a non-empty array")))?;
            let mut ids = Vec::with_capacity(list.len());
            for (i, alt) in list.iter().enumerate() {
                ids.push(self.compile(alt, &format!("{at}/{which}/{i}"))?);
            }
            return Ok(self.any_of(ids));
        }

        let types = types_of(obj, at)?;
        if let Some(options) = literal_options(obj, at)? {
            let kept: Vec<&Value> = options
                .iter()
                .filter(|v| types.as_ref().is_none_or(|t| t.iter().any(|t| has_type(v, t))))
                .collect();
            if kept.is_empty() {
                return Err(err(at, "no enum/const value has the schema's type"));
            }
            let mut texts: Vec<Vec<u8>> = kept
                .iter()
                .map(|v| serde_json::to_vec(v).expect("a JSON value always serialises"))
                .collect();
            texts.sort();
            texts.dedup();
            return Ok(self.push(Node::Literal { options: texts }));
        }

        let types = match types {
            Some(t) => t,
            None if obj.contains_key("properties") || obj.contains_key("required") => {
                vec!["object".to_owned()]
            }
            None if obj.contains_key("items") => vec!["array".to_owned()],
            None if obj.contains_key("minLength") || obj.contains_key("maxLength") => {
                vec!["string".to_owned()]
            }
            None => return Ok(self.free_value(self.limits.max_free_depth)),
        };
        let mut ids = Vec::with_capacity(types.len());
        for t in &types {
            ids.push(self.typed(obj, t, at)?);
        }
        Ok(self.any_of(ids))
    }

    fn typed(&mut self, obj: &Map<String, Value>, ty: &str, at: &str) -> Result<NodeId, SchemaError> {
        match ty {
            "object" => self.object(obj, at),
            "array" => {
                let item = match obj.get("items") {
                    None => self.free_value(self.limits.max_free_depth.saturating_sub(1)),
                    Some(Value::Array(_)) => {
                        return Err(err(at, "tuple `items` (an array) is not supported"))
                    }
                    Some(s) => self.compile(s, &format!("{at}/items"))?,
                };
                let (min, max) = count_bounds(obj, "minItems", "maxItems", self.limits.max_array_items, at)?;
                Ok(self.push(Node::Array { item, min, max }))
            }
            "string" => {
                let (min, max) =
                    count_bounds(obj, "minLength", "maxLength", self.limits.max_string_chars, at)?;
                Ok(self.push(Node::String { min, max }))
            }
            "integer" | "number" => {
                let (lo, hi, bounded) = numeric_bounds(obj, self.limits.max_integer_digits, at)?;
                let digits = digits_of(lo.unsigned_abs().max(hi.unsigned_abs()));
                // A bounded number is written as an integer: checking a fraction against a
                // bound digit by digit is not worth its complexity for tool arguments.
                let frac_digits =
                    if ty == "number" && !bounded { self.limits.max_fraction_digits } else { 0 };
                Ok(self.push(Node::Number { lo, hi, digits, frac_digits }))
            }
            "boolean" => Ok(self.push(Node::Literal { options: vec![b"false".to_vec(), b"true".to_vec()] })),
            "null" => Ok(self.push(Node::Literal { options: vec![b"null".to_vec()] })),
            other => Err(err(at, format!("unknown type `{other}`"))),
        }
    }

    fn object(&mut self, obj: &Map<String, Value>, at: &str) -> Result<NodeId, SchemaError> {
        let required: Vec<&str> = match obj.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r
                .iter()
                .map(|v| v.as_str().ok_or_else(|| err(at, "`required` must list strings")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err(at, "`required` must be an array")),
        };
        let props = match obj.get("properties") {
            Some(Value::Object(p)) => p,
            Some(_) => return Err(err(at, "`properties` must be an object")),
            None => {
                if !required.is_empty() {
                    return Err(err(at, "`required` without `properties` is not supported"));
                }
                let value = match obj.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let tail = Vec::new();
                        return Ok(self.push(Node::Object { props: Vec::new(), tail }));
                    }
                    None | Some(Value::Bool(true)) => {
                        self.free_value(self.limits.max_free_depth.saturating_sub(1))
                    }
                    Some(s) => self.compile(s, &format!("{at}/additionalProperties"))?,
                };
                let key = self.push(Node::String { min: 0, max: self.limits.max_string_chars.min(64) });
                let max = self.limits.max_object_properties;
                return Ok(self.push(Node::Map { key, value, max }));
            }
        };
        for r in &required {
            if !props.contains_key(*r) {
                return Err(err(at, format!("required property `{r}` is not in `properties`")));
            }
        }
        if props.len() > 64 {
            return Err(err(at, "more than 64 properties is not supported"));
        }
        let mut out = Vec::with_capacity(props.len());
        for (name, sub) in props {
            let value = self.compile(sub, &format!("{at}/properties/{}", escape_pointer(name)))?;
            let key = serde_json::to_vec(name).expect("a string always serialises");
            out.push(Property { key, value, required: required.contains(&name.as_str()) });
        }
        Ok(self.push(Node::Object { props: out, tail: Vec::new() }))
    }

    fn any_of(&mut self, ids: Vec<NodeId>) -> NodeId {
        let mut flat = Vec::with_capacity(ids.len());
        for id in ids {
            match &self.nodes[id] {
                Node::AnyOf(inner) => flat.extend(inner.iter().copied()),
                _ => flat.push(id),
            }
        }
        flat.dedup();
        if flat.len() == 1 {
            return flat[0];
        }
        self.push(Node::AnyOf(flat))
    }

    /// Any JSON value, nested at most `depth` more levels.
    fn free_value(&mut self, depth: u32) -> NodeId {
        let d = depth as usize;
        if self.free.len() <= d {
            self.free.resize(d + 1, None);
        }
        if let Some(id) = self.free[d] {
            return id;
        }
        let l = self.limits.clone();
        let digits = l.max_integer_digits.clamp(1, MAX_DIGITS);
        let bound = 10i64.pow(digits) - 1;
        let mut alts = vec![
            self.push(Node::String { min: 0, max: l.max_string_chars }),
            self.push(Node::Number { lo: -bound, hi: bound, digits, frac_digits: l.max_fraction_digits }),
            self.push(Node::Literal {
                options: vec![b"false".to_vec(), b"null".to_vec(), b"true".to_vec()],
            }),
        ];
        if depth > 0 {
            let inner = self.free_value(depth - 1);
            alts.push(self.push(Node::Array { item: inner, min: 0, max: l.max_array_items }));
            let key = self.push(Node::String { min: 0, max: l.max_string_chars.min(64) });
            alts.push(self.push(Node::Map { key, value: inner, max: l.max_object_properties }));
        }
        let id = self.push(Node::AnyOf(alts));
        self.free[d] = Some(id);
        id
    }
}

/// Validation keywords the compiler understands (everything else is an annotation or an error).
const KNOWN: &[&str] = &[
    "type", "enum", "const", "anyOf", "oneOf", "properties", "required", "items", "minItems",
    "maxItems", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum",
];

fn err(at: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError { pointer: if at.is_empty() { "/".to_owned() } else { at.to_owned() }, reason: reason.into() }
}

fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn types_of(obj: &Map<String, Value>, at: &str) -> Result<Option<Vec<String>>, SchemaError> {
    match obj.get("type") {
        None => Ok(None),
        Some(Value::String(t)) => Ok(Some(vec![t.clone()])),
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|t| t.as_str().map(str::to_owned).ok_or_else(|| err(at, "`type` must list strings")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(err(at, "`type` must be a string or a non-empty array")),
    }
}

fn literal_options(obj: &Map<String, Value>, at: &str) -> Result<Option<Vec<Value>>, SchemaError> {
    match (obj.get("enum"), obj.get("const")) {
        (Some(_), Some(_)) => Err(err(at, "`enum` together with `const` is not supported")),
        (Some(Value::Array(list)), None) if !list.is_empty() => Ok(Some(list.clone())),
        (Some(_), None) => Err(err(at, "`enum` must be a non-empty array")),
        (None, Some(v)) => Ok(Some(vec![v.clone()])),
        (None, None) => Ok(None),
    }
}

fn has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => false,
    }
}

fn count_bounds(
    obj: &Map<String, Value>,
    min_key: &str,
    max_key: &str,
    default_max: u32,
    at: &str,
) -> Result<(u32, u32), SchemaError> {
    let get = |k: &str| -> Result<Option<u32>, SchemaError> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n.min(u32::MAX as u64) as u32))
                .ok_or_else(|| err(at, format!("`{k}` must be a non-negative integer"))),
        }
    };
    let min = get(min_key)?.unwrap_or(0);
    let max = match get(max_key)? {
        Some(m) => m.min(default_max.max(min)),
        None => default_max.max(min),
    };
    if min > max {
        return Err(err(at, format!("`{min_key}` is above `{max_key}`")));
    }
    Ok((min, max))
}

/// Integer bounds of a numeric schema, and whether the schema gave any.
fn numeric_bounds(obj: &Map<String, Value>, digits: u32, at: &str) -> Result<(i64, i64, bool), SchemaError> {
    let limit = 10i64.pow(digits.clamp(1, MAX_DIGITS)) - 1;
    let num = |k: &str| -> Result<Option<f64>, SchemaError> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| err(at, format!("`{k}` must be a number"))),
        }
    };
    let clamp = |f: f64| f.clamp(-(limit as f64), limit as f64) as i64;
    let mut lo = -limit;
    let mut hi = limit;
    let mut bounded = false;
    if let Some(m) = num("minimum")? {
        lo = lo.max(clamp(m.ceil()));
        bounded = true;
    }
    if let Some(m) = num("exclusiveMinimum")? {
        lo = lo.max(clamp(m.floor() + 1.0));
        bounded = true;
    }
    if let Some(m) = num("maximum")? {
        hi = hi.min(clamp(m.floor()));
        bounded = true;
    }
    if let Some(m) = num("exclusiveMaximum")? {
        hi = hi.min(clamp(m.ceil() - 1.0));
        bounded = true;
    }
    if lo > hi {
        return Err(err(at, "no integer lies within the bounds"));
    }
    Ok((lo, hi, bounded))
}

pub(crate) fn digits_of(mut n: u64) -> u32 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn node_min_len(node: &Node, min_len: &[usize]) -> usize {
    match node {
        Node::Object { props, .. } => {
            let req: Vec<&Property> = props.iter().filter(|p| p.required).collect();
            let body: usize = req.iter().map(|p| p.key.len() + 1 + min_len[p.value]).sum();
            2 + body + req.len().saturating_sub(1)
        }
        Node::Map { .. } => 2,
        Node::Array { item, min, .. } => {
            let n = *min as usize;
            2 + n * min_len[*item] + n.saturating_sub(1)
        }
        Node::String { min, .. } => 2 + *min as usize,
        Node::Literal { options } => options.iter().map(Vec::len).min().unwrap_or(0),
        Node::Number { lo, hi, digits, .. } => {
            crate::constrain::matcher::int_min_extra(false, 0, 0, *lo, *hi, *digits).unwrap_or(1)
        }
        Node::AnyOf(alts) => alts.iter().map(|a| min_len[*a]).min().unwrap_or(0),
    }
}

fn object_tails(props: &[Property], min_len: &[usize]) -> Vec<usize> {
    // tail[i] = Σ over required j > i of (1 + key + 1 + min value) + 1 for `}`.
    let mut tail = vec![1usize; props.len() + 1];
    let mut acc = 1usize;
    for i in (0..props.len()).rev() {
        tail[i] = acc;
        let p = &props[i];
        if p.required {
            acc += 1 + p.key.len() + 1 + min_len[p.value];
        }
    }
    // Nothing written yet: the first required property needs no comma before it.
    tail[props.len()] = if props.iter().any(|p| p.required) { acc - 1 } else { 1 };
    tail
}
