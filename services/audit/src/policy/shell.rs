//! The deny-pattern matcher for shell commands.
//!
//! A command is lexed the way a POSIX shell would split it — quotes and backslashes removed,
//! `$(…)`, backticks and `<(…)` pulled out and analysed on their own, `$HOME` read as `~`,
//! other expansions read as empty (so `rm -rf "$DIR/"*` is judged as the `/*` it becomes when
//! `DIR` is unset), here-document bodies skipped — into pipelines of simple commands. Each
//! simple command loses its assignments, reserved words and wrappers (`sudo`, `doas`, `env`,
//! `nice`, `nohup`, `timeout`, `xargs`, `busybox`, `command`, `exec`, …); `sh -c`, `bash -c`,
//! `su -c`, `eval` and `env -S` hand their script back to the analyser (nested up to
//! [`MAX_DEPTH`]). Then the command's own arguments are read as that command reads them: `rm`
//! options anywhere before `--`, `dd`'s `of=`, `cp`'s destination, `find`'s start points and
//! `-exec`, `kill`'s pids. Text that is only an argument (`echo "rm -rf /"`, `grep mkfs`) is
//! never a match.

use super::paths::{critical, is_block_device, normalize, protected_write};

/// How deep `sh -c "sh -c '…'"` nesting is followed; deeper is refused.
pub const MAX_DEPTH: usize = 8;
/// Function definitions examined for fork bombs per script (bounds the work on hostile input).
const MAX_FUNCTIONS: usize = 64;

/// A matched deny pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// A stable identifier of the pattern (`rm-recursive-critical`, `mkfs`, `dd-device`, …).
    pub rule: &'static str,
    pub reason: String,
}

fn hit(rule: &'static str, reason: impl Into<String>) -> Option<Hit> {
    Some(Hit { rule, reason: reason.into() })
}

/// Analyses a shell command line (as `sh -c` would run it) started in `cwd` (None: `/`, where
/// shell.exec runs without a `cwd` argument).
pub fn analyze(command: &str, cwd: Option<&str>, protected: &[String]) -> Option<Hit> {
    analyze_at(command, &Ctx::new(cwd, protected), 0)
}

/// Analyses a program run without a shell (`argv[0]` and its arguments).
pub fn analyze_argv(argv: &[String], cwd: Option<&str>, protected: &[String]) -> Option<Hit> {
    check_words(argv, &Ctx::new(cwd, protected), 0)
}

/// What the analysis knows besides the words: the protected paths and the working directory
/// (followed through `cd`), against which relative operands are resolved.
#[derive(Debug, Clone)]
struct Ctx<'a> {
    protected: &'a [String],
    cwd: String,
}

