//! hostile-fs: a TEST FIXTURE for the host's file system tests, not an example to copy.
//!
//! An rpc-extension (world `rpc-extension`, wit/warden.wit) whose methods each perform one raw
//! file system operation on guest paths, so the host's tests can try every way out of a mount
//! and every write into a read-only one. The input is plain text, arguments separated by `|`
//! (the last argument may itself contain `|`).
//!
//! | method         | input              | what it does                                            |
//! |----------------|--------------------|---------------------------------------------------------|
//! | `read`         | PATH               | `std::fs::read`                                         |
//! | `write`        | PATH\|DATA         | `std::fs::write` (create + truncate)                    |
//! | `append`       | PATH\|DATA         | open for append (no create) and write                   |
//! | `create`       | PATH               | `File::create_new`                                      |
//! | `truncate`     | PATH               | open with write + truncate (no create)                  |
//! | `open-write`   | PATH               | open for writing only (no create, no truncate)          |
//! | `rename`       | FROM\|TO           | `std::fs::rename`                                       |
//! | `link`         | FROM\|TO           | `std::fs::hard_link`                                    |
//! | `symlink`      | TARGET\|LINK       | WASI `symlink-at` (std's is unstable on WASI)           |
//! | `set-times`    | PATH               | open for reading, then `File::set_times` (futimens)     |
//! | `set-times-at` | PATH               | WASI `set-times-at` (utimensat by path)                 |
//! | `remove`       | PATH               | `std::fs::remove_file`                                  |
//! | `rmdir`        | PATH               | `std::fs::remove_dir`                                   |
//! | `mkdir`        | PATH               | `std::fs::create_dir`                                   |
//! | `list`         | PATH               | `read_dir`: sorted names, comma separated               |
//! | `stat`/`lstat` | PATH               | metadata following / not following a last symlink       |
//! | `readlink`     | PATH               | `std::fs::read_link`                                    |
//! | `raw-read`     | PREOPEN\|REL       | WASI `open-at` on the preopen with REL as given, read   |
//! | `raw-write`    | PREOPEN\|REL\|DATA | WASI `open-at` (create, truncate, write), write         |
//! | `raw-derived`  | PREOPEN\|DIR\|FILE | through descriptors opened from the preopen: create in  |
//! |                |                    | DIR, then write, set-size and set-times on FILE opened  |
//! |                |                    | for reading; `create=..;write=..;set-size=..;times=..`  |
//! | `race-read`    | PATH\|N            | reads PATH N times; counts each distinct outcome        |
//! | `race-write`   | PATH\|N\|DATA      | writes PATH N times; counts each distinct outcome       |
//! | `preopens`     | -                  | the guest paths of the preopened folders                |
//! | `hold-open`    | PATH\|N            | opens PATH (a file or a folder) N times, keeping each   |
//! |                |                    | open: `ok:N`, or `opened=K;err:KIND` at the first error |
//! | `hold-streams` | PATH\|N\|KEEP     | N read streams on PATH (each descriptor dropped); KEEP `keep` never drops them: `ok:N`, or `opened=K;err:CODE` |
//! | `hold-listings` | PATH\|N\|KEEP    | N listings (`read-directory`) of the folder PATH, held; KEEP `keep` never drops them |
//! | `leak-open`    | PATH\|N            | opens PATH N times and never closes them: `ok:N`         |
//! | `fill`         | PATH\|N            | `std::fs::write` of N bytes `x` (create + truncate)      |
//! | `append-fill`  | PATH\|N            | open for append (create) and write N bytes `x`           |
//! | `set-size`     | PATH\|N            | open for writing (no create), `File::set_len(N)`         |
//! | `stream-fill`  | PREOPEN\|REL\|N\|M | WASI `open-at` (create), then N bytes through           |
//! |                |                    | `write-via-stream(0)` (M = `write`) or                  |
//! |                |                    | `append-via-stream` (M = `append`), 4 KiB at a time     |
//! | `stream-ro`    | PREOPEN\|REL       | opens REL for reading, then asks for both write streams |
//! |                |                    | on it: `write=..;append=..`                             |
//!
//! Output: `ok`, `ok:DATA`, or `err:KIND` where KIND is std's `io::ErrorKind` (e.g.
//! `PermissionDenied`) or, for the raw WASI methods, WASI's `error-code` name (e.g.
//! `not-permitted`). Race methods return one `COUNT OUTCOME` line per distinct outcome. A
//! failed operation is an `Ok` result: only a malformed input is a call error.
//!
//! The release profile uses `panic = "abort"`, so nothing here unwraps.

