//! TEST FIXTURE: an Extism plug-in for wasm32-wasip1, so every WASI preview 1 call comes from
//! Rust's std as any PDK's would.
//!
//! - `hello`: writes a line to stdout and one to stderr, returns "hello, INPUT".
//! - `probe`: what the plug-in can see of the world, as JSON: its arguments and environment
//!   (none), whether the clock and random work, and what opening host files and listing `/`
//!   answer (no preopens: both fail).
//! - `quit`: `std::process::exit(INPUT)`.
//! - `flood`: writes INPUT bytes to stdout (the capture keeps its cap, the rest is counted).
//! - `fs`: one file operation through std (so through WASI preview 1), for the mount tests.
//!   INPUT is `OP|ARG|ARG`; the answer `ok`, `ok:DATA` or `err:KIND:ERRNO` (std's
//!   `io::ErrorKind` and the raw errno). OPs: `read P`, `write P|DATA`, `append P|DATA`,
//!   `fill P|N` (N bytes `x`, create + truncate), `set-size P|N`, `remove P`, `mkdir P`,
//!   `rmdir P`, `rename A|B`, `link A|B`, `symlink TARGET|REL` (raw `path_symlink` in the
//!   first preopen), `list P`, `stat P`, `set-times P`, `readlink P`, `pwrite-far P|OFFSET`
//!   (one byte at OFFSET by `fd_pwrite`), `seek-far P|OFFSET` (the same by seek and write),
//!   `unlinked P|N` (create, write N, delete, write N more: the second write's outcome),
//!   `cycle P|N|K` (K times: write N bytes to P, keep it open, delete it; the outcomes
//!   counted), `hold-open P|N` (opens P N times, keeping each open: `ok:N`, or
//!   `err:KIND:ERRNO` with `opened=K` appended at the first error), `write-ro P|DATA` (opens
//!   P for reading only, then writes to it), `fstat-fd P|N` (raw `fd_filestat_get` of
//!   descriptor N, P unused: its size).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use extism_pdk::*;

#[plugin_fn]
pub fn hello(input: String) -> FnResult<String> {
    println!("to stdout: {input}");
    eprintln!("to stderr: {input}");
    Ok(format!("hello, {input}"))
}

#[plugin_fn]
pub fn probe(_: ()) -> FnResult<String> {
    let args = std::env::args().count();
    let env = std::env::vars().count();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Two different 16-byte draws: random works.
    let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
    let random = getrandom(&mut a) && getrandom(&mut b) && a != b;
    let file = match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!("read {} bytes", bytes.len()),
        Err(e) => format!("error: {:?}", e.kind()),
    };
    let root = match std::fs::read_dir("/") {
        Ok(entries) => format!("listed {}", entries.count()),
        Err(e) => format!("error: {:?}", e.kind()),
    };
    let write = match std::fs::write("/tmp/escape", b"x") {
        Ok(()) => "written".to_string(),
        Err(e) => format!("error: {:?}", e.kind()),
    };
    Ok(format!(
        r#"{{"args":{args},"env":{env},"clock":{},"random":{random},"file":"{file}","root":"{root}","write":"{write}"}}"#,
        now > 1_600_000_000
    ))
}

/// `random_get` through std's hasher seed is indirect; this asks WASI directly.
fn getrandom(buf: &mut [u8]) -> bool {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn random_get(buf: *mut u8, len: usize) -> u16;
    }
    // SAFETY: `buf` is a live, writable buffer of `len` bytes for the duration of the call.
    unsafe { random_get(buf.as_mut_ptr(), buf.len()) == 0 }
}

#[plugin_fn]
pub fn quit(code: String) -> FnResult<String> {
    let code: i32 = code.trim().parse().unwrap_or(1);
    std::process::exit(code)
}

#[plugin_fn]
pub fn flood(n: String) -> FnResult<String> {
    let n: usize = n.trim().parse().unwrap_or(0);
    let line = [b'x'; 1024];
    let mut out = std::io::stdout();
    let mut left = n;
    while left > 0 {
        let take = left.min(line.len());
        let _ = out.write_all(&line[..take]);
        left -= take;
    }
    let _ = out.flush();
    Ok(format!("wrote {n}"))
}

