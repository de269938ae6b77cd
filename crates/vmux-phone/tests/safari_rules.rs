//! The rules Safari imposes on the phone page, checked by reading its
//! code: Debian's WebKit builds have no WebAuthn, so no browser here can
//! run the page as Safari does.
//!
//! 1. Safari (iOS and macOS) lets `navigator.credentials.create/get`, and
//!    `Notification.requestPermission` (iOS web apps), run only while the
//!    user's tap is being handled: each such call must sit in a function
//!    bound to a `click` listener (as the listener, or the first call of
//!    an arrow listener), at the top of it (not inside a nested function
//!    or callback), with nothing awaited before it. An `await` of the
//!    call itself is fine: the call is made before the await suspends.
//! 2. The page uses no API that iOS Safari 16.4 (the first with web push
//!    for home-screen apps) lacks: [`MISSING_IN_SAFARI`].
//!
//! Each rule is also checked against a planted violation, so that the
//! checker is seen to fail.

use std::path::Path;

/// The calls that need the user's tap in Safari.
const GESTURE_CALLS: [&str; 3] = [
    "navigator.credentials.create(",
    "navigator.credentials.get(",
    "Notification.requestPermission(",
];

/// APIs the page must not use, each with why (iOS Safari 16.4).
const MISSING_IN_SAFARI: [(&str, &str); 11] = [
    ("requestIdleCallback", "Safari has no requestIdleCallback"),
    ("scheduler.postTask", "Safari has no scheduler"),
    ("navigator.vibrate", "iOS Safari has no vibration"),
    (
        "navigator.connection",
        "Safari has no Network Information API",
    ),
    (
        "parseCreationOptionsFromJSON",
        "Safari added it only in 18.4",
    ),
    (
        "parseRequestOptionsFromJSON",
        "Safari added it only in 18.4",
    ),
    ("withResolvers", "Promise.withResolvers came in Safari 17.4"),
    ("fromBase64", "Uint8Array.fromBase64 came in Safari 18.2"),
    (
        "toBase64",
        "Uint8Array.prototype.toBase64 came in Safari 18.2",
    ),
    ("periodicSync", "Safari has no Periodic Background Sync"),
    (
        "for await",
        "Safari cannot iterate a ReadableStream with for await",
    ),
];

/// The page's file `assets/NAME`.
fn asset(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name);
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read assets/{name}: {e}"))
}

/// The page's scripts: the page and its service worker.
fn assets() -> Vec<(&'static str, String)> {
    ["app.js", "sw.js"]
        .into_iter()
        .map(|name| (name, asset(name)))
        .collect()
}

