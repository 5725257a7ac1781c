//! A small YAML emitter that writes documents the way imgpkg's Go stack does.
//!
//! imgpkg serialises its YAML files with `sigs.k8s.io/yaml`, i.e. `gopkg.in/yaml.v2`'s
//! emitter over JSON-shaped data: mapping keys sorted, block style, indentless sequences
//! under mapping keys, and a particular choice of scalar style (plain, single- or
//! double-quoted, literal) plus line folding at 80 columns. The bytes matter: the
//! ImageLocations file is hashed into a layer DiffID and config digest, and the rewritten
//! `images.yml` we report should be what `imgpkg pull` would write. serde_yaml makes other
//! choices (quoting, folding), hence this emitter. It covers the value shapes imgpkg writes
//! (string, bool, null, maps, sequences); callers sort map keys.

/// A JSON-shaped YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Str(String),
    /// Entries in emission order (callers sort them, as Go's map marshalling does).
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

/// The column past which yaml.v2 folds long scalars at spaces.
const BEST_WIDTH: usize = 80;
/// yaml.v2's indentation step.
const INDENT: usize = 2;

/// Serialises `node` as yaml.v2 would (without the `---` line imgpkg prepends).
pub fn to_string(node: &Node) -> String {
    let mut e = Emitter::default();
    match node {
        Node::Map(entries) if !entries.is_empty() => e.map(entries, 0, false),
        Node::Seq(items) if !items.is_empty() => e.seq(items, 0, false),
        scalar => {
            e.value_scalar(scalar, 0);
        }
    }
    if e.col != 0 {
        e.out.push('\n');
    }
    e.out
}

#[derive(Default)]
struct Emitter {
    out: String,
    /// Characters (not bytes) since the last line break, as the Go emitter counts.
    col: usize,
}

impl Emitter {
    fn put(&mut self, c: char) {
        self.out.push(c);
        if c == '\n' {
            self.col = 0;
        } else {
            self.col += 1;
        }
    }

    fn put_str(&mut self, s: &str) {
        for c in s.chars() {
            self.put(c);
        }
    }

    /// Starts a new line at `indent` unless we are already at its start.
    fn line(&mut self, indent: usize) {
        if self.col != 0 {
            self.put('\n');
        }
        for _ in 0..indent {
            self.put(' ');
        }
    }

