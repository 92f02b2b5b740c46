//! The SysV calls themselves, run in whatever IPC namespace the calling thread is in. Ids come
//! from /proc/sysvipc/{shm,sem,msg} (which list the reader's namespace), each object's state from
//! IPC_STAT, semaphore values from GETALL and their last users from GETPID, messages from
//! msgrcv(MSG_COPY), which copies a message by position and leaves the queue as it was.

use std::fs;

use nix::errno::Errno;

use crate::error::{Error, ErrorCode, Result};

// linux/ipc.h, linux/msg.h, linux/sem.h
const MSG_COPY: i32 = 0o40000;
const GETPID: i32 = 11;
const GETALL: i32 = 13;

/// ipc_desc_entry: the object's identity and permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpcDesc {
    pub key: u32,
    pub id: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// Permission bits plus the kernel's own (SHM_DEST, SHM_LOCKED), as IPC_STAT reports them.
    pub mode: u32,
}

#[derive(Debug, Clone, Default)]
pub struct ShmSegment {
    pub desc: IpcDesc,
    pub size: u64,
    /// Attachments: one per VMA mapping it, in any process of the namespace.
    pub nattch: u64,
    /// The creator, and the last process to attach or detach it.
    pub cpid: i32,
    pub lpid: i32,
}

#[derive(Debug, Clone, Default)]
pub struct SemSet {
    pub desc: IpcDesc,
    pub values: Vec<u16>,
    /// The last process to operate on each semaphore (0: none yet).
    pub pids: Vec<i32>,
}

#[derive(Debug, Clone, Default)]
pub struct MsgQueue {
    pub desc: IpcDesc,
    pub qbytes: u64,
    pub qnum: u64,
    /// The last sender and the last receiver (0: none yet).
    pub lspid: i32,
    pub lrpid: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Msg {
    pub mtype: i64,
    pub text: Vec<u8>,
}

/// An object IPC_STAT refused us (EACCES: another user's, and we lack CAP_IPC_OWNER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreadableObject {
    /// "shm", "sem" or "msg", as /proc/sysvipc names them.
    pub kind: &'static str,
    pub id: u32,
}

#[derive(Debug, Clone, Default)]
pub struct SysvObjects {
    pub shm: Vec<ShmSegment>,
    pub sem: Vec<SemSet>,
    pub msg: Vec<MsgQueue>,
    /// Listed but not readable by us: the caller decides whether the dump needs them.
    pub unreadable: Vec<UnreadableObject>,
}

/// The IPC sysctls of a namespace, as ipc_var_entry holds them: kernel/{sem,msg*,shm*,...} and
/// fs/mqueue/*. The *_next_id ones are None at their initial -1 (which cannot be written back).
#[derive(Debug, Clone, Default)]
pub struct IpcVars {
    pub sem_ctls: Vec<u32>,
    pub msg_ctlmax: u32,
    pub msg_ctlmnb: u32,
    pub msg_ctlmni: u32,
    pub auto_msgmni: u32,
    pub shm_ctlmax: u64,
    pub shm_ctlall: u64,
    pub shm_ctlmni: u32,
    pub shm_rmid_forced: u32,
    pub mq_queues_max: u32,
    pub mq_msg_max: u32,
    pub mq_msgsize_max: u32,
    pub mq_msg_default: Option<u32>,
    pub mq_msgsize_default: Option<u32>,
    pub msg_next_id: Option<u32>,
    pub sem_next_id: Option<u32>,
    pub shm_next_id: Option<u32>,
}

fn fail(what: String) -> impl FnOnce(Errno) -> Error {
    move |e| Error::new(ErrorCode::Kernel, format!("{what}: {}", e.desc()))
}

/// The ids /proc/sysvipc/`kind` lists (its second column).
fn ids(kind: &str) -> Result<Vec<i32>> {
    let path = format!("/proc/sysvipc/{kind}");
    let text = fs::read_to_string(&path).map_err(|e| Error::new(ErrorCode::Procfs, format!("reading {path}: {e}")))?;
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| Error::new(ErrorCode::Procfs, format!("{path}: unexpected line {l:?}")))
        })
        .collect()
}

