//! The `wasi:filesystem/types` host of a call: wasmtime-wasi's own, with two changes.
//!
//! - Whatever the tool adds to its mounts (bytes past a file's end, through `write`,
//!   `set-size` or an output stream; files, directories and hard links it creates) is charged
//!   to the call's [`DiskQuota`] *before* it happens. An addition past the quota is refused
//!   whole with `insufficient-space`, so the disk never holds more than the quota allows.
//! - The tool cannot create symbolic links at all (`not-permitted`): wasmtime-wasi refuses to
//!   follow them out of a mount, but a host program that later reads the mount might not.
//!
//! Everything else is delegated unchanged to wasmtime-wasi, whose path resolution keeps the
//! tool inside its mounts.

use super::CallState;
use super::fs::{DiskFull, DiskQuota, ENTRY_COST, growth};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError,
    StreamResult,
};

/// wasmtime-wasi's filesystem view of one call, and the call's quota.
pub struct QuotaFilesystem<'a> {
    pub(super) inner: WasiFilesystemCtxView<'a>,
    pub(super) quota: &'a DiskQuota,
}

struct WardenFilesystem;

impl HasData for WardenFilesystem {
    type Data<'a> = QuotaFilesystem<'a>;
}

/// Replaces the `wasi:filesystem/types` that `wasmtime_wasi::p2::add_to_linker_async` linked
/// with this one (the rest of WASI stays wasmtime-wasi's).
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added =
        types::add_to_linker::<CallState, WardenFilesystem>(linker, CallState::filesystem_host);
    linker.allow_shadowing(false);
    added
}

fn no_space(_: DiskFull) -> FsError {
    ErrorCode::InsufficientSpace.into()
}

impl QuotaFilesystem<'_> {
    /// The open file behind `fd` if the tool may write to it; otherwise wasmtime-wasi refuses
    /// the write itself and nothing is charged.
    fn writable_file(&self, fd: &Resource<Descriptor>) -> Option<Arc<std::fs::File>> {
        match self.inner.table.get(fd) {
            Ok(Descriptor::File(f)) if !f.perms.write_not_permitted() => Some(f.file.clone()),
            _ => None,
        }
    }

    fn writable_dir(&self, fd: &Resource<Descriptor>) -> bool {
        matches!(self.inner.table.get(fd), Ok(Descriptor::Dir(d)) if !d.perms.write_not_permitted())
    }

    /// Whether `path` does not exist yet below `dir` (resolved as `open-at` would resolve it).
    async fn is_missing(
        &mut self,
        dir: &Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: &str,
    ) -> bool {
        let dir = Resource::new_borrow(dir.rep());
        match self.inner.stat_at(dir, path_flags, path.to_string()).await {
            Err(e) => matches!(e.downcast_ref(), Some(ErrorCode::NoEntry)),
            Ok(_) => false,
        }
    }

    /// Charges `cost` for creating an entry in `dir` (nothing in a read-only mount, where
    /// wasmtime-wasi refuses the creation itself) and returns what it charged.
    fn reserve_entry(&self, dir: &Resource<Descriptor>, cost: u64) -> FsResult<u64> {
        let cost = if self.writable_dir(dir) { cost } else { 0 };
        self.quota.charge(cost).map_err(no_space)?;
        Ok(cost)
    }

    /// Gives a reservation back if the operation failed, having added nothing.
    fn settle<T>(&self, reserved: u64, result: FsResult<T>) -> FsResult<T> {
        if result.is_err() {
            self.quota.release(reserved);
        }
        result
    }

    /// Makes `stream` (just opened on `file`) charge what it adds to the quota.
    fn counted(
        &mut self,
        stream: Resource<DynOutputStream>,
        file: Arc<std::fs::File>,
        position: Position,
    ) -> FsResult<Resource<DynOutputStream>> {
        let inner = self.inner.table.delete(stream)?;
        let counted: DynOutputStream = Box::new(CountedStream {
            inner,
            file,
            position,
            quota: self.quota.clone(),
        });
        Ok(self.inner.table.push(counted)?)
    }
}

fn size_of(file: &std::fs::File) -> std::io::Result<u64> {
    Ok(file.metadata()?.len())
}

impl types::Host for QuotaFilesystem<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.inner, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        // A stream write the quota refused (see `CountedStream`).
        if self
            .inner
            .table
            .get(&err)?
            .downcast_ref::<DiskFull>()
            .is_some()
        {
            return Ok(Some(ErrorCode::InsufficientSpace));
        }
        types::Host::filesystem_error_code(&mut self.inner, err)
    }
}

