//! The agent's answers for people: its status as aligned `key: value` lines, a tool call's
//! outcome, tables of waiting calls, memories, decisions and goals, the audit check, and `why`
//! as an indented chain. The agent's results are plain JSON (ghost-proto leaves them untyped),
//! so a field that is missing or of another kind shows as `-` rather than failing the command.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

use crate::columns::{clip, columns};
use crate::human;
use crate::style::Style;
use crate::sys::LocalTime;

/// How many characters of free text (arguments, reasons, memories) a table cell shows.
const ARGS_WIDTH: usize = 40;
const TEXT_WIDTH: usize = 80;

/// A JSON object's fields in the order the agent wrote them (serde_json's `Value` keeps its
/// objects sorted), so that `ghostctl agent` lists them as the agent groups them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(InOrder)
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// `beats:        120`, one line per field, the values aligned; an uptime reads `2m10s`.
pub fn status(fields: &Fields) -> String {
    let width = fields.0.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in &fields.0 {
        let shown = match (key.as_str(), value.as_f64()) {
            ("uptime_s", Some(s)) => human::duration_s(s),
            // 0.9705882352941176 says no more than 0.97.
            (_, Some(x)) if value.is_f64() => ((x * 100.0).round() / 100.0).to_string(),
            _ => cell(Some(value)),
        };
        out.push_str(&format!("{:<width$} {shown}\n", format!("{key}:")));
    }
    out
}