impl<'a> Ctx<'a> {
    fn new(cwd: Option<&str>, protected: &'a [String]) -> Ctx<'a> {
        Ctx { protected, cwd: cwd.filter(|c| c.starts_with('/')).map_or_else(|| "/".to_string(), normalize) }
    }

    /// `op` as an absolute path (or `~…`), relative ones taken from the working directory.
    fn resolve(&self, op: &str) -> String {
        if op.starts_with('/') || op.starts_with('~') {
            op.to_string()
        } else {
            normalize(&format!("{}/{op}", self.cwd))
        }
    }

    fn critical(&self, op: &str) -> Option<String> {
        critical(&self.resolve(op), self.protected)
    }

    fn protected_write(&self, op: &str) -> Option<String> {
        let p = self.resolve(op);
        if p.starts_with('~') {
            return None;
        }
        protected_write(&p, self.protected)
    }

    fn is_block_device(&self, op: &str) -> bool {
        is_block_device(&self.resolve(op))
    }

    /// Follows `cd DIR`.
    fn cd(&mut self, args: &[String]) {
        match args.iter().find(|a| !a.starts_with('-')).map(String::as_str) {
            None | Some("~") => self.cwd = "~".into(),
            Some("") => {}
            Some(dir) => self.cwd = self.resolve(dir),
        }
    }
}

fn analyze_at(command: &str, cx: &Ctx, depth: usize) -> Option<Hit> {
    if depth > MAX_DEPTH {
        return hit("too-deep", format!("shell nesting deeper than {MAX_DEPTH} levels is not analysed"));
    }
    if let Some(h) = fork_bomb(&unquoted(command)) {
        return Some(h);
    }
    let lexed = lex(command);
    for sub in &lexed.subs {
        if let Some(h) = analyze_at(sub, cx, depth + 1) {
            return Some(h);
        }
    }
    let mut cx = cx.clone();
    for pipeline in parse(lexed.toks) {
        if let Some(h) = remote_code(&pipeline) {
            return Some(h);
        }
        for simple in &pipeline {
            for (op, target) in &simple.redirs {
                if let Some(h) = redirect(op, target, &cx) {
                    return Some(h);
                }
            }
            if let Some(h) = check_words(&simple.words, &cx, depth) {
                return Some(h);
            }
            if let Unwrapped::Cmd(w) = unwrap(&simple.words) {
                if matches!(basename(&w[0]), "cd" | "pushd") {
                    cx.cd(&w[1..]);
                }
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Op(String),
    Redir(String, String),
}

#[derive(Debug, Default)]
struct Lexed {
    toks: Vec<Tok>,
    /// Command substitutions and process substitutions, analysed as commands of their own.
    subs: Vec<String>,
}

/// The index of the `close` that matches an `open` already consumed before `i`, honouring
/// quotes and backslashes; `c.len()` when there is none.
fn matching(c: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 1;
    while i < c.len() {
        match c[i] {
            '\\' => i += 1,
            '\'' => {
                i += 1;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            ch if ch == open => depth += 1,
            ch if ch == close => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    c.len()
}

struct Lexer {
    c: Vec<char>,
    i: usize,
    out: Lexed,
    word: Option<String>,
    pending_redir: Option<String>,
    heredocs: Vec<(String, bool)>,
}

impl Lexer {
    fn word(&mut self) -> &mut String {
        self.word.get_or_insert_with(String::new)
    }

    fn flush(&mut self) {
        if let Some(w) = self.word.take() {
            match self.pending_redir.take() {
                Some(op) if op == "<<" || op == "<<-" => self.heredocs.push((w, op == "<<-")),
                Some(op) => self.out.toks.push(Tok::Redir(op, w)),
                None => self.out.toks.push(Tok::Word(w)),
            }
        }
    }

    fn text(&self, from: usize, to: usize) -> String {
        self.c[from.min(self.c.len())..to.min(self.c.len())].iter().collect()
    }

    /// At a `$`: appends what the expansion contributes to the current word.
    fn dollar(&mut self) {
        let c = &self.c;
        let i = self.i;
        let next = c.get(i + 1).copied();
        match next {
            Some('(') if c.get(i + 2) == Some(&'(') => {
                let end = matching(c, i + 3, '(', ')');
                self.i = (end + 2).min(c.len());
                self.word();
            }
            Some('(') => {
                let end = matching(c, i + 2, '(', ')');
                let inner = self.text(i + 2, end);
                self.out.subs.push(inner);
                self.i = end + 1;
                self.word();
            }
            Some('{') => {
                let end = matching(c, i + 2, '{', '}');
                let inner = self.text(i + 2, end);
                self.i = end + 1;
                let w = self.word();
                if inner == "HOME" {
                    w.push('~');
                }
            }
            Some('\'') => {
                // ANSI-C quoting.
                let mut j = i + 2;
                let mut s = String::new();
                while j < c.len() && c[j] != '\'' {
                    if c[j] == '\\' && j + 1 < c.len() {
                        j += 1;
                        s.push(match c[j] {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    } else {
                        s.push(c[j]);
                    }
                    j += 1;
                }
                self.i = j + 1;
                self.word().push_str(&s);
            }
            Some(ch) if ch.is_ascii_alphabetic() || ch == '_' => {
                let mut j = i + 1;
                while j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_') {
                    j += 1;
                }
                let name = self.text(i + 1, j);
                self.i = j;
                let w = self.word();
                if name == "HOME" {
                    w.push('~');
                }
            }
            Some(ch) if ch.is_ascii_digit() || "@*#?$!-".contains(ch) => {
                self.i = i + 2;
                self.word();
            }
            _ => {
                self.i = i + 1;
                self.word().push('$');
            }
        }
    }

    fn backtick(&mut self) {
        let mut j = self.i + 1;
        let mut inner = String::new();
        while j < self.c.len() && self.c[j] != '`' {
            if self.c[j] == '\\' && j + 1 < self.c.len() {
                j += 1;
            }
            inner.push(self.c[j]);
            j += 1;
        }
        self.out.subs.push(inner);
        self.i = j + 1;
        self.word();
    }

    fn skip_heredocs(&mut self) {
        for (delim, strip_tabs) in std::mem::take(&mut self.heredocs) {
            loop {
                if self.i >= self.c.len() {
                    return;
                }
                let end = self.c[self.i..].iter().position(|&ch| ch == '\n').map_or(self.c.len(), |p| self.i + p);
                let line = self.text(self.i, end);
                self.i = end + 1;
                let line = if strip_tabs { line.trim_start_matches('\t') } else { &line };
                if line == delim {
                    break;
                }
            }
        }
    }

    fn run(mut self) -> Lexed {
        while self.i < self.c.len() {
            let ch = self.c[self.i];
            match ch {
                ' ' | '\t' | '\r' => {
                    self.flush();
                    self.i += 1;
                }
                '\n' => {
                    self.flush();
                    self.out.toks.push(Tok::Op(";".into()));
                    self.i += 1;
                    self.skip_heredocs();
                }
                '#' if self.word.is_none() => {
                    while self.i < self.c.len() && self.c[self.i] != '\n' {
                        self.i += 1;
                    }
                }
                '\\' => {
                    match self.c.get(self.i + 1) {
                        Some('\n') => {}
                        Some(&next) => self.word().push(next),
                        None => {}
                    }
                    self.i += 2;
                }
                '\'' => {
                    let end =
                        self.c[self.i + 1..].iter().position(|&x| x == '\'').map_or(self.c.len(), |p| self.i + 1 + p);
                    let s = self.text(self.i + 1, end);
                    self.word().push_str(&s);
                    self.i = end + 1;
                }
                '"' => {
                    self.i += 1;
                    self.word();
                    while self.i < self.c.len() && self.c[self.i] != '"' {
                        match self.c[self.i] {
                            '\\' if self.c.get(self.i + 1).is_some_and(|n| "$`\"\\\n".contains(*n)) => {
                                let n = self.c[self.i + 1];
                                if n != '\n' {
                                    self.word().push(n);
                                }
                                self.i += 2;
                            }
                            '$' => self.dollar(),
                            '`' => self.backtick(),
                            other => {
                                self.word().push(other);
                                self.i += 1;
                            }
                        }
                    }
                    self.i += 1;
                }
                '$' => self.dollar(),
                '`' => self.backtick(),
                '<' | '>' if self.c.get(self.i + 1) == Some(&'(') => {
                    // Process substitution.
                    let end = matching(&self.c, self.i + 2, '(', ')');
                    let inner = self.text(self.i + 2, end);
                    self.out.subs.push(inner);
                    self.i = end + 1;
                    self.word();
                }
                ';' | '&' | '|' | '(' | ')' | '<' | '>' => self.operator(ch),
                other => {
                    self.word().push(other);
                    self.i += 1;
                }
            }
        }
        self.flush();
        self.out
    }

    fn operator(&mut self, ch: char) {
        let peek = |k: usize| self.c.get(self.i + k).copied();
        let redirect = matches!(ch, '<' | '>') || (ch == '&' && peek(1) == Some('>'));
        if redirect {
            // `2>`: the digits before the operator are a file descriptor, not a word.
            if self.word.as_ref().is_some_and(|w| !w.is_empty() && w.chars().all(|d| d.is_ascii_digit())) {
                self.word = None;
            }
            self.flush();
            let ops = ["&>>", "&>", "<<<", "<<-", "<<", "<>", "<&", ">>", ">|", ">&", "<", ">"];
            let rest: String = self.c[self.i..(self.i + 3).min(self.c.len())].iter().collect();
            let op = ops.iter().find(|o| rest.starts_with(**o)).copied().unwrap_or(">");
            self.i += op.chars().count();
            if op == "<<<" {
                self.pending_redir = Some("<<<".into());
            } else {
                self.pending_redir = Some(op.to_string());
            }
            return;
        }
        self.flush();
        let two: String = self.c[self.i..(self.i + 2).min(self.c.len())].iter().collect();
        let op = match two.as_str() {
            "&&" | "||" | ";;" | "|&" => two.clone(),
            _ => ch.to_string(),
        };
        self.i += op.chars().count();
        self.out.toks.push(Tok::Op(op));
    }
}

fn lex(s: &str) -> Lexed {
    Lexer { c: s.chars().collect(), i: 0, out: Lexed::default(), word: None, pending_redir: None, heredocs: Vec::new() }
        .run()
}

#[derive(Debug, Default, Clone)]
struct Simple {
    words: Vec<String>,
    redirs: Vec<(String, String)>,
}

/// Pipelines of simple commands (`a | b` is one pipeline; `;`, `&`, `&&`, `||`, `(`, `)`
/// separate pipelines).
fn parse(toks: Vec<Tok>) -> Vec<Vec<Simple>> {
    let mut pipelines = Vec::new();
    let mut pipeline: Vec<Simple> = Vec::new();
    let mut cur = Simple::default();
    let end_simple = |cur: &mut Simple, pipeline: &mut Vec<Simple>| {
        if !cur.words.is_empty() || !cur.redirs.is_empty() {
            pipeline.push(std::mem::take(cur));
        }
    };
    for t in toks {
        match t {
            Tok::Word(w) => cur.words.push(w),
            Tok::Redir(op, target) => cur.redirs.push((op, target)),
            Tok::Op(op) if op == "|" || op == "|&" => end_simple(&mut cur, &mut pipeline),
            Tok::Op(_) => {
                end_simple(&mut cur, &mut pipeline);
                if !pipeline.is_empty() {
                    pipelines.push(std::mem::take(&mut pipeline));
                }
            }
        }
    }
    end_simple(&mut cur, &mut pipeline);
    if !pipeline.is_empty() {
        pipelines.push(pipeline);
    }
    pipelines
}

// ---------------------------------------------------------------------------------------------
// Patterns over the whole text

fn is_name_char(c: char) -> bool {
    !c.is_whitespace() && !";&|(){}<>'\"`".contains(c)
}

/// `text` with the contents of quotes replaced by `_`: quoted text is data, not code, at this
/// level (a `sh -c '…'` or `eval '…'` script is analysed on its own, unquoted).
fn unquoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
                out.push('_');
            }
            '\'' => {
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                }
                out.push('_');
            }
            '"' => {
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push('_');
            }
            other => out.push(other),
        }
    }
    out
}

/// `:(){ :|:& };:` and every renaming and spacing of it: a function whose body runs itself in
/// a pipe or in the background. Also `perl -e 'fork while fork'`.
fn fork_bomb(text: &str) -> Option<Hit> {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if collapsed.contains("fork while fork") || squeezed.contains("forkwhilefork") || squeezed.contains("whilefork") {
        return hit("fork-bomb", "a self-multiplying fork loop");
    }
    let chars: Vec<char> = squeezed.chars().collect();
    // (name, index of the first character of the body)
    let mut defs: Vec<(String, usize)> = Vec::new();
    for at in 0..chars.len().saturating_sub(2) {
        if chars[at] == '(' && chars[at + 1] == ')' && chars[at + 2] == '{' {
            let mut s = at;
            while s > 0 && is_name_char(chars[s - 1]) {
                s -= 1;
            }
            let mut name: String = chars[s..at].iter().collect();
            if let Some(n) = name.strip_prefix("function").filter(|n| !n.is_empty()) {
                name = n.to_string();
            }
            if !name.is_empty() && defs.len() < MAX_FUNCTIONS {
                defs.push((name, at + 3));
            }
        }
    }
    // `function name { … }` (without parentheses).
    let words: Vec<&str> = collapsed.split(' ').collect();
    for w in words.windows(3) {
        if w[0] == "function" && w[2].starts_with('{') && !w[1].contains('(') {
            let needle = format!("function{}{{", w[1]);
            if let Some(p) = squeezed.find(&needle) {
                defs.push((w[1].to_string(), squeezed[..p].chars().count() + needle.chars().count()));
            }
        }
    }
    for (name, body_start) in defs {
        let end = matching(&chars, body_start, '{', '}');
        let body = &chars[body_start.min(chars.len())..end.min(chars.len())];
        let n: Vec<char> = name.chars().collect();
        for k in 0..body.len().saturating_sub(n.len() - 1) {
            if body[k..k + n.len()] != n[..] {
                continue;
            }
            let before = if k == 0 { None } else { Some(body[k - 1]) };
            let after = body.get(k + n.len()).copied();
            if before.is_some_and(is_name_char) || after.is_some_and(|a| is_name_char(a) && a != '&' && a != '|') {
                continue;
            }
            if matches!(after, Some('|' | '&')) || before == Some('|') {
                return hit("fork-bomb", format!("function `{name}` spawns itself in a pipe or in the background"));
            }
        }
    }
    None
}

/// `curl … | sh`: a download piped into an interpreter.
fn remote_code(pipeline: &[Simple]) -> Option<Hit> {
    let names: Vec<String> = pipeline
        .iter()
        .map(|s| match unwrap(&s.words) {
            Unwrapped::Cmd(w) => basename(&w[0]).to_string(),
            Unwrapped::Script(_) => "sh".into(),
            Unwrapped::Nothing => String::new(),
        })
        .collect();
    let fetch = names.iter().position(|n| matches!(n.as_str(), "curl" | "wget" | "fetch" | "aria2c"))?;
    let shell = names[fetch + 1..].iter().find(|n| is_interpreter(n))?;
    hit("remote-code", format!("a download piped into {shell}"))
}

fn is_interpreter(name: &str) -> bool {
    matches!(name, "sh" | "bash" | "dash" | "zsh" | "ksh" | "ash" | "mksh" | "fish" | "perl" | "ruby" | "php" | "node")
        || name.starts_with("python")
}

fn redirect(op: &str, target: &str, cx: &Ctx) -> Option<Hit> {
    if !matches!(op, ">" | ">>" | ">|" | "&>" | "&>>" | "<>") || target.is_empty() {
        return None;
    }
    let why = cx.protected_write(target)?;
    hit(
        if cx.is_block_device(target) { "write-block-device" } else { "write-protected" },
        format!("redirection `{op} {target}` writes to it: {why}"),
    )
}

// ---------------------------------------------------------------------------------------------
// Simple commands

fn basename(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

const RESERVED: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "case", "esac", "in", "select",
    "coproc", "(", ")",
];

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '[' || c == ']' || c == '+')
        }
        None => false,
    }
}

