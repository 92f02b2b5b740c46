//! `ImagesDir`: the images directory of one run (tsdump_core::images_dir), opened once. TypeScript
//! creates each of its files here and writes to the descriptor it gets; `session.useImagesDir`
//! gives the same directory to the Rust code that writes pages images.

use std::path::Path;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::images_dir::{self, OpenOptions};

use crate::errors::to_napi;
use crate::session::Session;

#[napi(object)]
pub struct OpenImagesDirOptions {
    /// Create the directory (and missing parents, 0700) when it does not exist. Default false.
    pub create: Option<bool>,
    /// It may belong to others (a log file's directory): no ownership check. Never for images.
    pub shared: Option<bool>,
}

#[napi(object)]
pub struct ImagesDirCommit {
    /// Checkpoint files of a replaced set that were deleted.
    pub replaced: u32,
    /// Where leftovers of a replaced set stayed when they could not be moved back.
    pub left_over: Option<String>,
}

#[napi]
pub struct ImagesDir {
    pub(crate) inner: Arc<images_dir::ImagesDir>,
}

#[napi]
impl ImagesDir {
    /// Opens `path`; an existing directory must belong to us and be closed to others.
    #[napi(factory)]
    pub fn open(path: String, opts: Option<OpenImagesDirOptions>) -> Result<ImagesDir> {
        let o = opts.map(|o| OpenOptions { create: o.create.unwrap_or(false), shared: o.shared.unwrap_or(false) }).unwrap_or_default();
        let inner = images_dir::ImagesDir::open(Path::new(&path), o).map_err(to_napi)?;
        Ok(ImagesDir { inner: Arc::new(inner) })
    }

    /// The directory as named, absolute.
    #[napi(getter)]
    pub fn path(&self) -> String {
        self.inner.path().display().to_string()
    }

    /// Where files are created now (a sibling staging directory while a replacement is written).
    #[napi(getter)]
    pub fn work_path(&self) -> String {
        self.inner.work_path().display().to_string()
    }

    /// The directories `open` created, outermost first.
    #[napi]
    pub fn made_dirs(&self) -> Vec<String> {
        self.inner.made_dirs().iter().map(|p| p.display().to_string()).collect()
    }

    /// The checkpoint files the directory holds (images, stats, `parent`, the tracking sidecar).
    #[napi]
    pub fn checkpoint_files(&self) -> Result<Vec<String>> {
        self.inner.checkpoint_files().map_err(to_napi)
    }

    /// Writes what follows aside, to be swapped in by `commit`.
    #[napi]
    pub fn stage_replacement(&self) -> Result<()> {
        self.inner.stage_replacement().map_err(to_napi)
    }

    /// Creates `name` (0600, O_EXCL|O_NOFOLLOW) and returns its descriptor, which the caller
    /// owns and closes.
    #[napi]
    pub fn create_file(&self, name: String) -> Result<i32> {
        use std::os::fd::IntoRawFd;
        Ok(self.inner.create(&name).map_err(to_napi)?.into_raw_fd())
    }

    /// Creates each of `names` as `createFile` does, writes its `contents` and closes it, in
    /// order, off the calling thread: a task's small images in one call while the tree is frozen.
    /// Stops at the first that fails; the error names it.
    #[napi]
    pub async fn write_files(&self, names: Vec<String>, contents: Vec<Uint8Array>) -> Result<()> {
        if names.len() != contents.len() {
            return Err(Error::from_reason("USAGE: writeFiles wants one content for each name"));
        }
        let dir = self.inner.clone();
        let files: Vec<(String, Vec<u8>)> = names.into_iter().zip(contents.iter().map(|c| c.to_vec())).collect();
        tokio::task::spawn_blocking(move || files.iter().try_for_each(|(name, data)| dir.write_new(name, data)))
            .await
            .map_err(|e| Error::from_reason(format!("INTERNAL: the image writer stopped: {e}")))?
            .map_err(to_napi)
    }

    /// As `createFile`, after unlinking an existing `name` (a log of an earlier run).
    #[napi]
    pub fn create_file_replacing(&self, name: String) -> Result<i32> {
        use std::os::fd::IntoRawFd;
        Ok(self.inner.create_replacing(&name).map_err(to_napi)?.into_raw_fd())
    }

    /// A link `name` → `target`; `replace` replaces an existing link of that name.
    #[napi]
    pub fn symlink(&self, target: String, name: String, replace: Option<bool>) -> Result<()> {
        self.inner.symlink(&target, &name, replace.unwrap_or(false)).map_err(to_napi)
    }

    /// Removes a file this run created.
    #[napi]
    pub fn remove(&self, name: String) {
        self.inner.remove(&name)
    }

    /// The names this run created, in order.
    #[napi]
    pub fn created(&self) -> Vec<String> {
        self.inner.created()
    }

    /// The commit point (see tsdump_core::images_dir).
    #[napi]
    pub fn commit(&self) -> Result<ImagesDirCommit> {
        let c = self.inner.commit().map_err(to_napi)?;
        Ok(ImagesDirCommit { replaced: c.replaced as u32, left_over: c.left_over.map(|p| p.display().to_string()) })
    }

    /// After a failure: removes what this run created; returns what it could not remove.
    #[napi]
    pub fn discard(&self) -> Vec<String> {
        self.inner.discard()
    }
}

#[napi]
impl Session {
    /// The images directory this session's pages images go to (dumpMemory, dumpShmem, ...).
    #[napi]
    pub fn use_images_dir(&self, dir: &ImagesDir) {
        *self.images_dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir.inner.clone());
    }
}

impl Session {
    /// The directory `useImagesDir` gave, for a pages image named `name`.
    pub(crate) fn pages_file(&self, name: String) -> Result<images_dir::NewFile> {
        let dir = self.images_dir.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let dir = dir.ok_or_else(|| Error::from_reason("USAGE: the session has no images directory (call useImagesDir first)"))?;
        Ok(images_dir::NewFile { dir, name })
    }
}
