//! The wizard's screens: a welcome, one question per screen, a summary to confirm. Pure state
//! and drawing (no terminal here), so every screen is tested on ratatui's TestBackend.
//!
//! Glyphs stay within what the Linux console's default font has (box drawing, █, ·, ↑↓).
//!
//! Keys: Enter or Tab accepts the field (a wrong value stays on screen with the reason under
//! it), Shift-Tab goes back, ↑/↓ choose in a list, Backspace and Ctrl-U edit, Esc asks whether
//! to leave without saving, Ctrl-C leaves at once. Nothing is written before the summary's Enter.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::answers::{Answers, Env, Field, Operator};
use super::catalog::{self, Choice};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Welcome,
    Ask,
    Summary,
}

/// What the last key asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The summary was confirmed: write the answers.
    Confirmed,
    /// Left without saving.
    Quit,
}

pub struct Wizard {
    pub env: Env,
    pub answers: Answers,
    pub screen: Screen,
    /// Index into `answers.fields()`.
    pub step: usize,
    /// The text being typed (text fields).
    pub input: String,
    /// The highlighted option (list fields).
    pub choice: usize,
    /// Why the last value was refused, shown under the field.
    pub error: Option<String>,
    /// The "leave without saving?" question is up.
    pub quitting: bool,
    /// Seconds without a key before boot goes on without the wizard (shown on the welcome).
    pub idle_timeout_s: Option<u64>,
    /// Colours on screen; off with `NO_COLOR` or `TERM=dumb` (the marks and `!` carry the meaning).
    pub color: bool,
}

impl Wizard {
    pub fn new(env: Env, answers: Answers) -> Wizard {
        Wizard { env, answers, screen: Screen::Welcome, step: 0, input: String::new(), choice: 0, error: None, quitting: false, idle_timeout_s: None, color: true }
    }

    pub fn field(&self) -> Field {
        let fields = self.answers.fields();
        fields[self.step.min(fields.len() - 1)]
    }

    /// Loads the current field's value into the editor.
    fn enter_step(&mut self, step: usize) {
        self.screen = Screen::Ask;
        self.step = step;
        self.error = None;
        let f = self.field();
        let value = self.answers.get(f).to_string();
        match f.options() {
            Some(opts) => self.choice = opts.iter().position(|(v, _)| *v == value).unwrap_or(0),
            None => self.input = value,
        }
    }

    /// The value on screen for the current field.
    fn value(&self) -> String {
        match self.field().options() {
            Some(opts) => opts[self.choice.min(opts.len() - 1)].0.clone(),
            None => self.input.trim().to_string(),
        }
    }

