//! `tessera-bench hostile`: hostile clients against a running
//! `tessera serve`, and what they cost the clients that behave.
//!
//! A victim connection sends the standard slate (the `slate` subcommand's
//! [`SlateLoop`]) open-loop at a fixed rate, or closed-loop, for the whole
//! run. Each attack's phase is preceded by an idle phase of the same
//! length, and its p99 is judged against that idle p99: on a shared,
//! noisy machine the baseline drifts, and a pair measured back to back
//! drifts least. With `--rounds N` every attack is measured N times and
//! its ratio is the median of the N pairs. The attacks:
//!
//! - `random-bytes`: many connections writing random bytes, raw or (after
//!   `HELLO`) inside valid headers with random opcodes and bodies,
//!   reconnecting whenever the server closes one;
//! - `huge-length`: headers declaring the largest body the server accepts
//!   (and larger), followed by a few bytes, then nothing;
//! - `half-open`: connections that send nothing, half a header, a `HELLO`
//!   then half a header, or that shut down their writing side (a peer that
//!   vanished) before or after `HELLO`;
//! - `slowloris`: valid frames (`HELLO`, or `PING` after a prompt `HELLO`)
//!   sent one byte per second per connection, reconnecting when closed;
//! - `connections`: thousands of connections (5,000 by default) that say
//!   `HELLO` and stay open;
//! - `pipelining`: connections writing batches of thousands of `GET_SLATE`
//!   and `PING` requests without waiting, their replies read apart;
//! - `no-read`: connections that send slates and never read a reply.
//!
//! For each phase it reports the victim's p50/p99/p999 (and p99 against the
//! idle phase before it), its failed slates, the server's peak RSS (`VmRSS` of
//! `/proc/<pid>/status`, sampled every 10 ms) and its RSS once the attack
//! is over, the server's open connections (`STATS`), the attack's own
//! figures, how long the server took to close the connections an attack
//! left dangling, and whether the server still answers a fresh client's
//! `PING` and slate afterwards. Output: a markdown table, or `--json`.

use crate::net_bench::{self, BoxError, Pacer, SlateLoop, TargetArgs};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_protocol::{
    encode_request, Body, FrameHeader, Hello, Opcode, Reply, Request, SlateRequest, Value,
    HEADER_LEN, PROTOCOL_VERSION,
};

/// How often the server's RSS is sampled.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Connect and `HELLO` timeout of the attack's connections.
const ATTACK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One round of the random-bytes attack writes to every connection once.
const RANDOM_ROUND: Duration = Duration::from_millis(100);
/// Requests per batch the pipelining attack writes in one go.
const PIPELINE_BATCH: usize = 2_000;
/// Descriptors kept free beyond the attack's connections.
const SPARE_FDS: u64 = 256;
/// Largest reply frame the attack's readers accept.
const MAX_REPLY_FRAME: usize = 64 << 20;

/// The attacks, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Random bytes on many connections.
    RandomBytes,
    /// Headers declaring huge bodies that never come.
    HugeLength,
    /// Connections that send nothing, half a frame, or shut down writing.
    HalfOpen,
    /// Valid frames at one byte per second per connection.
    Slowloris,
    /// Thousands of concurrent connections.
    Connections,
    /// Thousands of requests written without waiting for replies.
    Pipelining,
    /// Slates sent, replies never read.
    NoRead,
}

impl Attack {
    const ALL: [Attack; 7] = [
        Attack::RandomBytes,
        Attack::HugeLength,
        Attack::HalfOpen,
        Attack::Slowloris,
        Attack::Connections,
        Attack::Pipelining,
        Attack::NoRead,
    ];

    fn name(self) -> &'static str {
        match self {
            Attack::RandomBytes => "random-bytes",
            Attack::HugeLength => "huge-length",
            Attack::HalfOpen => "half-open",
            Attack::Slowloris => "slowloris",
            Attack::Connections => "connections",
            Attack::Pipelining => "pipelining",
            Attack::NoRead => "no-read",
        }
    }

    /// Whether the server should close the connections the attack leaves
    /// behind on its own (the others are idle or stalled clients it may
    /// keep until its idle timeout).
    fn server_should_close(self) -> bool {
        matches!(
            self,
            Attack::HugeLength | Attack::HalfOpen | Attack::Slowloris
        )
    }
}

