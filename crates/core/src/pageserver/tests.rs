use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;

use super::proto::*;
use super::*;
use crate::mem::pagemap::Run;
use crate::mem::PageSink;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tsdump-ps-{tag}-{}-{:?}", std::process::id(), thread::current().id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ps() -> usize {
    crate::mem::vma::page_size() as usize
}

fn page(fill: u8) -> Vec<u8> {
    vec![fill; ps()]
}

#[test]
fn header_layout_is_24_bytes_host_order() {
    let h = Header { cmd: encode_cmd(PS_IOV_ADD_F, PE_PRESENT | PE_LAZY), nr_pages: 3, vaddr: 0x7f00_1234_5000, dst_id: encode_dst(ImageKind::Task, 4242) };
    let b = h.to_bytes();
    assert_eq!(b.len(), 24);
    assert_eq!(&b[0..4], &(6u32 | (6 << 16)).to_ne_bytes());
    assert_eq!(Header::from_bytes(&b), h);
    assert_eq!(h.command(), PS_IOV_ADD_F);
    assert_eq!(h.flags(), PE_PRESENT | PE_LAZY);
    assert_eq!(h.dst_id, (4242 << 8) | 1);
}

#[test]
fn dst_ids_decode_including_legacy_types() {
    assert_eq!(decode_dst(encode_dst(ImageKind::Shmem, 77)), Some((ImageKind::Shmem, 77)));
    assert_eq!(decode_dst((5 << 8) | 11), Some((ImageKind::Task, 5)));
    assert_eq!(decode_dst((5 << 8) | 34), Some((ImageKind::Shmem, 5)));
    assert_eq!(decode_dst((5 << 8) | 3), None);
}

#[test]
fn pagemap_bytes_match_criu() {
    // The first 16 bytes of a pagemap image written by `criu page-server` (pages_id 65537).
    let criu = [0x19, 0x43, 0x56, 0x54, 0x25, 0x40, 0x08, 0x56, 0x04, 0, 0, 0, 0x08, 0x81, 0x80, 0x04];
    assert_eq!(pagemap_prologue(65537), criu);
    // Required fields are written even when zero.
    assert_eq!(encode_head(0), [0x08, 0x00]);
    let e = PagemapEntry { vaddr: 0, nr_pages: 0, in_parent: None, flags: Some(PE_PARENT) };
    assert_eq!(encode_entry(&e), [0x08, 0x00, 0x10, 0x00, 0x20, 0x01]);
    let e = PagemapEntry { vaddr: 0x7fff_ffff_f000, nr_pages: 70_000, in_parent: Some(true), flags: Some(6) };
    assert_eq!(decode_entry(&encode_entry(&e)).unwrap(), e);
    let mut img = pagemap_prologue(9);
    frame(&encode_entry(&e), &mut img);
    let (id, entries) = parse_pagemap(&img, "x").unwrap();
    assert_eq!((id, entries), (9, vec![e]));
    assert!(parse_pagemap(&img[..img.len() - 1], "x").is_err());
}

struct Served {
    port: u16,
    cancel: Arc<AtomicBool>,
    handle: thread::JoinHandle<crate::Result<Outcome>>,
}

fn serve_with(dir: PathBuf, timeouts: Timeouts) -> Served {
    let mut l = PageServerListener::bind("127.0.0.1", 0, None).unwrap();
    l.set_timeouts(timeouts);
    let port = l.port();
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    let handle = thread::spawn(move || l.serve_next(&dir, &c));
    Served { port, cancel, handle }
}

fn serve(dir: PathBuf) -> Served {
    serve_with(dir, Timeouts::default())
}

impl Served {
    fn report(self) -> ServeReport {
        match self.handle.join().unwrap().unwrap() {
            Outcome::Served(r) => r,
            Outcome::Dropped { error, .. } => panic!("the client was dropped: {error}"),
        }
    }

