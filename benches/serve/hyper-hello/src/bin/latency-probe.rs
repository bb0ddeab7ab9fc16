//! B's client in scripts/noisy-neighbour.sh: one keep-alive connection, one GET at a time, for
//! a duration; prints `requests seconds non2xx p50_ms p99_ms max_ms mean_ms`, each request's
//! latency measured here from the write of its request to the last byte of its answer (wrk's
//! own latency figures came out inconsistent with its request counts on one connection).
//!
//! Usage: latency-probe HOST:PORT PATH BEARER SECONDS

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: latency-probe HOST:PORT PATH BEARER SECONDS");
        std::process::exit(2);
    }
    let (addr, path, key) = (&args[1], &args[2], &args[3]);
    let seconds: f64 = args[4].trim_end_matches('s').parse().unwrap_or(10.0);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut took = Vec::new();
    let mut bad = 0u64;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut line = String::new();
    while Instant::now() < until {
        let t = Instant::now();
        writer.write_all(request.as_bytes()).expect("write");
        line.clear();
        reader.read_line(&mut line).expect("status line");
        if !line.starts_with("HTTP/1.1 2") {
            bad += 1;
        }
        let mut length = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).expect("body");
        took.push(t.elapsed());
    }
    let elapsed = started.elapsed().as_secs_f64();
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(took[((took.len() as f64 * q) as usize).min(took.len() - 1)]);
    let mean = took.iter().map(|d| ms(*d)).sum::<f64>() / took.len() as f64;
    println!(
        "{} {:.3} {} {:.3} {:.3} {:.3} {:.3}",
        took.len(),
        elapsed,
        bad,
        at(0.50),
        at(0.99),
        ms(*took.last().expect("one request")),
        mean
    );
}
