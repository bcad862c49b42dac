//! `iocomp serve --config FILE` and `--print-config`.
//!
//! The file is TOML whose keys are `serve`'s long flags (`threads = 4`,
//! `header-timeout = "10s"`, `hidden = true`, `bind = ["127.0.0.1:8080"]`)
//! plus the positional directory under its id (`root = "/srv/files"`).
//!
//! Nothing here knows the flags: the keys, their values and their checks all
//! come from clap's description of the `serve` command. A key's value is
//! turned into that flag's command-line text (a boolean into the bare switch,
//! an array into the flag repeated) and checked by the flag's own value parser,
//! so an error names the key and the line; the file's flags are then put in
//! front of the real command line and the whole is parsed again. A flag the
//! command line sets (or a flag that conflicts with one it sets) is left out
//! of the file's part, so the command line wins and a repeated flag such as
//! `--bind` replaces the file's list instead of adding to it.

use std::any::TypeId;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Arguments that are about the file itself, never keys in it.
const NOT_KEYS: &[&str] = &["config", "print_config", "help", "version"];

/// The config-file key of `arg`, or `None` for arguments a file cannot set.
fn key_of(arg: &Arg) -> Option<String> {
    if NOT_KEYS.contains(&arg.get_id().as_str()) || arg.is_hide_set() {
        return None;
    }
    if arg.is_positional() {
        return Some(arg.get_id().as_str().to_owned());
    }
    arg.get_long().map(str::to_owned)
}

fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn is_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// Applies the config file named by `--config`, if any: returns the matches
/// of the whole command line with the file's settings underneath the
/// command line's. `Err` is a message for `iocomp: ...` (exit status 2).
pub(crate) fn apply(
    top: &Command,
    matches: ArgMatches,
    argv: Vec<OsString>,
) -> Result<ArgMatches, String> {
    let Some(("serve", serve_matches)) = matches.subcommand() else {
        return Ok(matches);
    };
    let Some(path) = serve_matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(matches);
    };
    let serve = top
        .find_subcommand("serve")
        .ok_or("no serve command")?
        .clone();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    let file_args = file_args(&serve, serve_matches, &text)
        .map_err(|(line, msg)| format!("config {} line {line}: {msg}", path.display()))?;
    // The file's flags go right after `serve`, before the command line's own.
    let at = argv
        .iter()
        .skip(1)
        .position(|a| a == "serve")
        .map_or(argv.len(), |i| i + 2);
    let mut merged = argv;
    merged.splice(at..at, file_args);
    top.clone()
        .try_get_matches_from(merged)
        .map_err(|e| format!("config {}: {}", path.display(), clap_message(&e)))
}

/// The command-line words for the settings of `text` that the command line
/// (`given`) does not set. `Err((line, message))`.
pub(crate) fn file_args(
    serve: &Command,
    given: &ArgMatches,
    text: &str,
) -> Result<Vec<OsString>, (usize, String)> {
    let table = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        (line, e.message().trim().to_owned())
    })?;
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let from_cli =
        |arg: &Arg| given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine);
    let mut seen: Vec<(&Arg, usize)> = Vec::new();
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    for (key, value) in entries {
        let line = line_of(text, key.span().start);
        let name: &str = key.get_ref();
        let Some(arg) = serve
            .get_arguments()
            .find(|a| key_of(a).as_deref() == Some(name))
        else {
            return Err((line, unknown_key(serve, name)));
        };
        let words =
            words(serve, arg, name, value).map_err(|m| (line_of(text, value.span().start), m))?;
        if words.is_empty() {
            continue; // `switch = false`: not set
        }
        if let Some((other, at)) = seen.iter().find(|(a, _)| conflict(serve, arg, a)) {
            return Err((
                line,
                format!(
                    "key \"{name}\" conflicts with key \"{}\" (line {at})",
                    key_of(other).unwrap_or_default()
                ),
            ));
        }
        seen.push((arg, line));
        // The command line wins: over this key, and over a key it conflicts with.
        if from_cli(arg)
            || serve
                .get_arguments()
                .any(|a| from_cli(a) && conflict(serve, arg, a))
        {
            continue;
        }
        if arg.is_positional() {
            positional.extend(words);
        } else {
            flags.extend(words);
        }
    }
    // No `--` (the command line's own words follow): a relative path that
    // looks like a flag gets a `./`.
    for p in positional {
        if p.to_string_lossy().starts_with('-') {
            let mut dotted = OsString::from("./");
            dotted.push(&p);
            flags.push(dotted);
        } else {
            flags.push(p);
        }
    }
    Ok(flags)
}

/// Whether `a` and `b` exclude each other (declared on either side).
fn conflict(serve: &Command, a: &Arg, b: &Arg) -> bool {
    serve.get_arg_conflicts_with(a).contains(&b) || serve.get_arg_conflicts_with(b).contains(&a)
}