    fn dropped(self) -> crate::Error {
        match self.handle.join().unwrap().unwrap() {
            Outcome::Served(r) => panic!("served: {r:?}"),
            Outcome::Dropped { error, .. } => error,
        }
    }
}

fn connect(port: u16) -> PageServerClient {
    PageServerClient::connect("127.0.0.1", port, None).unwrap()
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn loopback_roundtrip_through_every_source() {
    let dir = tmpdir("rt");
    let s = serve(dir.clone());
    let mut c = connect(s.port);
    assert!(!c.open(ImageKind::Task, 4321).unwrap());
    let ps = ps() as u64;
    // Buffer source.
    c.send_pages_buf(0x10000, PE_LAZY, &[page(1), page(2)].concat()).unwrap();
    // Hole (lazy: no parent image here to hold PE_PARENT pages).
    c.send_hole(0x20000, 5, PE_LAZY).unwrap();
    // Pipe source, through the PageSink adapter, split across two runs.
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut wf = std::fs::File::from(w);
    wf.write_all(&[page(3), page(4), page(5)].concat()).unwrap();
    let runs = [Run { vaddr: 0x30000, nr_pages: 1 }, Run { vaddr: 0x40000, nr_pages: 2 }];
    let mut sink = PageServerSink::new(&mut c, &runs, 0).unwrap();
    sink.splice_from(r.as_raw_fd(), 3 * ps as usize).unwrap();
    assert!(sink.finished());
    assert_eq!(sink.written(), 3 * ps);
    // File source.
    let src = dir.with_extension("src");
    std::fs::write(&src, page(6)).unwrap();
    let f = std::fs::File::open(&src).unwrap();
    c.send_pages(0x50000, 1, 0, f.as_raw_fd()).unwrap();
    // Shmem image in the same session.
    c.open(ImageKind::Shmem, 9).unwrap();
    c.send_pages_buf(0, 0, &page(7)).unwrap();
    c.close().unwrap();
    let cancel = s.cancel.clone();
    let rep = s.report();
    assert_eq!(rep.images.len(), 2);
    assert_eq!(rep.images[0].pagemap_file, "pagemap-4321.img");
    assert_eq!(rep.images[0].pages_file, "pages-65537.img");
    assert_eq!(rep.images[0].pages, 6);
    assert_eq!(rep.images[1].pagemap_file, "pagemap-shmem-9.img");
    assert_eq!(rep.page_bytes, 7 * ps);

    let (pid, entries) = parse_pagemap(&std::fs::read(dir.join("pagemap-4321.img")).unwrap(), "pm").unwrap();
    assert_eq!(pid, 65537);
    let got: Vec<(u64, u32, u32)> = entries.iter().map(|e| (e.vaddr, e.nr_pages, e.flags.unwrap())).collect();
    assert_eq!(
        got,
        vec![(0x10000, 2, PE_PRESENT | PE_LAZY), (0x20000, 5, PE_LAZY), (0x30000, 1, PE_PRESENT), (0x40000, 2, PE_PRESENT), (0x50000, 1, PE_PRESENT)]
    );
    let pages = std::fs::read(dir.join("pages-65537.img")).unwrap();
    assert_eq!(pages, [page(1), page(2), page(3), page(4), page(5), page(6)].concat());
    assert_eq!(std::fs::read(dir.join("pages-65538.img")).unwrap(), page(7));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("pages-65537.img")).unwrap().permissions().mode() & 0o777, 0o600);

    // Replaying the received image to a second server reproduces it byte for byte.
    let dir2 = tmpdir("rt2");
    let s2 = serve(dir2.clone());
    let mut c2 = connect(s2.port);
    let st = send_pagemap_image(&mut c2, &dir, ImageKind::Task, 4321).unwrap();
    assert_eq!((st.entries, st.pages, st.holes), (5, 6, 1));
    c2.close().unwrap();
    s2.report();
    assert_eq!(std::fs::read(dir2.join("pagemap-4321.img")).unwrap(), std::fs::read(dir.join("pagemap-4321.img")).unwrap());
    assert_eq!(std::fs::read(dir2.join("pages-65537.img")).unwrap(), pages);
    let _ = cancel;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
    let _ = std::fs::remove_file(&src);
}

