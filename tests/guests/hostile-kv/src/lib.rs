//! TEST FIXTURE (not an example to copy): runs a script of `wasi:keyvalue` operations, so the
//! host's tests can aim crafted keys, bucket names and floods at the host without rebuilding.
//!
//! Method `run`: one command per input line (or `;`), arguments separated by spaces; keys, bucket names
//! and values are hex (so NUL, `/`, newlines and any unicode can be sent). One output line per
//! command: `ok`, `ok:HEX`, `ok:none`, `ok:N` or `err:access-denied`, `err:no-such-store`,
//! `err:other:MESSAGE`. Every command runs even after a failure: the guest keeps going, as a
//! real attacker would. Commands act on the bucket opened last.
//!
//! - `open BUCKET` · `get KEY` · `set KEY VALUE` · `del KEY` · `exists KEY` · `incr KEY DELTA`
//! - `fill KEY N`: sets KEY to N bytes of `x` (huge values without huge input)
//! - `flood PREFIX N SIZE`: sets keys PREFIX0..PREFIX(N-1) to SIZE bytes each; stops at the
//!   first error: `ok:COUNT` or `err:COUNT:MESSAGE`
//! - `list`: every key over all pages: `ok:HEX,HEX,...`
//! - `getmany KEY,KEY` (`ok:HEX=HEX|none,...`) · `setmany KEY=VALUE,...` · `delmany KEY,KEY`
//! - `spin MS`: keeps the CPU busy for MS milliseconds (decimal), bucket or not (a call still
//!   running after what it wrote)

wit_bindgen::generate!({ path: ["../../../wit", "wit"], world: "warden-examples:hostile-kv/hostile-kv", generate_all });

use exports::warden::extension::handler::Guest;
use warden::extension::types::CallError;
use wasi::keyvalue::{atomics, batch, store};

struct Hostile;

export!(Hostile);

impl Guest for Hostile {
    fn call(method: String, input: Vec<u8>) -> Result<Vec<u8>, CallError> {
        if method != "run" {
            return Err(CallError {
                code: "not-found".into(),
                message: method,
            });
        }
        // A JSON string (the runner API's input) is a script too: its quotes are dropped.
        let script = String::from_utf8_lossy(&input);
        let script = script.trim().trim_matches('"');
        let mut bucket: Option<store::Bucket> = None;
        let mut out = String::new();
        for line in script.split(['\n', ';']).filter(|l| !l.trim().is_empty()) {
            out.push_str(&run(line, &mut bucket));
            out.push('\n');
        }
        Ok(out.into_bytes())
    }
}

fn run(line: &str, bucket: &mut Option<store::Bucket>) -> String {
    let args: Vec<&str> = line.split(' ').collect();
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    if args[0] == "open" {
        return match store::open(&text(arg(1))) {
            Ok(b) => {
                *bucket = Some(b);
                "ok".into()
            }
            Err(e) => err(e),
        };
    }
    if args[0] == "spin" {
        let ms = arg(1).parse::<u64>().unwrap_or(0);
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(ms) {
            std::hint::spin_loop();
        }
        return "ok".into();
    }
    let Some(b) = bucket.as_ref() else {
        return "err:no-bucket".into();
    };
    let result = match args[0] {
        "get" => b
            .get(&text(arg(1)))
            .map(|v| v.map_or("none".into(), |v| hex(&v))),
        "set" => b.set(&text(arg(1)), &unhex(arg(2))).map(|()| String::new()),
        "fill" => b
            .set(&text(arg(1)), &vec![b'x'; num(arg(2))])
            .map(|()| String::new()),
        "del" => b.delete(&text(arg(1))).map(|()| String::new()),
        "exists" => b.exists(&text(arg(1))).map(|e| e.to_string()),
        "incr" => atomics::increment(b, &text(arg(1)), num(arg(2)) as u64).map(|n| n.to_string()),
        "list" => list(b),
        "flood" => return flood(b, &text(arg(1)), num(arg(2)), num(arg(3))),
        "getmany" => batch::get_many(b, &keys(arg(1))).map(|vs| {
            vs.into_iter()
                .map(|v| {
                    v.map_or("none".into(), |(k, v)| {
                        format!("{}={}", hex(k.as_bytes()), hex(&v))
                    })
                })
                .collect::<Vec<_>>()
                .join(",")
        }),
        "setmany" => {
            let pairs: Vec<(String, Vec<u8>)> = arg(1)
                .split(',')
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (text(k), unhex(v))
                })
                .collect();
            batch::set_many(b, &pairs).map(|()| String::new())
        }
        "delmany" => batch::delete_many(b, &keys(arg(1))).map(|()| String::new()),
        other => return format!("err:unknown-command:{other}"),
    };
    match result {
        Ok(s) if s.is_empty() => "ok".into(),
        Ok(s) => format!("ok:{s}"),
        Err(e) => err(e),
    }
}

fn list(b: &store::Bucket) -> Result<String, store::Error> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = b.list_keys(cursor)?;
        keys.extend(page.keys.iter().map(|k| hex(k.as_bytes())));
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(keys.join(",")),
        }
    }
}

fn flood(b: &store::Bucket, prefix: &str, n: usize, size: usize) -> String {
    let value = vec![b'f'; size];
    for i in 0..n {
        if let Err(e) = b.set(&format!("{prefix}{i}"), &value) {
            return format!("err:{i}:{}", err(e));
        }
    }
    format!("ok:{n}")
}

fn err(e: store::Error) -> String {
    match e {
        store::Error::AccessDenied => "err:access-denied".into(),
        store::Error::NoSuchStore => "err:no-such-store".into(),
        store::Error::Other(m) => format!("err:other:{m}"),
    }
}

fn keys(list: &str) -> Vec<String> {
    list.split(',').map(text).collect()
}

fn num(s: &str) -> usize {
    s.parse().unwrap_or(0)
}

fn text(h: &str) -> String {
    String::from_utf8_lossy(&unhex(h)).into_owned()
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