wit_bindgen::generate!({ path: "../../../wit", world: "rpc-extension" });

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Write as _};
use std::time::{Duration, SystemTime};

use exports::warden::extension::handler::Guest;
use warden::extension::types::CallError;
use wasip2::filesystem::types::{
    Datetime, Descriptor, DescriptorFlags, ErrorCode, NewTimestamp, OpenFlags, PathFlags,
};

struct HostileFs;

export!(HostileFs);

/// Longest file content returned (the rest is cut).
const MAX_SHOWN: usize = 4096;
/// Longest content shown per outcome in the race methods.
const MAX_SHOWN_RACE: usize = 64;

impl Guest for HostileFs {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let input = String::from_utf8(input).map_err(|_| error("invalid-input", "not UTF-8"))?;
        let out = match method.as_str() {
            "read" => shown(fs::read(&input)),
            "write" => {
                let [path, data] = args(&input)?;
                done(fs::write(path, data))
            }
            "append" => {
                let [path, data] = args(&input)?;
                done(
                    OpenOptions::new()
                        .append(true)
                        .open(path)
                        .and_then(|mut f| f.write_all(data.as_bytes())),
                )
            }
            "create" => done(File::create_new(&input).map(drop)),
            "truncate" => done(
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&input)
                    .map(drop),
            ),
            "open-write" => done(OpenOptions::new().write(true).open(&input).map(drop)),
            "rename" => {
                let [from, to] = args(&input)?;
                done(fs::rename(from, to))
            }
            "link" => {
                let [from, to] = args(&input)?;
                done(fs::hard_link(from, to))
            }
            "symlink" => {
                let [target, link] = args(&input)?;
                raw_done(preopen(link).and_then(|(d, rel)| d.symlink_at(target, rel)))
            }
            "set-times" => {
                let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
                let times = FileTimes::new().set_accessed(when).set_modified(when);
                done(File::open(&input).and_then(|f| f.set_times(times)))
            }
            "set-times-at" => {
                let when = NewTimestamp::Timestamp(Datetime {
                    seconds: 1_000,
                    nanoseconds: 0,
                });
                raw_done(preopen(&input).and_then(|(d, rel)| {
                    d.set_times_at(PathFlags::SYMLINK_FOLLOW, rel, when, when)
                }))
            }
            "remove" => done(fs::remove_file(&input)),
            "rmdir" => done(fs::remove_dir(&input)),
            "mkdir" => done(fs::create_dir(&input)),
            "list" => match list(&input) {
                Ok(names) => format!("ok:{}", names.join(",")),
                Err(e) => kind(&e),
            },
            "stat" => stat(fs::metadata(&input)),
            "lstat" => stat(fs::symlink_metadata(&input)),
            "readlink" => match fs::read_link(&input) {
                Ok(p) => format!("ok:{}", p.display()),
                Err(e) => kind(&e),
            },
            "raw-read" => {
                let [pre, rel] = args(&input)?;
                match named_preopen(pre).and_then(|d| raw_read(&d, rel)) {
                    Ok(bytes) => format!("ok:{}", cut(&bytes, MAX_SHOWN)),
                    Err(e) => format!("err:{}", e.name()),
                }
            }
            "raw-write" => {
                let [pre, rel, data] = args(&input)?;
                raw_done(named_preopen(pre).and_then(|d| raw_write(&d, rel, data.as_bytes())))
            }
            "raw-derived" => {
                let [pre, dir, file] = args(&input)?;
                match named_preopen(pre) {
                    Ok(d) => derived(&d, dir, file),
                    Err(e) => format!("err:{}", e.name()),
                }
            }
            "race-read" => {
                let [path, n] = args(&input)?;
                race(count(n)?, || match fs::read(path) {
                    Ok(bytes) => format!("ok:{}", cut(&bytes, MAX_SHOWN_RACE)),
                    Err(e) => kind(&e),
                })
            }
            "race-write" => {
                let [path, n, data] = args(&input)?;
                race(count(n)?, || done(fs::write(path, data)))
            }
            "fill" => {
                let [path, n] = args(&input)?;
                done_os(fs::write(path, xs(n)?))
            }
            "append-fill" => {
                let [path, n] = args(&input)?;
                let data = xs(n)?;
                done_os(
                    OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(path)
                        .and_then(|mut f| f.write_all(&data)),
                )
            }
            // Red team round 2: a file deleted while open, then written (its blocks stay
            // used until it is closed, but no walk sees them).
            "unlinked-fill" => {
                let [path, n] = args(&input)?;
                let data = xs(n)?;
                done_os(File::create_new(path).and_then(|mut f| {
                    fs::remove_file(path)?;
                    f.write_all(&data)
                }))
            }
            // Red team round 3: write a file, delete it while still open, again and again; the
            // files stay open until the call ends. Answers how many were written whole.
            "write-unlink" => {
                let [path, n, k] = args(&input)?;
                let data = xs(n)?;
                let k = count(k)?;
                let mut open = Vec::new();
                let mut written = 0;
                for i in 0..k {
                    let p = format!("{path}{i}");
                    let mut f = match File::create_new(&p) {
                        Ok(f) => f,
                        Err(_) => break,
                    };
                    let ok = f.write_all(&data).is_ok();
                    let _ = fs::remove_file(&p);
                    open.push(f);
                    if !ok {
                        break;
                    }
                    written += 1;
                }
                format!("ok:{written}")
            }
            // One byte far past the end: a sparse file whose length is `offset + 1`.
            "sparse" => {
                let [path, offset] = args(&input)?;
                let offset: u64 = offset
                    .parse()
                    .map_err(|_| error("invalid-input", format!("not an offset: {offset:?}")))?;
                done_os(File::create(path).and_then(|mut f| {
                    use std::io::Seek as _;
                    f.seek(std::io::SeekFrom::Start(offset))?;
                    f.write_all(b"x")
                }))
            }
            "set-size" => {
                let [path, n] = args(&input)?;
                let n: u64 = n
                    .parse()
                    .map_err(|_| error("invalid-input", format!("not a size: {n:?}")))?;
                done_os(
                    OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|f| f.set_len(n)),
                )
            }
            "stream-fill" => {
                let [pre, rel, n, mode] = args(&input)?;
                let data = xs(n)?;
                raw_done(named_preopen(pre).and_then(|d| stream_fill(&d, rel, &data, mode)))
            }
            "stream-ro" => {
                let [pre, rel] = args(&input)?;
                let opened = named_preopen(pre).and_then(|d| {
                    d.open_at(
                        PathFlags::empty(),
                        rel,
                        OpenFlags::empty(),
                        DescriptorFlags::READ,
                    )
                });
                match opened {
                    Ok(f) => format!(
                        "write={};append={}",
                        raw_done(f.write_via_stream(0).map(drop)),
                        raw_done(f.append_via_stream().map(drop)),
                    ),
                    Err(e) => format!("err:{}", e.name()),
                }
            }
            // Descriptors of the host process are shared by every call: a call may keep only
            // so many open at once.
            "hold-open" => {
                let [path, n] = args(&input)?;
                let n = count(n)?;
                let mut open = Vec::new();
                let mut failed = None;
                for _ in 0..n {
                    match File::open(path) {
                        Ok(f) => open.push(f),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    None => format!("ok:{}", open.len()),
                    Some(e) => format!("opened={};{}", open.len(), kind(&e)),
                }
            }
            "hold-streams" => {
                // A read stream on each file, its descriptor dropped: the stream keeps the host
                // file open. `keep` leaves them open after the call (in a kept instance).
                let [path, n, keep] = args(&input)?;
                let (dir, rel) = match preopen(path) {
                    Ok(p) => p,
                    Err(e) => return Ok(format!("err:{e:?}").into_bytes()),
                };
                let mut streams = Vec::new();
                let mut failed = None;
                for _ in 0..count(n)? {
                    match dir.open_at(PathFlags::SYMLINK_FOLLOW, rel, OpenFlags::empty(), DescriptorFlags::READ) {
                        Ok(f) => match f.read_via_stream(0) {
                            Ok(s) => streams.push(s),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        },
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                let out = match failed {
                    None => format!("ok:{}", streams.len()),
                    Some(e) => format!("opened={};err:{e:?}", streams.len()),
                };
                if keep == "keep" {
                    std::mem::forget(streams);
                }
                out
            }
            "hold-listings" => {
                // Listings of PATH (a folder), each kept: the host holds each whole listing.
                let [path, n, keep] = args(&input)?;
                let (dir, rel) = match preopen(path) {
                    Ok(p) => p,
                    Err(e) => return Ok(format!("err:{e:?}").into_bytes()),
                };
                let folder = if rel.is_empty() {
                    None
                } else {
                    match dir.open_at(PathFlags::SYMLINK_FOLLOW, rel, OpenFlags::DIRECTORY, DescriptorFlags::READ) {
                        Ok(d) => Some(d),
                        Err(e) => return Ok(format!("err:{e:?}").into_bytes()),
                    }
                };
                let on = folder.as_ref().unwrap_or(&dir);
                let mut listings = Vec::new();
                let mut failed = None;
                for _ in 0..count(n)? {
                    match on.read_directory() {
                        Ok(l) => listings.push(l),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                let out = match failed {
                    None => format!("ok:{}", listings.len()),
                    Some(e) => format!("listed={};err:{e:?}", listings.len()),
                };
                if keep == "keep" {
                    std::mem::forget(listings);
                    std::mem::forget(folder);
                }
                out
            }
            "leak-open" => {
                // Opened and never closed: in a fresh instance they go with the call; a kept
                // instance would carry them into its idle time.
                let [path, n] = args(&input)?;
                let mut opened = 0;
                for _ in 0..count(n)? {
                    match File::open(path) {
                        Ok(f) => {
                            std::mem::forget(f);
                            opened += 1;
                        }
                        Err(e) => return Ok(format!("opened={opened};{}", kind(&e)).into_bytes()),
                    }
                }
                format!("ok:{opened}")
            }
            "preopens" => {
                let mut names: Vec<String> = wasip2::filesystem::preopens::get_directories()
                    .into_iter()
                    .map(|(_, name)| name)
                    .collect();
                names.sort();
                format!("ok:{}", names.join(","))
            }
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

/// Splits `input` into exactly `N` arguments at `|` (the last keeps any further `|`).
fn args<const N: usize>(input: &str) -> Result<[&str; N], CallError> {
    let mut parts = input.splitn(N, '|');
    let mut out = [""; N];
    for slot in out.iter_mut() {
        *slot = parts.next().ok_or_else(|| {
            error(
                "invalid-input",
                format!("expected {N} arguments separated by |"),
            )
        })?;
    }
    Ok(out)
}

fn count(n: &str) -> Result<u32, CallError> {
    n.parse()
        .map_err(|_| error("invalid-input", format!("not a count: {n:?}")))
}

fn kind(e: &io::Error) -> String {
    format!("err:{:?}", e.kind())
}

fn done(r: io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => kind(&e),
    }
}

/// [`done`], with the error's OS code (wasi-libc's errno) after the kind: std names some
/// codes only `Uncategorized` (e.g. `ENOSPC` on WASI).
fn done_os(r: io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(code) => format!("err:{:?}:{code}", e.kind()),
            None => kind(&e),
        },
    }
}

fn raw_done(r: Result<(), ErrorCode>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("err:{}", e.name()),
    }
}

fn shown(r: io::Result<Vec<u8>>) -> String {
    match r {
        Ok(bytes) => format!("ok:{}", cut(&bytes, MAX_SHOWN)),
        Err(e) => kind(&e),
    }
}

fn cut(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

fn stat(r: io::Result<fs::Metadata>) -> String {
    match r {
        Ok(m) if m.is_dir() => "ok:dir".into(),
        Ok(m) if m.is_symlink() => "ok:symlink".into(),
        Ok(m) => format!("ok:file:{}", m.len()),
        Err(e) => kind(&e),
    }
}

fn list(path: &str) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(path)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Runs `op` `n` times and counts each distinct outcome.
fn race(n: u32, mut op: impl FnMut() -> String) -> String {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(op()).or_default() += 1;
    }
    seen.iter().map(|(o, c)| format!("{c} {o}\n")).collect()
}

/// The preopen whose guest path is `name`, exactly.
fn named_preopen(name: &str) -> Result<Descriptor, ErrorCode> {
    wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(d, _)| d)
        .ok_or(ErrorCode::NoEntry)
}

