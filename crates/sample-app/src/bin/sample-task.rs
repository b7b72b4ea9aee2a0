//! A one-off command for tests of release tasks, with no shell needed (it runs
//! `FROM scratch`): prints lines, appends a line to a file, sleeps, exits.
//!
//! ```text
//! sample-task [--print TEXT]... [--stderr TEXT]... [--append PATH] [--sleep-ms N] [--exit CODE]
//! ```
//!
//! The options act in this order: print, append, sleep, exit.

use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut print = Vec::new();
    let mut stderr = Vec::new();
    let mut append = None;
    let mut sleep_ms = 0u64;
    let mut exit = 0i32;
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("sample-task: {flag} needs a value");
                std::process::exit(2);
            })
        };
        match flag.as_str() {
            "--print" => print.push(value()),
            "--stderr" => stderr.push(value()),
            "--append" => append = Some(value()),
            "--sleep-ms" => sleep_ms = value().parse().expect("--sleep-ms: a number"),
            "--exit" => exit = value().parse().expect("--exit: a number"),
            other => {
                eprintln!("sample-task: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    for line in print {
        println!("{line}");
    }
    for line in stderr {
        eprintln!("{line}");
    }
    if let Some(path) = append {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| {
                eprintln!("sample-task: {path}: {e}");
                std::process::exit(1);
            });
        writeln!(f, "run {}", std::process::id()).expect("the marker is written");
    }
    std::thread::sleep(std::time::Duration::from_millis(sleep_ms));
    std::process::exit(exit);
}