/// Arguments of `tessera-bench hostile`.
#[derive(Clone, Debug, clap::Args)]
pub struct HostileArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The server's pid: its RSS is read from `/proc/<pid>/status`.
    #[arg(long)]
    server_pid: u32,
    /// Seconds the victim is measured during each phase.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Times each attack (with its idle phase before it) is measured.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds each attack runs before the victim is measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// The victim's slates per second (open loop: latency counts from each
    /// slate's scheduled time); 0 for a closed loop.
    #[arg(long, default_value_t = 500.0)]
    victim_rate: f64,
    /// Connections of the random-bytes, huge-length, half-open and
    /// slowloris attacks.
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Connections of the `connections` attack.
    #[arg(long, default_value_t = 5_000)]
    flood_connections: usize,
    /// Connections of the pipelining attack.
    #[arg(long, default_value_t = 2)]
    pipeline_connections: usize,
    /// Connections of the no-read attack.
    #[arg(long, default_value_t = 50)]
    no_read_connections: usize,
    /// Nice value of the attack's threads (0 to 19). On a real network an
    /// attacker's CPU is its own; here it shares the machine's cores with
    /// the server and the victim, and at the default 19 only the work the
    /// attack makes the server do competes with the victim. 0 measures the
    /// attack at the victim's priority.
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(0..=19))]
    attacker_nice: i32,
    /// Most seconds to wait, once an attack stops, for the server to close
    /// the connections it left dangling (half-open, slowloris, huge
    /// lengths).
    #[arg(long, default_value_t = 30)]
    close_wait: u64,
    /// The attacks to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    attacks: Vec<Attack>,
    /// Zipf exponent of the victim's user and article popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What an attack did, counted while it ran.
#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    refused: AtomicU64,
    closed_by_server: AtomicU64,
    bytes_sent: AtomicU64,
    requests_sent: AtomicU64,
    replies: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A connection an attack left open, and when it was opened.
struct Held {
    stream: TcpStream,
    opened: Instant,
}

/// What every attack needs.
struct Ctx {
    addr: SocketAddr,
    hello: Vec<u8>,
    /// A standard slate, its keys chosen per request.
    slate: SlateRequest,
    users: u64,
    articles: u64,
    args: HostileArgs,
}

impl Ctx {
    /// A `GET_SLATE` frame of random keys.
    fn slate_frame(&self, rng: &mut StdRng, id: u64, out: &mut Vec<u8>) -> Result<(), BoxError> {
        let mut request = self.slate.clone();
        let [u, a] = &mut request.parts[..] else {
            return Err("the slate request has two parts".into());
        };
        u.keys[0][0] = Value::Int64(rng.gen_range(0..self.users.max(1)) as i64);
        for key in &mut a.keys {
            key[0] = Value::Int64(rng.gen_range(0..self.articles.max(1)) as i64);
        }
        encode_request(id, &Request::GetSlate(request), out)?;
        Ok(())
    }
}

/// How the server dealt with the connections an attack left behind.
#[derive(Clone, Debug, Serialize)]
struct Closes {
    /// Connections left behind when the attack stopped.
    held: usize,
    /// How many of them the server closed within the wait.
    closed: usize,
    /// The longest a closed one lived, from its connect, seconds.
    longest_s: f64,
    /// How long the wait lasted, seconds after the attack stopped.
    waited_s: f64,
}

/// One phase's figures.
#[derive(Clone, Debug, Default, Serialize)]
struct Phase {
    phase: String,
    victim_slates: u64,
    victim_errors: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// p99 over the p99 of the idle phase just before (attack phases).
    p99_vs_idle: Option<f64>,
    rss_peak_mib: f64,
    rss_after_mib: f64,
    /// `connections_open` of the server's `STATS` at the end of the
    /// measurement.
    server_connections: Option<u64>,
    attack_opened: u64,
    attack_refused: u64,
    attack_closed_by_server: u64,
    attack_bytes_sent: u64,
    attack_requests_sent: u64,
    attack_replies: u64,
    closes: Option<Closes>,
    alive_after: bool,
    alive_error: Option<String>,
}

/// The whole run, as `--json` prints it.
#[derive(Serialize)]
struct Report {
    server_pid: u32,
    victim: String,
    duration_s: u64,
    connections: usize,
    flood_connections: usize,
    rounds: u32,
    phases: Vec<Phase>,
    /// Per attack, its p99 ratios over the rounds.
    attacks: Vec<AttackSummary>,
}

/// One attack's p99 against idle over every round.
#[derive(Serialize)]
struct AttackSummary {
    attack: String,
    /// `p99 / idle p99` of each round, in order.
    ratios: Vec<f64>,
    median_ratio: f64,
    /// Failed victim slates over every round.
    victim_errors: u64,
}

/// The victim's shared state: its histogram of the current phase.
struct Victim {
    hist: Mutex<Histogram<u64>>,
    errors: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
}