    /// A block mapping whose keys sit at `indent`; `inline_first` when the first key goes
    /// right after a `- ` sequence indicator.
    fn map(&mut self, entries: &[(String, Node)], indent: usize, inline_first: bool) {
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 || !inline_first {
                self.line(indent);
            }
            self.scalar(key, indent + INDENT, true);
            self.put(':');
            match value {
                Node::Map(m) if !m.is_empty() => self.map(m, indent + INDENT, false),
                // yaml.v2 writes sequences under a mapping key "indentless".
                Node::Seq(s) if !s.is_empty() => self.seq(s, indent, false),
                other => {
                    self.put(' ');
                    self.value_scalar(other, indent + INDENT);
                }
            }
        }
    }

    fn seq(&mut self, items: &[Node], indent: usize, inline_first: bool) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 || !inline_first {
                self.line(indent);
            }
            self.put_str("- ");
            match item {
                Node::Map(m) if !m.is_empty() => self.map(m, indent + INDENT, true),
                Node::Seq(s) if !s.is_empty() => self.seq(s, indent + INDENT, true),
                other => self.value_scalar(other, indent + INDENT),
            }
        }
    }

    fn value_scalar(&mut self, node: &Node, indent: usize) {
        match node {
            Node::Null => self.put_str("null"),
            Node::Bool(true) => self.put_str("true"),
            Node::Bool(false) => self.put_str("false"),
            Node::Str(s) => self.scalar(s, indent, false),
            Node::Map(_) => self.put_str("{}"),
            Node::Seq(_) => self.put_str("[]"),
        }
    }

    /// Writes a string scalar in the style yaml.v2 would pick. `indent` is where folded
    /// continuation lines and literal block content start.
    fn scalar(&mut self, s: &str, indent: usize, is_key: bool) {
        match select_style(s, is_key) {
            Style::Plain => self.plain(s, indent, !is_key),
            Style::Single => self.single(s, indent, !is_key),
            Style::Double => self.double(s, indent, !is_key),
            Style::Literal => self.literal(s, indent),
        }
    }

    fn fold(&mut self, indent: usize) {
        self.put('\n');
        for _ in 0..indent {
            self.put(' ');
        }
    }

    fn plain(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                let next_is_space = chars.get(i + 1) == Some(&' ');
                if allow_breaks && !spaces && self.col > BEST_WIDTH && !next_is_space {
                    self.fold(indent);
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                spaces = false;
            }
        }
    }

    fn single(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        let chars: Vec<char> = s.chars().collect();
        self.put('\'');
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                let next_is_space = chars.get(i + 1) == Some(&' ');
                if allow_breaks
                    && !spaces
                    && self.col > BEST_WIDTH
                    && i > 0
                    && i + 1 < chars.len()
                    && !next_is_space
                {
                    self.fold(indent);
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                spaces = false;
            }
        }
        self.put('\'');
    }

    fn double(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        let chars: Vec<char> = s.chars().collect();
        self.put('"');
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if !is_printable(c) || is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                match c {
                    '\0' => self.put('0'),
                    '\x07' => self.put('a'),
                    '\x08' => self.put('b'),
                    '\t' => self.put('t'),
                    '\n' => self.put('n'),
                    '\x0b' => self.put('v'),
                    '\x0c' => self.put('f'),
                    '\r' => self.put('r'),
                    '\x1b' => self.put('e'),
                    '"' => self.put('"'),
                    '\\' => self.put('\\'),
                    '\u{85}' => self.put('N'),
                    '\u{a0}' => self.put('_'),
                    '\u{2028}' => self.put('L'),
                    '\u{2029}' => self.put('P'),
                    other => {
                        let v = u32::from(other);
                        let esc = if v <= 0xff {
                            format!("x{v:02X}")
                        } else if v <= 0xffff {
                            format!("u{v:04X}")
                        } else {
                            format!("U{v:08X}")
                        };
                        self.put_str(&esc);
                    }
                }
                spaces = false;
            } else if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.col > BEST_WIDTH
                    && i != 0
                    && i + 1 != chars.len()
                {
                    self.fold(indent);
                    if chars.get(i + 1) == Some(&' ') {
                        self.put('\\');
                    }
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                spaces = false;
            }
        }
        self.put('"');
    }

    fn literal(&mut self, s: &str, indent: usize) {
        self.put('|');
        let chars: Vec<char> = s.chars().collect();
        if chars.first().is_some_and(|&c| c == ' ' || is_break(c)) {
            // An indentation indicator, because the content itself starts with whitespace.
            self.put(char::from(b'0' + INDENT as u8));
        }
        match chars.as_slice() {
            [] => self.put('-'),
            [.., last] if !is_break(*last) => self.put('-'),
            [_] => self.put('+'),
            [.., prev, _] if is_break(*prev) => self.put('+'),
            _ => {}
        }
        self.put('\n');
        let mut at_line_start = true;
        for &c in &chars {
            if is_break(c) {
                self.put('\n');
                at_line_start = true;
            } else {
                if at_line_start {
                    for _ in 0..indent {
                        self.put(' ');
                    }
                    at_line_start = false;
                }
                self.put(c);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// What yaml.v2's scalar analysis concludes about a string.
struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The YAML printable set as yaml.v2 tests it (note: it excludes TAB and anything outside
/// the Basic Multilingual Plane, which therefore gets escaped).
fn is_printable(c: char) -> bool {
    let v = u32::from(c);
    c == '\n'
        || (0x20..=0x7e).contains(&v)
        || (0xa0..=0xd7ff).contains(&v)
        || ((0xe000..=0xfffd).contains(&v) && v != 0xfeff)
}

fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let (mut line_breaks, mut special) = (false, false);
    let (mut leading_space, mut leading_break) = (false, false);
    let (mut trailing_space, mut trailing_break) = (false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_whitespace = true;
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_whitespace = chars.get(i + 1).is_none_or(|&n| is_blank(n));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_whitespace => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_whitespace => block_indicators = true,
                '#' if preceded_by_whitespace => block_indicators = true,
                _ => {}
            }
        }
        if !is_printable(c) {
            special = true;
        }
        let last = i + 1 == chars.len();
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= last;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= last;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = is_blank(c) || is_break(c) || c == '\0';
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || special {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
        a.block_allowed = false;
    }
    if line_breaks || block_indicators {
        a.block_plain_allowed = false;
    }
    a
}

fn select_style(s: &str, is_key: bool) -> Style {
    let a = analyze(s);
    // Breaks other than '\n' take yaml.v2 down single-quoted paths we do not reproduce;
    // double quoting keeps such (rare) strings valid and round-trippable.
    let odd_breaks = s.chars().any(|c| is_break(c) && c != '\n');
    let mut style = if s.contains('\n') {
        Style::Literal
    } else if resolves_to_string(s) && !is_base60_float(s) {
        Style::Plain
    } else {
        Style::Double
    };
    if is_key && a.multiline {
        style = Style::Double;
    }
    if style == Style::Plain && !a.block_plain_allowed {
        style = Style::Single;
    }
    if style == Style::Single && (!a.single_quoted_allowed || odd_breaks) {
        style = Style::Double;
    }
    if style == Style::Literal && (!a.block_allowed || is_key || odd_breaks) {
        style = Style::Double;
    }
    style
}

/// Whether yaml.v2 would read `s`, written plain, back as a string (and not as null, a
/// bool, a number or a timestamp).
fn resolves_to_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no",
        "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "", "~", "null", "Null",
        "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF", "<<",
    ];
    if SPECIAL.contains(&s) {
        return false;
    }
    match s.as_bytes().first() {
        Some(b'.') => !is_dot_float(s),
        Some(b'+' | b'-' | b'0'..=b'9') => {
            if is_timestamp(s) {
                return false;
            }
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            !(is_go_int(&plain) || is_yaml_float(&plain))
        }
        _ => true,
    }
}

