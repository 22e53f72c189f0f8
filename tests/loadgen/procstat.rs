//! CPU seconds and memory of server processes, read from /proc.

use std::collections::HashMap;

/// One process we watch.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub name: String,
}

/// Finds processes whose command line contains one of `patterns`.
pub fn find(patterns: &[String]) -> Vec<Proc> {
    let mut out = Vec::new();
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if let Some(p) = patterns.iter().find(|p| cmd.contains(p.as_str())) {
            if cmd.contains("shaddock-loadgen") {
                continue;
            }
            out.push(Proc { pid, name: p.clone() });
        }
    }
    out
}

/// utime + stime in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the watched processes: CPU at start, peak RSS over the run.
#[derive(Debug, Default)]
pub struct Sampler {
    procs: Vec<Proc>,
    cpu_start: HashMap<u32, f64>,
    pub rss_start: HashMap<u32, u64>,
    peak_rss: HashMap<u32, u64>,
}

impl Sampler {
    pub fn new(procs: Vec<Proc>) -> Self {
        let mut s = Self {
            cpu_start: procs
                .iter()
                .filter_map(|p| Some((p.pid, cpu_seconds(p.pid)?)))
                .collect(),
            rss_start: procs
                .iter()
                .filter_map(|p| Some((p.pid, rss_kib(p.pid)?)))
                .collect(),
            procs,
            ..Default::default()
        };
        s.sample();
        s
    }

    pub fn sample(&mut self) {
        for p in &self.procs {
            if let Some(r) = rss_kib(p.pid) {
                let e = self.peak_rss.entry(p.pid).or_default();
                *e = (*e).max(r);
            }
        }
    }

    /// Per watched name: (cpu seconds used since start, peak RSS KiB summed, RSS now summed,
    /// RSS at start summed).
    pub fn report(&mut self) -> Vec<(String, f64, u64, u64, u64)> {
        self.sample();
        let mut by_name: Vec<(String, f64, u64, u64, u64)> = Vec::new();
        for p in &self.procs {
            let cpu = cpu_seconds(p.pid).unwrap_or(0.0) - self.cpu_start.get(&p.pid).copied().unwrap_or(0.0);
            let peak = self.peak_rss.get(&p.pid).copied().unwrap_or(0);
            let now = rss_kib(p.pid).unwrap_or(0);
            let start = self.rss_start.get(&p.pid).copied().unwrap_or(0);
            match by_name.iter_mut().find(|e| e.0 == p.name) {
                Some(e) => {
                    e.1 += cpu;
                    e.2 += peak;
                    e.3 += now;
                    e.4 += start;
                }
                None => by_name.push((p.name.clone(), cpu, peak, now, start)),
            }
        }
        by_name
    }
}
