//! Aligned text columns for people: every cell padded to its column's widest, numbers to the
//! right, the last column left ragged. Colour goes on after the padding, so that escape codes
//! never upset the alignment.

use crate::style::Style;

/// The header (bold) and one line per row. Columns whose index is in `right` align right;
/// `paint(row, column, padded)` colours a cell, or gives it back as it is.
pub fn columns(headers: &[&str], right: &[usize], rows: &[Vec<String>], style: Style, paint: impl Fn(usize, usize, String) -> String) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let last = headers.len().saturating_sub(1);
    let pad = |i: usize, text: &str| {
        let right = right.contains(&i);
        if i == last && !right {
            return text.to_string();
        }
        let fill = " ".repeat(width[i].saturating_sub(text.chars().count()));
        if right {
            format!("{fill}{text}")
        } else {
            format!("{text}{fill}")
        }
    };
    let header: Vec<String> = headers.iter().enumerate().map(|(i, h)| pad(i, h)).collect();
    let mut out = style.bold(header.join("  ").trim_end());
    out.push('\n');
    for (r, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().enumerate().map(|(i, cell)| paint(r, i, pad(i, cell))).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `text` as one cell of at most `max` characters: line breaks become spaces, and a longer
/// text is cut with `…` at its end.
pub fn clip(text: &str, max: usize) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_align_numbers_right_and_the_last_column_is_ragged() {
        let rows = vec![vec!["a".to_string(), "7".into(), "x".into()], vec!["long-name".into(), "1234".into(), "".into()]];
        let t = columns(&["NAME", "N", "TEXT"], &[1], &rows, Style::PLAIN, |_, _, c| c);
        assert_eq!(t, "NAME          N  TEXT\na             7  x\nlong-name  1234\n");
        // Painting happens after padding.
        let t = columns(&["A", "B"], &[], &[vec!["x".into(), "y".into()]], Style::PLAIN, |_, i, c| if i == 0 { format!("<{c}>") } else { c });
        assert_eq!(t.lines().nth(1), Some("<x>  y"));
    }

    #[test]
    fn clip_keeps_one_line_and_marks_the_cut() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("two\nlines", 10), "two lines");
        assert_eq!(clip("abcdefghijkl", 5), "abcd…");
        assert_eq!(clip("ééééé", 5), "ééééé");
    }
}
