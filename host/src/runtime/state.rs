//! The data of one call's `Store`: WASI contexts, the capability context and the
//! resource limiter. Built fresh for every call and dropped with it.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::{CallContext, http::HttpPolicy};
use crate::config::DirMode;
use wasmtime_wasi::FsPerms;

/// Which limit, if any, stopped a call. Recorded by the limiter and the epoch
/// callback so the runtime can say exactly what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// Linear memory would have grown past the cap.
    Memory,
    /// A table would have grown past the cap.
    Table,
    /// The wall-clock deadline passed.
    Timeout,
}

/// The per-call store data.
pub struct CallState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_policy: HttpPolicy,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// The capability context of this call (plugin, client link, budgets).
    pub cx: CallContext,
    /// What the guest wrote to stderr (capped), kept for panic messages.
    pub(crate) stderr: MemoryOutputPipe,
}

impl CallState {
    /// A call state with no WASI grants at all: no preopens, no environment, no
    /// network.
    pub(crate) fn new(
        cx: CallContext,
        memory_bytes: usize,
        table_elements: usize,
        stdout: MemoryOutputPipe,
        stderr: MemoryOutputPipe,
    ) -> Self {
        let mut b = WasiCtx::builder();
        b.stdout(stdout).stderr(stderr.clone());
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .args(&[cx.plugin.as_str()]);
        for (k, v) in &cx.grants.env {
            b.env(k, v);
        }
        for d in &cx.grants.dirs {
            let perms = match d.mode {
                DirMode::ReadOnly => FsPerms::ReadOnly,
                DirMode::ReadWrite => FsPerms::ReadWrite,
            };
            if let Err(e) = b.preopened_dir(&d.host, &d.guest, perms) {
                // Fail closed: the plugin simply does not see the directory.
                tracing::warn!(plugin = %cx.plugin, dir = %d.host.display(), "granted directory unavailable: {e}");
            }
        }
        Self {
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            http_policy: HttpPolicy::new(cx.plugin.clone(), cx.grants.http.as_ref()),
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes,
                table_elements,
                hit: None,
            },
            cx,
            stderr,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

/// Caps linear memory and tables, remembering which cap was hit.
pub(crate) struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    pub(crate) hit: Option<LimitHit>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = Some(LimitHit::Memory);
            wasmtime::bail!("memory limit exceeded");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit = Some(LimitHit::Table);
            wasmtime::bail!("table limit exceeded");
        }
        Ok(true)
    }
}
