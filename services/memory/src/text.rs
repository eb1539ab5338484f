//! Word search helpers: turning free text into a safe FTS5 query, and matching records held
//! in-process.

/// Common English words that carry no meaning for search; dropped from word queries (when the
/// query has anything else), so that "the" does not match every episode.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "being", "but", "by", "can", "could", "did", "do", "does", "doing", "for", "from",
    "had", "has", "have", "having", "he", "her", "here", "him", "his", "how", "i", "if", "in",
    "into", "is", "it", "its", "itself", "just", "me", "my", "of", "on", "or", "our", "she",
    "so", "some", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "those", "to", "too", "very", "was", "we", "were", "what", "when", "where", "which",
    "while", "who", "whom", "why", "will", "with", "would", "you", "your",
];

/// At most this many words of a query are searched for.
const MAX_TERMS: usize = 32;

/// The words of `text` as the FTS5 tokenizer (unicode61) sees them: runs of letters and digits,
/// lower-cased.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The search terms of a query: its words without stopwords (unless that leaves nothing),
/// deduplicated, in order, at most MAX_TERMS.
pub fn query_terms(query: &str) -> Vec<String> {
    let all = words(query);
    let content: Vec<&String> = all.iter().filter(|w| !STOPWORDS.contains(&w.as_str())).collect();
    let chosen: Vec<&String> = if content.is_empty() { all.iter().collect() } else { content };
    let mut out: Vec<String> = Vec::new();
    for w in chosen {
        if !out.contains(w) {
            out.push(w.clone());
        }
        if out.len() == MAX_TERMS {
            break;
        }
    }
    out
}

/// An FTS5 MATCH expression for the terms: each quoted (so no input is FTS5 syntax), joined
/// with OR; BM25 ranks episodes with more and rarer terms first. None when there are no terms.
pub fn fts_query(terms: &[String]) -> Option<String> {
    if terms.is_empty() {
        return None;
    }
    // Terms are runs of alphanumerics: no quote can occur inside.
    Some(terms.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(" OR "))
}

/// How well `text` matches the terms in-process (no index): the share of terms it contains,
/// with a term matching a word it prefixes ("restart" matches "restarted"), roughly what the
/// stemmer does in SQLite.
pub fn match_share(terms: &[String], text: &str) -> f64 {
    if terms.is_empty() {
        return 0.0;
    }
    let ws = words(text);
    let close = |t: &str, w: &str| {
        t == w || (t.len() >= 4 && w.len() >= 4 && (w.starts_with(t) || t.starts_with(w)))
    };
    let found = terms.iter().filter(|t| ws.iter().any(|w| close(t, w))).count();
    found as f64 / terms.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_quoted_words_without_stopwords() {
        let t = query_terms("Why did the web-server \"crash\" (again)? AND OR NEAR*");
        assert_eq!(t, ["web", "server", "crash", "again", "near"]);
        assert_eq!(fts_query(&t).unwrap(), "\"web\" OR \"server\" OR \"crash\" OR \"again\" OR \"near\"");
        // A query of only stopwords keeps them; one of only punctuation has no terms.
        assert_eq!(query_terms("to be or not"), ["not"]);
        assert_eq!(query_terms("the"), ["the"]);
        assert!(fts_query(&query_terms("?!* \"")).is_none());
        assert_eq!(query_terms("Überlauf ÉTÉ"), ["überlauf", "été"]);
    }

    #[test]
    fn in_process_matching_counts_shared_terms() {
        let terms = query_terms("nginx restart");
        assert_eq!(match_share(&terms, "nginx was restarted"), 1.0);
        assert_eq!(match_share(&terms, "nginx exited"), 0.5);
        assert_eq!(match_share(&terms, "disk full"), 0.0);
    }
}