/// `strconv.ParseFloat` success for strings starting with '.': `.5`, `.5e3`.
fn is_dot_float(s: &str) -> bool {
    let rest = &s[1..];
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(p) => (&rest[..p], Some(&rest[p + 1..])),
        None => (rest, None),
    };
    !mantissa.is_empty()
        && mantissa.bytes().all(|b| b.is_ascii_digit())
        && exp.is_none_or(is_exponent)
}

fn is_exponent(e: &str) -> bool {
    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `strconv.ParseInt(s, 0, 64)` / `ParseUint` acceptance (ignoring overflow, which only
/// moves a huge decimal number over to the float rule anyway).
fn is_go_int(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let all = |t: &str, f: fn(u8) -> bool| !t.is_empty() && t.bytes().all(f);
    if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        all(h, |b| b.is_ascii_hexdigit())
    } else if let Some(o) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        all(o, |b| (b'0'..=b'7').contains(&b))
    } else if let Some(bin) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        all(bin, |b| b == b'0' || b == b'1')
    } else if body.starts_with('0') {
        all(body, |b| (b'0'..=b'7').contains(&b))
    } else {
        all(body, |b| b.is_ascii_digit())
    }
}

/// yaml.v2's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(p) => (&body[..p], Some(&body[p + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()),
        Some((int, frac)) => {
            !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    mantissa_ok && exp.is_none_or(is_exponent)
}

/// yaml.v2 reads `YYYY-M-D` (optionally followed by a time) as a timestamp.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let rest = &s[5..];
    let mut parts = rest.splitn(2, '-');
    let month = parts.next().unwrap_or("");
    let Some(tail) = parts.next() else {
        return false;
    };
    let day_len = tail.bytes().take_while(u8::is_ascii_digit).count();
    let num_ok = |t: &str| (1..=2).contains(&t.len()) && t.bytes().all(|c| c.is_ascii_digit());
    num_ok(month)
        && num_ok(&tail[..day_len])
        && (day_len == tail.len() || matches!(tail.as_bytes()[day_len], b'T' | b't' | b' '))
}