/// Runs every phase and prints the figures.
pub fn hostile(args: &HostileArgs) -> Result<(), BoxError> {
    let flood = raise_fd_limit(args.flood_connections.max(args.connections))?;
    let mut args = args.clone();
    if flood < args.flood_connections {
        eprintln!(
            "tessera-bench: the descriptor limit allows {flood} connections, not {}",
            args.flood_connections
        );
        args.flood_connections = flood;
    }
    let t = &args.target;
    let addr = t
        .addr()
        .to_socket_addrs()?
        .next()
        .ok_or("the address resolves to nothing")?;
    let (uf, af) = net_bench::slate_features(t)?;
    let mut hello = Vec::new();
    encode_request(
        0,
        &Request::Hello(Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client: "tessera-bench-hostile".into(),
            token: t.token.clone(),
        }),
        &mut hello,
    )?;
    let attacks = if args.attacks.is_empty() {
        Attack::ALL.to_vec()
    } else {
        args.attacks.clone()
    };
    let ctx = Arc::new(Ctx {
        addr,
        hello,
        slate: net_bench::slate_request(&uf, &af),
        users: t.users,
        articles: t.articles,
        args: args.clone(),
    });

    let victim = Arc::new(Victim {
        hist: Mutex::new(Histogram::new(3)?),
        errors: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    // The victim connects before any attack, as an established client.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let victim_thread = {
        let (victim, t, uf, af) = (victim.clone(), t.clone(), uf.clone(), af.clone());
        let (rate, zipf) = (args.victim_rate, args.zipf);
        std::thread::spawn(move || match SlateLoop::new(&t, &uf, &af, zipf, 42) {
            Ok(first) => {
                let _ = ready_tx.send(Ok(()));
                run_victim(first, &t, &uf, &af, rate, zipf, &victim);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
            }
        })
    };
    ready_rx
        .recv()
        .map_err(|_| "the victim thread ended")?
        .map_err(|e| format!("the victim could not connect: {e}"))?;
    let rss = Arc::new(RssSampler::new(args.server_pid));
    let sampler = {
        let rss = rss.clone();
        std::thread::spawn(move || rss.run())
    };

    let mut phases = Vec::new();
    let mut run = |attack: Option<Attack>| -> Result<bool, BoxError> {
        let phase = run_phase(&ctx, attack, &victim, &rss, &uf, &af)?;
        let alive = phase.alive_after;
        if !args.json {
            eprintln!(
                "{}: p99 {:.0} µs, RSS peak {:.0} MiB, alive {}",
                phase.phase, phase.p99_us, phase.rss_peak_mib, phase.alive_after
            );
        }
        phases.push(phase);
        Ok(alive)
    };
    let mut alive = true;
    'rounds: for _ in 0..args.rounds {
        for &attack in &attacks {
            alive = run(None)? && run(Some(attack))?;
            if !alive {
                break 'rounds;
            }
        }
    }
    if alive {
        run(None)?;
    }
    victim.stop.store(true, Ordering::Relaxed);
    rss.stop.store(true, Ordering::Relaxed);
    let _ = victim_thread.join();
    let _ = sampler.join();
    let summaries = judge_against_idle(&mut phases, &attacks);
    let report = Report {
        server_pid: args.server_pid,
        victim: if args.victim_rate > 0.0 {
            format!("1 connection, open loop at {} slates/s", args.victim_rate)
        } else {
            "1 connection, closed loop".into()
        },
        duration_s: args.duration,
        connections: args.connections,
        flood_connections: args.flood_connections,
        rounds: args.rounds,
        phases,
        attacks: summaries,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if !alive {
        return Err("the server stopped answering".into());
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "Victim: {}; {} s measured per phase. Server pid {}.\n",
        r.victim, r.duration_s, r.server_pid
    );
    println!(
        "| phase | victim slates | errors | p50 µs | p99 µs | p999 µs | p99 / idle | server RSS peak / after MiB | server conns | attack conns opened / refused / closed by server | attack traffic | dangling conns closed by server | alive after |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|");
    for p in &r.phases {
        let closes = p.closes.as_ref().map_or("–".to_string(), |c| {
            format!(
                "{} of {} (last {:.1} s after connect; waited {:.1} s)",
                c.closed, c.held, c.longest_s, c.waited_s
            )
        });
        let traffic = if p.attack_opened == 0 && p.attack_bytes_sent == 0 {
            "–".to_string()
        } else {
            format!(
                "{:.1} MB, {} requests, {} replies",
                p.attack_bytes_sent as f64 / 1e6,
                p.attack_requests_sent,
                p.attack_replies
            )
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.0} / {:.0} | {} | {} / {} / {} | {} | {} | {} |",
            p.phase,
            p.victim_slates,
            p.victim_errors,
            p.p50_us,
            p.p99_us,
            p.p999_us,
            p.p99_vs_idle.map_or("–".into(), |x| format!("{x:.2}×")),
            p.rss_peak_mib,
            p.rss_after_mib,
            p.server_connections
                .map_or("?".to_string(), |c| c.to_string()),
            p.attack_opened,
            p.attack_refused,
            p.attack_closed_by_server,
            traffic,
            closes,
            match &p.alive_error {
                None => "yes".to_string(),
                Some(e) => format!("**no**: {e}"),
            }
        );
    }
    println!(
        "\nVictim p99 against the idle phase just before, {} round(s):\n",
        r.rounds
    );
    println!("| attack | p99 / idle, median | each round | victim errors |");
    println!("|---|---:|---|---:|");
    for a in &r.attacks {
        let each: Vec<String> = a.ratios.iter().map(|x| format!("{x:.2}×")).collect();
        println!(
            "| {} | {:.2}× | {} | {} |",
            a.attack,
            a.median_ratio,
            each.join(", "),
            a.victim_errors
        );
    }
}

