//! Small procfs parsers the procfs crate lacks (or where its shape loses information, like auxv
//! order), as pure functions over the file contents.

/// Auxiliary vector pairs in order, up to (not including) AT_NULL.
pub fn auxv(raw: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for pair in raw.chunks_exact(16) {
        let k = u64::from_le_bytes(pair[..8].try_into().unwrap());
        let v = u64::from_le_bytes(pair[8..].try_into().unwrap());
        if k == 0 {
            break;
        }
        out.push((k, v));
    }
    out
}

/// /proc/PID/personality: one hex number.
pub fn personality(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim(), 16).ok()
}

/// A task's comm from /proc/PID[/task/TID]/status text: `Name:` as printed, untrimmed (a comm
/// may start or end with spaces), with the two characters the kernel escapes there (newline and
/// backslash) unescaped.
pub fn status_comm(text: &str) -> Option<String> {
    let printed = text.lines().find_map(|l| l.strip_prefix("Name:\t"))?;
    let mut out = String::with_capacity(printed.len());
    let mut chars = printed.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

/// A task's state letter from /proc/PID[/task/TID]/status text (`State:\tS (sleeping)`).
pub fn status_state(text: &str) -> Option<char> {
    status_field(text, "State")?.chars().next()
}

/// The value of `Name:` in /proc/PID/status text.
pub fn status_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim())
    })
}

/// Credentials from /proc/PID[/task/TID]/status text: the ids, groups, capability sets and
/// seccomp fields as the kernel prints them (missing lines read as 0).
pub fn creds(status: &str) -> super::Creds {
    let ids = |name: &str| {
        let mut v = [0u32; 4];
        for (slot, w) in v.iter_mut().zip(status_field(status, name).unwrap_or("").split_whitespace()) {
            *slot = w.parse().unwrap_or(0);
        }
        v
    };
    let hex = |name: &str| status_field(status, name).and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0);
    let num = |name: &str| status_field(status, name).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    super::Creds {
        uids: ids("Uid"),
        gids: ids("Gid"),
        groups: status_field(status, "Groups").unwrap_or("").split_whitespace().filter_map(|g| g.parse().ok()).collect(),
        cap_inh: hex("CapInh"),
        cap_prm: hex("CapPrm"),
        cap_eff: hex("CapEff"),
        cap_bnd: hex("CapBnd"),
        cap_amb: hex("CapAmb"),
        no_new_privs: num("NoNewPrivs") != 0,
        seccomp_mode: num("Seccomp"),
        seccomp_filters: num("Seccomp_filters"),
    }
}

/// `Seccomp:` (0 disabled, 1 strict, 2 filter) in /proc/PID/status text.
pub fn seccomp_mode(status: &str) -> Option<u32> {
    status_field(status, "Seccomp")?.parse().ok()
}

/// `TracerPid:` in /proc/PID/status text.
pub fn tracer_pid(status: &str) -> Option<i32> {
    status_field(status, "TracerPid")?.parse().ok()
}

/// Resource names in /proc/PID/limits, in RLIMIT_* order (the index is the resource number).
pub const LIMIT_NAMES: [&str; 16] = [
    "Max cpu time",
    "Max file size",
    "Max data size",
    "Max stack size",
    "Max core file size",
    "Max resident set",
    "Max processes",
    "Max open files",
    "Max locked memory",
    "Max address space",
    "Max file locks",
    "Max pending signals",
    "Max msgqueue size",
    "Max nice priority",
    "Max realtime priority",
    "Max realtime timeout",
];

