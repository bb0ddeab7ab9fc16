//! `unsafe` only where allowed: a small Rust tokenizer (enough to tell code from comments and
//! literals), and the check that every crate keeps the workspace's `unsafe_code = "deny"`.

#[derive(Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Punct(char),
}

/// A token outside comments and literals, with its 1-based line.
#[derive(Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

struct Lexer {
    c: Vec<char>,
    i: usize,
    line: usize,
}

impl Lexer {
    fn peek(&self, n: usize) -> Option<char> {
        self.c.get(self.i + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.c.get(self.i).copied()?;
        self.i += 1;
        if ch == '\n' {
            self.line += 1;
        }
        Some(ch)
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(ch) = self.peek(0).filter(|&c| c.is_alphanumeric() || c == '_') {
            w.push(ch);
            self.i += 1;
        }
        w
    }

    /// After the opening `"`: up to and including the closing one.
    fn string(&mut self) {
        while let Some(ch) = self.bump() {
            match ch {
                '\\' => {
                    self.bump();
                }
                '"' => return,
                _ => {}
            }
        }
    }

    /// At the `#`s or `"` after `r`: up to the `"` followed by as many `#`s.
    fn raw_string(&mut self) {
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            hashes += 1;
            self.bump();
        }
        self.bump(); // the opening quote
        while let Some(ch) = self.bump() {
            if ch == '"' && (0..hashes).all(|n| self.peek(n) == Some('#')) {
                self.i += hashes;
                return;
            }
        }
    }

    /// At a `'`: a char literal is skipped; a lifetime or label leaves its name to be read
    /// as a word.
    fn quote(&mut self) {
        if self.peek(1) == Some('\\') {
            // '\n', '\'', '\u{1F600}': up to the closing quote.
            self.i += 3;
            while let Some(ch) = self.peek(0) {
                if ch == '\n' {
                    return;
                }
                self.i += 1;
                if ch == '\'' {
                    return;
                }
            }
        } else if self.peek(2) == Some('\'') {
            self.bump();
            self.bump();
            self.bump();
        } else {
            self.i += 1;
        }
    }

    fn block_comment(&mut self) {
        let mut depth = 0;
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some('/'), Some('*')) => {
                    depth += 1;
                    self.i += 2;
                }
                (Some('*'), Some('/')) => {
                    depth -= 1;
                    self.i += 2;
                    if depth == 0 {
                        return;
                    }
                }
                (Some(_), _) => {
                    self.bump();
                }
                (None, _) => return,
            }
        }
    }
}

pub fn tokens(src: &str) -> Vec<Token> {
    let mut lx = Lexer {
        c: src.chars().collect(),
        i: 0,
        line: 1,
    };
    let mut out = Vec::new();
    while let Some(ch) = lx.peek(0) {
        let line = lx.line;
        match ch {
            '/' if lx.peek(1) == Some('/') => {
                while lx.peek(0).is_some_and(|c| c != '\n') {
                    lx.i += 1;
                }
            }
            '/' if lx.peek(1) == Some('*') => lx.block_comment(),
            '"' => {
                lx.bump();
                lx.string();
            }
            '\'' => lx.quote(),
            c if c.is_alphabetic() || c == '_' => {
                let w = lx.word();
                let (next, after) = (lx.peek(0), lx.peek(1));
                let raw_start =
                    next == Some('"') || (next == Some('#') && matches!(after, Some('#' | '"')));
                match w.as_str() {
                    "r" | "br" | "cr" if raw_start => lx.raw_string(),
                    // r#ident: a raw identifier, never a keyword.
                    "r" if next == Some('#') => {
                        lx.i += 1;
                        let w = lx.word();
                        out.push(Token {
                            tok: Tok::Ident(format!("r#{w}")),
                            line,
                        });
                    }
                    "b" | "c" if next == Some('"') => {
                        lx.bump();
                        lx.string();
                    }
                    "b" if next == Some('\'') => lx.quote(),
                    _ => out.push(Token {
                        tok: Tok::Ident(w),
                        line,
                    }),
                }
            }
            // Numbers (with suffixes such as 1u8) are no identifiers.
            c if c.is_ascii_digit() => {
                lx.word();
            }
            c if c.is_whitespace() => {
                lx.bump();
            }
            c => {
                lx.bump();
                out.push(Token {
                    tok: Tok::Punct(c),
                    line,
                });
            }
        }
    }
    out
}

/// `unsafe`, or an attribute weakening the `unsafe_code` lint (`allow(unsafe_code)` and the
/// like), in a crate not allowed to have them. `files` are (path for messages, source).
pub fn unsafe_code(krate: &str, files: &[(String, String)], allowed: &[&str]) -> Vec<String> {
    if allowed.contains(&krate) {
        return Vec::new();
    }
    let only = if allowed.is_empty() {
        "no crate".to_string()
    } else {
        allowed.join(", ")
    };
    let mut out = Vec::new();
    for (path, src) in files {
        let toks = tokens(src);
        for (i, t) in toks.iter().enumerate() {
            let Tok::Ident(w) = &t.tok else { continue };
            if w == "unsafe" {
                out.push(format!(
                    "{path}:{}: `unsafe` in {krate} (allowed only in {only})",
                    t.line
                ));
            } else if crate::rules::LINT_WEAKENERS.contains(&w.as_str())
                && toks.get(i + 1).map(|t| &t.tok) == Some(&Tok::Punct('('))
                && names_unsafe_code(&toks[i + 1..])
            {
                out.push(format!(
                    "{path}:{}: `{w}(unsafe_code)` in {krate} (allowed only in {only})",
                    t.line
                ));
            }
        }
    }
    out
}