// ipc_perm.mode is a u16 on x86_64 and a u32 on aarch64: the conversion is a no-op on one of them
#[allow(clippy::useless_conversion)]
fn desc(id: i32, p: &libc::ipc_perm) -> IpcDesc {
    #[cfg(not(target_env = "musl"))]
    let key = p.__key;
    // (the libc crate will rename it __key)
    #[cfg(target_env = "musl")]
    #[allow(deprecated)]
    let key = p.__ipc_perm_key;
    IpcDesc { key: key as u32, id: id as u32, uid: p.uid, gid: p.gid, cuid: p.cuid, cgid: p.cgid, mode: u32::from(p.mode) }
}

#[cfg(not(target_env = "musl"))]
use libc::semid_ds;

/// musl's struct semid_ds, which the libc crate declares for glibc only: the kernel's 64-bit
/// layout (x86_64 with a padding word after each time), sem_nsems an unsigned short.
#[cfg(target_env = "musl")]
#[allow(non_camel_case_types)]
#[repr(C)]
struct semid_ds {
    sem_perm: libc::ipc_perm,
    sem_otime: i64,
    #[cfg(target_arch = "x86_64")]
    unused1: libc::c_long,
    sem_ctime: i64,
    #[cfg(target_arch = "x86_64")]
    unused2: libc::c_long,
    sem_nsems: libc::c_ushort,
    nsems_pad: [u8; 6],
    unused3: libc::c_long,
    unused4: libc::c_long,
}

/// What an IPC_STAT of a listed object gave.
enum Stat {
    Filled,
    /// Removed since the listing.
    Gone,
    /// Not ours to read: a user's dump meets root's objects in the host's namespace.
    Denied,
}

fn stat(r: libc::c_int, what: impl FnOnce() -> String) -> Result<Stat> {
    match Errno::result(r) {
        Ok(_) => Ok(Stat::Filled),
        Err(Errno::EINVAL | Errno::EIDRM) => Ok(Stat::Gone),
        Err(Errno::EACCES) => Ok(Stat::Denied),
        Err(e) => Err(fail(what())(e)),
    }
}

/// Pushes the object to `unreadable` when denied; true when the struct was filled.
fn filled(stat: Stat, kind: &'static str, id: i32, unreadable: &mut Vec<UnreadableObject>) -> bool {
    match stat {
        Stat::Filled => true,
        Stat::Gone => false,
        Stat::Denied => {
            unreadable.push(UnreadableObject { kind, id: id as u32 });
            false
        }
    }
}

pub fn objects() -> Result<SysvObjects> {
    let mut out = SysvObjects::default();
    for id in ids("shm")? {
        // SAFETY: an all-zero shmid_ds is a valid value; IPC_STAT fills it.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one shmid_ds through the pointer.
        let r = stat(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) }, || format!("shmctl(shmid {id}, IPC_STAT)"))?;
        if !filled(r, "shm", id, &mut out.unreadable) {
            continue;
        }
        out.shm.push(ShmSegment {
            desc: desc(id, &ds.shm_perm),
            size: ds.shm_segsz as u64,
            nattch: ds.shm_nattch as u64,
            cpid: ds.shm_cpid,
            lpid: ds.shm_lpid,
        });
    }
    for id in ids("sem")? {
        // SAFETY: an all-zero semid_ds is a valid value; IPC_STAT fills it.
        let mut ds: semid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT takes a semid_ds pointer as its variadic argument and fills it.
        let r = stat(unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut semid_ds) }, || format!("semctl(semid {id}, IPC_STAT)"))?;
        if !filled(r, "sem", id, &mut out.unreadable) {
            continue;
        }
        let n = ds.sem_nsems as usize;
        let mut values = vec![0u16; n];
        // SAFETY: GETALL writes sem_nsems u16 values through the pointer.
        Errno::result(unsafe { libc::semctl(id, 0, GETALL, values.as_mut_ptr()) }).map_err(fail(format!("semctl(semid {id}, GETALL)")))?;
        let mut pids = Vec::with_capacity(n);
        for i in 0..n as i32 {
            // SAFETY: GETPID takes no argument and returns a pid.
            let pid = Errno::result(unsafe { libc::semctl(id, i, GETPID) }).map_err(fail(format!("semctl(semid {id}, {i}, GETPID)")))?;
            pids.push(pid);
        }
        out.sem.push(SemSet { desc: desc(id, &ds.sem_perm), values, pids });
    }
    for id in ids("msg")? {
        // SAFETY: an all-zero msqid_ds is a valid value; IPC_STAT fills it.
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one msqid_ds through the pointer.
        let r = stat(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) }, || format!("msgctl(msqid {id}, IPC_STAT)"))?;
        if !filled(r, "msg", id, &mut out.unreadable) {
            continue;
        }
        out.msg.push(MsgQueue {
            desc: desc(id, &ds.msg_perm),
            qbytes: ds.msg_qbytes as u64,
            qnum: ds.msg_qnum as u64,
            lspid: ds.msg_lspid,
            lrpid: ds.msg_lrpid,
        });
    }
    Ok(out)
}