/// Sets each attack phase's p99 against the idle phase before it, and
/// sums up each attack over the rounds.
fn judge_against_idle(phases: &mut [Phase], attacks: &[Attack]) -> Vec<AttackSummary> {
    for i in 1..phases.len() {
        let (idle, phase) = (&phases[i - 1], &phases[i]);
        let paired = phase.phase != "idle" && idle.phase == "idle" && idle.p99_us > 0.0;
        let ratio = paired.then(|| phase.p99_us / idle.p99_us);
        phases[i].p99_vs_idle = ratio;
    }
    attacks
        .iter()
        .map(|a| {
            let runs: Vec<&Phase> = phases.iter().filter(|p| p.phase == a.name()).collect();
            let ratios: Vec<f64> = runs.iter().filter_map(|p| p.p99_vs_idle).collect();
            let median_ratio = if ratios.is_empty() {
                f64::NAN
            } else {
                crate::soak::median(ratios.clone())
            };
            AttackSummary {
                attack: a.name().to_string(),
                ratios,
                median_ratio,
                victim_errors: runs.iter().map(|p| p.victim_errors).sum(),
            }
        })
        .collect()
}

/// One phase: the attack (if any) starts, warms up, the victim is
/// measured, the attack stops, dangling connections are watched, and a
/// fresh client checks the server still answers.
fn run_phase(
    ctx: &Arc<Ctx>,
    attack: Option<Attack>,
    victim: &Victim,
    rss: &RssSampler,
    uf: &[String],
    af: &[String],
) -> Result<Phase, BoxError> {
    let args = &ctx.args;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    rss.peak.store(0, Ordering::Relaxed);
    let handle = attack.map(|a| {
        let (ctx, stop, counters) = (ctx.clone(), stop.clone(), counters.clone());
        std::thread::spawn(move || {
            lower_priority(ctx.args.attacker_nice);
            run_attack(a, &ctx, &stop, &counters)
        })
    });
    std::thread::sleep(Duration::from_secs(args.warmup));
    if let Ok(mut h) = victim.hist.lock() {
        h.reset();
    }
    let errors_before = victim.errors.load(Ordering::Relaxed);
    victim.measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(args.duration));
    victim.measuring.store(false, Ordering::Relaxed);
    let victim_errors = victim.errors.load(Ordering::Relaxed) - errors_before;
    let server_connections = server_connections(&args.target);
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let held = match handle {
        Some(h) => h.join().map_err(|_| "an attack thread panicked")??,
        None => Vec::new(),
    };
    let closes = match attack {
        Some(a) if a.server_should_close() => Some(watch_closes(
            held,
            stopped,
            Duration::from_secs(args.close_wait),
        )),
        _ => {
            drop(held);
            None
        }
    };
    let rss_peak = rss.peak.load(Ordering::Relaxed);
    // Let the server notice the attack's connections are gone.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = status_kib(args.server_pid, "VmRSS").unwrap_or(0);
    let alive = check_alive(&args.target, args.server_pid, uf, af, args.zipf);
    let hist = victim
        .hist
        .lock()
        .map_err(|_| "the victim's histogram is poisoned")?
        .clone();
    let q = |x: f64| hist.value_at_quantile(x) as f64 / 1e3;
    let c = |x: &AtomicU64| x.load(Ordering::Relaxed);
    Ok(Phase {
        phase: attack.map_or("idle", Attack::name).to_string(),
        victim_slates: hist.len(),
        victim_errors,
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: hist.max() as f64 / 1e3,
        p99_vs_idle: None,
        rss_peak_mib: rss_peak.max(rss_after) as f64 / 1024.0,
        rss_after_mib: rss_after as f64 / 1024.0,
        server_connections,
        attack_opened: c(&counters.opened),
        attack_refused: c(&counters.refused),
        attack_closed_by_server: c(&counters.closed_by_server),
        attack_bytes_sent: c(&counters.bytes_sent),
        attack_requests_sent: c(&counters.requests_sent),
        attack_replies: c(&counters.replies),
        closes,
        alive_after: alive.is_ok(),
        alive_error: alive.err(),
    })
}