    pub fn key(&mut self, k: KeyEvent) -> Outcome {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && k.code == KeyCode::Char('c') {
            return Outcome::Quit;
        }
        if self.quitting {
            match k.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => return Outcome::Quit,
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => self.quitting = false,
                _ => {}
            }
            return Outcome::Continue;
        }
        if k.code == KeyCode::Esc {
            self.quitting = true;
            return Outcome::Continue;
        }
        match self.screen {
            Screen::Welcome => {
                if matches!(k.code, KeyCode::Enter | KeyCode::Tab) {
                    self.enter_step(0);
                }
            }
            Screen::Summary => match k.code {
                KeyCode::Enter => {
                    if let Some((f, why)) = self.answers.problems(&self.env).into_iter().next() {
                        let step = self.answers.fields().iter().position(|g| *g == f).unwrap_or(0);
                        self.enter_step(step);
                        self.error = Some(why);
                    } else {
                        return Outcome::Confirmed;
                    }
                }
                KeyCode::BackTab | KeyCode::Left => {
                    let last = self.answers.fields().len() - 1;
                    self.enter_step(last);
                }
                _ => {}
            },
            Screen::Ask => self.ask_key(k, ctrl),
        }
        Outcome::Continue
    }

    fn ask_key(&mut self, k: KeyEvent, ctrl: bool) {
        let f = self.field();
        let options = f.options();
        match k.code {
            KeyCode::Enter | KeyCode::Tab => {
                let v = self.value();
                match self.answers.check(f, &v, &self.env) {
                    Ok(()) => {
                        self.answers.set(f, v);
                        let next = self.step + 1;
                        if next >= self.answers.fields().len() {
                            self.screen = Screen::Summary;
                            self.error = None;
                        } else {
                            self.enter_step(next);
                        }
                    }
                    Err(why) => self.error = Some(why),
                }
            }
            KeyCode::BackTab => {
                // Keep what was typed (checked again on the way forward and at the summary).
                let v = self.value();
                self.answers.set(f, v);
                if self.step == 0 {
                    self.screen = Screen::Welcome;
                    self.error = None;
                } else {
                    self.enter_step(self.step - 1);
                }
            }
            KeyCode::Up | KeyCode::Char('k') if options.is_some() => {
                self.choice = self.choice.saturating_sub(1);
                self.error = None;
            }
            KeyCode::Down | KeyCode::Char('j') if options.is_some() => {
                let n = options.as_ref().map_or(1, |o| o.len());
                self.choice = (self.choice + 1).min(n - 1);
                self.error = None;
            }
            KeyCode::Char(c) if options.is_some() && c.is_ascii_digit() => {
                let n = options.as_ref().map_or(0, |o| o.len());
                let i = c as usize - '1' as usize;
                if i < n {
                    self.choice = i;
                }
            }
            KeyCode::Char('u') if ctrl => self.input.clear(),
            KeyCode::Char(c) if options.is_none() && !ctrl && self.input.chars().count() < 512 => {
                self.input.push(c);
            }
            KeyCode::Backspace if options.is_none() => {
                self.input.pop();
            }
            _ => {}
        }
    }

    /// A foreground colour, when colours are on.
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    /// Draws the current screen.
    pub fn draw(&self, frame: &mut Frame) {
        let area = frame.area();
        let block = Block::default().borders(Borders::ALL).title(Span::styled(" ghostos first-boot setup ", Style::default().add_modifier(Modifier::BOLD)));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let [body, footer] = Layout::vertical([Constraint::Min(1), Constraint::Length(2)]).areas(inner);
        let (lines, keys) = if self.quitting { self.quit_lines() } else {
            match self.screen {
                Screen::Welcome => self.welcome_lines(),
                Screen::Ask => self.ask_lines(),
                Screen::Summary => self.summary_lines(),
            }
        };
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), body);
        frame.render_widget(Paragraph::new(Line::from(Span::styled(keys, self.fg(Color::DarkGray)))).wrap(Wrap { trim: true }), footer);
    }

    fn welcome_lines(&self) -> (Vec<Line<'static>>, String) {
        let mut l = vec![
            Line::from(Span::styled("Welcome to ghostos.", Style::default().add_modifier(Modifier::BOLD))),
            Line::from(""),
            Line::from("This machine is starting for the first time. A few questions set its name, network, language model, security mode, who may operate it, and its time zone."),
            Line::from(""),
            Line::from("Nothing is written until you confirm the summary at the end. The answers go to /var/lib/ghost/etc on the state partition, and boot goes on."),
        ];
        if let Some(s) = self.idle_timeout_s {
            l.push(Line::from(""));
            l.push(Line::from(format!("Without a key for {}, boot goes on with the current settings.", duration(s))));
        }
        (l, "Enter: begin · Esc: leave without setting up".into())
    }

    fn ask_lines(&self) -> (Vec<Line<'static>>, String) {
        let f = self.field();
        let n = self.answers.fields().len();
        let mut l = vec![
            Line::from(vec![
                Span::styled(format!("Step {} of {n} · ", self.step + 1), self.fg(Color::DarkGray)),
                Span::styled(f.title(), Style::default().add_modifier(Modifier::BOLD)),
            ]),
            Line::from(""),
            Line::from(f.help()),
            Line::from(""),
        ];
        let keys = match f.options() {
            Some(opts) => {
                for (i, (_, text)) in opts.iter().enumerate() {
                    let on = i == self.choice;
                    let mark = if on { "> (*) " } else { "  ( ) " };
                    let style = if on { self.fg(Color::Cyan).add_modifier(Modifier::BOLD) } else { Style::default() };
                    l.push(Line::from(Span::styled(format!("{mark}{text}"), style)));
                }
                "↑/↓: choose · Enter: next · Shift-Tab: back · Esc: quit".to_string()
            }
            None => {
                l.push(Line::from(vec![
                    Span::styled(format!("{}: ", f.key()), self.fg(Color::DarkGray)),
                    Span::styled(format!("{}█", self.input), self.fg(Color::Cyan).add_modifier(Modifier::BOLD)),
                ]));
                "Enter: next · Shift-Tab: back · Ctrl-U: clear · Esc: quit".to_string()
            }
        };
        if let Some(e) = &self.error {
            l.push(Line::from(""));
            l.push(Line::from(Span::styled(format!("! {}: {e}", f.key()), self.fg(Color::Red).add_modifier(Modifier::BOLD))));
        }
        (l, keys)
    }

    fn summary_lines(&self) -> (Vec<Line<'static>>, String) {
        let mut l = vec![Line::from(Span::styled("Summary: check, then confirm", Style::default().add_modifier(Modifier::BOLD))), Line::from("")];
        for (k, v) in summary(&self.answers) {
            l.push(Line::from(vec![Span::styled(format!("{k:<10} "), self.fg(Color::DarkGray)), Span::raw(v)]));
        }
        l.push(Line::from(""));
        l.push(Line::from("Enter writes /var/lib/ghost/etc/ghost.toml, model.toml and timezone, and boot goes on."));
        (l, "Enter: write and continue · Shift-Tab: back · Esc: quit".into())
    }

    fn quit_lines(&self) -> (Vec<Line<'static>>, String) {
        (
            vec![
                Line::from(Span::styled("Leave setup without saving?", Style::default().add_modifier(Modifier::BOLD))),
                Line::from(""),
                Line::from("Nothing has been written; the machine keeps its current settings."),
            ],
            "y: leave without saving · n: go back".into(),
        )
    }
}

