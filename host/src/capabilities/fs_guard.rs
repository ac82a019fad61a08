//! A guard in front of WASI's `descriptor.open-at`: a plugin opens regular
//! files, directories and symbolic links (when not followed) in its granted
//! directories, nothing else.
//!
//! Opening a FIFO (named pipe) for reading blocks in `open(2)` until some
//! process opens it for writing: a plugin that opened one in a granted
//! directory held a blocking thread of the host for ever, past the call's
//! deadline and past the host's shutdown. Character and block devices and
//! sockets are refused too (a granted directory is for files). The path is
//! looked at (`stat-at`, following symbolic links as the open would) before
//! it is opened; what is not a file or a directory is refused with `access`
//! and never opened. A path that does not exist yet is left to the open
//! (creating a file is the open's business and its permission checks).
//!
//! Plugins cannot make FIFOs (WASI has no `mkfifo`); the guard is for what
//! other processes leave in a directory the operator granted. Between the
//! look and the open another process could swap the path for a FIFO; that
//! needs write access to the granted directory outside the sandbox.
//!
//! The guard shadows wasmtime-wasi's own `open-at` in the linker (defined
//! after `wasmtime_wasi::p2::add_to_linker_async`), then calls it.

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DescriptorFlags, DescriptorType, ErrorCode, HostDescriptor as _, OpenFlags, PathFlags,
};

use crate::runtime::CallState;

/// The `wasi:filesystem/types` instance wasmtime-wasi 48 links (guests
/// importing any 0.2.x version resolve to it).
const TYPES_INSTANCE: &str = "wasi:filesystem/types@0.2.12";

/// Whether a path of this type may be opened.
fn may_open(t: DescriptorType) -> bool {
    matches!(
        t,
        DescriptorType::RegularFile | DescriptorType::Directory | DescriptorType::SymbolicLink
    )
}

/// Shadows `descriptor.open-at` with the guarded version. Call after WASI is
/// linked.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types_instance = linker.instance(TYPES_INSTANCE)?;
    types_instance.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let mut fs = store.data_mut().filesystem();
                let look = Resource::<Descriptor>::new_borrow(fd.rep());
                if let Ok(stat) = fs.stat_at(look, path_flags, path.clone()).await
                    && !may_open(stat.type_)
                {
                    tracing::info!(
                        path = %path.chars().take(200).collect::<String>(),
                        kind = ?stat.type_,
                        "a plugin may open only files and directories; refused"
                    );
                    return Ok((Err(ErrorCode::Access),));
                }
                match fs.open_at(fd, path_flags, path, oflags, flags).await {
                    Ok(opened) => Ok((Ok(opened),)),
                    Err(e) => Ok((Err(types::Host::convert_error_code(&mut fs, e)?),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_directories_and_links_open() {
        assert!(may_open(DescriptorType::RegularFile));
        assert!(may_open(DescriptorType::Directory));
        assert!(may_open(DescriptorType::SymbolicLink));
        for t in [
            DescriptorType::Fifo,
            DescriptorType::CharacterDevice,
            DescriptorType::BlockDevice,
            DescriptorType::Socket,
            DescriptorType::Unknown,
        ] {
            assert!(!may_open(t), "{t:?}");
        }
    }
}