#[test]
fn cut_stream_leaves_nothing_complete_looking() {
    let dir = tmpdir("cut");
    let s = serve(dir.clone());
    let mut sock = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let dst = encode_dst(ImageKind::Task, 55);
    sock.write_all(&Header { cmd: PS_IOV_OPEN2, dst_id: dst, ..Header::default() }.to_bytes()).unwrap();
    let mut one = [0u8; 1];
    std::io::Read::read_exact(&mut sock, &mut one).unwrap();
    sock.write_all(&Header { cmd: encode_cmd(PS_IOV_ADD_F, PE_PRESENT), nr_pages: 4, vaddr: 0xabc000, dst_id: dst }.to_bytes()).unwrap();
    sock.write_all(&page(9)).unwrap();
    drop(sock);
    let err = s.dropped();
    assert!(err.message.contains("0xabc000") && err.message.contains("pid 55") && err.message.contains("closed"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn client_reports_a_peer_that_goes_away() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut h = [0u8; HEADER_LEN];
        std::io::Read::read_exact(&mut s, &mut h).unwrap();
        s.write_all(&[0]).unwrap();
        // Hang up without reading the pages.
    });
    let mut c = connect(port);
    c.open(ImageKind::Task, 77).unwrap();
    t.join().unwrap();
    let big = vec![0u8; 64 << 20];
    let mut err = None;
    for i in 0..8u64 {
        if let Err(e) = c.send_pages_buf(i << 30, 0, &big) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("sending to a closed peer must fail");
    assert!(err.message.contains(&format!("127.0.0.1:{port}")) && err.message.contains("pid 77") && err.message.contains("vaddr"), "{err}");
}

#[test]
fn cancel_stops_a_waiting_server() {
    let dir = tmpdir("cancel");
    let s = serve(dir.clone());
    s.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = s.handle.join().unwrap().unwrap_err();
    assert_eq!(err.code, crate::ErrorCode::Cancelled);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An incremental transfer: the second server's directory has the first one's as `parent`; its
/// pagemap interleaves the holes with the pages in address order, and holes outside the parent
/// (or with no parent at all) fail the transfer.
#[test]
fn parent_holes_are_checked_against_the_parent_image() {
    let ps = ps() as u64;
    let d1 = tmpdir("par1");
    let s1 = serve(d1.clone());
    let mut c = connect(s1.port);
    assert!(!c.open(ImageKind::Task, 600).unwrap());
    c.send_pages_buf(0x10000, 0, &[page(1), page(2), page(3), page(4)].concat()).unwrap();
    c.close().unwrap();
    s1.report();

    let d2 = tmpdir("par2");
    std::fs::create_dir(&d2).unwrap();
    std::os::unix::fs::symlink(&d1, d2.join("parent")).unwrap();
    let s2 = serve(d2.clone());
    let mut c = connect(s2.port);
    assert!(c.open(ImageKind::Task, 600).unwrap(), "the parent has pagemap-600.img");
    assert!(!c.has_parent(ImageKind::Task, 601).unwrap());
    let (r, w) = nix::unistd::pipe().unwrap();
    std::fs::File::from(w).write_all(&page(9)).unwrap();
    let entries = vec![
        crate::mem::PagemapEntry { vaddr: 0x10000, nr_pages: 1, flags: PE_PARENT },
        crate::mem::PagemapEntry { vaddr: 0x11000, nr_pages: 1, flags: PE_PRESENT },
        crate::mem::PagemapEntry { vaddr: 0x12000, nr_pages: 2, flags: PE_PARENT },
    ];
    let mut sink = PageServerSink::with_entries(&mut c, entries).unwrap();
    sink.splice_from(r.as_raw_fd(), ps as usize).unwrap();
    assert!(sink.finished(), "the trailing hole went right after the pages");
    c.close().unwrap();
    s2.report();
    let (_, got) = parse_pagemap(&std::fs::read(d2.join("pagemap-600.img")).unwrap(), "pm").unwrap();
    let got: Vec<(u64, u32, u32)> = got.iter().map(|e| (e.vaddr, e.nr_pages, e.flags.unwrap())).collect();
    assert_eq!(got, vec![(0x10000, 1, PE_PARENT), (0x11000, 1, PE_PRESENT), (0x12000, 2, PE_PARENT)]);
    assert_eq!(std::fs::read(d2.join("pages-65537.img")).unwrap(), page(9));

    // A hole reaching past what the parent holds.
    let d3 = tmpdir("par3");
    std::fs::create_dir(&d3).unwrap();
    std::os::unix::fs::symlink(&d1, d3.join("parent")).unwrap();
    let s3 = serve(d3.clone());
    let mut c = connect(s3.port);
    c.open(ImageKind::Task, 600).unwrap();
    c.send_hole(0x13000, 2, PE_PARENT).unwrap();
    let _ = c.close();
    let err = s3.dropped();
    assert!(err.message.contains("0x13000-0x15000 is not in the parent image"), "{err}");
    assert_eq!(std::fs::read_dir(&d3).unwrap().count(), 1, "only the parent link is left");

    // A hole with no parent at all.
    let d4 = tmpdir("par4");
    let s4 = serve(d4.clone());
    let mut c = connect(s4.port);
    c.open(ImageKind::Task, 600).unwrap();
    c.send_hole(0x10000, 1, PE_PARENT).unwrap();
    let _ = c.close();
    let err = s4.dropped();
    assert!(err.message.contains("no parent image"), "{err}");
    for d in [d1, d2, d3, d4] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Item 11 of issue 12: a page server that stops reading holds the sender in the kernel; the
/// thread's cancellation flag must end the wait (within a tick), not the 60 s I/O timeout.
#[test]
fn cancel_reaches_a_client_blocked_on_a_stalled_server() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // answers OPEN2, then never reads again
    let stalled = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut h = [0u8; HEADER_LEN];
        std::io::Read::read_exact(&mut s, &mut h).unwrap();
        s.write_all(&[0]).unwrap();
        thread::sleep(std::time::Duration::from_secs(3));
        drop(s);
    });
    let flag = Arc::new(AtomicBool::new(false));
    let raise = flag.clone();
    let sender = thread::spawn(move || {
        crate::cancel::install(flag);
        let mut c = connect(port);
        c.open(ImageKind::Task, 88).unwrap();
        let big = vec![0u8; 64 << 20];
        let r = c.send_pages_buf(0x10000, 0, &big);
        (r, std::time::Instant::now())
    });
    thread::sleep(std::time::Duration::from_millis(500));
    let raised = std::time::Instant::now();
    raise.store(true, std::sync::atomic::Ordering::Relaxed);
    let (r, ended) = sender.join().unwrap();
    let err = r.unwrap_err();
    assert_eq!(err.code, crate::ErrorCode::Cancelled, "{err}");
    assert!(err.message.contains("pid 88") && err.message.contains("interrupted while sending pages"), "{err}");
    // well below the stalled server's 3 s, let alone the 60 s I/O timeout
    assert!(ended.duration_since(raised) < std::time::Duration::from_secs(2), "{:?}", ended.duration_since(raised));
    stalled.join().unwrap();
}