/// The answers as (label, value) lines, for the summary screen and the unattended report.
pub fn summary(a: &Answers) -> Vec<(&'static str, String)> {
    let network = match a.network.as_str() {
        "static" => {
            let mut s = format!("static {}", a.address.trim());
            if !a.gateway.trim().is_empty() {
                s.push_str(&format!(" via {}", a.gateway.trim()));
            }
            let dns = a.dns_list();
            if !dns.is_empty() {
                s.push_str(&format!(", dns {}", dns.join(" ")));
            }
            s
        }
        "dhcp" => "DHCP".into(),
        other => other.to_string(),
    };
    let model = Choice::find(&a.model).map(|c| format!("{} ({}) {}", c.id, catalog::size(c.bytes), c.title)).unwrap_or_else(|| a.model.clone());
    let operator = match a.operator_kind() {
        Operator::Group(g) => format!("group {g}"),
        Operator::Key(k) => {
            let mut w = k.split_whitespace();
            let (t, blob, comment) = (w.next().unwrap_or(""), w.next().unwrap_or(""), w.collect::<Vec<_>>().join(" "));
            let tail: String = blob.chars().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
            format!("key {t} ...{tail} {comment}").trim_end().to_string()
        }
    };
    vec![
        ("hostname", a.hostname.trim().to_string()),
        ("network", network),
        ("model", model),
        ("security", a.security.clone()),
        ("operator", operator),
        ("time zone", a.timezone.trim().to_string()),
    ]
}

