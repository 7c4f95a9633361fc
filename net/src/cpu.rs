//! CPU time of a process from `/proc/<pid>/stat`: the SFU node's load report and the load
//! generator's measurements of the server under test read it the same way. Also per thread
//! (`/proc/<pid>/task/*/stat`) and per core (`/proc/stat`), so a benchmark can show where the
//! time went and whether the core it pinned the server to was busy with anything else.

use std::collections::BTreeMap;

/// utime + stime of a process (this one when `pid` is `None`), in seconds; `None` when the
/// process is gone or its stat line does not parse.
pub fn process_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    cpu_seconds_of_stat(&stat, ticks_per_second())
}

/// Fields 14 and 15 (utime, stime, in clock ticks) of a stat line, in seconds.
fn cpu_seconds_of_stat(stat: &str, ticks_per_second: f64) -> Option<f64> {
    // The command name (field 2) may contain spaces and ')'; the fields after it follow the
    // last ')', starting with field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / ticks_per_second)
}

/// CPU seconds of each thread of `pid`, summed by thread name (a pool's threads share one:
/// `tokio-runtime-w`), sorted by name. Empty when the process is gone.
pub fn thread_cpu_seconds(pid: u32) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    let ticks = ticks_per_second();
    for task in tasks.flatten() {
        // A thread may exit between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let (Some(name), Some(seconds)) = (thread_name(&stat), cpu_seconds_of_stat(&stat, ticks))
        {
            *by_name.entry(name.to_owned()).or_insert(0.0) += seconds;
        }
    }
    by_name
}

/// The command name of a stat line (field 2, between the first '(' and the last ')').
fn thread_name(stat: &str) -> Option<&str> {
    let start = stat.find('(')? + 1;
    let end = stat.rfind(')')?;
    stat.get(start..end)
}

/// Busy seconds of one core since boot from `/proc/stat` (user, nice, system, irq, softirq and
/// steal: everything but idle and iowait), whoever ran there.
pub fn core_busy_seconds(core: usize) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    core_busy_of_proc_stat(&stat, core, ticks_per_second())
}

fn core_busy_of_proc_stat(stat: &str, core: usize, ticks_per_second: f64) -> Option<f64> {
    let label = format!("cpu{core}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label.as_str()))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum();
    Some(busy as f64 / ticks_per_second)
}

/// The one core `pid` may run on (`Cpus_allowed_list` of `/proc/<pid>/status` naming a single
/// CPU, as `taskset -c N` leaves it), or `None` when it may run on several or is gone.
pub fn pinned_core(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    pinned_core_of_status(&status)
}

fn pinned_core_of_status(status: &str) -> Option<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    list.parse().ok()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 if unknown).
fn ticks_per_second() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        ticks => ticks as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_a_command_name_with_spaces() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 \
                    3 0 100 1000000 200";
        assert_eq!(cpu_seconds_of_stat(stat, 100.0), Some(3.0));
        assert_eq!(cpu_seconds_of_stat("4242 (short) S 1", 100.0), None);
        assert_eq!(cpu_seconds_of_stat("no parenthesis", 100.0), None);
    }

    #[test]
    fn core_busy_time_counts_everything_but_idle_and_iowait() {
        let stat = "cpu  1 1 1 1 1 1 1 1 0 0\ncpu0 100 10 50 9999 500 5 5 30 0 0\n\
                    cpu1 1 0 0 1 0 0 0 0 0 0\nintr 1 2 3\n";
        // 100 + 10 + 50 + 5 + 5 + 30 = 200 ticks.
        assert_eq!(core_busy_of_proc_stat(stat, 0, 100.0), Some(2.0));
        assert_eq!(core_busy_of_proc_stat(stat, 1, 100.0), Some(0.01));
        assert_eq!(core_busy_of_proc_stat(stat, 2, 100.0), None);
        assert_eq!(core_busy_of_proc_stat("cpu0 x y", 0, 100.0), None);
        assert!(core_busy_seconds(0).is_some(), "this machine's /proc/stat");
    }

    #[test]
    fn a_single_allowed_cpu_is_the_pinned_core() {
        let status = |list: &str| format!("Name:\tmooyaho\nCpus_allowed_list:\t{list}\nX: 1\n");
        assert_eq!(pinned_core_of_status(&status("0")), Some(0));
        assert_eq!(pinned_core_of_status(&status("3")), Some(3));
        assert_eq!(pinned_core_of_status(&status("0-1")), None);
        assert_eq!(pinned_core_of_status(&status("0,2")), None);
        assert_eq!(pinned_core_of_status("Name: x\n"), None);
    }

    #[test]
    fn threads_are_summed_by_name() {
        assert_eq!(
            thread_name("12 (tokio-runtime-w) S 1"),
            Some("tokio-runtime-w")
        );
        assert_eq!(thread_name("12 (a (b)) S 1"), Some("a (b)"));
        let threads = thread_cpu_seconds(std::process::id());
        assert!(!threads.is_empty(), "this test's own threads");
        assert!(thread_cpu_seconds(u32::MAX).is_empty());
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_missing_one_has_none() {
        let spent = process_cpu_seconds(None).expect("own /proc/self/stat");
        assert!(spent >= 0.0);
        assert_eq!(process_cpu_seconds(Some(u32::MAX)), None);
    }
}