/// The preopen that `path` lies under and the rest of `path` (as given, not normalized).
fn preopen(path: &str) -> Result<(Descriptor, &str), ErrorCode> {
    for (d, name) in wasip2::filesystem::preopens::get_directories() {
        if let Some(rest) = path.strip_prefix(name.as_str())
            && let Some(rel) = rest.strip_prefix('/')
        {
            return Ok((d, rel));
        }
    }
    Err(ErrorCode::NoEntry)
}

fn raw_read(dir: &Descriptor, rel: &str) -> Result<Vec<u8>, ErrorCode> {
    let f = dir.open_at(
        PathFlags::SYMLINK_FOLLOW,
        rel,
        OpenFlags::empty(),
        DescriptorFlags::READ,
    )?;
    let mut out = Vec::new();
    loop {
        let (chunk, end) = f.read(MAX_SHOWN as u64, out.len() as u64)?;
        out.extend_from_slice(&chunk);
        if end || chunk.is_empty() || out.len() >= MAX_SHOWN {
            return Ok(out);
        }
    }
}

/// Writes attempted through descriptors derived from `pre`, not through the preopen itself.
fn derived(pre: &Descriptor, dir: &str, file: &str) -> String {
    let name = |r: Result<(), ErrorCode>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err:{}", e.name()),
    };
    let create = name(
        pre.open_at(
            PathFlags::empty(),
            dir,
            OpenFlags::DIRECTORY,
            DescriptorFlags::READ,
        )
        .and_then(|sub| {
            sub.open_at(
                PathFlags::empty(),
                "derived.txt",
                OpenFlags::CREATE,
                DescriptorFlags::WRITE,
            )
        })
        .map(drop),
    );
    let opened = pre.open_at(
        PathFlags::empty(),
        file,
        OpenFlags::empty(),
        DescriptorFlags::READ,
    );
    let (write, size, times) = match opened {
        Ok(f) => (
            name(f.write(b"PWNED", 0).map(drop)),
            name(f.set_size(0)),
            name(f.set_times(NewTimestamp::Now, NewTimestamp::Now)),
        ),
        Err(e) => {
            let e = format!("err:{}", e.name());
            (e.clone(), e.clone(), e)
        }
    };
    format!("create={create};write={write};set-size={size};times={times}")
}