enum Unwrapped<'a> {
    /// The command that actually runs, with its arguments.
    Cmd(&'a [String]),
    /// A script that a shell, `eval`, `su -c` or `env -S` runs.
    Script(String),
    /// Nothing runs (only assignments, `command -v`, …).
    Nothing,
}

/// Skips options of a wrapper: those in `with_arg` take the next word (or `=value`).
fn skip_options(words: &[String], mut i: usize, with_arg: &[&str]) -> usize {
    while i < words.len() {
        let w = words[i].as_str();
        if w == "--" {
            return i + 1;
        }
        if !w.starts_with('-') || w == "-" {
            break;
        }
        if with_arg.contains(&w) {
            i += 2;
        } else {
            i += 1;
        }
    }
    i
}

fn unwrap(words: &[String]) -> Unwrapped<'_> {
    let mut w = words;
    loop {
        while let Some(first) = w.first() {
            if RESERVED.contains(&first.as_str()) || is_assignment(first) {
                w = &w[1..];
            } else {
                break;
            }
        }
        let Some(first) = w.first() else { return Unwrapped::Nothing };
        let name = basename(first);
        let next = match name {
            "sudo" => skip_options(
                w,
                1,
                &[
                    "-u",
                    "-g",
                    "-h",
                    "-p",
                    "-C",
                    "-r",
                    "-t",
                    "-U",
                    "-D",
                    "-R",
                    "-T",
                    "--user",
                    "--group",
                    "--host",
                    "--prompt",
                    "--close-from",
                    "--role",
                    "--type",
                    "--other-user",
                    "--chdir",
                    "--chroot",
                    "--command-timeout",
                ],
            ),
            "doas" => skip_options(w, 1, &["-u", "-C"]),
            "nice" => skip_options(w, 1, &["-n", "--adjustment"]),
            "nohup" | "builtin" | "unbuffer" => 1,
            "stdbuf" => skip_options(w, 1, &["-i", "-o", "-e"]),
            "exec" => skip_options(w, 1, &["-a"]),
            "setsid" => skip_options(w, 1, &[]),
            "time" => skip_options(w, 1, &["-f", "-o", "--format", "--output"]),
            "ionice" => skip_options(w, 1, &["-c", "-n", "--class", "--classdata"]),
            "chroot" => skip_options(w, 1, &["--userspec", "--groups"]) + 1,
            "chrt" => {
                let i = skip_options(w, 1, &[]);
                i + usize::from(w.get(i).is_some_and(|p| p.parse::<i64>().is_ok()))
            }
            "taskset" => {
                let i = skip_options(w, 1, &[]);
                if w[1..i].iter().any(|o| o == "-p" || o == "--pid") {
                    return Unwrapped::Cmd(w);
                }
                i + 1
            }
            "timeout" => skip_options(w, 1, &["-s", "-k", "--signal", "--kill-after"]) + 1,
            "xargs" => skip_options(
                w,
                1,
                &[
                    "-a",
                    "-d",
                    "-E",
                    "-I",
                    "-L",
                    "-n",
                    "-P",
                    "-s",
                    "--arg-file",
                    "--delimiter",
                    "--max-lines",
                    "--max-args",
                    "--max-procs",
                    "--max-chars",
                    "--process-slot-var",
                ],
            ),
            "command" => {
                if w.get(1).is_some_and(|o| o == "-v" || o == "-V") {
                    return Unwrapped::Nothing;
                }
                skip_options(w, 1, &[])
            }
            "busybox" | "toybox" => 1,
            "flock" => {
                let i = skip_options(w, 1, &["-w", "--timeout", "-E", "--conflict-exit-code"]);
                if let Some(c) = w.iter().position(|o| o == "-c" || o == "--command") {
                    return Unwrapped::Script(w.get(c + 1).cloned().unwrap_or_default());
                }
                i + 1
            }
            "env" => {
                let mut i = 1;
                while i < w.len() {
                    let o = w[i].as_str();
                    if o == "--" {
                        i += 1;
                        break;
                    } else if o == "-S" || o == "--split-string" {
                        return Unwrapped::Script(w[i + 1..].join(" "));
                    } else if let Some(s) = o.strip_prefix("-S").or_else(|| o.strip_prefix("--split-string=")) {
                        let mut script = s.to_string();
                        for rest in &w[i + 1..] {
                            script.push(' ');
                            script.push_str(rest);
                        }
                        return Unwrapped::Script(script);
                    } else if matches!(o, "-u" | "--unset" | "-C" | "--chdir") {
                        i += 2;
                    } else if o.starts_with('-') || is_assignment(o) {
                        i += 1;
                    } else {
                        break;
                    }
                }
                i
            }
            "su" | "runuser" => {
                for (k, o) in w.iter().enumerate() {
                    if o == "-c" || o == "--command" {
                        return Unwrapped::Script(w.get(k + 1).cloned().unwrap_or_default());
                    }
                    if let Some(s) = o.strip_prefix("--command=") {
                        return Unwrapped::Script(s.to_string());
                    }
                }
                return Unwrapped::Cmd(w);
            }
            "eval" => return Unwrapped::Script(w[1..].join(" ")),
            "sh" | "bash" | "dash" | "zsh" | "ksh" | "ash" | "mksh" | "posh" | "yash" => {
                let mut i = 1;
                let mut script = false;
                while i < w.len() && w[i].starts_with('-') && w[i] != "-" && w[i] != "--" {
                    let o = &w[i];
                    if !o.starts_with("--") && o.contains('c') {
                        script = true;
                    }
                    if matches!(o.as_str(), "-o" | "+o" | "-O" | "--rcfile" | "--init-file") {
                        i += 1;
                    }
                    i += 1;
                }
                if script {
                    return Unwrapped::Script(w.get(i).cloned().unwrap_or_default());
                }
                return Unwrapped::Cmd(w);
            }
            _ => return Unwrapped::Cmd(w),
        };
        if next >= w.len() {
            return Unwrapped::Nothing;
        }
        w = &w[next..];
    }
}