/// Sends the victim's slates until told to stop, recording latencies
/// while `measuring`. A failed slate is counted and the connection
/// reopened.
fn run_victim(
    first: SlateLoop,
    t: &TargetArgs,
    uf: &[String],
    af: &[String],
    rate: f64,
    zipf: f64,
    v: &Victim,
) {
    let mut slates = Some(first);
    let mut pacer = (rate > 0.0).then(|| Pacer::new(Duration::from_secs_f64(1.0 / rate)));
    let mut seed = 43;
    while !v.stop.load(Ordering::Relaxed) {
        let Some(s) = slates.as_mut() else {
            seed += 1;
            match SlateLoop::new(t, uf, af, zipf, seed) {
                Ok(s) => slates = Some(s),
                Err(_) => {
                    if v.measuring.load(Ordering::Relaxed) {
                        v.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if let Some(p) = pacer.as_mut() {
                p.restart();
            }
            continue;
        };
        let start = pacer.as_mut().map_or_else(Instant::now, Pacer::wait);
        let result = s.next_slate();
        let ns = start.elapsed().as_nanos() as u64;
        let measuring = v.measuring.load(Ordering::Relaxed);
        match result {
            Ok(_) if measuring => {
                if let Ok(mut h) = v.hist.lock() {
                    let _ = h.record(ns.max(1));
                }
            }
            Ok(_) => {}
            Err(_) => {
                if measuring {
                    v.errors.fetch_add(1, Ordering::Relaxed);
                }
                slates = None;
            }
        }
    }
}

/// The server's peak RSS while a phase runs.
struct RssSampler {
    pid: u32,
    peak: AtomicU64,
    stop: AtomicBool,
}

impl RssSampler {
    fn new(pid: u32) -> RssSampler {
        RssSampler {
            pid,
            peak: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    fn run(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(kib) = status_kib(self.pid, "VmRSS") {
                self.peak.fetch_max(kib, Ordering::Relaxed);
            }
            std::thread::sleep(RSS_SAMPLE_EVERY);
        }
    }
}

/// A `/proc/<pid>/status` figure in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether the process is alive (not gone, not a zombie) and a fresh
/// client gets its `PING` and a slate answered.
fn check_alive(
    t: &TargetArgs,
    pid: u32,
    uf: &[String],
    af: &[String],
    zipf: f64,
) -> Result<(), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("the server process is gone: {e}"))?;
    if status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'))
    {
        return Err("the server process exited".into());
    }
    let mut client = net_bench::connect(t).map_err(|e| format!("connect: {e}"))?;
    match client.ping(b"still there?") {
        Ok(p) if p == b"still there?" => {}
        Ok(_) => return Err("PING came back changed".into()),
        Err(e) => return Err(format!("PING: {e}")),
    }
    SlateLoop::new(t, uf, af, zipf, 7)
        .and_then(|mut s| s.next_slate())
        .map(|_| ())
        .map_err(|e| format!("slate: {e}"))
}

/// The server's open connections from `STATS`.
fn server_connections(t: &TargetArgs) -> Option<u64> {
    let mut client = net_bench::connect(t).ok()?;
    let stats: serde_json::Value = serde_json::from_str(&client.stats().ok()?).ok()?;
    stats["server"]["connections_open"]
        .as_f64()
        .map(|c| c as u64)
}

/// Raises this process's soft descriptor limit to its hard limit; returns
/// how many connections that leaves room for.
fn raise_fd_limit(wanted: usize) -> Result<usize, BoxError> {
    // SAFETY: getrlimit and setrlimit read and write the struct we pass.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()).into());
    }
    let needed = wanted as u64 + SPARE_FDS;
    if limit.rlim_cur < needed && limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()).into());
        }
    }
    Ok(limit.rlim_cur.saturating_sub(SPARE_FDS).min(wanted as u64) as usize)
}

