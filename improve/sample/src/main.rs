//! `ghost-sample PORT`: answers one line per request on 127.0.0.1:PORT — a number n — with the
//! number of primes up to n.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() {
    let port: u16 = match std::env::args().nth(1).and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => {
            eprintln!("usage: ghost-sample PORT");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ghost-sample: 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("ghost-sample: listening on 127.0.0.1:{port}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut out = match stream.try_clone() {
                Ok(s) => s,
                Err(_) => return,
            };
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let reply = match line.trim().parse::<u64>() {
                    Ok(n) if n <= 1_000_000 => ghost_sample::count_primes(n).to_string(),
                    Ok(_) => "error: at most 1000000".to_string(),
                    Err(_) => format!("error: not a number: {line:?}"),
                };
                if writeln!(out, "{reply}").is_err() {
                    return;
                }
            }
        });
    }
}
