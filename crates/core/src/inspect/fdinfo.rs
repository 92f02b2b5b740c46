//! /proc/PID/fdinfo/N, parsed from text (pure functions, tested on captured fixtures).
//!
//! The procfs crate only knows the common `pos`/`flags`/`mnt_id` lines; the type-specific lines
//! CRIU needs (eventfd, epoll, signalfd, inotify, timerfd, locks) are parsed here.

use std::collections::BTreeMap;

/// One `tfd:` line of an epoll fd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpollTarget {
    pub tfd: i32,
    pub events: u32,
    pub data: u64,
    pub pos: u64,
    pub ino: u64,
    pub sdev: u64,
}

/// One `inotify wd:` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InotifyWatch {
    pub wd: i32,
    pub ino: u64,
    pub sdev: u64,
    pub mask: u32,
    pub ignored_mask: u32,
    pub fhandle_bytes: u32,
    pub fhandle_type: i32,
    /// The file handle as the hex text the kernel prints.
    pub f_handle: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerfdInfo {
    pub clockid: i32,
    pub ticks: u64,
    pub settime_flags: u32,
    pub it_value: (u64, u64),
    pub it_interval: (u64, u64),
}

/// Everything /proc/PID/fdinfo/N says about one descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfoText {
    pub pos: u64,
    /// open(2) flags, as the octal number the kernel prints.
    pub flags: u32,
    pub mnt_id: i32,
    pub ino: Option<u64>,
    pub eventfd_count: Option<u64>,
    pub eventfd_id: Option<u64>,
    pub epoll: Vec<EpollTarget>,
    pub signalfd_mask: Option<u64>,
    pub inotify: Vec<InotifyWatch>,
    pub timerfd: Option<TimerfdInfo>,
    /// `lock:` lines, verbatim after the prefix (they are also in /proc/locks).
    pub locks: Vec<String>,
    /// Lines this parser does not know, kept as key/value.
    pub other: BTreeMap<String, String>,
}

/// `key:value key:value` pairs of tfd/inotify lines (values may be separated by spaces after ':').
fn pairs(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let toks: Vec<&str> = s.split_whitespace().collect();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        if let Some((k, v)) = t.split_once(':') {
            if v.is_empty() && i + 1 < toks.len() && !toks[i + 1].contains(':') {
                out.insert(k.to_string(), toks[i + 1].to_string());
                i += 2;
                continue;
            }
            out.insert(k.to_string(), v.to_string());
        }
        i += 1;
    }
    out
}

fn hex(s: Option<&String>) -> u64 {
    s.and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0)
}