/// Sets the calling thread's nice value; threads it starts inherit it. A
/// refusal leaves the attack at normal priority, which only makes the
/// figures worse.
fn lower_priority(nice: i32) {
    // SAFETY: gettid has no arguments; setpriority only reads its integers.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc != 0 {
        eprintln!(
            "could not set the attack's nice value to {nice}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs `attack` until `stop`; returns the connections it leaves open.
fn run_attack(
    attack: Attack,
    ctx: &Ctx,
    stop: &AtomicBool,
    c: &Counters,
) -> Result<Vec<Held>, BoxError> {
    match attack {
        Attack::RandomBytes => random_bytes(ctx, stop, c),
        Attack::HugeLength => huge_length(ctx, stop, c),
        Attack::HalfOpen => half_open(ctx, stop, c),
        Attack::Slowloris => slowloris(ctx, stop, c),
        Attack::Connections => connections(ctx, stop, c),
        Attack::Pipelining => pipelining(ctx, stop, c),
        Attack::NoRead => no_read(ctx, stop, c),
    }
}

/// Connects; with `hello`, says `HELLO` and waits for the reply (an
/// error reply, the connection limit's `UNAVAILABLE` say, fails). The
/// stream is returned non-blocking.
fn open(ctx: &Ctx, hello: bool, c: &Counters) -> Result<TcpStream, BoxError> {
    let mut s = TcpStream::connect_timeout(&ctx.addr, ATTACK_CONNECT_TIMEOUT)?;
    let _ = s.set_nodelay(true);
    if hello {
        s.write_all(&ctx.hello)?;
        Counters::add(&c.bytes_sent, ctx.hello.len() as u64);
        s.set_read_timeout(Some(ATTACK_CONNECT_TIMEOUT))?;
        let (h, body) = read_frame(&mut s)?;
        if h.flags & tessera_protocol::flags::ERROR != 0 {
            let msg = tessera_protocol::decode_error(&body)
                .map_or_else(|e| e.to_string(), |b| b.code.name().to_string());
            return Err(format!("HELLO refused: {msg}").into());
        }
    }
    s.set_nonblocking(true)?;
    Counters::add(&c.opened, 1);
    Ok(s)
}

/// [`open`], counting a failure as refused.
fn open_counted(ctx: &Ctx, hello: bool, c: &Counters) -> Option<TcpStream> {
    let opened = open(ctx, hello, c).ok();
    if opened.is_none() {
        Counters::add(&c.refused, 1);
    }
    opened
}

/// Reads one frame (blocking).
fn read_frame(s: &mut TcpStream) -> Result<(FrameHeader, Vec<u8>), BoxError> {
    let mut header = [0u8; HEADER_LEN];
    s.read_exact(&mut header)?;
    let h = FrameHeader::decode(&header, MAX_REPLY_FRAME)?;
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body)?;
    Ok((h, body))
}

/// The largest frame the server accepts, from its `HELLO` reply.
fn max_frame(ctx: &Ctx) -> Result<usize, BoxError> {
    let mut s = TcpStream::connect_timeout(&ctx.addr, ATTACK_CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(ATTACK_CONNECT_TIMEOUT))?;
    s.write_all(&ctx.hello)?;
    let (_, body) = read_frame(&mut s)?;
    match Reply::decode(Opcode::Hello, Body::copy_from(&body))? {
        Reply::Hello(h) => Ok(h.max_frame as usize),
        _ => Err("HELLO got another reply".into()),
    }
}

/// Reads whatever the server sent on a non-blocking stream; false once
/// the server closed it.
fn drain(s: &mut TcpStream, sink: &mut [u8]) -> bool {
    loop {
        match s.read(sink) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Writes what the non-blocking stream takes now; false once it is closed.
fn write_some(s: &mut TcpStream, bytes: &[u8], c: &Counters) -> Result<usize, ()> {
    match s.write(bytes) {
        Ok(n) => {
            Counters::add(&c.bytes_sent, n as u64);
            Ok(n)
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => Ok(0),
        Err(_) => Err(()),
    }
}

fn sleep_until(t: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= t {
            return;
        }
        std::thread::sleep((t - now).min(Duration::from_millis(50)));
    }
}

/// Random bytes: every connection gets a chunk per round. Even-numbered
/// connections say `HELLO` first and then mostly send valid headers with
/// random opcodes and random bodies (which reach the body decoders); the
/// others send raw noise. A connection the server closes is reopened.
fn random_bytes(ctx: &Ctx, stop: &AtomicBool, c: &Counters) -> Result<Vec<Held>, BoxError> {
    let n = ctx.args.connections;
    let mut rng = StdRng::seed_from_u64(1);
    let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut sink = vec![0u8; 64 << 10];
    let mut chunk = Vec::with_capacity(16 << 10);
    let opcodes: Vec<u8> = (0u8..=0x60).chain([0x7f, 0xff]).collect();
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        for (i, slot) in conns.iter_mut().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let authenticated = i % 2 == 0;
            if slot.is_none() {
                *slot = open_counted(ctx, authenticated, c);
            }
            let Some(s) = slot.as_mut() else { continue };
            chunk.clear();
            if authenticated && rng.gen_bool(0.9) {
                for _ in 0..rng.gen_range(1..4) {
                    let len = rng.gen_range(0..2048usize);
                    let header = FrameHeader {
                        opcode: opcodes[rng.gen_range(0..opcodes.len())],
                        flags: 0,
                        request_id: rng.gen(),
                        body_len: len as u32,
                    };
                    chunk.extend_from_slice(&header.encode());
                    chunk.extend((0..len).map(|_| rng.gen::<u8>()));
                    Counters::add(&c.requests_sent, 1);
                }
            } else {
                let len = rng.gen_range(1..4096usize);
                chunk.extend((0..len).map(|_| rng.gen::<u8>()));
            }
            let open = write_some(s, &chunk, c).is_ok() && drain(s, &mut sink);
            if !open {
                Counters::add(&c.closed_by_server, 1);
                *slot = None;
            }
        }
        sleep_until(round + RANDOM_ROUND, stop);
    }
    Ok(Vec::new())
}

/// Headers declaring the largest body the server accepts (then 1 KiB of
/// it, then nothing), a body of 4 GiB, and a large frame before `HELLO`.
fn huge_length(ctx: &Ctx, stop: &AtomicBool, c: &Counters) -> Result<Vec<Held>, BoxError> {
    let max_frame = max_frame(ctx)?;
    let mut held = Vec::new();
    for i in 0..ctx.args.connections {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (authenticated, body_len) = match i % 4 {
            0 | 1 => (true, (max_frame - HEADER_LEN) as u32),
            2 => (true, u32::MAX),
            _ => (false, 1 << 20),
        };
        let Some(mut s) = open_counted(ctx, authenticated, c) else {
            continue;
        };
        let mut frame = FrameHeader {
            opcode: Opcode::Put as u8,
            flags: 0,
            request_id: i as u64,
            body_len,
        }
        .encode()
        .to_vec();
        frame.extend_from_slice(&[0u8; 1024]);
        if write_some(&mut s, &frame, c).is_ok() {
            Counters::add(&c.requests_sent, 1);
        }
        held.push(Held {
            stream: s,
            opened: Instant::now(),
        });
    }
    sleep_until(Instant::now() + Duration::from_secs(24 * 3600), stop);
    Ok(held)
}

/// Connections that send nothing, ten bytes of a header, `HELLO` then ten
/// bytes of a header, or shut down their writing side before or after
/// `HELLO` (as a peer that vanished would leave them).
fn half_open(ctx: &Ctx, stop: &AtomicBool, c: &Counters) -> Result<Vec<Held>, BoxError> {
    let mut held = Vec::new();
    for i in 0..ctx.args.connections {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let kind = i % 5;
        let Some(mut s) = open_counted(ctx, kind == 2 || kind == 4, c) else {
            continue;
        };
        match kind {
            1 => {
                let _ = write_some(&mut s, &ctx.hello[..10], c);
            }
            2 => {
                let _ = write_some(&mut s, &ctx.hello[..10], c);
            }
            3 | 4 => {
                let _ = s.shutdown(Shutdown::Write);
            }
            _ => {}
        }
        held.push(Held {
            stream: s,
            opened: Instant::now(),
        });
    }
    sleep_until(Instant::now() + Duration::from_secs(24 * 3600), stop);
    Ok(held)
}

/// A slowloris connection and where it is in its frame.
struct Slow {
    stream: TcpStream,
    opened: Instant,
    /// `HELLO` sent slowly, or a `PING` after a prompt `HELLO`.
    frame_is_hello: bool,
    at: usize,
}

/// Valid frames, one byte per second per connection: a `HELLO` on half of
/// them, `PING`s after a prompt `HELLO` on the others. A connection the
/// server closes is reopened, as a slowloris does.
fn slowloris(ctx: &Ctx, stop: &AtomicBool, c: &Counters) -> Result<Vec<Held>, BoxError> {
    let mut ping = Vec::new();
    encode_request(1, &Request::Ping(vec![b'z'; 32]), &mut ping)?;
    let open_slow = |i: usize| -> Option<Slow> {
        let frame_is_hello = i % 2 == 0;
        open_counted(ctx, !frame_is_hello, c).map(|stream| Slow {
            stream,
            opened: Instant::now(),
            frame_is_hello,
            at: 0,
        })
    };
    let n = ctx.args.connections;
    let mut conns: Vec<Option<Slow>> = (0..n).map(&open_slow).collect();
    let mut sink = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let second = Instant::now();
        for (i, slot) in conns.iter_mut().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Some(slow) = slot.as_mut() else {
                *slot = open_slow(i);
                continue;
            };
            let frame = if slow.frame_is_hello {
                &ctx.hello
            } else {
                &ping
            };
            let open = match write_some(&mut slow.stream, &frame[slow.at..=slow.at], c) {
                Ok(1) => {
                    slow.at += 1;
                    if slow.at == frame.len() {
                        Counters::add(&c.requests_sent, 1);
                        // After a whole HELLO, go on with PINGs.
                        slow.frame_is_hello = false;
                        slow.at = 0;
                    }
                    drain(&mut slow.stream, &mut sink)
                }
                Ok(_) => drain(&mut slow.stream, &mut sink),
                Err(()) => false,
            };
            if !open {
                Counters::add(&c.closed_by_server, 1);
                *slot = open_slow(i);
            }
        }
        sleep_until(second + Duration::from_secs(1), stop);
    }
    Ok(conns
        .into_iter()
        .flatten()
        .map(|s| Held {
            stream: s.stream,
            opened: s.opened,
        })
        .collect())
}