fn check_words(words: &[String], cx: &Ctx, depth: usize) -> Option<Hit> {
    if depth > MAX_DEPTH {
        return hit("too-deep", format!("shell nesting deeper than {MAX_DEPTH} levels is not analysed"));
    }
    match unwrap(words) {
        Unwrapped::Nothing => None,
        Unwrapped::Script(s) => analyze_at(&s, cx, depth + 1),
        Unwrapped::Cmd(w) => command(basename(&w[0]), &w[1..], cx, depth),
    }
}

/// Operands: the words that are not options (all of them after `--`). `with_arg` options take
/// the next word.
fn operands<'a>(args: &'a [String], with_arg: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut end = false;
    while i < args.len() {
        let a = args[i].as_str();
        if !end && a == "--" {
            end = true;
        } else if !end && a.starts_with('-') && a.len() > 1 {
            if with_arg.contains(&a) {
                i += 1;
            }
        } else if !a.is_empty() {
            out.push(a);
        }
        i += 1;
    }
    out
}

fn has_flag(args: &[String], short: char, long: &[&str]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| long.contains(&a.as_str()) || (a.starts_with('-') && !a.starts_with("--") && a[1..].contains(short)))
}

fn protected_operand(cmd: &str, ops: &[&str], cx: &Ctx) -> Option<Hit> {
    for op in ops.iter().filter(|o| !o.is_empty()) {
        if let Some(why) = cx.protected_write(op) {
            let rule = if cx.is_block_device(op) { "write-block-device" } else { "write-protected" };
            return hit(rule, format!("`{cmd}` would change {op}: {why}"));
        }
    }
    None
}