fn dec<T: std::str::FromStr + Default>(s: Option<&String>) -> T {
    s.and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// `(sec, nsec)` as printed in timerfd's it_value / it_interval.
fn timespec(s: &str) -> (u64, u64) {
    let t = s.trim().trim_start_matches('(').trim_end_matches(')');
    let mut it = t.split(',').map(|x| x.trim().parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

pub fn parse_fdinfo(text: &str) -> FdInfoText {
    let mut out = FdInfoText::default();
    let mut timer = TimerfdInfo::default();
    let mut is_timer = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("tfd:") {
            let p = pairs(&format!("tfd:{rest}"));
            out.epoll.push(EpollTarget {
                tfd: dec(p.get("tfd")),
                events: hex(p.get("events")) as u32,
                data: hex(p.get("data")),
                pos: hex(p.get("pos")),
                ino: hex(p.get("ino")),
                sdev: hex(p.get("sdev")),
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("inotify ") {
            let p = pairs(rest);
            out.inotify.push(InotifyWatch {
                wd: dec(p.get("wd")),
                ino: hex(p.get("ino")),
                sdev: hex(p.get("sdev")),
                mask: hex(p.get("mask")) as u32,
                ignored_mask: hex(p.get("ignored_mask")) as u32,
                fhandle_bytes: hex(p.get("fhandle-bytes")) as u32,
                fhandle_type: hex(p.get("fhandle-type")) as i32,
                f_handle: p.get("f_handle").cloned().unwrap_or_default(),
            });
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let v = value.trim();
        match key.trim() {
            "pos" => out.pos = v.parse().unwrap_or(0),
            "flags" => out.flags = u32::from_str_radix(v, 8).unwrap_or(0),
            "mnt_id" => out.mnt_id = v.parse().unwrap_or(0),
            "ino" => out.ino = v.parse().ok(),
            "eventfd-count" => out.eventfd_count = u64::from_str_radix(v, 16).ok(),
            "eventfd-id" => out.eventfd_id = v.parse().ok(),
            "sigmask" => out.signalfd_mask = u64::from_str_radix(v, 16).ok(),
            "clockid" => {
                is_timer = true;
                timer.clockid = v.parse().unwrap_or(0);
            }
            "ticks" => timer.ticks = v.parse().unwrap_or(0),
            "settime flags" => timer.settime_flags = u32::from_str_radix(v, 8).unwrap_or(0),
            "it_value" => timer.it_value = timespec(v),
            "it_interval" => timer.it_interval = timespec(v),
            "lock" => out.locks.push(v.to_string()),
            k => {
                out.other.insert(k.to_string(), v.to_string());
            }
        }
    }
    if is_timer {
        out.timerfd = Some(timer);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file_with_lock() {
        let t = "pos:\t42\nflags:\t0102002\nmnt_id:\t27\nino:\t131090\nlock:\t1: POSIX  ADVISORY  WRITE 4242 fe:00:131090 0 EOF\n";
        let f = parse_fdinfo(t);
        assert_eq!(
            (f.pos, f.flags, f.mnt_id, f.ino),
            (42, 0o102002, 27, Some(131090))
        );
        assert_eq!(
            f.locks,
            vec!["1: POSIX  ADVISORY  WRITE 4242 fe:00:131090 0 EOF".to_string()]
        );
    }

    #[test]
    fn eventfd_and_signalfd() {
        let f = parse_fdinfo("pos:\t0\nflags:\t02004002\nmnt_id:\t16\nino:\t1057\neventfd-count:               2a\neventfd-id: 7\n");
        assert_eq!(
            (f.eventfd_count, f.eventfd_id, f.flags),
            (Some(0x2a), Some(7), 0o2004002)
        );
        let s = parse_fdinfo(
            "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\nsigmask:\t0000000000004a00\n",
        );
        assert_eq!(s.signalfd_mask, Some(0x4a00));
    }

    #[test]
    fn epoll_targets() {
        let t = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\n\
tfd:        5 events:       19 data:                5  pos:0 ino:61af sdev:7\n\
tfd:        7 events:        1 data:     7fff00000007  pos:0 ino:3e8 sdev:d\n";
        let f = parse_fdinfo(t);
        assert_eq!(f.epoll.len(), 2);
        assert_eq!(
            f.epoll[0],
            EpollTarget {
                tfd: 5,
                events: 0x19,
                data: 5,
                pos: 0,
                ino: 0x61af,
                sdev: 7
            }
        );
        assert_eq!(f.epoll[1].data, 0x7fff00000007);
    }

    #[test]
    fn inotify_watch() {
        let t = "pos:\t0\nflags:\t00\nmnt_id:\t16\nino:\t1057\n\
inotify wd:1 ino:2 sdev:fe00000 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:0200000000000000\n";
        let f = parse_fdinfo(t);
        assert_eq!(
            f.inotify,
            vec![InotifyWatch {
                wd: 1,
                ino: 2,
                sdev: 0xfe00000,
                mask: 0xfff,
                ignored_mask: 0,
                fhandle_bytes: 8,
                fhandle_type: 1,
                f_handle: "0200000000000000".into()
            }]
        );
    }

    #[test]
    fn timerfd() {
        let t = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\nclockid: 1\nticks: 3\nsettime flags: 01\nit_value: (0, 49406829)\nit_interval: (1, 500)\n";
        let f = parse_fdinfo(t);
        assert_eq!(
            f.timerfd,
            Some(TimerfdInfo {
                clockid: 1,
                ticks: 3,
                settime_flags: 1,
                it_value: (0, 49406829),
                it_interval: (1, 500)
            })
        );
    }
}
