use std::io::Read;
use std::sync::mpsc;

use super::*;

/// A thread in an IPC namespace of its own holding a segment (3 pages + 100 bytes, "hello" at 0
/// and 'Z' at page 3), a semaphore set (1, 2, 3) and a queue with two messages; it answers its
/// tid and the ids, then waits until told to go (its namespace, and the objects, die with it).
fn private_namespace() -> (i32, [i32; 3], mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        // SAFETY: unshare/shmget/shmat/semget/semctl/msgget/msgsnd with valid arguments; the
        // segment is written within its size.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWIPC), 0, "unshare: {}", Errno::last().desc());
            let shm = libc::shmget(0x1234, 3 * 4096 + 100, libc::IPC_CREAT | 0o600);
            let p = libc::shmat(shm, std::ptr::null(), 0) as *mut u8;
            std::ptr::copy_nonoverlapping(b"hello".as_ptr(), p, 5);
            *p.add(3 * 4096 + 50) = b'Z';
            libc::shmdt(p.cast());
            let sem = libc::semget(0x5678, 3, libc::IPC_CREAT | 0o640);
            let mut vals = [1u16, 2, 3];
            libc::semctl(sem, 0, 17 /* SETALL */, vals.as_mut_ptr());
            let msq = libc::msgget(0x9abc, libc::IPC_CREAT | 0o600);
            for (t, text) in [(7i64, &b"first"[..]), (9, &b"second msg"[..])] {
                let mut m = t.to_ne_bytes().to_vec();
                m.extend_from_slice(text);
                libc::msgsnd(msq, m.as_ptr().cast(), text.len(), 0);
            }
            tx.send((nix::unistd::gettid().as_raw(), [shm, sem, msq])).unwrap();
        }
        let _ = done_rx.recv();
    });
    let (tid, ids) = rx.recv().unwrap();
    (tid, ids, done_tx, h)
}

#[test]
fn reads_every_object_of_another_namespace_without_touching_them() {
    let (tid, [shm, sem, msq], done, h) = private_namespace();
    let o = objects(Some(tid)).unwrap();
    assert_eq!(o.shm.len(), 1);
    let s = &o.shm[0];
    assert_eq!((s.desc.key, s.desc.id as i32, s.size, s.nattch, s.desc.mode & 0o777), (0x1234, shm, 3 * 4096 + 100, 0, 0o600));
    assert_eq!(o.sem.len(), 1);
    assert_eq!((o.sem[0].desc.key, o.sem[0].desc.id as i32, o.sem[0].values.clone()), (0x5678, sem, vec![1, 2, 3]));
    assert_eq!(o.msg.len(), 1);
    let q = &o.msg[0];
    assert_eq!((q.desc.key, q.desc.id as i32, q.qnum, q.lspid), (0x9abc, msq, 2, std::process::id() as i32));
    let msgs = messages(Some(tid), msq, q.qnum).unwrap();
    assert_eq!(msgs, vec![Msg { mtype: 7, text: b"first".to_vec() }, Msg { mtype: 9, text: b"second msg".to_vec() }]);
    // MSG_COPY left them queued
    assert_eq!(objects(Some(tid)).unwrap().msg[0].qnum, 2);
    let v = vars(Some(tid)).unwrap();
    assert_eq!(v.sem_ctls.len(), 4);
    assert!(v.shm_ctlmni > 0);
    // Our own namespace does not hold the segment's key.
    assert!(!objects(None).unwrap().shm.iter().any(|s| s.desc.key == 0x1234 && s.desc.id as i32 == shm && s.size == 3 * 4096 + 100));

    let a = OwnAttachment::attach(Some(tid), shm, 3 * 4096 + 100).unwrap();
    assert_eq!(a.end - a.start, 4 * 4096);
    let mut f = fs::File::open(a.path()).unwrap();
    let mut data = Vec::new();
    f.read_to_end(&mut data).unwrap();
    assert_eq!(data.len(), 3 * 4096 + 100);
    assert_eq!(&data[..5], b"hello");
    assert_eq!(data[3 * 4096 + 50], b'Z');
    assert!(!on_hugetlbfs(Path::new(&a.path())).unwrap());
    // another test thread's fork() between our shmat and its MADV_DONTFORK gives that child an
    // attachment of its own until it execs or exits: wait for it to go
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while objects(Some(tid)).unwrap().shm[0].nattch > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(objects(Some(tid)).unwrap().shm[0].nattch, 1, "our attachment counts while held");
    drop(a);
    assert_eq!(objects(Some(tid)).unwrap().shm[0].nattch, 0, "and is gone after");
    done.send(()).unwrap();
    h.join().unwrap();
}

#[test]
fn attachments_list_the_sysv_mappings_of_a_task() {
    // SAFETY: a private segment of our own, attached, listed, detached and removed.
    unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, 2 * 4096, libc::IPC_CREAT | 0o600);
        assert!(id >= 0);
        let p = libc::shmat(id, std::ptr::null(), 0);
        let me = std::process::id() as i32;
        let a = attachments(me).unwrap();
        let ns = fs::metadata("/proc/self/ns/ipc").map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
        let by = attached_by(id as u64, ns, &[]).unwrap();
        libc::shmdt(p);
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        let mut mine: Vec<_> = a.iter().filter(|a| a.shmid == id as u64).collect();
        // another test thread mapping or unmapping while /proc/self/maps is read in pieces can
        // make the kernel repeat a line (a frozen target's cannot change under the reader)
        mine.dedup_by_key(|a| a.start);
        assert_eq!(mine.len(), 1);
        assert_eq!((mine[0].start, mine[0].end - mine[0].start, mine[0].pgoff, mine[0].key), (p as u64, 2 * 4096, 0, 0));
        // (a test forking meanwhile would add its child: other tests run in this process too)
        assert!(by.contains(&me), "{by:?}");
    }
}
