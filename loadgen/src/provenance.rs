//! Where a report came from: the code, the machine and the command, so a figure quoted later can
//! be traced to what produced it (and compared only with runs of the same kind).

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// The code, machine and command behind one report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The commit checked out where the running binary lives (`git rev-parse HEAD` from its
    /// directory; `benches/run.sh` builds right before it runs), if that is a git checkout.
    pub commit: Option<String>,
    /// Whether tracked files differed from that commit.
    pub dirty: Option<bool>,
    /// When the run started, RFC 3339 UTC.
    pub date: String,
    pub cpu_model: Option<String>,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// `uname -r`'s release (from /proc).
    pub kernel: Option<String>,
    /// The generator's own command line, secrets redacted (reports are committed and shared).
    pub command_line: Vec<String>,
}

impl Provenance {
    /// Collects it now.
    pub fn collect() -> Self {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf));
        let git = |args: &[&str]| -> Option<String> {
            let output = Command::new("git")
                .args(args)
                .current_dir(exe_dir.as_deref()?)
                .output()
                .ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        };
        let commit = git(&["rev-parse", "HEAD"]);
        let dirty = commit
            .as_ref()
            .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
            .map(|changes| !changes.is_empty());
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            commit,
            dirty,
            date,
            cpu_model: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|info| cpu_model(&info)),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|release| release.trim().to_owned()),
            command_line: redacted(std::env::args()),
        }
    }
}

/// Options whose value is a credential (`--api-key KEY` or `--api-key=KEY`).
const SECRET_OPTIONS: &[&str] = &["--api-key", "--secret", "--token", "--password"];

/// `args` with the value of every [`SECRET_OPTIONS`] option replaced by `<redacted>`.
fn redacted(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut hide_next = false;
    for arg in args {
        if std::mem::take(&mut hide_next) {
            out.push("<redacted>".to_owned());
            continue;
        }
        match arg.split_once('=') {
            Some((option, _)) if SECRET_OPTIONS.contains(&option) => {
                out.push(format!("{option}=<redacted>"));
            }
            _ => {
                hide_next = SECRET_OPTIONS.contains(&arg.as_str());
                out.push(arg);
            }
        }
    }
    out
}

/// The first `model name` of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_model_is_the_first_model_name() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\nmodel name\t: other\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn credentials_on_the_command_line_are_redacted() {
        let args = [
            "mooyaho",
            "loadgen",
            "--api-key",
            "k3y",
            "--url",
            "http://x",
            "--api-key=k3y",
            "--token",
        ]
        .map(String::from);
        assert_eq!(
            redacted(args),
            [
                "mooyaho",
                "loadgen",
                "--api-key",
                "<redacted>",
                "--url",
                "http://x",
                "--api-key=<redacted>",
                "--token",
            ]
        );
    }

    #[test]
    fn collected_provenance_names_this_machine_and_command() {
        let provenance = Provenance::collect();
        assert!(provenance.cpus >= 1);
        assert!(provenance.date.ends_with('Z'), "{}", provenance.date);
        assert!(!provenance.command_line.is_empty());
        assert!(provenance.kernel.is_some());
        // Test binaries live under target/, inside this checkout.
        assert_eq!(provenance.commit.as_ref().map(String::len), Some(40));
    }
}