/// One key's value as command-line words, each checked by the flag's parser.
fn words(
    serve: &Command,
    arg: &Arg,
    name: &str,
    value: &Spanned<DeValue<'_>>,
) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or_default();
    if is_switch(arg) {
        return match value.get_ref() {
            DeValue::Boolean(true) => Ok(vec![format!("--{long}").into()]),
            DeValue::Boolean(false) => Ok(Vec::new()),
            v => Err(format!(
                "key \"{name}\": expected true or false, not {}",
                describe(v)
            )),
        };
    }
    let items: Vec<&DeValue<'_>> = match value.get_ref() {
        DeValue::Array(a) if is_list(arg) => a.iter().map(|v| v.get_ref()).collect(),
        DeValue::Array(_) => {
            return Err(format!("key \"{name}\": takes one value, not a list"));
        }
        v => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        let text = scalar(item).ok_or_else(|| {
            format!(
                "key \"{name}\": expected a string or a number, not {}",
                describe(item)
            )
        })?;
        check(serve, arg, &text).map_err(|why| {
            format!(
                "key \"{name}\": invalid value \"{}\": {why}",
                text.escape_default()
            )
        })?;
        out.push(if arg.is_positional() {
            text.into()
        } else {
            format!("--{long}={text}").into()
        });
    }
    Ok(out)
}

/// A string, number or boolean as the text a command line would carry.
fn scalar(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Float(f) => Some(f.as_str().to_owned()),
        DeValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn describe(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// Runs `arg`'s own value parser on `text` (by parsing a one-flag command line).
fn check(serve: &Command, arg: &Arg, text: &str) -> Result<(), String> {
    let mut argv: Vec<OsString> = vec!["serve".into()];
    match arg.get_long() {
        Some(long) if !arg.is_positional() => argv.push(format!("--{long}={text}").into()),
        _ => {
            argv.push("--".into());
            argv.push(text.into());
        }
    }
    match serve.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        // The value parsed; what is missing is another key's business.
        Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => Ok(()),
        Err(e) => Err(clap_message(&e)),
    }
}

/// A clap error as one line: the value parser's own words where there are some.
fn clap_message(e: &clap::Error) -> String {
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

fn unknown_key(serve: &Command, name: &str) -> String {
    let best = serve
        .get_arguments()
        .filter_map(key_of)
        .map(|k| (distance(&k, name), k))
        .min();
    match best {
        Some((d, k)) if d <= 2 || k.starts_with(name) => {
            format!("unknown key \"{name}\" (did you mean \"{k}\"?)")
        }
        _ => format!("unknown key \"{name}\" (`iocomp serve --print-config` lists the keys)"),
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The effective configuration of `serve` (file, command line and defaults
/// together) as a TOML file `--config` reads back: every key with its help as
/// a comment; a key left at its default is shown commented out (so that the
/// file sets only what was set: under socket activation a `bind` key is an
/// explicit bind), and a key with no value as `# key = (not set)`.
pub(crate) fn print(serve: &Command, m: &ArgMatches) -> String {
    let mut out = String::from(
        "# iocomp serve configuration: `iocomp serve --config FILE`.\n\
         # Keys are serve's long flags; flags on the command line override them.\n\
         # Lines starting with `# key =` show defaults.\n",
    );
    for arg in serve.get_arguments() {
        let Some(key) = key_of(arg) else { continue };
        let id = arg.get_id().as_str();
        out.push('\n');
        if let Some(help) = arg.get_help() {
            for l in help.to_string().lines() {
                let _ = writeln!(out, "# {l}");
            }
        }
        let hash = if m.value_source(id) == Some(ValueSource::CommandLine) {
            ""
        } else {
            "# "
        };
        if is_switch(arg) {
            let _ = writeln!(out, "{hash}{key} = {}", m.get_flag(id));
            continue;
        }
        let values: Vec<&OsStr> = m.get_raw(id).map(|v| v.collect()).unwrap_or_default();
        let rendered: Vec<String> = values.iter().map(|v| value(arg, v)).collect();
        match rendered.as_slice() {
            [] => {
                let _ = writeln!(out, "# {key} = (not set)");
            }
            [one] if !is_list(arg) => {
                let _ = writeln!(out, "{hash}{key} = {one}");
            }
            many => {
                let _ = writeln!(out, "{hash}{key} = [{}]", many.join(", "));
            }
        }
    }
    out
}

/// One value as TOML: a number for a numeric flag, else a string.
fn value(arg: &Arg, raw: &OsStr) -> String {
    let text = raw.to_string_lossy();
    let t = arg.get_value_parser().type_id();
    let ints = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
    ];
    if ints.iter().any(|i| t == *i) && text.parse::<i64>().is_ok() {
        return text.into_owned();
    }
    quote(&text)
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("thread", "threads"), 1);
        assert_eq!(distance("bind", "bind"), 0);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn lines_and_quotes() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\u000A""#);
    }
}
