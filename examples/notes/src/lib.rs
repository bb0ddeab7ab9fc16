//! notes: an rpc-extension that keeps notes as files, using the two kinds of mount.
//!
//! - `/data` (read-write, `permissions.filesystem.paths`): a folder private to this extension
//!   and the tenant that installed it; it survives restarts. Each note is `/data/notes/N.txt`.
//! - `/assets` (read-only, `readonly_paths`): the bundle's own `assets/` folder, exactly the
//!   bytes that were signed. `note.txt` is the template `get` renders with.
//!
//! Methods (plain-text input and output):
//! - `add`: the note (first line = title, the rest = body); returns its number.
//! - `list`: one `N<TAB>title` line per note, in number order.
//! - `get`: a note number; returns the note rendered with `/assets/note.txt`.
//!
//! The number from the client is parsed as a number before it becomes part of a path, so a
//! client cannot name another file (the host's mount would stop it at /data anyway).

wit_bindgen::generate!({ path: "../../wit", world: "rpc-extension" });

use std::fs;
use std::io::{self, ErrorKind};

use exports::warden::extension::handler::Guest;
use warden::extension::types::CallError;

const NOTES: &str = "/data/notes";
const TEMPLATE: &str = "/assets/note.txt";
/// Largest note accepted, in bytes.
const MAX_NOTE_BYTES: usize = 64 * 1024;

struct Notes;

export!(Notes);

impl Guest for Notes {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let out = match method.as_str() {
            "add" => add(&input)?,
            "list" => list()?,
            "get" => get(&input)?,
            _ => return Err(error("not-found", format!("no method {method:?}"))),
        };
        Ok(out.into_bytes())
    }
}

fn error(code: &str, message: impl Into<String>) -> CallError {
    CallError {
        code: code.into(),
        message: message.into(),
    }
}

fn io_error(what: &str, e: io::Error) -> CallError {
    let code = match e.kind() {
        ErrorKind::NotFound => "not-found",
        _ => "internal",
    };
    error(code, format!("{what}: {e}"))
}

fn add(input: &[u8]) -> Result<String, CallError> {
    if input.len() > MAX_NOTE_BYTES {
        return Err(error(
            "invalid-input",
            format!("a note is at most {MAX_NOTE_BYTES} bytes"),
        ));
    }
    let text =
        std::str::from_utf8(input).map_err(|_| error("invalid-input", "a note is UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(error("invalid-input", "a note needs at least a title"));
    }
    fs::create_dir_all(NOTES).map_err(|e| io_error("creating /data/notes", e))?;
    // Exclusive create: two concurrent adds never overwrite each other's note.
    let mut n = numbers()?.last().map_or(1, |last| last + 1);
    loop {
        match fs::File::create_new(path(n)) {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(io_error("creating the note", e)),
        }
    }
    fs::write(path(n), text).map_err(|e| io_error("writing the note", e))?;
    Ok(n.to_string())
}

fn list() -> Result<String, CallError> {
    let mut out = String::new();
    for n in numbers()? {
        let text = fs::read_to_string(path(n)).map_err(|e| io_error("reading a note", e))?;
        out.push_str(&format!("{n}\t{}\n", title(&text)));
    }
    Ok(out)
}

fn get(input: &[u8]) -> Result<String, CallError> {
    let n: u64 = std::str::from_utf8(input)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| error("invalid-input", "expected a note number"))?;
    let text = fs::read_to_string(path(n)).map_err(|e| io_error(&format!("note {n}"), e))?;
    let template = fs::read_to_string(TEMPLATE).map_err(|e| io_error("reading the template", e))?;
    let body = text.split_once('\n').map_or("", |(_, b)| b);
    Ok(template
        .replace("{{id}}", &n.to_string())
        .replace("{{title}}", title(&text))
        .replace("{{body}}", body.trim_end()))
}

fn path(n: u64) -> String {
    format!("{NOTES}/{n}.txt")
}

fn title(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

/// The numbers of the existing notes, ascending; no folder yet means no notes.
fn numbers() -> Result<Vec<u64>, CallError> {
    let entries = match fs::read_dir(NOTES) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("listing /data/notes", e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing /data/notes", e))?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(".txt"))
            .and_then(|s| s.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}
