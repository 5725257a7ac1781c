//! The console's page shell and the small formatters every page uses: sizes in human units,
//! times relative and absolute, short digests, JSON re-indented as it was written.

use maud::{html, Markup, DOCTYPE};

use super::Viewer;

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Repositories,
    Bundles,
    Upload,
    Imports,
    Storage,
    SignIn,
}

/// The tab icon, inline (a data URL the policy's `img-src` allows): no `/favicon.ico`
/// request that would answer 404.
pub const ICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect width='16' height='16' rx='3' fill='%232456d6'/%3E%3Cpath d='M4 10h8v2H4zM5 6h6v3H5z' fill='white'/%3E%3C/svg%3E";

/// The whole page around `body`. Scripts and styles come from `/ui/static/` only (the
/// Content-Security-Policy allows nothing else); htmx is told to inject no style and
/// evaluate no code, so it needs no exception to that policy.
pub fn page(title: &str, viewer: &Viewer, nav: Nav, body: Markup) -> Markup {
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            a href=(href) aria-current=[(nav == n).then_some("page")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0}"#;
                title { (title) " · airdock" }
                link rel="icon" href=(ICON);
                link rel="stylesheet" href=(super::assets::css_path());
                script src=(super::assets::js_path()) {}
                script src=(super::assets::htmx_path()) defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/" { "airdock" }
                    nav {
                        (item(Nav::Repositories, "/ui/", "Repositories"))
                        (item(Nav::Bundles, "/ui/bundles", "Bundles"))
                        @if viewer.is_admin() {
                            (item(Nav::Upload, "/ui/upload", "Upload"))
                            (item(Nav::Imports, "/ui/imports", "Imports"))
                            (item(Nav::Storage, "/ui/storage", "Storage"))
                        }
                    }
                    div.who {
                        button.theme type="button" id="theme" title="Switch light / dark theme" { "◐" }
                        @if let Some(u) = &viewer.user {
                            span.user { (u) }
                            form.inline method="post" action="/ui/logout" {
                                (csrf_field(viewer))
                                button type="submit" { "Sign out" }
                            }
                        } @else if viewer.auth_on() && nav != Nav::SignIn {
                            a href="/ui/login" { "Sign in" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="_csrf" value=(viewer.csrf); }
}

/// `1.5 MiB`: binary units, three significant digits.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 {
        format!("{v:.2} {}", UNITS[u])
    } else if v < 100.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// `3 minutes ago` for a time `secs` before `now` (both seconds since the epoch).
pub fn ago(then: u64, now: u64) -> String {
    let d = now.saturating_sub(then);
    let (n, unit) = match d {
        0..=59 => return "just now".to_owned(),
        60..=3599 => (d / 60, "minute"),
        3600..=86_399 => (d / 3600, "hour"),
        86_400..=2_591_999 => (d / 86_400, "day"),
        2_592_000..=31_535_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// `1 hour 30 minutes`: a length of time in its two largest units.
pub fn span(secs: u64) -> String {
    let units = [
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut rest = secs;
    let mut parts = Vec::new();
    for (size, name) in units {
        let n = rest / size;
        if n > 0 && parts.len() < 2 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
            rest -= n * size;
        } else if !parts.is_empty() {
            break;
        }
    }
    if parts.is_empty() {
        return "0 seconds".to_owned();
    }
    parts.join(" ")
}

/// A time as the console shows it: relative, with the absolute UTC time beside it and in
/// the element's `datetime`. `0` (a tag older than tag times) is "unknown".
pub fn when(then: u64) -> Markup {
    if then == 0 {
        return html! { span.muted { "unknown" } };
    }
    let abs = crate::sys::rfc3339(then);
    html! {
        time datetime=(abs) title=(abs) { (ago(then, crate::sys::now())) }
        " " small.muted { (abs.replace('T', " ")) }
    }
}

/// `sha256:0123456789ab`: enough to tell digests apart on a page.
pub fn short(digest: &str) -> &str {
    let end = digest.find(':').map_or(0, |i| i + 1) + 12;
    digest.get(..end).unwrap_or(digest)
}

/// A readable name of a manifest media type.
pub fn kind(media_type: &str) -> &str {
    match media_type {
        airdock_storage::OCI_MANIFEST => "OCI image",
        airdock_storage::OCI_INDEX => "OCI index",
        airdock_storage::DOCKER_MANIFEST => "Docker image",
        airdock_storage::DOCKER_LIST => "Docker manifest list",
        other => other,
    }
}

/// JSON text re-indented by two spaces, every byte of every string and number kept as it
/// was (re-serializing would reorder keys and rewrite numbers). Not JSON → unchanged.
pub fn pretty_json(text: &str) -> String {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Skip whitespace to see whether the container is empty.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// A button that copies `text` to the clipboard (console.js), beside the text itself.
pub fn copyable(text: &str) -> Markup {
    html! {
        div.copy {
            code { (text) }
            button type="button" data-copy=(text) title="Copy to clipboard" { "Copy" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_human_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(50 << 20), "50.0 MiB");
        assert_eq!(bytes(300 << 30), "300 GiB");
        assert_eq!(bytes(u64::MAX), "16384 PiB");
    }

    #[test]
    fn relative_times() {
        assert_eq!(ago(100, 100), "just now");
        assert_eq!(ago(0, 60), "1 minute ago");
        assert_eq!(ago(0, 7200), "2 hours ago");
        assert_eq!(ago(0, 86_400 * 3), "3 days ago");
        assert_eq!(ago(200, 100), "just now");
    }

    #[test]
    fn spans() {
        assert_eq!(span(0), "0 seconds");
        assert_eq!(span(3600), "1 hour");
        assert_eq!(span(5400), "1 hour 30 minutes");
        assert_eq!(span(86_400 + 61), "1 day");
        assert_eq!(span(90), "1 minute 30 seconds");
    }

    #[test]
    fn json_is_reindented_not_rewritten() {
        let src = r#"{"b":1,"a":[{"x":"a,b{}"},[]],"e":{},"n":1.50e3}"#;
        let out = pretty_json(src);
        assert_eq!(
            out,
            "{\n  \"b\": 1,\n  \"a\": [\n    {\n      \"x\": \"a,b{}\"\n    },\n    []\n  ],\n  \"e\": {},\n  \"n\": 1.50e3\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(
            v,
            serde_json::from_str::<serde_json::Value>(src).expect("json")
        );
        assert_eq!(pretty_json("not json {"), "not json {");
        assert_eq!(pretty_json(r#"{"q":"\"}"}"#), "{\n  \"q\": \"\\\"}\"\n}");
    }

    #[test]
    fn short_digests() {
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(short("x"), "x");
    }
}