/// Item 10: a client that connects and says nothing is dropped after the idle timeout, and the
/// listener then serves the next client.
#[test]
fn a_silent_client_is_dropped_and_the_next_one_served() {
    let dir = tmpdir("idle");
    let mut l = PageServerListener::bind("127.0.0.1", 0, None).unwrap();
    l.set_timeouts(Timeouts { idle: Some(std::time::Duration::from_millis(300)), ..Timeouts::default() });
    let port = l.port();
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    match l.serve_next(&dir, &cancel).unwrap() {
        Outcome::Dropped { peer, error } => {
            assert_eq!(peer, silent.local_addr().unwrap().to_string());
            assert!(error.message.contains("sent nothing for 0.3 s (idle timeout)"), "{error}");
        }
        Outcome::Served(r) => panic!("served {r:?}"),
    }
    let d = dir.clone();
    let next = thread::spawn(move || l.serve_next(&d, &cancel));
    let mut c = connect(port);
    c.open(ImageKind::Task, 5).unwrap();
    c.send_pages_buf(0x1000, 0, &page(1)).unwrap();
    c.close().unwrap();
    assert!(matches!(next.join().unwrap().unwrap(), Outcome::Served(_)));
    assert_eq!(files_in(&dir), ["pagemap-5.img", "pages-65537.img"]);
    drop(silent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 10: a client that trickles a command byte by byte (each byte inside the idle timeout)
/// is dropped by the slow-client timeout, and what it sent is removed.
#[test]
fn a_trickling_client_is_dropped_by_the_slow_client_timeout() {
    let dir = tmpdir("slow");
    let s = serve_with(dir.clone(), Timeouts { idle: Some(std::time::Duration::from_secs(5)), grace: std::time::Duration::from_millis(400), min_rate: 1 << 20 });
    let mut sock = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let dst = encode_dst(ImageKind::Task, 66);
    sock.write_all(&Header { cmd: PS_IOV_OPEN2, dst_id: dst, ..Header::default() }.to_bytes()).unwrap();
    let mut one = [0u8; 1];
    std::io::Read::read_exact(&mut sock, &mut one).unwrap();
    let hdr = Header { cmd: encode_cmd(PS_IOV_ADD_F, PE_PRESENT), nr_pages: 1, vaddr: 0x5000, dst_id: dst }.to_bytes();
    let t0 = std::time::Instant::now();
    for b in hdr.iter().chain(page(3).iter()) {
        if sock.write_all(&[*b]).is_err() {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(100));
        if t0.elapsed() > std::time::Duration::from_secs(5) {
            break;
        }
    }
    let err = s.dropped();
    assert!(err.message.contains("slow-client timeout"), "{err}");
    assert!(files_in(&dir).is_empty(), "left behind: {:?}", files_in(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 10: an image opened twice in a session replaces the first (as CRIU's server does);
/// neither the first one's files nor an earlier committed copy's pages stay behind.
#[test]
fn reopening_an_image_leaves_no_orphan_files() {
    let dir = tmpdir("reopen");
    let s = serve(dir.clone());
    let mut c = connect(s.port);
    c.open(ImageKind::Task, 42).unwrap();
    c.send_pages_buf(0x1000, 0, &page(1)).unwrap();
    c.open(ImageKind::Task, 43).unwrap();
    c.send_pages_buf(0x1000, 0, &page(2)).unwrap();
    c.open(ImageKind::Task, 42).unwrap();
    c.send_pages_buf(0x2000, 0, &[page(3), page(4)].concat()).unwrap();
    c.close().unwrap();
    let rep = s.report();
    let ids: Vec<u64> = rep.images.iter().map(|i| i.id).collect();
    assert_eq!(ids, [43, 42]);
    let (pages_id, entries) = parse_pagemap(&std::fs::read(dir.join("pagemap-42.img")).unwrap(), "pm").unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(std::fs::read(dir.join(format!("pages-{pages_id}.img"))).unwrap(), [page(3), page(4)].concat());
    assert_eq!(files_in(&dir), ["pagemap-42.img", "pagemap-43.img", "pages-65538.img", "pages-65539.img"]);
    let _ = std::fs::remove_dir_all(&dir);
}
