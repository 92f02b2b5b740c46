//! CRIU's page-server wire format and the two pagemap protobuf messages.
//!
//! Facts (criu/page-xfer.c, images/pagemap.proto, criu/include/magic.h of CRIU 3.x/4.x):
//! - Every command is one 24-byte header in host byte order: `u32 cmd`, `u32 nr_pages`,
//!   `u64 vaddr`, `u64 dst_id`. The low 16 bits of `cmd` are the command, the high 16 bits carry
//!   pagemap flags (PE_*) for ADD_F.
//! - `dst_id` = image id << 8 | image type (1 = task pagemap, 2 = shmem pagemap; older CRIUs sent
//!   their internal CR_FD_* numbers, still accepted by receivers).
//! - Replies: OPEN2 → one byte "has parent"; PARENT → i32 "has parent"; CLOSE → i32 status 0 once
//!   everything is on disk. ADD_F is followed by nr_pages pages of raw data only when PE_PRESENT
//!   is set; HOLE is an ADD_F with PE_PARENT and no data.
//! - pagemap-ID.img: IMG_COMMON_MAGIC, PAGEMAP_MAGIC, then length-prefixed (u32 LE) protobuf
//!   entries: one pagemap_head {pages_id=1}, then pagemap_entry {vaddr=1, nr_pages=2,
//!   in_parent=3, flags=4} per run. pages-N.img is raw page data in pagemap order.

use crate::error::{Error, ErrorCode, Result};

pub const HEADER_LEN: usize = 24;

pub const PS_IOV_ADD: u32 = 1;
pub const PS_IOV_HOLE: u32 = 2;
pub const PS_IOV_OPEN: u32 = 3;
pub const PS_IOV_OPEN2: u32 = 4;
pub const PS_IOV_PARENT: u32 = 5;
pub const PS_IOV_ADD_F: u32 = 6;
pub const PS_IOV_GET: u32 = 7;
pub const PS_IOV_CLOSE: u32 = 0x1023;
pub const PS_IOV_FORCE_CLOSE: u32 = 0x1024;

const CMD_BITS: u32 = 16;
const CMD_MASK: u32 = (1 << CMD_BITS) - 1;
const TYPE_BITS: u32 = 8;
const TYPE_MASK: u64 = (1 << TYPE_BITS) - 1;

/// pagemap_entry.flags bits.
pub const PE_PARENT: u32 = 1 << 0;
pub const PE_LAZY: u32 = 1 << 1;
pub const PE_PRESENT: u32 = 1 << 2;

pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
pub const PAGEMAP_MAGIC: u32 = 0x5608_4025;

/// The first pages-N.img id a receiver hands out. CRIU's page server starts above 0x10000 so its
/// ids never collide with pages images the dumping side writes into the same directory.
pub const FIRST_SERVER_PAGES_ID: u32 = 0x10001;

/// Which pagemap image a command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// pagemap-PID.img (id = the task's PID in the dump).
    Task,
    /// pagemap-shmem-SHMID.img (id = the shared mapping's id).
    Shmem,
}

impl ImageKind {
    pub fn pagemap_name(self, id: u64) -> String {
        match self {
            ImageKind::Task => format!("pagemap-{id}.img"),
            ImageKind::Shmem => format!("pagemap-shmem-{id}.img"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Task => "pid",
            ImageKind::Shmem => "shmem",
        }
    }
}

pub fn encode_dst(kind: ImageKind, id: u64) -> u64 {
    let t = match kind {
        ImageKind::Task => 1,
        ImageKind::Shmem => 2,
    };
    (id << TYPE_BITS) | t
}

/// Decodes a dst_id, including the type numbers CRIU 1.x–3.2 put on the wire.
pub fn decode_dst(dst: u64) -> Option<(ImageKind, u64)> {
    let kind = match dst & TYPE_MASK {
        1 | 10 | 11 | 16 | 17 => ImageKind::Task,
        2 | 27 | 28 | 29 | 32 | 33 | 34 => ImageKind::Shmem,
        _ => return None,
    };
    Some((kind, dst >> TYPE_BITS))
}

pub fn encode_cmd(cmd: u32, flags: u32) -> u32 {
    (flags << CMD_BITS) | cmd
}

/// One command header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub cmd: u32,
    pub nr_pages: u32,
    pub vaddr: u64,
    pub dst_id: u64,
}

impl Header {
    pub fn command(&self) -> u32 {
        self.cmd & CMD_MASK
    }

    pub fn flags(&self) -> u32 {
        self.cmd >> CMD_BITS
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.cmd.to_ne_bytes());
        b[4..8].copy_from_slice(&self.nr_pages.to_ne_bytes());
        b[8..16].copy_from_slice(&self.vaddr.to_ne_bytes());
        b[16..24].copy_from_slice(&self.dst_id.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        Header { cmd: u32_at(0), nr_pages: u32_at(4), vaddr: u64_at(8), dst_id: u64_at(16) }
    }
}