/// Thousands of connections that say `HELLO` and stay. All connect first,
/// then all send `HELLO`, then every reply is read: accepted, or refused
/// (`UNAVAILABLE`, or closed).
fn connections(ctx: &Ctx, stop: &AtomicBool, c: &Counters) -> Result<Vec<Held>, BoxError> {
    let mut streams = Vec::with_capacity(ctx.args.flood_connections);
    for _ in 0..ctx.args.flood_connections {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match TcpStream::connect_timeout(&ctx.addr, ATTACK_CONNECT_TIMEOUT) {
            Ok(s) => streams.push(s),
            Err(_) => Counters::add(&c.refused, 1),
        }
    }
    let mut sent = Vec::with_capacity(streams.len());
    for mut s in streams {
        if s.write_all(&ctx.hello).is_ok() {
            Counters::add(&c.bytes_sent, ctx.hello.len() as u64);
            sent.push(s);
        } else {
            Counters::add(&c.refused, 1);
        }
    }
    let mut held = Vec::with_capacity(sent.len());
    for mut s in sent {
        let _ = s.set_read_timeout(Some(ATTACK_CONNECT_TIMEOUT));
        match read_frame(&mut s) {
            Ok((h, _)) if h.flags & tessera_protocol::flags::ERROR == 0 => {
                Counters::add(&c.opened, 1);
                held.push(Held {
                    stream: s,
                    opened: Instant::now(),
                });
            }
            _ => Counters::add(&c.refused, 1),
        }
    }
    sleep_until(Instant::now() + Duration::from_secs(24 * 3600), stop);
    Ok(held)
}