/// yaml.v2 quotes YAML 1.1 sexagesimal floats such as `190:20:30.15`.
fn is_base60_float(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    if !body.starts_with(|c: char| c.is_ascii_digit()) || !s.contains(':') {
        return false;
    }
    let (main, frac) = match body.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (body, None),
    };
    let mut groups = main.split(':');
    let head = groups.next().unwrap_or("");
    let head_ok = head.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    let mut n = 0;
    let tail_ok = groups.all(|g| {
        n += 1;
        let d = g.as_bytes();
        match d {
            [x] => x.is_ascii_digit(),
            [a, b] => (b'0'..=b'5').contains(a) && b.is_ascii_digit(),
            _ => false,
        }
    });
    head_ok
        && n > 0
        && tail_ok
        && frac.is_none_or(|f| f.bytes().all(|b| b.is_ascii_digit() || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Node {
        Node::Str(v.to_owned())
    }

    fn map(entries: Vec<(&str, Node)>) -> Node {
        Node::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    #[test]
    fn scalar_styles_match_yaml_v2() {
        let cases = [
            ("plain", "plain"),
            ("1.0", "\"1.0\""),
            ("123", "\"123\""),
            ("0x1F", "\"0x1F\""),
            ("true", "\"true\""),
            ("yes", "\"yes\""),
            ("null", "\"null\""),
            ("", "\"\""),
            ("2001-12-14", "\"2001-12-14\""),
            ("1:20", "\"1:20\""),
            ("127.0.0.1:5000/src/app1:v1", "127.0.0.1:5000/src/app1:v1"),
            ("a: b", "'a: b'"),
            ("- x", "'- x'"),
            ("-x", "-x"),
            ("it's", "it's"),
            ("'q", "'''q'"),
            (" lead", "' lead'"),
            ("a #b", "'a #b'"),
            ("a#b", "a#b"),
            ("tab\there", "\"tab\\there\""),
            ("emoji 😀", "\"emoji \\U0001F600\""),
            ("é", "é"),
            ("1.2.3", "1.2.3"),
            ("v1", "v1"),
            ("1e3", "\"1e3\""),
            ("1_000", "\"1_000\""),
            ("08", "\"08\""),
            ("8a", "8a"),
            ("07", "\"07\""),
        ];
        for (input, want) in cases {
            let got = to_string(&map(vec![("k", s(input))]));
            assert_eq!(got, format!("k: {want}\n"), "input {input:?}");
        }
    }

    #[test]
    fn literal_blocks_and_chomping() {
        let got = to_string(&map(vec![("k", s("a\nb\n"))]));
        assert_eq!(got, "k: |\n  a\n  b\n");
        let got = to_string(&map(vec![("k", s("a\nb"))]));
        assert_eq!(got, "k: |-\n  a\n  b\n");
        let got = to_string(&map(vec![("k", s("a\n\n"))]));
        assert_eq!(got, "k: |+\n  a\n\n");
        let got = to_string(&map(vec![("k", s(" a\nb\n"))]));
        assert_eq!(got, "k: |2\n   a\n  b\n");
        // Trailing space forbids block style.
        let got = to_string(&map(vec![("k", s("a \nb"))]));
        assert_eq!(got, "k: \"a \\nb\"\n");
    }

    #[test]
    fn folds_long_plain_scalars() {
        let long = "word ".repeat(30);
        let long = long.trim_end();
        let got = to_string(&map(vec![("key", s(long))]));
        let lines: Vec<&str> = got.lines().collect();
        assert!(lines.len() > 1, "{got}");
        assert!(lines[1].starts_with("  word"), "{got}");
        // Folding is lossless for a YAML reader.
        let back: std::collections::BTreeMap<String, String> =
            serde_yaml::from_str(&got).expect("valid yaml");
        assert_eq!(back["key"], long);
    }

    #[test]
    fn nested_shapes() {
        let doc = map(vec![
            ("apiVersion", s("imgpkg.carvel.dev/v1alpha1")),
            (
                "images",
                Node::Seq(vec![map(vec![
                    ("annotations", map(vec![("x", s("y\n"))])),
                    ("image", s("r@sha256:00")),
                ])]),
            ),
            ("empty", Node::Seq(vec![])),
            ("kind", s("ImagesLock")),
            ("nothing", Node::Null),
            // yaml.v2 reads a plain `n` as false, so such a key is quoted.
            ("n", Node::Null),
        ]);
        assert_eq!(
            to_string(&doc),
            "apiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n- annotations:\n    x: |\n      y\n  image: r@sha256:00\nempty: []\nkind: ImagesLock\nnothing: null\n\"n\": null\n"
        );
    }

    #[test]
    fn output_always_parses_back() {
        let samples = [
            "a: b",
            "#x",
            "x #y",
            "'",
            "\"",
            "\\",
            "a\tb",
            "\u{85}",
            "x\r\ny",
            "  ",
            " ",
            "a\n ",
            "- ",
            "? x",
            "@at",
            "%p",
            "`b",
            "{x}",
            "[y]",
            "a,b",
            "---",
            "...x",
            "a\u{2028}b",
            "\u{feff}bom",
            "trail ",
            "multi\nline \n",
            "\n",
            "\n\n",
            "x\n\n\ny",
        ];
        for v in samples {
            let got = to_string(&map(vec![("k", s(v))]));
            let back: std::collections::BTreeMap<String, String> =
                serde_yaml::from_str(&got).unwrap_or_else(|e| panic!("{v:?} -> {got:?}: {e}"));
            assert_eq!(back["k"], v, "{got:?}");
        }
    }
}
