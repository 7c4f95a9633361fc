//! CPU time of a process from `/proc/<pid>/stat`: the SFU node's load report and the load
//! generator's measurements of the server under test read it the same way.

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
    fn this_process_has_a_cpu_time_and_a_missing_one_has_none() {
        let spent = process_cpu_seconds(None).expect("own /proc/self/stat");
        assert!(spent >= 0.0);
        assert_eq!(process_cpu_seconds(Some(u32::MAX)), None);
    }
}
