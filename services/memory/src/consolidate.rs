//! Consolidation: keeps the hot tables within the budget by moving old, low-salience episodes
//! to `archived_episodes`, with one summary episode per archived span. Nothing is deleted:
//! archived episodes keep their ids and links, so decision chains that cross into the archive
//! still resolve (`Memory::chain`).

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::episode::{format_utc, now_ms, Episode, EpisodeId, EpisodeKind};
use crate::store;

/// The source of the summary episodes consolidation writes; they are archived only when
/// nothing else is left to archive.
pub const SUMMARY_SOURCE: &str = "memory.consolidate";

/// The budget of the hot tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Hot episodes above this trigger consolidation.
    pub max_hot_episodes: u64,
    /// Consolidation brings the hot count down to this fraction of the budget, so that it
    /// runs once per (1 - low_water) of the budget rather than on every record.
    pub low_water: f64,
    /// The newest this-many episodes are never archived.
    pub keep_recent: u64,
    /// Episodes at least this salient, and every episode they were caused by (their chains),
    /// are archived only when nothing else is left to bring the count within the budget.
    pub protect_salience: f32,
    /// Episodes per summary.
    pub span: usize,
    /// Consolidate inside `record` as soon as the budget is exceeded (otherwise only when
    /// `Memory::consolidate` is called).
    pub auto: bool,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { max_hot_episodes: 200_000, low_water: 0.9, keep_recent: 2_000, protect_salience: 0.8, span: 1_000, auto: true }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsolidationReport {
    pub hot_before: u64,
    pub hot_after: u64,
    pub archived: u64,
    /// Of those, salient episodes or links of salient chains that the budget forced out.
    pub forced: u64,
    /// The summary episodes written, one per archived span.
    pub summaries: Vec<EpisodeId>,
}

pub struct Outcome {
    pub report: ConsolidationReport,
    pub archived_ids: Vec<EpisodeId>,
}

pub fn run(conn: &mut Connection, b: &Budget, next_id: &mut i64) -> rusqlite::Result<Outcome> {
    let hot = store::hot_count(conn)?;
    let mut report = ConsolidationReport { hot_before: hot, hot_after: hot, ..Default::default() };
    if hot <= b.max_hot_episodes {
        return Ok(Outcome { report, archived_ids: Vec::new() });
    }
    let target = ((b.max_hot_episodes as f64) * b.low_water.clamp(0.0, 1.0)).floor() as u64;
    // Each span adds a summary to the hot table: archive enough to make room for those too.
    let over = (hot - target) as usize;
    let need = over + over.div_ceil(b.span.max(2) - 1);
    // Ids at or above the cutoff are the newest keep_recent.
    let cutoff: i64 = if b.keep_recent == 0 {
        i64::MAX
    } else {
        match conn
            .query_row("SELECT id FROM episodes ORDER BY id DESC LIMIT 1 OFFSET ?1", [(b.keep_recent - 1) as i64], |r| r.get(0))
            .optional()?
        {
            Some(id) => id,
            None => return Ok(Outcome { report, archived_ids: Vec::new() }),
        }
    };

    conn.execute_batch("DROP TABLE IF EXISTS temp.protected; CREATE TEMP TABLE protected (id INTEGER PRIMARY KEY);")?;
    conn.execute(
        "WITH RECURSIVE p (id) AS (
             SELECT id FROM episodes WHERE id >= ?1 OR salience >= ?2
             UNION
             SELECT e.caused_by FROM episodes e JOIN p ON e.id = p.id WHERE e.caused_by IS NOT NULL)
         INSERT OR IGNORE INTO temp.protected SELECT id FROM p",
        params![cutoff, f64::from(b.protect_salience)],
    )?;
    let pick = |sql: &str, limit: usize| -> rusqlite::Result<Vec<EpisodeId>> {
        let mut st = conn.prepare(sql)?;
        let rows = st.query_map(params![cutoff, SUMMARY_SOURCE, limit as i64], |r| r.get(0))?;
        rows.collect()
    };
    let mut victims = pick(
        "SELECT id FROM episodes WHERE id < ?1 AND source <> ?2 AND id NOT IN (SELECT id FROM temp.protected) ORDER BY id LIMIT ?3",
        need,
    )?;
    if victims.len() < need {
        // Salient episodes and the chains they need: only when the budget leaves no choice.
        let more = pick(
            "SELECT id FROM episodes WHERE id < ?1 AND source <> ?2 AND id IN (SELECT id FROM temp.protected) ORDER BY id LIMIT ?3",
            need - victims.len(),
        )?;
        report.forced = more.len() as u64;
        victims.extend(more);
    }
    if victims.len() < need {
        // Older summaries, last: a later summary then stands for them.
        let more = pick("SELECT id FROM episodes WHERE id < ?1 AND source = ?2 ORDER BY id LIMIT ?3", need - victims.len())?;
        victims.extend(more);
    }
    victims.sort_unstable();
    conn.execute_batch("DROP TABLE temp.protected;")?;

    *next_id = (*next_id).max(store::max_id(conn)? + 1);
    let now = now_ms();
    for chunk in victims.chunks(b.span.max(1)) {
        let ids = serde_json::to_string(chunk).unwrap_or_else(|_| "[]".into());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let summary = summarise(&tx, &ids)?;
        let summary_id = *next_id;
        store::insert_episode(&tx, &store::NewEpisode { id: summary_id, episode: &summary, vector: None })?;
        tx.execute(
            &format!(
                "INSERT INTO archived_episodes ({cols}, archived_ms, summary_id)
                 SELECT {cols}, ?2, ?3 FROM episodes WHERE id IN (SELECT value FROM json_each(?1))",
                cols = store::EPISODE_COLUMNS
            ),
            params![ids, now, summary_id],
        )?;
        tx.execute("DELETE FROM episodes WHERE id IN (SELECT value FROM json_each(?1))", [&ids])?;
        tx.commit()?;
        *next_id += 1;
        report.archived += chunk.len() as u64;
        report.summaries.push(summary_id);
    }
    report.hot_after = store::hot_count(conn)?;
    Ok(Outcome { report, archived_ids: victims })
}