fn command(name: &str, args: &[String], cx: &Ctx, depth: usize) -> Option<Hit> {
    match name {
        "rm" => {
            let mut recursive = false;
            let mut ops = Vec::new();
            let mut end = false;
            for a in args {
                if !end && a == "--" {
                    end = true;
                } else if !end && a.starts_with("--") {
                    match a.as_str() {
                        "--recursive" => recursive = true,
                        "--no-preserve-root" => {
                            return hit("rm-no-preserve-root", "`rm --no-preserve-root` is never allowed")
                        }
                        _ => {}
                    }
                } else if !end && a.starts_with('-') && a.len() > 1 {
                    recursive |= a.contains(['r', 'R']);
                } else if !a.is_empty() {
                    ops.push(a.as_str());
                }
            }
            if recursive {
                for op in &ops {
                    if let Some(why) = cx.critical(op) {
                        return hit("rm-recursive-critical", format!("recursive removal of `{op}`: {why}"));
                    }
                }
            }
            protected_operand("rm", &ops, cx)
        }
        "unlink" | "rmdir" | "shred" | "srm" | "wipe" | "touch" | "tee" => {
            let ops = operands(
                args,
                &["-n", "--iterations", "-s", "--size", "-d", "-t", "-r", "--reference", "--random-source"],
            );
            protected_operand(name, &ops, cx)
        }
        "truncate" => protected_operand(name, &operands(args, &["-s", "--size", "-r", "--reference"]), cx),
        "mv" => {
            let ops = operands(args, &["-t", "--target-directory", "-S", "--suffix"]);
            // Without -t the last operand is the destination: moving into /etc is fine,
            // moving /etc away is not. Anything under a protected path is neither.
            let sources = if target_dir(args).is_some() || ops.len() < 2 { &ops[..] } else { &ops[..ops.len() - 1] };
            for op in sources {
                if let Some(why) = cx.critical(op) {
                    return hit("mv-critical", format!("moving `{op}`: {why}"));
                }
            }
            let target: Vec<&str> = target_dir(args).into_iter().collect();
            protected_operand("mv", &target, cx).or_else(|| protected_operand("mv", &ops, cx))
        }
        "cp" | "install" | "ln" | "rsync" | "scp" => {
            let ops = operands(
                args,
                &[
                    "-t",
                    "--target-directory",
                    "-S",
                    "--suffix",
                    "-m",
                    "--mode",
                    "-o",
                    "--owner",
                    "-g",
                    "--group",
                    "-e",
                    "--rsh",
                    "--exclude",
                    "--include",
                    "-f",
                    "--filter",
                ],
            );
            let dest = target_dir(args).or_else(|| if ops.len() >= 2 { ops.last().copied() } else { None });
            if name == "rsync" && args.iter().any(|a| a.starts_with("--delete")) {
                if let Some(why) = dest.and_then(|d| cx.critical(d)) {
                    return hit(
                        "rm-recursive-critical",
                        format!("`rsync --delete` into {}: {why}", dest.unwrap_or("")),
                    );
                }
            }
            protected_operand(name, &dest.into_iter().collect::<Vec<_>>(), cx)
        }
        "sed" | "perl"
            if args.iter().any(|a| {
                a.starts_with("-i") || a.starts_with("--in-place") || (name == "perl" && a.starts_with("-pi"))
            }) =>
        {
            protected_operand(name, &operands(args, &["-e", "-f", "--expression", "--file"]), cx)
        }
        "dd" => {
            for a in args {
                if let Some(t) = a.strip_prefix("of=") {
                    if let Some(why) = cx.protected_write(t) {
                        let rule = if cx.is_block_device(t) { "dd-device" } else { "write-protected" };
                        return hit(rule, format!("`dd of={t}`: {why}"));
                    }
                }
            }
            None
        }
        n if n == "mkfs" || n.starts_with("mkfs.") || n.starts_with("mkfs_") => {
            hit("mkfs", format!("`{n}` makes a new filesystem (erasing the old one)"))
        }
        "mke2fs" | "mkdosfs" | "mkntfs" | "mkexfatfs" | "mkreiserfs" | "blkdiscard" | "killall5" | "pvremove"
        | "vgremove" | "lvremove" => {
            hit(if name == "killall5" { "kill-all" } else { "mkfs" }, format!("`{name}` is never allowed"))
        }
        "mkswap" => {
            let ops = operands(args, &["-L", "-U", "-p", "--label", "--uuid", "--pagesize"]);
            protected_operand(name, &ops, cx).map(|h| Hit { rule: "mkfs", ..h })
        }
        "wipefs" if has_flag(args, 'a', &["--all"]) || has_flag(args, 'o', &["--offset"]) => {
            hit("mkfs", "`wipefs` erasing signatures")
        }
        "sfdisk" | "fdisk" | "cfdisk" | "gdisk" | "sgdisk" | "parted" => {
            let read_only = [
                "-l",
                "--list",
                "-d",
                "--dump",
                "-s",
                "--show-size",
                "-V",
                "--verify",
                "-J",
                "--json",
                "-p",
                "--print",
                "print",
                "-h",
                "--help",
                "--version",
            ];
            if name != "parted" && name != "sgdisk" && args.iter().any(|a| read_only.contains(&a.as_str())) {
                return None;
            }
            if name == "parted"
                && !args.iter().any(|a| {
                    matches!(a.as_str(), "mklabel" | "mktable" | "rm" | "mkpart" | "resizepart" | "rescue" | "mkfs")
                })
            {
                return None;
            }
            if name == "sgdisk"
                && !args.iter().any(|a| {
                    matches!(
                        a.as_str(),
                        "-Z" | "--zap-all" | "-z" | "--zap" | "-o" | "--clear" | "-d" | "-n" | "-g" | "-R"
                    ) || a.starts_with("--delete")
                        || a.starts_with("--new")
                        || a.starts_with("-d")
                        || a.starts_with("-n")
                })
            {
                return None;
            }
            hit("partition", format!("`{name}` rewriting a partition table"))
        }
        "cryptsetup"
            if args.iter().any(|a| matches!(a.as_str(), "luksFormat" | "erase" | "luksErase" | "reencrypt")) =>
        {
            hit("mkfs", "`cryptsetup` formatting or erasing a device")
        }
        "hdparm"
            if args.iter().any(|a| {
                a.starts_with("--security-erase")
                    || a.starts_with("--trim-sector-ranges")
                    || a.starts_with("--write-sector")
                    || a.starts_with("--fwdownload")
            }) =>
        {
            hit("mkfs", "`hdparm` erasing or rewriting a disk")
        }
        "mdadm" if args.iter().any(|a| a == "--zero-superblock" || a == "--create" || a == "-C") => {
            hit("mkfs", "`mdadm` rewriting a RAID device")
        }
        "chmod" | "chown" | "chgrp" | "chattr" | "setfacl" | "chcon" => {
            let recursive = has_flag(args, 'R', &["--recursive"]);
            let ops = operands(args, &["--reference", "-m", "-x", "-M", "-X"]);
            for op in &ops {
                if cx.resolve(op) == "/" && (op.starts_with('/') || recursive) {
                    return hit("chmod-root", format!("`{name}` on the root directory"));
                }
                if recursive {
                    if let Some(why) = cx.critical(op) {
                        return hit("chmod-recursive-critical", format!("recursive `{name}` of `{op}`: {why}"));
                    }
                }
            }
            // chmod's mode and chown's owner are words too; only absolute paths can match.
            protected_operand(name, &ops, cx)
        }
        "kill" => {
            let mut i = 0;
            match args.first().map(String::as_str) {
                Some("-s" | "-n" | "--signal") => i = 2,
                Some("-l" | "-L" | "--list" | "--table") => return None,
                Some(a) if a.starts_with('-') && a != "--" => i = 1,
                _ => {}
            }
            if args.get(i).is_some_and(|a| a == "--") {
                i += 1;
            }
            for a in args.iter().skip(i) {
                match a.as_str() {
                    "1" => return hit("kill-init", "signalling PID 1 (the init)"),
                    "-1" => return hit("kill-all", "signalling every process (pid -1)"),
                    _ => {}
                }
            }
            None
        }
        "find" => {
            let starts: Vec<&str> =
                args.iter().map(String::as_str).take_while(|a| !a.starts_with('-') && *a != "(" && *a != "!").collect();
            let starts = if starts.is_empty() { vec!["."] } else { starts };
            let mut i = 0;
            let mut destructive = args.iter().any(|a| a == "-delete");
            while i < args.len() {
                if matches!(args[i].as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
                    let end = args[i + 1..].iter().position(|a| a == ";" || a == "+").map_or(args.len(), |p| i + 1 + p);
                    let inner = &args[i + 1..end];
                    if let Some(h) = check_words(inner, cx, depth + 1) {
                        return Some(h);
                    }
                    if inner.first().is_some_and(|c| {
                        matches!(basename(c), "rm" | "shred" | "unlink" | "rmdir" | "mv" | "chmod" | "chown")
                    }) {
                        destructive = true;
                    }
                    i = end;
                }
                i += 1;
            }
            if destructive {
                for s in starts {
                    if let Some(why) = cx.critical(s) {
                        return hit("find-delete-critical", format!("`find {s}` deleting or changing files: {why}"));
                    }
                }
            }
            None
        }
        n if n.starts_with("python") || n == "perl" || n == "ruby" => {
            let code = args.join(" ");
            if code.contains("fork")
                && (code.contains("while") || code.contains("for ") || code.contains("until") || code.contains("loop"))
            {
                return hit("fork-bomb", format!("`{n}` forking in a loop"));
            }
            None
        }
        _ => None,
    }
}