/// Connections writing batches of [`PIPELINE_BATCH`] requests (slates and
/// pings) back to back, never waiting; a reader per connection counts the
/// replies.
fn pipelining(ctx: &Ctx, stop: &AtomicBool, c: &Counters) -> Result<Vec<Held>, BoxError> {
    let mut rng = StdRng::seed_from_u64(3);
    let mut batch = Vec::new();
    for id in 0..PIPELINE_BATCH as u64 {
        if id % 2 == 0 {
            ctx.slate_frame(&mut rng, id, &mut batch)?;
        } else {
            encode_request(id, &Request::Ping(b"flood".to_vec()), &mut batch)?;
        }
    }
    std::thread::scope(|scope| {
        for _ in 0..ctx.args.pipeline_connections {
            let Some(mut writer) = open_counted(ctx, true, c) else {
                continue;
            };
            let Ok(mut reader) = writer.try_clone() else {
                continue;
            };
            // Both halves share the socket: blocking, reads time out.
            let _ = writer.set_nonblocking(false);
            let _ = reader.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = writer.set_write_timeout(Some(Duration::from_secs(1)));
            let batch = &batch;
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if writer.write_all(batch).is_err() {
                        if !stop.load(Ordering::Relaxed) {
                            Counters::add(&c.closed_by_server, 1);
                        }
                        break;
                    }
                    Counters::add(&c.bytes_sent, batch.len() as u64);
                    Counters::add(&c.requests_sent, PIPELINE_BATCH as u64);
                }
            });
            scope.spawn(move || {
                let mut buf = vec![0u8; 256 << 10];
                let mut pending = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            pending.extend_from_slice(&buf[..n]);
                            Counters::add(&c.replies, count_frames(&mut pending));
                        }
                        Err(e)
                            if e.kind() == ErrorKind::WouldBlock
                                || e.kind() == ErrorKind::TimedOut
                                || e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            });
        }
    });
    Ok(Vec::new())
}

/// Removes whole frames from the front of `pending`; returns how many.
fn count_frames(pending: &mut Vec<u8>) -> u64 {
    let mut at = 0;
    let mut n = 0;
    while let Some(len) = pending.get(at + 16..at + 20) {
        let body = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if pending.len() < at + HEADER_LEN + body {
            break;
        }
        at += HEADER_LEN + body;
        n += 1;
    }
    pending.drain(..at);
    n
}

/// Connections that send slates as fast as the socket takes them and
/// never read a reply: the server must stop reading them once their
/// replies back up, and hold no more than its output buffer for each.
fn no_read(ctx: &Ctx, stop: &AtomicBool, c: &Counters) -> Result<Vec<Held>, BoxError> {
    let mut rng = StdRng::seed_from_u64(5);
    let mut frames = Vec::new();
    for id in 0..256 {
        ctx.slate_frame(&mut rng, id, &mut frames)?;
    }
    // Each connection's position in its endless stream of those frames.
    let mut conns: Vec<(TcpStream, usize)> = (0..ctx.args.no_read_connections)
        .filter_map(|_| open_counted(ctx, true, c).map(|s| (s, 0)))
        .collect();
    let frame_len = frames.len() / 256;
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        for (s, at) in &mut conns {
            loop {
                let start = *at % frames.len();
                match write_some(s, &frames[start..], c) {
                    Ok(0) | Err(()) => break,
                    Ok(n) => {
                        let before = *at / frame_len;
                        *at += n;
                        Counters::add(&c.requests_sent, (*at / frame_len - before) as u64);
                    }
                }
            }
        }
        sleep_until(round + Duration::from_millis(20), stop);
    }
    Ok(conns
        .into_iter()
        .map(|(stream, _)| Held {
            stream,
            opened: Instant::now(),
        })
        .collect())
}

/// Waits (up to `wait` after `since`) for the server to close every held
/// connection.
fn watch_closes(held: Vec<Held>, since: Instant, wait: Duration) -> Closes {
    let total = held.len();
    let mut open: Vec<Held> = held
        .into_iter()
        .filter(|h| h.stream.set_nonblocking(true).is_ok())
        .collect();
    let mut sink = vec![0u8; 64 << 10];
    let mut longest = Duration::ZERO;
    loop {
        let now = Instant::now();
        open.retain_mut(|h| {
            if drain(&mut h.stream, &mut sink) {
                return true;
            }
            longest = longest.max(now - h.opened);
            false
        });
        if open.is_empty() || now - since >= wait {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Closes {
        held: total,
        closed: total - open.len(),
        longest_s: longest.as_secs_f64(),
        waited_s: since.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, p99_us: f64) -> Phase {
        Phase {
            phase: name.to_string(),
            p99_us,
            ..Phase::default()
        }
    }

    #[test]
    fn each_attack_is_judged_against_the_idle_phase_before_it() {
        let mut phases = vec![
            phase("idle", 100.0),
            phase("pipelining", 300.0),
            phase("idle", 200.0),
            phase("no-read", 100.0),
            phase("idle", 50.0),
            phase("pipelining", 100.0),
            phase("idle", 100.0),
            phase("no-read", 150.0),
            phase("idle", 100.0),
        ];
        let summary = judge_against_idle(&mut phases, &[Attack::Pipelining, Attack::NoRead]);
        assert_eq!(phases[1].p99_vs_idle, Some(3.0));
        assert_eq!(phases[3].p99_vs_idle, Some(0.5));
        assert_eq!(phases[2].p99_vs_idle, None, "idle phases are not judged");
        assert_eq!(summary[0].ratios, vec![3.0, 2.0]);
        assert_eq!(summary[0].median_ratio, 2.5);
        assert_eq!(summary[1].ratios, vec![0.5, 1.5]);
        assert_eq!(summary[1].median_ratio, 1.0);
    }
}