#[plugin_fn]
pub fn fs(input: String) -> FnResult<String> {
    let mut args = input.splitn(3, '|');
    let op = args.next().unwrap_or("");
    let a = args.next().unwrap_or("");
    let b = args.next().unwrap_or("");
    let n = || b.parse::<u64>().unwrap_or(0);
    let r: io::Result<String> = match op {
        "read" => fs::read(a).map(|d| String::from_utf8_lossy(&d).into_owned()),
        "write" => fs::write(a, b).map(|()| String::new()),
        "append" => OpenOptions::new()
            .append(true)
            .open(a)
            .and_then(|mut f| f.write_all(b.as_bytes()))
            .map(|()| String::new()),
        "fill" => fs::write(a, vec![b'x'; n() as usize]).map(|()| String::new()),
        "set-size" => OpenOptions::new()
            .write(true)
            .open(a)
            .and_then(|f| f.set_len(n()))
            .map(|()| String::new()),
        "remove" => fs::remove_file(a).map(|()| String::new()),
        "mkdir" => fs::create_dir(a).map(|()| String::new()),
        "rmdir" => fs::remove_dir(a).map(|()| String::new()),
        "rename" => fs::rename(a, b).map(|()| String::new()),
        "link" => fs::hard_link(a, b).map(|()| String::new()),
        "symlink" => symlink(a, b).map(|()| String::new()),
        "list" => fs::read_dir(a).and_then(|d| {
            let mut names = d
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<Vec<_>>>()?;
            names.sort();
            Ok(names.join(","))
        }),
        "stat" => fs::metadata(a).map(|m| m.len().to_string()),
        "set-times" => File::open(a)
            .and_then(|f| f.set_modified(std::time::SystemTime::UNIX_EPOCH))
            .map(|()| String::new()),
        "readlink" => fs::read_link(a).map(|p| p.display().to_string()),
        "pwrite-far" => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(a)
            .and_then(|f| pwrite(&f, b"x", n()))
            .map(|w| w.to_string()),
        "seek-far" => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(a)
            .and_then(|mut f| {
                use std::io::{Seek, SeekFrom};
                f.seek(SeekFrom::Start(n()))?;
                f.write_all(b"x")
            })
            .map(|()| String::new()),
        "unlinked" => (|| {
            let mut f = File::create(a)?;
            f.write_all(&vec![b'x'; n() as usize])?;
            fs::remove_file(a)?;
            f.write_all(&vec![b'y'; n() as usize])?;
            Ok(String::new())
        })(),
        "cycle" => {
            let mut c = b.splitn(2, '|');
            let len: usize = c.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let times: usize = c.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut open = Vec::new();
            let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
            for _ in 0..times {
                let r = (|| {
                    let mut f = File::create(a)?;
                    f.write_all(&vec![b'x'; len])?;
                    fs::remove_file(a)?;
                    Ok::<File, io::Error>(f)
                })();
                let key = match r {
                    Ok(f) => {
                        open.push(f);
                        "ok".to_string()
                    }
                    Err(e) => format!("err:{:?}", e.kind()),
                };
                *outcomes.entry(key).or_default() += 1;
            }
            Ok(outcomes
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(";"))
        }
        "write-ro" => File::open(a)
            .and_then(|mut f| f.write_all(b.as_bytes()))
            .map(|()| String::new()),
        "fstat-fd" => fstat_fd(n() as u32).map(|size| size.to_string()),
        "hold-open" => {
            let mut open = Vec::new();
            let mut failed = None;
            for _ in 0..n() {
                match File::open(a) {
                    Ok(f) => open.push(f),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                return Ok(format!(
                    "err:{:?}:{}:opened={}",
                    e.kind(),
                    e.raw_os_error().unwrap_or(0),
                    open.len()
                ));
            }
            Ok(open.len().to_string())
        }
        other => return Err(Error::msg(format!("unknown op {other:?}")).into()),
    };
    Ok(match r {
        Ok(d) if d.is_empty() => "ok".to_string(),
        Ok(d) => format!("ok:{d}"),
        Err(e) => format!("err:{:?}:{}", e.kind(), e.raw_os_error().unwrap_or(0)),
    })
}

/// `fd_pwrite` of `buf` at `offset` (std's `write_at` is unstable on WASI).
fn pwrite(f: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Ciovec {
        buf: *const u8,
        len: usize,
    }
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn fd_pwrite(fd: i32, iovs: *const Ciovec, n: usize, offset: u64, written: *mut usize)
        -> u16;
    }
    let iov = Ciovec {
        buf: buf.as_ptr(),
        len: buf.len(),
    };
    let mut written = 0usize;
    // SAFETY: `iov` points at `buf`, live for the call; `written` is a live usize.
    let rc = unsafe { fd_pwrite(f.as_raw_fd(), &iov, 1, offset, &mut written) };
    match rc {
        0 => Ok(written),
        e => Err(io::Error::from_raw_os_error(i32::from(e))),
    }
}

/// `fd_filestat_get` of descriptor `fd` (a preopen, say): its size.
fn fstat_fd(fd: u32) -> io::Result<u64> {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn fd_filestat_get(fd: u32, out: *mut u64) -> u16;
    }
    // A filestat is 64 bytes: dev, ino, filetype (padded), nlink, size, atim, mtim, ctim.
    let mut out = [0u64; 8];
    // SAFETY: `out` is 64 bytes, 8-aligned, live for the call.
    let rc = unsafe { fd_filestat_get(fd, out.as_mut_ptr()) };
    match rc {
        0 => Ok(out[4]),
        e => Err(io::Error::from_raw_os_error(i32::from(e))),
    }
}

/// `path_symlink` in the first preopen (descriptor 3): std's is unstable on WASI.
fn symlink(target: &str, link: &str) -> io::Result<()> {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn path_symlink(old: *const u8, old_len: usize, fd: u32, new: *const u8, new_len: usize)
        -> u16;
    }
    // SAFETY: both strings are live for the duration of the call, with their lengths.
    let rc = unsafe { path_symlink(target.as_ptr(), target.len(), 3, link.as_ptr(), link.len()) };
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(i32::from(e))),
    }
}
