//! Facts about the machine a benchmark runs on, printed and saved beside its figures.
//!
//! On a VM the figures depend less on the CPU than on what a wake-up costs: with guest
//! halt-polling off, an idle vCPU halts at once and every wake-up that crosses vCPUs is a trip
//! through the host (~35 µs here, against ~5 µs on one vCPU; docs/performance.md, session 6).
//! Whether the kernel halt-polls is therefore part of every latency and throughput figure.

use std::path::Path;

use serde_json::{Value, json};

/// The guest halt-polling window, when the `haltpoll` cpuidle driver is loaded.
const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";
/// The cpuidle driver in use.
const CPUIDLE_DRIVER: &str = "/sys/devices/system/cpu/cpuidle/current_driver";
/// The running kernel's release.
const OS_RELEASE: &str = "/proc/sys/kernel/osrelease";

/// What is known about this machine; absent facts are `None` (not every kernel exposes them).
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: Option<String>,
    /// cpuidle driver.
    pub cpuidle: Option<String>,
    /// Guest halt-polling window in nanoseconds (0: a vCPU halts as soon as it idles).
    pub halt_poll_ns: Option<u64>,
}

impl Machine {
    /// Reads the facts from /proc and /sys.
    pub fn probe() -> Machine {
        Machine::probe_at(Path::new("/"))
    }

    /// Reads the facts under `root` (a test points it at a fake tree).
    fn probe_at(root: &Path) -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(root.join(p.trim_start_matches('/')))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read(OS_RELEASE),
            cpuidle: read(CPUIDLE_DRIVER),
            halt_poll_ns: read(HALT_POLL_NS).and_then(|s| s.parse().ok()),
        }
    }

    /// One line for the top of a report.
    pub fn line(&self) -> String {
        let unknown = || "unknown".to_string();
        let halt_poll = match self.halt_poll_ns {
            Some(0) => "off (every cross-CPU wake-up pays a vCPU wake)".to_string(),
            Some(ns) => format!("{} µs", ns / 1000),
            None => "n/a".to_string(),
        };
        format!(
            "machine: {} CPUs, kernel {}, cpuidle {}, guest halt-polling {}",
            self.cpus,
            self.kernel.clone().unwrap_or_else(unknown),
            self.cpuidle.clone().unwrap_or_else(unknown),
            halt_poll,
        )
    }

    /// The same as JSON.
    pub fn json(&self) -> Value {
        json!({"cpus": self.cpus, "kernel": self.kernel, "cpuidle": self.cpuidle,
            "guest_halt_poll_ns": self.halt_poll_ns})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    }

    #[test]
    fn halt_polling_off_is_named_as_such() {
        let root = fake(&[
            (OS_RELEASE, "6.18.44\n"),
            (CPUIDLE_DRIVER, "haltpoll\n"),
            (HALT_POLL_NS, "0\n"),
        ]);
        let m = Machine::probe_at(root.path());
        assert_eq!(m.kernel.as_deref(), Some("6.18.44"));
        assert_eq!(m.cpuidle.as_deref(), Some("haltpoll"));
        assert_eq!(m.halt_poll_ns, Some(0));
        assert!(m.line().contains("guest halt-polling off"), "{}", m.line());
        assert_eq!(m.json()["guest_halt_poll_ns"], 0);
    }

    #[test]
    fn a_window_is_shown_in_microseconds_and_missing_facts_are_unknown() {
        let root = fake(&[(HALT_POLL_NS, "200000")]);
        let m = Machine::probe_at(root.path());
        assert_eq!(m.halt_poll_ns, Some(200_000));
        assert!(
            m.line().contains("guest halt-polling 200 µs"),
            "{}",
            m.line()
        );
        assert!(m.line().contains("kernel unknown"), "{}", m.line());
        assert!(m.json()["kernel"].is_null());
        let none = Machine::probe_at(fake(&[]).path());
        assert!(
            none.line().contains("guest halt-polling n/a"),
            "{}",
            none.line()
        );
    }
}