fn raw_write(dir: &Descriptor, rel: &str, data: &[u8]) -> Result<(), ErrorCode> {
    let f = dir.open_at(
        PathFlags::SYMLINK_FOLLOW,
        rel,
        OpenFlags::CREATE | OpenFlags::TRUNCATE,
        DescriptorFlags::WRITE,
    )?;
    let mut written = 0;
    while written < data.len() {
        let n = f.write(&data[written..], written as u64)?;
        written = written.saturating_add(usize::try_from(n).unwrap_or(usize::MAX).max(1));
    }
    Ok(())
}

/// `n` bytes `x`; `n` is capped well below the fixture's memory limit.
fn xs(n: &str) -> Result<Vec<u8>, CallError> {
    let n: usize = n
        .parse()
        .map_err(|_| error("invalid-input", format!("not a count: {n:?}")))?;
    if n > 8 << 20 {
        return Err(error("invalid-input", "at most 8 MiB at a time"));
    }
    Ok(vec![b'x'; n])
}

/// Creates REL under `dir` and writes `data` through a WASI output stream, 4 KiB per
/// `blocking-write-and-flush`. A stream failure is reported by its file system error code.
fn stream_fill(dir: &Descriptor, rel: &str, data: &[u8], mode: &str) -> Result<(), ErrorCode> {
    let f = dir.open_at(
        PathFlags::empty(),
        rel,
        OpenFlags::CREATE,
        DescriptorFlags::WRITE,
    )?;
    let stream = match mode {
        "append" => f.append_via_stream()?,
        _ => f.write_via_stream(0)?,
    };
    for chunk in data.chunks(4096) {
        if let Err(e) = stream.blocking_write_and_flush(chunk) {
            return Err(match e {
                wasip2::io::streams::StreamError::LastOperationFailed(err) => {
                    wasip2::filesystem::types::filesystem_error_code(&err)
                        .unwrap_or(ErrorCode::Io)
                }
                wasip2::io::streams::StreamError::Closed => ErrorCode::Io,
            });
        }
    }
    Ok(())
}
