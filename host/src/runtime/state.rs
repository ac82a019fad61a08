//! The data of one call's `Store`: WASI contexts, the capability context and the
//! resource limiter. Built fresh for every call and dropped with it.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::call::CallContext;
use crate::capabilities::http::HttpPolicy;
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
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(HTTP_FIELDS_BYTES);
        let mut table = ResourceTable::new();
        table.set_max_capacity(RESOURCE_TABLE_ENTRIES);
        Self {
            wasi: b.build(),
            http,
            http_policy: HttpPolicy::new(cx.plugin.clone(), cx.grants.http.as_ref()),
            table,
            limiter: Limiter {
                memory_bytes,
                memory_used: 0,
                last_growth: 0,
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

/// Host-side handles (streams, HTTP requests, header maps, ...) one call may
/// hold at once: each costs host memory that the linear-memory limit does not see.
const RESOURCE_TABLE_ENTRIES: usize = 1024;

/// The in-memory size of one set of HTTP headers a call may build.
const HTTP_FIELDS_BYTES: usize = 32 * 1024;

/// Caps linear memory and tables, remembering which cap was hit.
///
/// The memory cap is the total of every linear memory of the call: a component
/// made of several core instances, each with its own memory, shares one budget.
/// Memories are never shrunk, so the sum only grows.
pub(crate) struct Limiter {
    memory_bytes: usize,
    memory_used: usize,
    last_growth: usize,
    table_elements: usize,
    pub(crate) hit: Option<LimitHit>,
}

#[cfg(test)]
impl Limiter {
    /// Bytes of linear memory the call holds now.
    pub(crate) fn memory_used(&self) -> usize {
        self.memory_used
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes {
            self.hit = Some(LimitHit::Memory);
            wasmtime::bail!("memory limit exceeded");
        }
        self.last_growth = total - self.memory_used;
        self.memory_used = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Counted above but refused by the memory's own maximum: not held.
        self.memory_used -= std::mem::take(&mut self.last_growth);
        Ok(())
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