/// Parses /proc/PID/limits (the fixed-column table). Needed because prlimit() on a task of
/// another uid fails without CAP_SYS_RESOURCE, while the file stays readable.
pub fn limits(text: &str) -> Result<Vec<super::Rlimit>, String> {
    let mut out = Vec::new();
    for (res, name) in LIMIT_NAMES.iter().enumerate() {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .ok_or_else(|| format!("no \"{name}\" line"))?;
        let mut vals = line[name.len()..].split_whitespace();
        let mut val = |what: &str| -> Result<u64, String> {
            match vals.next() {
                Some("unlimited") => Ok(u64::MAX),
                Some(v) => v.parse().map_err(|_| format!("{name}: bad {what} {v:?}")),
                None => Err(format!("{name}: missing {what}")),
            }
        };
        let soft = val("soft limit")?;
        let hard = val("hard limit")?;
        out.push(super::Rlimit {
            resource: res as u32,
            name: name.to_string(),
            soft,
            hard,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn comm_and_state_from_status() {
        let st = "Name:\t a\\nb\\\\c \nUmask:\t0022\nState:\tt (tracing stop)\n";
        assert_eq!(status_comm(st).as_deref(), Some(" a\nb\\c "));
        assert_eq!(status_state(st), Some('t'));
        assert_eq!(status_comm("Umask:\t0022\n"), None);
    }

    use super::*;

    const LIMITS: &str =
        "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max file size             unlimited            unlimited            bytes     \n\
Max data size             unlimited            unlimited            bytes     \n\
Max stack size            8388608              unlimited            bytes     \n\
Max core file size        0                    unlimited            bytes     \n\
Max resident set          unlimited            unlimited            bytes     \n\
Max processes             15421                15421                processes \n\
Max open files            1024                 524288               files     \n\
Max locked memory         8388608              8388608              bytes     \n\
Max address space         unlimited            unlimited            bytes     \n\
Max file locks            unlimited            unlimited            locks     \n\
Max pending signals       15421                15421                signals   \n\
Max msgqueue size         819200               819200               bytes     \n\
Max nice priority         0                    0                    \n\
Max realtime priority     0                    0                    \n\
Max realtime timeout      unlimited            unlimited            us        \n";

    #[test]
    fn creds_and_stat_fields() {
        let st = "Name:\tx\nUmask:\t0027\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t6\t7\t8\nGroups:\t4 24 27 \n\
                  CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n\
                  CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000004\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\n";
        let c = creds(st);
        assert_eq!((c.uids, c.gids), ([1000, 1001, 1002, 1003], [5, 6, 7, 8]));
        assert_eq!(c.groups, [4, 24, 27]);
        assert_eq!((c.cap_prm, c.cap_amb, c.cap_inh), (0x1ff_ffff_ffff, 4, 0));
        assert!(c.no_new_privs);
        assert_eq!((c.seccomp_mode, c.seccomp_filters), (2, 3));
        assert_eq!(seccomp_mode(st), Some(2));
        assert_eq!(creds("Groups:\t\n").groups, Vec::<u32>::new());
    }

    #[test]
    fn limits_table() {
        let l = limits(LIMITS).unwrap();
        assert_eq!(l.len(), 16);
        assert_eq!((l[3].soft, l[3].hard), (8388608, u64::MAX));
        assert_eq!((l[7].resource, l[7].soft, l[7].hard), (7, 1024, 524288));
        assert_eq!((l[13].soft, l[15].soft), (0, u64::MAX));
        assert!(limits("Limit Soft\n").is_err());
    }

    #[test]
    fn auxv_pairs() {
        let mut raw = Vec::new();
        for (k, v) in [(33u64, 0x7ffd_1000u64), (6, 4096), (0, 0)] {
            raw.extend_from_slice(&k.to_le_bytes());
            raw.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(auxv(&raw), vec![(33, 0x7ffd_1000), (6, 4096)]);
    }

    #[test]
    fn personality_and_status() {
        assert_eq!(personality("00400000\n"), Some(0x0040_0000));
        let st = "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t3\n";
        assert_eq!(status_field(st, "Seccomp_filters"), Some("3"));
        assert_eq!(status_field(st, "Seccomp"), Some("2"));
    }
}
