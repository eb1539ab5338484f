//! Unit tests of the matcher and the constraint over a small byte vocabulary.

use super::*;
use serde_json::json;

/// Every single byte plus a few multi-byte tokens a JSON writer would use.
fn vocab() -> Arc<Vocabulary> {
    let mut tokens: Vec<(u32, Vec<u8>)> = (0..=255u8).map(|b| (b as u32, vec![b])).collect();
    for (i, t) in ["{\"", "\":", "\",", "\"}", "name", "true", "hello world", "é", "\u{1F600}"].iter().enumerate() {
        tokens.push((256 + i as u32, t.as_bytes().to_vec()));
    }
    let n = tokens.len() + 3;
    Arc::new(Vocabulary::new(n, tokens))
}

fn grammar(schema: serde_json::Value) -> Arc<Grammar> {
    Arc::new(Grammar::from_schema(&schema, &Limits::default()).unwrap())
}

/// Feeds `text` byte by byte; returns whether each byte was accepted and the final state.
fn accepts(g: &Grammar, text: &str) -> (bool, bool) {
    let mut m = Matcher::new(g);
    let ok = m.feed_all(g, text.as_bytes());
    (ok, ok && m.is_complete(g))
}

#[test]
fn object_with_required_and_optional_properties() {
    let g = grammar(json!({
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 1, "maximum": 20}, "b": {"type": "string", "maxLength": 3}},
        "required": ["b"]
    }));
    assert_eq!(accepts(&g, r#"{"b":"xyz"}"#), (true, true));
    assert_eq!(accepts(&g, r#"{"a": 12, "b": ""}"#), (true, true));
    assert!(!accepts(&g, r#"{"a":21"#).0, "21 is above the maximum");
    assert!(!accepts(&g, r#"{"a":0"#).0, "0 is below the minimum");
    assert!(!accepts(&g, r#"{"a":1}"#).0, "b is required");
    assert!(!accepts(&g, r#"{"b":"wxyz"#).0, "b is at most 3 characters");
    assert!(!accepts(&g, r#"{"b":"x","a":1"#).0, "keys come in declaration order");
    assert!(!accepts(&g, r#"{"b":"x"} "#).0, "nothing after the value");
}

#[test]
fn numbers_strings_and_literals() {
    let num = grammar(json!({"type": "number"}));
    for ok in ["0", "-1.5", "12.25", "-0.5"] {
        assert!(accepts(&num, ok).1, "{ok}");
    }
    for bad in ["01", "1.", "--1", "1e5", ".5"] {
        assert!(!accepts(&num, bad).1, "{bad}");
    }
    let int = grammar(json!({"type": "integer", "minimum": -5, "maximum": 300}));
    assert!(accepts(&int, "-5").1 && accepts(&int, "300").1 && accepts(&int, "29").1);
    assert!(!accepts(&int, "-6").0 && !accepts(&int, "301").0 && !accepts(&int, "-0").0);

    let s = grammar(json!({"type": "string", "minLength": 2}));
    assert!(accepts(&s, r#""é\n""#).1);
    assert!(!accepts(&s, r#""a""#).0, "too short to close");
    assert!(!accepts(&s, "\"a\u{1}").0, "control characters must be escaped");
    assert!(!accepts(&s, r#""\u0041""#).0, "\\u escapes are not written");

    let e = grammar(json!({"enum": ["ls", "cat", 7, null, true]}));
    for ok in [r#""ls""#, r#""cat""#, "7", "null", "true"] {
        assert!(accepts(&e, ok).1, "{ok}");
    }
    assert!(!accepts(&e, r#""l""#).0);
}

#[test]
fn anyof_alternatives_run_side_by_side() {
    let g = grammar(json!({"anyOf": [
        {"type": "object", "properties": {"k": {"const": "x"}, "v": {"type": "integer"}}, "required": ["k", "v"]},
        {"type": "object", "properties": {"k": {"const": "y"}, "v": {"type": "boolean"}}, "required": ["k", "v"]}
    ]}));
    assert!(accepts(&g, r#"{"k":"x","v":3}"#).1);
    assert!(accepts(&g, r#"{"k":"y","v":false}"#).1);
    assert!(!accepts(&g, r#"{"k":"x","v":false"#).0);
}

#[test]
fn unsupported_keywords_are_errors_naming_the_place() {
    let e = Grammar::from_schema(&json!({"properties": {"p": {"type": "string", "pattern": "a+"}}}), &Limits::default())
        .unwrap_err();
    assert_eq!(e.pointer, "/properties/p");
    assert!(e.reason.contains("pattern"), "{e}");
}

#[test]
fn budget_is_checked_and_enforced() {
    let g = grammar(json!({"type": "object", "properties": {"name": {"type": "string", "minLength": 4}}, "required": ["name"]}));
    // {"name":"xxxx"} is 15 bytes.
    assert_eq!(
        Constraint::new(g.clone(), vocab(), 14).err(),
        Some(ConstrainError::BudgetTooSmall { needed: 15, budget: 14 })
    );
    // With exactly the shortest length as budget, every step must be on a shortest path.
    let mut c = Constraint::new(g, vocab(), 15).unwrap();
    while !c.is_complete() {
        let allowed: Vec<u32> = c.allowed().iter().collect();
        assert!(!allowed.is_empty(), "stuck after {:?}", String::from_utf8_lossy(c.output()));
        // Take the last allowed token: the multi-byte ones sort after the single bytes.
        c.advance(*allowed.last().unwrap()).unwrap();
    }
    let v: serde_json::Value = serde_json::from_slice(c.output()).unwrap();
    assert_eq!(v["name"].as_str().map(|s| s.chars().count() >= 4), Some(true), "{v}");
}

#[test]
fn a_token_outside_the_mask_is_refused() {
    let g = grammar(json!({"type": "boolean"}));
    let mut c = Constraint::new(g, vocab(), 8).unwrap();
    let allowed: Vec<u32> = c.allowed().iter().collect();
    assert!(allowed.contains(&(b't' as u32)) && allowed.contains(&(256 + 5)), "{allowed:?}");
    assert!(!allowed.contains(&(b'x' as u32)));
    assert_eq!(c.advance(b'x' as u32), Err(ConstrainError::TokenNotAllowed(b'x' as u32)));
    c.advance(256 + 5).unwrap(); // "true"
    assert!(c.is_complete());
    assert_eq!(c.output(), b"true");
    assert_eq!(c.advance(b' ' as u32), Err(ConstrainError::Complete));
}

#[test]
fn tool_calls_put_the_name_first() {
    let tools = [
        ToolSpec { name: "read".into(), parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}) },
        ToolSpec { name: "reboot".into(), parameters: json!({"type": "object", "properties": {}}) },
    ];
    let g = Grammar::tool_calls(&tools, &Limits::default()).unwrap();
    assert!(accepts(&g, r#"{"name": "read", "arguments": {"path": "/etc"}}"#).1);
    assert!(accepts(&g, r#"{"name":"reboot","arguments":{}}"#).1);
    assert!(!accepts(&g, r#"{"name":"reboot","arguments":{"path""#).0);
    assert!(!accepts(&g, r#"{"arguments""#).0);
}