#[test]
fn the_page_makes_its_passkey_and_permission_calls_directly_in_click_handlers() {
    let app = asset("app.js");
    let calls = gesture_calls(&app);
    // The page has them (enrolment, sign-in, approve, approve all,
    // notifications): a checker that found none would check nothing.
    assert!(calls >= 5, "found only {calls} gesture calls in app.js");
    let broken = check_gestures(&app);
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_page_uses_no_api_that_safari_lacks() {
    for (name, js) in assets() {
        let broken = check_apis(&js);
        assert!(broken.is_empty(), "{name}: {}", broken.join("\n"));
    }
}

#[test]
fn planted_violations_are_found() {
    let app = asset("app.js");
    let plant = |from: &str, to: &str| {
        assert!(app.contains(from), "app.js no longer has {from:?}");
        app.replacen(from, to, 1)
    };
    // Something awaited before the call.
    let awaited = plant(
        "function onSignIn() {",
        "async function onSignIn() {\n  await api('/api/session');",
    );
    assert_eq!(check_gestures(&awaited).len(), 1, "an await before get()");
    // The call moved into a callback (a timer, a promise's then).
    let deferred = plant(
        "  navigator.credentials.create({ publicKey: enrolment.publicKey })",
        "  setTimeout(() => navigator.credentials.create({ publicKey: enrolment.publicKey }), 0);\n  Promise.resolve()",
    );
    assert_eq!(
        check_gestures(&deferred).len(),
        1,
        "create() inside a callback"
    );
    // A handler that is not bound to a click any more.
    let unbound = plant(
        "$('signin-button').addEventListener('click', onSignIn);",
        "$('signin-button').addEventListener('focus', onSignIn);",
    );
    assert_eq!(check_gestures(&unbound).len(), 1, "a handler off click");
    // A call in a function that is no click handler at all.
    let stray = format!(
        "{app}\nasync function later() {{\n  await fetch('/x');\n  return navigator.credentials.get({{ publicKey: {{}} }});\n}}\n"
    );
    assert_eq!(check_gestures(&stray).len(), 1, "a stray get()");
    // Comments and strings do not count as code, either way.
    let commented = format!("{app}\n// navigator.credentials.get( in a comment\nconst s = 'navigator.credentials.get(';\n");
    assert!(check_gestures(&commented).is_empty());
    // APIs Safari lacks.
    for (api, _) in MISSING_IN_SAFARI {
        let planted = format!("{app}\nconst x = window.{api};\n");
        assert_eq!(check_apis(&planted).len(), 1, "{api}");
    }
}

/// How many gesture calls `js` makes.
fn gesture_calls(js: &str) -> usize {
    let bare = strip(js, true);
    GESTURE_CALLS.iter().map(|c| bare.matches(c).count()).sum()
}

/// What in `js` breaks rule 1, one sentence each.
fn check_gestures(js: &str) -> Vec<String> {
    let code = strip(js, false);
    let bare = strip(js, true);
    let functions = functions(&bare);
    let mut broken = Vec::new();
    for call in GESTURE_CALLS {
        for (at, _) in bare.match_indices(call) {
            let line = bare[..at].matches('\n').count() + 1;
            let what = format!("{} on line {line}", call.trim_end_matches('('));
            let Some(f) = functions
                .iter()
                .filter(|f| f.body.0 < at && at < f.body.1)
                .max_by_key(|f| f.body.0)
            else {
                broken.push(format!("{what} is not inside a named function"));
                continue;
            };
            if let Some(why) = nested(&bare, f.body.0 + 1, at) {
                broken.push(format!("{what} is {why} in {}", f.name));
                continue;
            }
            let before = &bare[f.body.0 + 1..at];
            let own_await = before.trim_end().ends_with("await");
            let awaits = words(before)
                .filter(|w| *w == "await" || *w == "yield")
                .count();
            if awaits > usize::from(own_await) {
                broken.push(format!(
                    "{what} comes after an await in {}: the tap has been handled by then",
                    f.name
                ));
                continue;
            }
            if !bound_to_click(&code, &f.name) {
                broken.push(format!(
                    "{what} is in {}, which is not a click listener",
                    f.name
                ));
            }
        }
    }
    broken
}

/// What in `js` breaks rule 2, one sentence each.
fn check_apis(js: &str) -> Vec<String> {
    let bare = strip(js, true);
    MISSING_IN_SAFARI
        .iter()
        .filter(|(api, _)| contains_word(&bare, api))
        .map(|(api, why)| format!("uses {api}: {why}"))
        .collect()
}

/// A named function declaration: its name and its body's braces.
struct Function {
    name: String,
    body: (usize, usize),
}

/// Every `function NAME(…) {…}` in `bare` (comments and strings blanked).
fn functions(bare: &str) -> Vec<Function> {
    let b = bare.as_bytes();
    let mut out = Vec::new();
    for (at, _) in bare.match_indices("function") {
        if at > 0 && is_word(b[at - 1]) || b.get(at + 8).is_some_and(|c| is_word(*c)) {
            continue;
        }
        let rest = &bare[at + 8..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
            .collect();
        if name.is_empty() {
            continue;
        }
        let Some(open_paren) = bare[at..].find('(').map(|i| at + i) else {
            continue;
        };
        let Some(close_paren) = matching(b, open_paren) else {
            continue;
        };
        let Some(open) = bare[close_paren..].find('{').map(|i| close_paren + i) else {
            continue;
        };
        if let Some(close) = matching(b, open) {
            out.push(Function {
                name,
                body: (open, close),
            });
        }
    }
    out
}

/// Whether position `at` is inside a nested function, callback or
/// argument list, counted from `from` (the top of a function's body):
/// `Some(where)` if so.
fn nested(bare: &str, from: usize, at: usize) -> Option<&'static str> {
    let b = bare.as_bytes();
    // The brackets still open at `at`.
    let mut open: Vec<usize> = Vec::new();
    for (i, c) in b.iter().enumerate().take(at).skip(from) {
        match c {
            b'(' | b'[' | b'{' => open.push(i),
            b')' | b']' | b'}' => {
                open.pop();
            }
            _ => {}
        }
    }
    for &o in &open {
        match b[o] {
            b'(' | b'[' => return Some("inside an argument list or expression"),
            _ => {
                let before = bare[..o].trim_end();
                if before.ends_with("=>") {
                    return Some("inside an arrow function");
                }
                if before.ends_with(')') {
                    let close = before.len() - 1;
                    if let Some(p) = (0..close).rev().find(|&p| matching(b, p) == Some(close)) {
                        let head = bare[..p].trim_end();
                        let word = head
                            .rsplit(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                            .next()
                            .unwrap_or("");
                        let keyword = ["if", "for", "while", "switch", "catch", "with"];
                        if !keyword.contains(&word) {
                            return Some("inside a nested function");
                        }
                    }
                }
            }
        }
    }
    None
}

/// Whether `name` is bound as a click listener in `code` (comments
/// blanked, strings kept): `addEventListener('click', name)` or
/// `addEventListener('click', (…) => name(…))`.
fn bound_to_click(code: &str, name: &str) -> bool {
    let squeezed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    ["'click'", "\"click\""].iter().any(|click| {
        let head = format!("addEventListener({click},");
        squeezed.match_indices(&head).any(|(at, _)| {
            let rest = &squeezed[at + head.len()..];
            if let Some(after) = rest.strip_prefix(name) {
                return after.starts_with(')');
            }
            if let Some(arrow) = rest.find("=>") {
                let params = &rest[..arrow];
                return params.starts_with('(')
                    && params.ends_with(')')
                    && params.matches('(').count() == 1
                    && rest[arrow + 2..].starts_with(&format!("{name}("));
            }
            false
        })
    })
}

/// The index of the bracket closing the one at `open`.
fn matching(b: &[u8], open: usize) -> Option<usize> {
    let (o, c) = match b.get(open)? {
        b'(' => (b'(', b')'),
        b'[' => (b'[', b']'),
        b'{' => (b'{', b'}'),
        _ => return None,
    };
    let mut depth = 0usize;
    for (i, &x) in b.iter().enumerate().skip(open) {
        if x == o {
            depth += 1;
        } else if x == c {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| !w.is_empty())
}

/// Whether `needle` occurs in `hay` not as part of a longer name.
fn contains_word(hay: &str, needle: &str) -> bool {
    let b = hay.as_bytes();
    hay.match_indices(needle).any(|(at, _)| {
        let end = at + needle.len();
        (at == 0 || !is_word(b[at - 1])) && b.get(end).is_none_or(|c| !is_word(*c))
    })
}

/// `js` with comments (and, if `strings`, the contents of string,
/// template and regular expression literals) replaced by spaces, so that
/// positions stay where they were and only code is searched.
fn strip(js: &str, strings: bool) -> String {
    let b = js.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for x in out.iter_mut().take(to).skip(from) {
            if *x != b'\n' {
                *x = b' ';
            }
        }
    };
    let mut i = 0;
    // The last significant byte, to tell a regex from a division.
    let mut last = b'\n';
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            let end = js[i..].find('\n').map_or(b.len(), |e| i + e);
            blank(&mut out, i, end);
            i = end;
            continue;
        }
        if c == b'/' && next == Some(b'*') {
            let end = js[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            blank(&mut out, i, end);
            i = end;
            continue;
        }
        let regex = c == b'/' && b"(,=:[!&|?{};\n+-*%<>~^".contains(&last);
        if c == b'\'' || c == b'"' || c == b'`' || regex {
            let mut j = i + 1;
            let mut class = false;
            while j < b.len() {
                match b[j] {
                    b'\\' => j += 1,
                    b'[' if regex => class = true,
                    b']' if regex => class = false,
                    x if x == c && !class => break,
                    b'\n' if c != b'`' => break,
                    _ => {}
                }
                j += 1;
            }
            if strings {
                blank(&mut out, i + 1, j.min(b.len()));
            }
            i = j + 1;
            last = b'a';
            continue;
        }
        if !c.is_ascii_whitespace() {
            last = c;
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_default()
}
