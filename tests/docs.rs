//! Keeps the docs true: every flag `wsgate --help` prints is in `docs/configuration.md` with
//! the default the code uses (and no flag is documented that the binary lacks), and every
//! relative link and `#anchor` in `README.md` and `docs/` resolves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `--help`: the flags (argh's option list) and the defaults (the list after it).
fn help() -> (BTreeSet<String>, BTreeMap<String, String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("--help")
        .output()
        .expect("run wsgate --help");
    let text = String::from_utf8(out.stdout).unwrap();
    let (options, defaults) = text.split_once("\nDefaults:").expect("a Defaults: section");
    let flags = options
        .lines()
        .filter_map(|l| l.strip_prefix("  --"))
        .map(|l| l.split([' ', ',']).next().unwrap().to_owned())
        .filter(|f| f != "help")
        .collect();
    let defaults = defaults
        .lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
        .map(|l| {
            let (flag, value) = l.split_once(' ').unwrap_or((l, ""));
            (flag.to_owned(), value.trim().to_owned())
        })
        .collect();
    (flags, defaults)
}

/// `docs/configuration.md`'s table: flag -> the default column.
fn documented() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let first = cells.get(1)?.strip_prefix("`--")?;
            let flag = first.split([' ', '`']).next()?.to_owned();
            Some((flag, cells.get(2)?.to_string()))
        })
        .collect()
}

/// A value in one comparable form: words as they are, sizes in bytes, durations in ms. The
/// code's `(off: the embedded page)` is `off`; the docs' `` `0` (off) `` is `0`.
fn normalize(v: &str, from_code: bool) -> String {
    let v = v.replace('`', "");
    let v = v.trim();
    let v = if from_code {
        match (v.find('('), v.rfind(')')) {
            (Some(0), Some(e)) => v[1..e].split(':').next().unwrap().trim().to_owned(),
            // `2 (the cores available)`: the machine's number; the docs name the rule.
            (Some(i), Some(e)) if !v[..i].trim().is_empty() => v[i + 1..e].trim().to_owned(),
            _ => v.to_owned(),
        }
    } else {
        v.split(" (").next().unwrap().trim().to_owned()
    };
    let number: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = v[number.len()..].trim();
    if let Ok(n) = number.parse::<u64>() {
        let scaled = match unit {
            "" => Some(n),
            "KiB" => Some(n << 10),
            "MiB" => Some(n << 20),
            "ms" => Some(n),
            "s" => Some(n * 1000),
            "m" => Some(n * 60_000),
            "h" => Some(n * 3_600_000),
            _ => None,
        };
        if let Some(s) = scaled {
            return s.to_string();
        }
    }
    v.to_owned()
}

#[test]
fn every_flag_is_documented_with_the_default_the_code_uses() {
    let (flags, defaults) = help();
    let docs = documented();
    assert!(flags.len() > 40, "--help lists {} flags", flags.len());
    let mut wrong = Vec::new();
    for flag in &flags {
        let Some(doc) = docs.get(flag) else {
            wrong.push(format!("--{flag}: not in docs/configuration.md"));
            continue;
        };
        // A switch has no default line: it is off unless given.
        let code = defaults.get(flag).map_or("off", String::as_str);
        if normalize(code, true) != normalize(doc, false) {
            wrong.push(format!(
                "--{flag}: the code's default is {code:?}, the docs say {doc:?}"
            ));
        }
    }
    for flag in docs.keys() {
        if !flags.contains(flag) {
            wrong.push(format!(
                "--{flag}: documented, but wsgate --help has no such flag"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_comparison_sees_a_wrong_default() {
    assert_eq!(normalize("`64KiB`", false), normalize("65536", true));
    assert_eq!(normalize("`60s`", false), normalize("1m", true));
    assert_eq!(
        normalize("off", false),
        normalize("(off: the embedded page)", true)
    );
    assert_eq!(normalize("`0` (off)", false), normalize("0", true));
    assert_ne!(normalize("`25s`", false), normalize("20s", true));
    assert_ne!(normalize("`8192`", false), normalize("4096", true));
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces
/// to `-`; a repeated heading gets `-1`, `-2`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// Every `[text](target)` outside code blocks and spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans, where `](` can be code.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            checked += 1;
            let name = file.strip_prefix(root()).unwrap().display().to_string();
            if !Path::new(&target).exists() {
                broken.push(format!("{name}: {link}: no such file"));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            let body = std::fs::read_to_string(&target).unwrap_or_default();
            if !anchors(&body).contains(anchor) {
                broken.push(format!("{name}: {link}: no such heading"));
            }
        }
    }
    assert!(checked > 20, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_follow_githubs_rules() {
    let a =
        anchors("# In nginx's place: `--upstream`\n## Flags\n## Flags\n```\n# not a heading\n```");
    assert!(a.contains("in-nginxs-place---upstream"));
    assert!(a.contains("flags") && a.contains("flags-1"));
    assert!(!a.contains("not-a-heading"));
    assert_eq!(links("see [x](a.md#b) and `[y](c.md)`"), ["a.md#b"]);
}
