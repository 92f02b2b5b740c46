//! Pseudo-terminal masters and the bytes queued in a pty pair, read from outside the task.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::files::pty;

use crate::errors::to_napi;

#[napi(object)]
pub struct PtyMasterInfo {
    /// N of the slave /dev/pts/N (TIOCGPTN).
    pub index: u32,
    pub locked: bool,
    pub packet_mode: bool,
    /// Session whose controlling terminal the pair is, 0 if none.
    pub sid: i32,
    /// Foreground process group, 0 if none.
    pub pgrp: i32,
}

/// Index, lock, packet mode and session of the pty master behind fd `fd` of `pid`.
#[napi]
pub fn pty_master(pid: i32, fd: i32) -> Result<PtyMasterInfo> {
    let m = pty::pty_master(pid, fd).map_err(to_napi)?;
    Ok(PtyMasterInfo {
        index: m.index,
        locked: m.locked,
        packet_mode: m.packet_mode,
        sid: m.sid,
        pgrp: m.pgrp,
    })
}

/// The bytes waiting at one end of a pty pair (fd `fd` of `pid`), queued again at once through
/// the other end (`peerFd` of `peerPid`) so the pair is left as it was. The tree must be frozen.
#[napi]
pub fn tty_take_queued(pid: i32, fd: i32, peer_pid: i32, peer_fd: i32) -> Result<Buffer> {
    let data = pty::tty_take_queued(pid, fd, peer_pid, peer_fd).map_err(to_napi)?;
    Ok(data.into())
}