impl HostDescriptor for QuotaFilesystem<'_> {
    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        let Some(file) = self.writable_file(&fd) else {
            return self.inner.write(fd, buf, offset).await;
        };
        let size = size_of(&file)?;
        let charged = growth(size, offset, buf.len() as u64);
        self.quota.charge(charged).map_err(no_space)?;
        let result = self.inner.write(fd, buf, offset).await;
        // A failed or short write adds less than was charged.
        let written = result.as_ref().map_or(0, |n| *n);
        self.quota
            .release(charged.saturating_sub(growth(size, offset, written)));
        result
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        let Some(file) = self.writable_file(&fd) else {
            return self.inner.set_size(fd, size).await;
        };
        let charged = size.saturating_sub(size_of(&file)?);
        self.quota.charge(charged).map_err(no_space)?;
        let result = self.inner.set_size(fd, size).await;
        self.settle(charged, result)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = self.writable_file(&fd);
        let stream = self.inner.write_via_stream(fd, offset)?;
        match file {
            Some(file) => self.counted(stream, file, Position::At(offset)),
            None => Ok(stream),
        }
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = self.writable_file(&fd);
        let stream = self.inner.append_via_stream(fd)?;
        match file {
            Some(file) => self.counted(stream, file, Position::End),
            None => Ok(stream),
        }
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let creates = oflags.contains(types::OpenFlags::CREATE)
            && self.is_missing(&fd, path_flags, &path).await;
        let reserved = self.reserve_entry(&fd, if creates { ENTRY_COST } else { 0 })?;
        let result = self
            .inner
            .open_at(fd, path_flags, path, oflags, flags)
            .await;
        self.settle(reserved, result)
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let reserved = self.reserve_entry(&fd, ENTRY_COST)?;
        let result = self.inner.create_directory_at(fd, path).await;
        self.settle(reserved, result)
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let reserved = self.reserve_entry(&new_descriptor, ENTRY_COST)?;
        let result = self
            .inner
            .link_at(fd, old_path_flags, old_path, new_descriptor, new_path)
            .await;
        self.settle(reserved, result)
    }

    async fn symlink_at(
        &mut self,
        _fd: Resource<Descriptor>,
        _old_path: String,
        _new_path: String,
    ) -> FsResult<()> {
        Err(ErrorCode::NotPermitted.into())
    }

    // Everything below: wasmtime-wasi's, unchanged.

    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.inner.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.inner.sync_data(fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags> {
        self.inner.get_flags(fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        self.inner.get_type(fd).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.inner.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.inner.read(fd, len, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.inner.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.inner.sync(fd).await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        self.inner.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        self.inner.stat_at(fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.inner
            .set_times_at(fd, path_flags, path, atim, mtim)
            .await
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.inner, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        self.inner.readlink_at(fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.inner.remove_directory_at(fd, path).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        self.inner.rename_at(fd, old_path, new_fd, new_path).await
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.inner.unlink_file_at(fd, path).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.inner.read_via_stream(fd, offset)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.inner.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.inner.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        self.inner.metadata_hash_at(fd, path_flags, path).await
    }
}

impl HostDirectoryEntryStream for QuotaFilesystem<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.inner.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.inner, stream)
    }
}

/// Where an output stream on a file writes next.
#[derive(Clone, Copy)]
enum Position {
    At(u64),
    End,
}

/// wasmtime-wasi's output stream on a file, charging each write to the quota first. A refused
/// write fails with [`DiskFull`], which `filesystem-error-code` reports as
/// `insufficient-space`. `write-zeroes` and `splice` go through `write` (the trait's defaults
/// and wasmtime-wasi-io's host call `write`), so they are charged too.
struct CountedStream {
    inner: DynOutputStream,
    file: Arc<std::fs::File>,
    position: Position,
    quota: DiskQuota,
}

impl CountedStream {
    fn charge(&mut self, len: usize) -> StreamResult<()> {
        let len = len as u64;
        let added = match self.position {
            Position::End => len,
            // The size now: a write still under way on another stream may make this count
            // bytes twice, never too few.
            Position::At(offset) => growth(
                size_of(&self.file).map_err(|e| StreamError::LastOperationFailed(e.into()))?,
                offset,
                len,
            ),
        };
        self.quota
            .charge(added)
            .map_err(|full| StreamError::LastOperationFailed(wasmtime::Error::new(full)))?;
        if let Position::At(offset) = &mut self.position {
            *offset = offset.saturating_add(len);
        }
        Ok(())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CountedStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.write(bytes)
    }

    async fn blocking_write_and_flush(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CountedStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

impl CallState {
    /// The `wasi:filesystem/types` host of this call .
    pub(crate) fn filesystem_host(&mut self) -> QuotaFilesystem<'_> {
        QuotaFilesystem {
            inner: WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            quota: &self.disk,
        }
    }
}