/// `allow (rule): reason`, then the tool's output, what failed, or how to approve the call.
pub fn tool_outcome(v: &Value) -> String {
    let decision = cell(v.get("decision"));
    let mut out = decision.clone();
    if let Some(rule) = words(v, "rule") {
        out.push_str(&format!(" ({rule})"));
    }
    if let Some(reason) = words(v, "reason") {
        out.push_str(&format!(": {reason}"));
    }
    out.push('\n');
    match decision.as_str() {
        "ask" => out.push_str(&format!("waiting for approval: ghostctl approve {}\n", cell(v.get("request_id")))),
        "allow" if v["dry_run"] == true => out.push_str("dry run: nothing ran\n"),
        _ => {}
    }
    let ran = &v["result"];
    if ran["ok"] == false {
        let why: Vec<String> = ["error", "message"].iter().filter_map(|k| words(ran, k)).collect();
        out.push_str(&format!("{} failed: {}\n", cell(ran.get("tool")), if why.is_empty() { "no reason given".into() } else { why.join(": ") }));
    } else if let Some(output) = ran.get("output").filter(|o| !o.is_null()) {
        // Text (a file's contents) as it is; anything else as indented JSON.
        let mut text = match output {
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        out.push_str(&text);
    }
    out
}

/// The calls that wait for an operator: ID TOOL ARGS WHY EXPIRES.
pub fn pending_table(calls: &[Value], style: Style) -> String {
    table(calls, "no calls wait for approval", &["ID", "TOOL", "ARGS", "WHY", "EXPIRES"], &[], style, |p| {
        let call = &p["call"];
        let expires = match (p.get("resolution").filter(|r| !r.is_null()), p["expires_in_ms"].as_f64()) {
            (Some(resolution), _) => cell(Some(resolution)),
            (None, Some(ms)) if ms > 0.0 => format!("in {}", human::duration_ms(ms as u64)),
            (None, Some(_)) => "expired".into(),
            (None, None) => "-".into(),
        };
        vec![cell(p.get("id")), cell(call.get("tool")), clip(&cell(call.get("args")), ARGS_WIDTH), clip(&cell(call.get("why")), ARGS_WIDTH), expires]
    })
}

/// Search hits, best first: SCORE WHEN KIND TEXT.
pub fn memory_table(hits: &[Value], style: Style, today: Option<LocalTime>) -> String {
    table(hits, "nothing in memory matches", &["SCORE", "WHEN", "KIND", "TEXT"], &[0], style, |h| {
        let score = h["score"].as_f64().map_or("-".into(), |s| format!("{s:.2}"));
        vec![score, when(h, "time_ms", today), cell(h.get("kind")), clip(&cell(h.get("text")), TEXT_WIDTH)]
    })
}

/// The newest decisions: ID WHEN LAYER RULE PLAYBOOK OUTCOME DECISION.
pub fn decisions_table(decisions: &[Value], style: Style, today: Option<LocalTime>) -> String {
    let headers = ["ID", "WHEN", "LAYER", "RULE", "PLAYBOOK", "OUTCOME", "DECISION"];
    table(decisions, "no decisions yet", &headers, &[], style, |d| {
        let [id, layer, rule, playbook, outcome] = ["id", "layer", "rule", "playbook", "outcome"].map(|k| cell(d.get(k)));
        vec![id, when(d, "time_ms", today), layer, rule, playbook, clip(&outcome, ARGS_WIDTH), clip(&cell(d.get("text")), TEXT_WIDTH)]
    })
}

/// The goal stack: ID PRI STATUS TRIES CHECK PARENT UPDATED GOAL (with the status's reason).
pub fn goals_table(goals: &[Value], style: Style, today: Option<LocalTime>) -> String {
    let headers = ["ID", "PRI", "STATUS", "TRIES", "CHECK", "PARENT", "UPDATED", "GOAL"];
    table(goals, "no goals", &headers, &[1, 3], style, |g| {
        let [id, priority, status, attempts, check, parent] = ["id", "priority", "status", "attempts", "check", "parent"].map(|k| cell(g.get(k)));
        let mut text = cell(g.get("text"));
        if let Some(reason) = words(g, "reason") {
            text.push_str(&format!(" ({reason})"));
        }
        vec![id, priority, status, attempts, check, parent, when(g, "updated_ms", today), clip(&text, TEXT_WIDTH)]
    })
}

/// One row per item under `headers` (those at `right` align right), or `empty` for none.
fn table(items: &[Value], empty: &str, headers: &[&str], right: &[usize], style: Style, row: impl Fn(&Value) -> Vec<String>) -> String {
    if items.is_empty() {
        return format!("{empty}\n");
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    columns(headers, right, &rows, style, |_, _, c| c)
}

/// The chain behind `id`, cause first, each effect indented under what caused it.
pub fn why_chain(id: &str, chain: &[Value], today: Option<LocalTime>) -> String {
    if chain.is_empty() {
        return format!("nothing known about {id}\n");
    }
    let mut out = String::new();
    for (depth, link) in chain.iter().enumerate() {
        let indent = if depth == 0 { String::new() } else { format!("{}└ ", "  ".repeat(depth - 1)) };
        let mut what = cell(link.get("kind"));
        if let Some(source) = words(link, "source") {
            what.push_str(&format!(" ({source})"));
        }
        out.push_str(&format!("{indent}{} {} {what}: {}\n", cell(link.get("id")), when(link, "time_ms", today), cell(link.get("text"))));
    }
    out
}

/// `audit trail intact: N records`, or one line per problem.
pub fn audit_report(v: &Value) -> String {
    if v["intact"] == true {
        return format!("audit trail intact: {} records\n", cell(v.get("records")));
    }
    let problems = v["problems"].as_array().map(Vec::as_slice).unwrap_or_default();
    if problems.is_empty() {
        return "audit trail not intact (the agent named no problem)\n".into();
    }
    let mut out = String::new();
    for p in problems {
        let at = match p["seq"].as_u64() {
            Some(seq) => format!("record {seq}"),
            None => "audit trail".into(),
        };
        out.push_str(&format!("{at}: {}\n", cell(p.get("problem"))));
    }
    out
}

/// What an acknowledgement names: the new goal's or observation's `id`, if the agent gave one.
pub fn created_id(v: &Value) -> String {
    match v.get("id").unwrap_or(v) {
        id @ (Value::String(_) | Value::Number(_)) => cell(Some(id)) + "\n",
        _ => String::new(),
    }
}

/// A value as one cell: text as it is, `-` when missing, null or empty, anything else as
/// compact JSON.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A text field that says something.
fn words(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().filter(|s| !s.trim().is_empty()).map(str::to_string)
}

/// A time in milliseconds since the epoch as a local timestamp (the date only when it is not
/// today).
fn when(v: &Value, key: &str, today: Option<LocalTime>) -> String {
    v[key].as_f64().map_or("-".into(), |ms| human::timestamp(ms.max(0.0) as u64, today))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_keeps_the_agents_order_and_aligns_the_values() {
        let fields: Fields = serde_json::from_str(r#"{"beats":120,"share_without_model":0.9705882352941176,"memory":"sqlite","uptime_s":130.2,"zeta":null,"alpha":[1]}"#).unwrap();
        assert_eq!(
            status(&fields),
            "beats:               120\nshare_without_model: 0.97\nmemory:              sqlite\nuptime_s:            2m10s\nzeta:                -\nalpha:               [1]\n"
        );
        // --json writes the fields back in the same order.
        assert_eq!(serde_json::to_string(&fields).unwrap(), r#"{"beats":120,"share_without_model":0.9705882352941176,"memory":"sqlite","uptime_s":130.2,"zeta":null,"alpha":[1]}"#);
        assert!(serde_json::from_str::<Fields>("[1]").is_err());
    }

    #[test]
    fn a_tool_outcome_says_the_decision_then_what_came_of_it() {
        let ran = json!({"decision":"allow","reason":"reads are free","rule":"fs-read","audit_seq":7,"result":{"tool":"fs.read","ok":true,"output":{"bytes":6},"duration_ms":1}});
        assert_eq!(tool_outcome(&ran), "allow (fs-read): reads are free\n{\n  \"bytes\": 6\n}\n");
        let text = json!({"decision":"allow","reason":"r","rule":"","result":{"tool":"fs.read","ok":true,"output":"ghost\n"}});
        assert_eq!(tool_outcome(&text), "allow: r\nghost\n");
        let failed = json!({"decision":"allow","reason":"r","rule":"x","result":{"tool":"fs.read","ok":false,"error":"not-found","message":"/nope"}});
        assert_eq!(tool_outcome(&failed), "allow (x): r\nfs.read failed: not-found: /nope\n");
        let ask = json!({"decision":"ask","reason":"writes need a person","rule":"fs-write","request_id":"r-3"});
        assert_eq!(tool_outcome(&ask), "ask (fs-write): writes need a person\nwaiting for approval: ghostctl approve r-3\n");
        let dry = json!({"decision":"allow","reason":"r","rule":"x","dry_run":true});
        assert_eq!(tool_outcome(&dry), "allow (x): r\ndry run: nothing ran\n");
        assert_eq!(tool_outcome(&json!({"decision":"deny","reason":"no","rule":"default"})), "deny (default): no\n");
    }

    #[test]
    fn tables_show_missing_fields_as_a_dash_and_clip_long_text() {
        let pending = [json!({"id":"r-1","call":{"tool":"fs.write","args":{"path":"/etc/motd","content":"x".repeat(100)},"why":"greet"},"expires_in_ms":250_000,"resolution":null})];
        let t = pending_table(&pending, Style::PLAIN);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID   TOOL      ARGS") && lines[0].ends_with("WHY    EXPIRES"), "{t}");
        assert!(lines[1].starts_with("r-1  fs.write  {\"content\":\"xxx") && lines[1].contains("…  greet  in 4m10s"), "{t}");
        assert_eq!(pending_table(&[], Style::PLAIN), "no calls wait for approval\n");

        let today = crate::sys::local_time(1_700_000_000);
        let hits = [json!({"score":0.876,"kind":"observation","text":"disk\nfull","time_ms":1_700_000_000_000u64}), json!({"score":0.5})];
        let t = memory_table(&hits, Style::PLAIN, today);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "SCORE  WHEN          KIND         TEXT");
        assert!(lines[1].starts_with(" 0.88  ") && lines[1].ends_with(":20.000  observation  disk full"), "{t}");
        assert_eq!(lines[2], " 0.50  -             -            -");

        let goals = [json!({"id":"g-1","text":"keep redis up","priority":5,"status":"failed","reason":"3 attempts","check":"service:redis:running","parent":null,"attempts":3})];
        let t = goals_table(&goals, Style::PLAIN, today);
        assert!(t.lines().nth(1).unwrap().ends_with("g-1    5  failed      3  service:redis:running  -       -        keep redis up (3 attempts)"), "{t}");
        let d = [json!({"id":"d-1","time_ms":1_700_000_000_000u64,"text":"restart redis","layer":"rule","rule":"restart-crashed","playbook":null,"outcome":"ok"})];
        assert!(decisions_table(&d, Style::PLAIN, today).lines().nth(1).unwrap().ends_with("  rule   restart-crashed  -         ok       restart redis"));
    }

    #[test]
    fn why_indents_each_effect_under_its_cause() {
        let chain = [
            json!({"id":"o-1","time_ms":1_700_000_000_000u64,"kind":"observation","source":"heartbeat","text":"redis exited"}),
            json!({"id":"d-2","time_ms":1_700_000_000_500u64,"kind":"decision","source":"rule","text":"restart redis"}),
            json!({"id":"a-3","kind":"action","text":"service.restart redis"}),
        ];
        let t = why_chain("a-3", &chain, crate::sys::local_time(1_700_000_000));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("o-1 ") && lines[0].ends_with(":20.000 observation (heartbeat): redis exited"), "{t}");
        assert!(lines[1].starts_with("└ d-2 ") && lines[1].ends_with(" decision (rule): restart redis"), "{t}");
        assert_eq!(lines[2], "  └ a-3 - action: service.restart redis");
        assert_eq!(why_chain("x", &[], None), "nothing known about x\n");
    }

    #[test]
    fn the_audit_report_names_each_broken_record() {
        assert_eq!(audit_report(&json!({"intact":true,"records":12,"problems":[]})), "audit trail intact: 12 records\n");
        let broken = json!({"intact":false,"records":12,"problems":[{"seq":4,"problem":"hash does not chain"},{"seq":null,"problem":"the head is missing"}]});
        assert_eq!(audit_report(&broken), "record 4: hash does not chain\naudit trail: the head is missing\n");
        assert_eq!(created_id(&json!({"id":"g-2"})), "g-2\n");
        assert_eq!(created_id(&json!({"ok":true})), "");
    }
}