/// `-t DIR` / `--target-directory=DIR`.
fn target_dir(args: &[String]) -> Option<&str> {
    for (i, a) in args.iter().enumerate() {
        if a == "-t" || a == "--target-directory" {
            return args.get(i + 1).map(String::as_str);
        }
        if let Some(d) = a.strip_prefix("--target-directory=") {
            return Some(d);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Vec<String>> {
        parse(lex(s).toks).into_iter().flatten().map(|s| s.words).collect()
    }

    #[test]
    fn arbitrary_input_never_panics_and_stays_fast() {
        // A small deterministic generator over the characters the lexer treats specially.
        let alphabet: Vec<char> = "rm -f/(){}|&;<>'\"`$\\\n#*~.=:ab0c\tEOF".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let started = std::time::Instant::now();
        for _ in 0..3000 {
            let mut s = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for _ in 0..(state % 48) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let _ = analyze(&s, None, &[]);
        }
        let hostile = "f(){ ".repeat(10_000) + &"$(".repeat(2_000) + &"eval ".repeat(1_000);
        let _ = analyze(&hostile, None, &[]);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn lexer_removes_quotes_and_splits_commands() {
        assert_eq!(
            words(r#"r"m" -'rf' \/ ; echo "a b"&&ls|wc"#),
            vec![vec!["rm", "-rf", "/"], vec!["echo", "a b"], vec!["ls"], vec!["wc"]]
        );
        assert_eq!(words("rm -rf $HOME/x ${HOME}"), vec![vec!["rm", "-rf", "~/x", "~"]]);
        assert_eq!(words("rm -rf \"$DIR/\"*"), vec![vec!["rm", "-rf", "/*"]]);
        let l = lex("echo $(rm -rf /) `mkfs /dev/sda` >(dd of=/dev/sda)");
        assert_eq!(l.subs, vec!["rm -rf /", "mkfs /dev/sda", "dd of=/dev/sda"]);
        let l = lex("cat <<EOF > /tmp/x\nrm -rf /\nEOF\necho done 2>&1 >/dev/null");
        let p = parse(l.toks);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0][0].words, vec!["cat"]);
        assert_eq!(p[0][0].redirs, vec![(">".to_string(), "/tmp/x".to_string())]);
        assert_eq!(p[1][0].words, vec!["echo", "done"]);
        assert_eq!(
            p[1][0].redirs,
            vec![(">&".to_string(), "1".to_string()), (">".to_string(), "/dev/null".to_string())]
        );
    }
}