/// The summary episode of a span (ids as a JSON array).
fn summarise(conn: &Connection, ids: &str) -> rusqlite::Result<Episode> {
    let mut st = conn.prepare(
        "SELECT id, kind, source, time_ms, salience, text FROM episodes WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id",
    )?;
    let rows = st.query_map([ids], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, f64>(4)?, r.get::<_, String>(5)?))
    })?;
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut sources: BTreeMap<String, u64> = BTreeMap::new();
    let (mut from, mut to) = (i64::MAX, i64::MIN);
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut salient: Vec<(f64, String)> = Vec::new();
    let mut count = 0u64;
    for row in rows {
        let (id, kind, source, time, salience, text) = row?;
        count += 1;
        *kinds.entry(kind).or_default() += 1;
        *sources.entry(source).or_default() += 1;
        from = from.min(time);
        to = to.max(time);
        first = first.min(id);
        last = last.max(id);
        salient.push((salience, text));
    }
    salient.sort_by(|a, b| b.0.total_cmp(&a.0));
    let max_salience = salient.first().map_or(0.0, |s| s.0);
    let mut top_sources: Vec<(String, u64)> = sources.into_iter().collect();
    top_sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top_sources.truncate(5);
    let kinds_text: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let sources_text: Vec<String> = top_sources.iter().map(|(s, n)| format!("{s} ({n})")).collect();
    let quotes: Vec<String> = salient.iter().take(3).map(|(_, t)| format!("\"{}\"", clip(t, 160))).collect();
    let text = format!(
        "Archived {count} episodes from {} to {}: {}; mostly {}. Most salient: {}.",
        format_utc(from.max(0)),
        format_utc(to.max(0)),
        kinds_text.join(", "),
        sources_text.join(", "),
        quotes.join("; ")
    );
    let details = serde_json::json!({
        "archived": {
            "count": count, "first_id": first, "last_id": last, "from_ms": from, "to_ms": to,
            "kinds": kinds, "sources": top_sources.into_iter().collect::<BTreeMap<_, _>>(),
        }
    });
    Ok(Episode::new(EpisodeKind::Note, SUMMARY_SOURCE, text)
        .at(to.max(0))
        .salience(max_salience.clamp(0.0, 1.0) as f32)
        .details(details))
}

fn clip(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).collect();
    if s.chars().count() > max_chars {
        out.push('…');
    }
    out.replace('"', "'")
}