/// From an opening parenthesis: does `unsafe_code` appear before the matching one?
fn names_unsafe_code(toks: &[Token]) -> bool {
    let mut depth = 0;
    for t in toks {
        match &t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    return false;
                }
            }
            Tok::Ident(w) if w == "unsafe_code" => return true,
            _ => {}
        }
    }
    false
}

/// The crate's Cargo.toml must say `[lints] workspace = true`, or the workspace's
/// `unsafe_code = "deny"` does not apply to it.
pub fn lints_table(krate: &str, manifest_path: &str, toml: &str) -> Option<String> {
    let mut table = String::new();
    for line in toml.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.starts_with('[') {
            table = compact;
            continue;
        }
        let inherits = match table.as_str() {
            "[lints]" => compact == "workspace=true",
            "" => compact == "lints.workspace=true" || compact == "lints={workspace=true}",
            _ => false,
        };
        if inherits {
            return None;
        }
    }
    Some(format!(
        "{manifest_path}: {krate} lacks `[lints] workspace = true`, so the workspace's `unsafe_code = \"deny\"` does not apply to it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: &[&str] = &["warden-sandbox"];

    fn check(src: &str) -> Vec<String> {
        unsafe_code("warden-x", &[("src/lib.rs".into(), src.into())], ALLOWED)
    }

    #[test]
    fn unsafe_code_fails_with_file_and_line() {
        let src = "fn f(p: *const u8) -> u8 {\n    unsafe { p.read() }\n}\n";
        assert_eq!(
            check(src),
            ["src/lib.rs:2: `unsafe` in warden-x (allowed only in warden-sandbox)"]
        );
    }

    #[test]
    fn unsafe_in_comments_and_literals_is_not_code() {
        let src = r####"
            // unsafe in a line comment
            /* unsafe /* nested: unsafe */ still inside: unsafe */
            /// doc comment: unsafe { }
            #[doc = "unsafe"]
            fn f<'a>(x: &'a str) -> &'a str {
                let _ = "unsafe { }";
                let _ = "an escaped \" quote, then unsafe";
                let _ = r#"raw "unsafe" string"#;
                let _ = br##"raw bytes "# unsafe"##;
                let _ = b"unsafe";
                let _ = c"unsafe";
                let _ = ('"', '\'', b'"', '\u{22}', 'x');
                let unsafe_code = 1;
                let r#unsafe = 2;
                'outer: loop { break 'outer; }
                x
            }
        "####;
        assert_eq!(check(src), Vec::<String>::new());
    }

    #[test]
    fn literals_and_lifetimes_do_not_hide_code_after_them() {
        // A quote char, a lifetime, a raw string and a nested comment, each followed by code.
        let src = "let q = '\"'; unsafe {}\n\
                   fn f<'a>(x: &'a u8) { unsafe {} }\n\
                   let r = r#\"a \" b\"#; unsafe {}\n\
                   /* a /* b */ c */ unsafe {}\n";
        let lines: Vec<usize> = check(src)
            .iter()
            .filter_map(|v| v.split(':').nth(1)?.parse().ok())
            .collect();
        assert_eq!(lines, [1, 2, 3, 4]);
    }

    #[test]
    fn weakening_the_lint_fails() {
        let src = "#![allow(unsafe_code)]\n\
                   #[cfg_attr(test, expect(dead_code, unsafe_code))]\n\
                   #[allow(dead_code)]\n\
                   fn f() {}\n";
        assert_eq!(
            check(src),
            [
                "src/lib.rs:1: `allow(unsafe_code)` in warden-x (allowed only in warden-sandbox)",
                "src/lib.rs:2: `expect(unsafe_code)` in warden-x (allowed only in warden-sandbox)",
            ]
        );
    }

    #[test]
    fn the_allowed_crate_may() {
        let files = [("src/lib.rs".to_string(), "unsafe {}".to_string())];
        assert_eq!(
            unsafe_code("warden-sandbox", &files, ALLOWED),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_crate_without_workspace_lints_fails() {
        let ok = "[package]\nname = \"a\"\n\n[lints]\nworkspace = true\n";
        assert_eq!(lints_table("a", "a/Cargo.toml", ok), None);
        let own = "[package]\nname = \"a\"\n\n[lints.rust]\nunsafe_code = \"allow\"\n";
        let missing = "[package]\nname = \"a\"\nworkspace = true\n";
        for toml in [own, missing] {
            assert_eq!(
                lints_table("a", "a/Cargo.toml", toml).as_deref(),
                Some(
                    "a/Cargo.toml: a lacks `[lints] workspace = true`, so the workspace's `unsafe_code = \"deny\"` does not apply to it"
                )
            );
        }
    }
}