fn sysctl(name: &str) -> Result<Option<String>> {
    let path = format!("/proc/sys/{name}");
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::new(ErrorCode::Procfs, format!("reading {path}: {e}"))),
    }
}

fn number<T: std::str::FromStr>(name: &str) -> Result<T> {
    let text = sysctl(name)?.ok_or_else(|| Error::new(ErrorCode::Procfs, format!("/proc/sys/{name} is missing")))?;
    text.parse().map_err(|_| Error::new(ErrorCode::Procfs, format!("/proc/sys/{name}: unexpected {text:?}")))
}

/// An optional u32 sysctl; None when missing or at -1.
fn optional(name: &str) -> Result<Option<u32>> {
    Ok(sysctl(name)?.and_then(|s| s.parse::<i64>().ok()).and_then(|v| u32::try_from(v).ok()))
}

pub fn vars() -> Result<IpcVars> {
    let sem = sysctl("kernel/sem")?.unwrap_or_default();
    let sem_ctls: Vec<u32> = sem.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    if sem_ctls.len() != 4 {
        return Err(Error::new(ErrorCode::Procfs, format!("/proc/sys/kernel/sem: unexpected {sem:?}")));
    }
    Ok(IpcVars {
        sem_ctls,
        msg_ctlmax: number("kernel/msgmax")?,
        msg_ctlmnb: number("kernel/msgmnb")?,
        msg_ctlmni: number("kernel/msgmni")?,
        auto_msgmni: optional("kernel/auto_msgmni")?.unwrap_or(0),
        shm_ctlmax: number("kernel/shmmax")?,
        shm_ctlall: number("kernel/shmall")?,
        shm_ctlmni: number("kernel/shmmni")?,
        shm_rmid_forced: number("kernel/shm_rmid_forced")?,
        mq_queues_max: number("fs/mqueue/queues_max")?,
        mq_msg_max: number("fs/mqueue/msg_max")?,
        mq_msgsize_max: number("fs/mqueue/msgsize_max")?,
        mq_msg_default: optional("fs/mqueue/msg_default")?,
        mq_msgsize_default: optional("fs/mqueue/msgsize_default")?,
        msg_next_id: optional("kernel/msg_next_id")?,
        sem_next_id: optional("kernel/sem_next_id")?,
        shm_next_id: optional("kernel/shm_next_id")?,
    })
}

pub fn messages(msqid: i32, qnum: u64) -> Result<Vec<Msg>> {
    let msgmax: usize = number("kernel/msgmax")?;
    // struct msgbuf: a long mtype, then the text
    let mut buf = vec![0u8; size_of::<libc::c_long>() + msgmax];
    let mut out = Vec::with_capacity(qnum as usize);
    for i in 0..qnum as libc::c_long {
        // SAFETY: msgrcv writes at most msgmax text bytes after the mtype into buf.
        let n = unsafe { libc::msgrcv(msqid, buf.as_mut_ptr().cast(), msgmax, i, libc::IPC_NOWAIT | MSG_COPY) };
        let n = Errno::result(n).map_err(fail(format!("msgrcv(msqid {msqid}, message {i}, MSG_COPY)")))? as usize;
        let (mtype, text) = buf.split_at(size_of::<libc::c_long>());
        out.push(Msg { mtype: libc::c_long::from_ne_bytes(mtype.try_into().unwrap()), text: text[..n].to_vec() });
    }
    Ok(out)
}