/// One pagemap_entry. `flags` is None only in images from CRIUs older than PE_* flags, where
/// `in_parent` said whether the run lives in the parent image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagemapEntry {
    pub vaddr: u64,
    pub nr_pages: u32,
    pub in_parent: Option<bool>,
    pub flags: Option<u32>,
}

impl PagemapEntry {
    /// The PE_* flags, deriving them for old images the way CRIU's reader does.
    pub fn effective_flags(&self) -> u32 {
        match (self.flags, self.in_parent) {
            (Some(f), _) => f,
            (None, Some(true)) => PE_PARENT,
            (None, _) => PE_PRESENT,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_field(out: &mut Vec<u8>, tag: u32, v: u64) {
    put_varint(out, u64::from(tag) << 3); // wire type 0 (varint)
    put_varint(out, v);
}

/// pagemap_head: `required uint32 pages_id = 1` (written even when 0, proto2 required).
pub fn encode_head(pages_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(6);
    put_field(&mut out, 1, u64::from(pages_id));
    out
}

pub fn encode_entry(e: &PagemapEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    put_field(&mut out, 1, e.vaddr);
    put_field(&mut out, 2, u64::from(e.nr_pages));
    if let Some(p) = e.in_parent {
        put_field(&mut out, 3, u64::from(p));
    }
    if let Some(f) = e.flags {
        put_field(&mut out, 4, u64::from(f));
    }
    out
}

fn bad(what: &str) -> Error {
    Error::new(ErrorCode::ImageIo, format!("malformed {what}"))
}

fn get_varint(b: &[u8], pos: &mut usize, what: &str) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or_else(|| bad(what))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad(what))
}

/// Walks (tag, varint value) pairs, skipping fields of other wire types.
fn for_each_varint(b: &[u8], what: &str, mut f: impl FnMut(u32, u64)) -> Result<()> {
    let mut pos = 0;
    while pos < b.len() {
        let key = get_varint(b, &mut pos, what)?;
        let tag = (key >> 3) as u32;
        match key & 7 {
            0 => {
                let v = get_varint(b, &mut pos, what)?;
                f(tag, v);
            }
            1 => pos += 8,
            2 => {
                let n = get_varint(b, &mut pos, what)? as usize;
                pos = pos.checked_add(n).ok_or_else(|| bad(what))?;
            }
            5 => pos += 4,
            _ => return Err(bad(what)),
        }
        if pos > b.len() {
            return Err(bad(what));
        }
    }
    Ok(())
}

pub fn decode_head(b: &[u8]) -> Result<u32> {
    let mut id = None;
    for_each_varint(b, "pagemap_head", |tag, v| {
        if tag == 1 {
            id = Some(v as u32);
        }
    })?;
    id.ok_or_else(|| bad("pagemap_head (no pages_id)"))
}

pub fn decode_entry(b: &[u8]) -> Result<PagemapEntry> {
    let (mut vaddr, mut nr, mut in_parent, mut flags) = (None, None, None, None);
    for_each_varint(b, "pagemap_entry", |tag, v| match tag {
        1 => vaddr = Some(v),
        2 => nr = Some(v as u32),
        3 => in_parent = Some(v != 0),
        4 => flags = Some(v as u32),
        _ => {}
    })?;
    match (vaddr, nr) {
        (Some(vaddr), Some(nr_pages)) => Ok(PagemapEntry { vaddr, nr_pages, in_parent, flags }),
        _ => Err(bad("pagemap_entry (vaddr or nr_pages missing)")),
    }
}

/// Frames one protobuf message as CRIU images do: u32 LE length, then the bytes.
pub fn frame(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    out.extend_from_slice(msg);
}

/// The start of a pagemap image: both magics and the head.
pub fn pagemap_prologue(pages_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
    out.extend_from_slice(&PAGEMAP_MAGIC.to_le_bytes());
    frame(&encode_head(pages_id), &mut out);
    out
}

/// Parses a whole pagemap image into (pages_id, entries).
pub fn parse_pagemap(b: &[u8], file: &str) -> Result<(u32, Vec<PagemapEntry>)> {
    let ctx = |e: Error| Error::new(e.code, format!("{file}: {}", e.message));
    let u32_at = |o: usize| b.get(o..o + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")));
    if u32_at(0) != Some(IMG_COMMON_MAGIC) || u32_at(4) != Some(PAGEMAP_MAGIC) {
        return Err(Error::new(ErrorCode::ImageIo, format!("{file}: not a pagemap image (bad magic)")));
    }
    let mut pos = 8;
    let mut msgs = Vec::new();
    while pos < b.len() {
        let n = u32_at(pos).ok_or_else(|| ctx(bad("length prefix")))? as usize;
        let body = b.get(pos + 4..pos + 4 + n).ok_or_else(|| ctx(bad("entry (truncated)")))?;
        msgs.push(body);
        pos += 4 + n;
    }
    let (first, rest) = msgs.split_first().ok_or_else(|| ctx(bad("image (no pagemap_head)")))?;
    let pages_id = decode_head(first).map_err(ctx)?;
    let entries = rest.iter().map(|m| decode_entry(m).map_err(ctx)).collect::<Result<Vec<_>>>()?;
    Ok((pages_id, entries))
}