fn duration(s: u64) -> String {
    if s.is_multiple_of(60) && s >= 60 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn typed(w: &mut Wizard, s: &str) {
        for c in s.chars() {
            w.key(key(KeyCode::Char(c)));
        }
    }

    fn clear(w: &mut Wizard) {
        w.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    }

    /// The screen as text, one line per row, trailing spaces cut.
    pub fn screen(w: &Wizard, width: u16, height: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| w.draw(f)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..height)
            .map(|y| (0..width).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>().trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn wizard() -> (tempfile::TempDir, Wizard) {
        let d = tempfile::tempdir().unwrap();
        let env = Env::new(d.path());
        let w = Wizard::new(env, Answers::default());
        (d, w)
    }

    /// Every screen at 80×24, as the operator sees it on a console, with a wrong value and
    /// its message; the captured text goes to WIZARD_SCREENS when that is set.
    #[test]
    fn every_step_error_and_summary_at_80x24() {
        let (_d, mut w) = wizard();
        w.idle_timeout_s = Some(300);
        let mut shots = Vec::new();
        let mut shot = |w: &Wizard, name: &str| {
            let s = screen(w, 80, 24);
            shots.push(format!("=== {name} (80×24) ===\n{s}\n"));
            s
        };
        let s = shot(&w, "welcome");
        assert!(s.contains("Welcome to ghostos.") && s.contains("Enter: begin"), "{s}");
        assert!(s.contains("Without a key for 5 min"), "{s}");
        w.key(key(KeyCode::Enter));

        let s = shot(&w, "hostname");
        assert!(s.contains("Step 1 of 6 · Host name") && s.contains("hostname: ghost█"), "{s}");
        clear(&mut w);
        typed(&mut w, "bad name!");
        w.key(key(KeyCode::Enter));
        let s = shot(&w, "hostname refused");
        assert_eq!(w.field(), Field::Hostname, "a wrong host name must not be taken");
        let rows: Vec<&str> = s.lines().collect();
        let at = rows.iter().position(|r| r.contains("hostname: bad name!█")).expect("the field is on screen");
        let err = rows.iter().position(|r| r.contains("! hostname: `bad name!` is not a valid host name")).expect(&s);
        assert!(err > at && err - at <= 2, "the message is not next to the field:\n{s}");
        clear(&mut w);
        typed(&mut w, "box-1");
        w.key(key(KeyCode::Tab));

        let s = shot(&w, "network");
        assert!(s.contains("Step 2 of 6 · Network") && s.contains("> (*) DHCP"), "{s}");
        w.key(key(KeyCode::Down));
        let s = shot(&w, "network: static highlighted");
        assert!(s.contains("> (*) static"), "{s}");
        w.key(key(KeyCode::Enter));

        let s = shot(&w, "address");
        assert!(s.contains("Step 3 of 9 · Static address"), "{s}");
        typed(&mut w, "10.0.0.300/24");
        w.key(key(KeyCode::Enter));
        let s = shot(&w, "address refused");
        assert!(s.contains("! network.address: address `10.0.0.300` is not an IPv4 address"), "{s}");
        clear(&mut w);
        typed(&mut w, "10.0.0.5/24");
        w.key(key(KeyCode::Enter));
        typed(&mut w, "10.0.0.1");
        let s = shot(&w, "gateway");
        assert!(s.contains("network.gateway: 10.0.0.1█"), "{s}");
        w.key(key(KeyCode::Enter));
        typed(&mut w, "10.0.0.1, 1.1.1.1");
        shot(&w, "name servers");
        w.key(key(KeyCode::Enter));

        let s = shot(&w, "model");
        assert!(s.contains("Language model") && s.contains("stay offline") && s.contains("~91 MB"), "{s}");
        for _ in 0..3 {
            w.key(key(KeyCode::Down));
        }
        w.key(key(KeyCode::Enter));
        let s = shot(&w, "security");
        assert!(s.contains("> (*) normal"), "{s}");
        w.key(key(KeyCode::Up));
        w.key(key(KeyCode::Enter));
        let s = shot(&w, "operator");
        assert!(s.contains("operator: ghost█"), "{s}");
        clear(&mut w);
        typed(&mut w, "Wheel");
        w.key(key(KeyCode::Enter));
        assert!(shot(&w, "operator refused").contains("! operator: `Wheel` is not a group name"));
        clear(&mut w);
        typed(&mut w, "ops");
        w.key(key(KeyCode::Enter));
        let s = shot(&w, "time zone");
        assert!(s.contains("timezone: UTC█"), "{s}");
        clear(&mut w);
        typed(&mut w, "Europe/Paris");
        w.key(key(KeyCode::Enter));

        let s = shot(&w, "summary");
        for want in ["hostname   box-1", "network    static 10.0.0.5/24 via 10.0.0.1, dns 10.0.0.1 1.1.1.1", "model      none (0 B)", "security   safe", "operator   group ops", "time zone  Europe/Paris", "Enter: write and continue"] {
            assert!(s.contains(want), "no `{want}` in the summary:\n{s}");
        }
        assert_eq!(w.key(key(KeyCode::Enter)), Outcome::Confirmed);
        if let Some(path) = std::env::var_os("WIZARD_SCREENS") {
            std::fs::write(path, shots.concat()).unwrap();
        }
    }

    #[test]
    fn a_narrow_terminal_wraps_rather_than_cuts() {
        let (_d, mut w) = wizard();
        w.key(key(KeyCode::Enter));
        clear(&mut w);
        typed(&mut w, "bad name!");
        w.key(key(KeyCode::Enter));
        let s = screen(&w, 40, 20);
        let flat: String = s.lines().map(|l| l.trim_matches(|c| c == '│' || c == ' ')).collect::<Vec<_>>().join(" ");
        assert!(flat.contains("is not a valid host name"), "the reason is lost at 40 columns:\n{s}");
        assert!(flat.contains("Step 1 of 6"), "{s}");
        assert!(s.lines().all(|l| l.chars().count() <= 40));
        // The summary too.
        let mut w2 = wizard().1;
        w2.screen = Screen::Summary;
        let s = screen(&w2, 40, 20);
        assert!(s.contains("hostname") && s.contains("time zone"), "{s}");
    }

    #[test]
    fn the_error_is_red_with_colours_and_plain_bold_without() {
        for color in [true, false] {
            let (_d, mut w) = wizard();
            w.color = color;
            w.key(key(KeyCode::Enter));
            clear(&mut w);
            typed(&mut w, "bad name!");
            w.key(key(KeyCode::Enter));
            let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
            t.draw(|f| w.draw(f)).unwrap();
            let buf = t.backend().buffer().clone();
            let y = (0..24).find(|&y| (0..80).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>().contains("! hostname")).expect("the error row");
            let cell = &buf[(1, y)];
            assert_eq!(cell.symbol(), "!");
            assert_eq!(cell.fg, if color { Color::Red } else { Color::Reset }, "color {color}");
            assert!(cell.modifier.contains(Modifier::BOLD));
        }
    }

    #[test]
    fn escape_asks_and_leaves_without_confirming() {
        let (_d, mut w) = wizard();
        w.key(key(KeyCode::Enter));
        assert_eq!(w.key(key(KeyCode::Esc)), Outcome::Continue);
        let s = screen(&w, 80, 24);
        assert!(s.contains("Leave setup without saving?") && s.contains("Nothing has been written"), "{s}");
        assert_eq!(w.key(key(KeyCode::Char('n'))), Outcome::Continue);
        assert!(screen(&w, 80, 24).contains("Host name"));
        w.key(key(KeyCode::Esc));
        assert_eq!(w.key(key(KeyCode::Char('y'))), Outcome::Quit);
        let (_d, mut w) = wizard();
        assert_eq!(w.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Outcome::Quit);
    }

    #[test]
    fn back_keeps_answers_and_the_summary_rechecks_them() {
        let (_d, mut w) = wizard();
        w.key(key(KeyCode::Enter));
        clear(&mut w);
        typed(&mut w, "box-2");
        w.key(key(KeyCode::Enter));
        w.key(key(KeyCode::BackTab));
        assert_eq!(w.field(), Field::Hostname);
        assert_eq!(w.input, "box-2");
        // A bad value kept by going back is caught at the summary, on its own screen.
        clear(&mut w);
        typed(&mut w, "-no");
        w.key(key(KeyCode::BackTab));
        w.screen = Screen::Summary;
        assert_eq!(w.key(key(KeyCode::Enter)), Outcome::Continue);
        assert_eq!((w.screen, w.field()), (Screen::Ask, Field::Hostname));
        assert!(w.error.as_deref().unwrap_or("").contains("`-no` is not a valid host name"));
    }
}
