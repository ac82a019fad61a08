//! The WebAssembly runtime: one [`wasmtime::Engine`] for every plugin, one compiled
//! component and one `InstancePre` per plugin version, and a fresh `Store` per call.
//!
//! Limits are enforced here: fuel per call, a wall-clock deadline through epoch
//! interruption (which also makes a spinning guest yield to other tasks), linear
//! memory and table caps through a [`wasmtime::ResourceLimiter`], and a per-plugin
//! concurrency cap with a bounded queue. Each limit hit is reported as a distinct
//! [`CallFailure`].

pub mod cache;
pub mod compiler;
pub mod gate;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{InstancePre, Linker};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

pub use self::gate::{ConcurrencyGate, Gates};

/// Gives the heap memory compilation freed back to the system. Cranelift's
/// allocations are freed when a compile ends, but glibc keeps the pages in the
/// compiling threads' arenas (tens of MB after ten plugins); called after a
/// load or reload compiled something.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` has no preconditions; it only returns free pages of
    // glibc's own arenas to the kernel and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
pub use self::state::{CallState, LimitHit};
use crate::bindings::types::ResourceContents;
use crate::bindings::{guest_prompts, guest_resources, guest_tools, names};
use crate::call::CallContext;
use crate::config::{Limits, MAX_MEMORY_MIB};

/// How often the epoch advances: the granularity of deadlines and of yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Fuel between two write-backs of the fuel count (see [`Runtime::store`]):
/// about a millisecond of guest work.
const FUEL_FLUSH: u64 = 2_000_000;

/// The most wasm stack a call may use.
const WASM_STACK: usize = 1 << 20;

/// Plugin instances alive at once, host-wide (calls and load-time
/// descriptions); the instance pool is sized for exactly this many, and no
/// plugin may run more than half of them at once (`max_concurrent`), so one
/// plugin can never take the pool from the others.
pub const MAX_LIVE_INSTANCES: u32 = 256;

/// Core instances one component may create (a Rust plugin needs 2-4; one built
/// with componentize-py about a dozen).
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
/// Linear memories one component may create (the memory limit is their total).
const MAX_MEMORIES_PER_COMPONENT: u32 = 8;
/// Tables one component may create.
const MAX_TABLES_PER_COMPONENT: u32 = 16;

/// Bytes of a guest's stdout/stderr kept per call (for the host log and trap messages).
const STDIO_CAPTURE: usize = 64 * 1024;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component (a core module, or not wasm at all).
    #[error("not a WebAssembly component: {0}")]
    NotComponent(String),
    /// The component imports something the host does not provide.
    #[error("imports an interface this host does not provide: {0}")]
    Link(String),
    /// The component does not export the `tools` interface of a supported version.
    #[error(
        "does not export `stockade:plugin/tools@0.1.0` (is it built for the stockade:plugin world?): {0}"
    )]
    NoToolsExport(String),
    /// The plugin failed while describing itself.
    #[error("failed while listing its tools: {0}")]
    Describe(String),
    /// The plugin's tool list is invalid.
    #[error("invalid tool list: {0}")]
    InvalidTools(String),
}

/// Why a call produced no result from the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The plugin ran out of fuel.
    #[error(
        "fuel exhausted: the call used all {0} units of fuel it is allowed \
         (the operator's `limits.fuel`); ask for less work, e.g. a smaller input"
    )]
    FuelExhausted(u64),
    /// The call ran past its deadline.
    #[error(
        "timed out after {} (the operator's `limits.timeout_ms`); ask for less work or try again",
        fmt_duration(*.0)
    )]
    Timeout(Duration),
    /// The plugin tried to grow its memory past the cap.
    #[error(
        "memory limit {0} MiB exceeded (the operator's `limits.memory_mib`); ask for less data at once"
    )]
    Memory(u32),
    /// The plugin tried to grow a table past the cap.
    #[error("table limit of {0} elements exceeded")]
    Table(u32),
    /// Too many calls of this plugin are running and waiting.
    #[error(
        "too many concurrent calls: plugin `{plugin}` is running {running} and queueing {queued}; try again shortly"
    )]
    Busy {
        /// The plugin.
        plugin: String,
        /// Its concurrency cap.
        running: u32,
        /// Its queue cap.
        queued: u32,
    },
    /// The result was larger than allowed.
    #[error(
        "result of {size} bytes exceeds the limit of {limit} KiB (the operator's \
         `limits.max_result_kib`); ask for less, e.g. a narrower query or a page of it"
    )]
    ResultTooLarge {
        /// The result's size.
        size: usize,
        /// The limit.
        limit: u32,
    },
    /// More data than the result limit allows crossed from the plugin to the
    /// host in one go (a result, or an argument of a host call), and the copy
    /// was stopped as the bytes crossed.
    #[error(
        "the plugin passed more than {limit} KiB to the host at once (max_result_kib); the copy was stopped"
    )]
    TransferTooLarge {
        /// The limit, in KiB.
        limit: u32,
    },
    /// The plugin trapped (a panic, `unreachable`, a stack overflow, ...).
    #[error("plugin crashed: {0}")]
    Trap(String),
    /// Every instance slot of the host stayed taken until the call's deadline.
    #[error("the host is running its maximum of {0} plugin instances; try again shortly")]
    HostBusy(u32),
    /// The call was cancelled by the client.
    #[error("cancelled by the client")]
    Cancelled,
    /// The client closed its connection before the answer was delivered.
    #[error("the client went away")]
    Disconnected,
    /// The host shut down while the call ran: the grace period that calls in
    /// flight get after the shutdown signal ended first.
    #[error("cut off by shutdown: the host stopped before the call finished; try again")]
    Shutdown,
}

impl CallFailure {
    /// The limit this failure represents, for audit records (`None` for crashes).
    pub fn limit_name(&self) -> Option<&'static str> {
        Some(match self {
            CallFailure::FuelExhausted(_) => "fuel",
            CallFailure::Timeout(_) => "timeout",
            CallFailure::Memory(_) => "memory",
            CallFailure::Table(_) => "table",
            CallFailure::Busy { .. } | CallFailure::HostBusy(_) => "concurrency",
            CallFailure::ResultTooLarge { .. } | CallFailure::TransferTooLarge { .. } => {
                "result_size"
            }
            CallFailure::Trap(_)
            | CallFailure::Cancelled
            | CallFailure::Disconnected
            | CallFailure::Shutdown => return None,
        })
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The engine configuration of `options`: fuel, epochs, stack, the pooling
/// allocator. The host and its compiler child ([`compiler`]) both use it.
fn engine_config(options: RuntimeOptions) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.consume_fuel(options.fuel);
    config.epoch_interruption(options.epoch);
    config.max_wasm_stack(WASM_STACK);
    let mut pool = PoolingAllocationConfig::default();
    // One component may not take more than a small share of the pool, so a
    // plugin cannot starve the others by instantiating many core instances.
    // Every instance holds one of MAX_LIVE_INSTANCES permits while it lives,
    // so the pool below can never run out.
    let live = MAX_LIVE_INSTANCES;
    pool.total_component_instances(live)
        .total_core_instances(live * MAX_CORE_INSTANCES_PER_COMPONENT)
        .total_memories(live * MAX_MEMORIES_PER_COMPONENT)
        .total_tables(live * MAX_TABLES_PER_COMPONENT)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memory_size((MAX_MEMORY_MIB as usize) << 20)
        .table_elements(1 << 20)
        // Reset a freed slot's dirty pages (found with Linux's PAGEMAP_SCAN,
        // up to this many bytes) with memset rather than madvise: no system
        // call and no TLB shootdown on every call (the profile's top kernel
        // cost), and no page faults to bring the pages back.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// The shared engine and linker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    ticker_stop: Arc<AtomicBool>,
    cache: Option<Arc<cache::CodeCache>>,
    compiler: compiler::Compiler,
    options: RuntimeOptions,
    gates: Gates,
    live: tokio::sync::Semaphore,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Engine switches. Both limits are on in production; turning them off exists only
/// to measure their cost (`cargo bench --bench call_overhead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Count fuel (per-call instruction budget).
    pub fuel: bool,
    /// Epoch interruption (per-call deadline and cooperative yielding).
    pub epoch: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            fuel: true,
            epoch: true,
        }
    }
}

impl Runtime {
    /// Builds the engine (fuel, epochs, pooling allocator), links every host
    /// interface and starts the epoch ticker.
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_options(RuntimeOptions::default())
    }

    /// [`Runtime::new`] with explicit engine switches.
    pub fn with_options(options: RuntimeOptions) -> wasmtime::Result<Self> {
        let config = engine_config(options);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::capabilities::fs_guard::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        link_capabilities(&mut linker)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("stockade-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?;
        }
        Ok(Self {
            engine,
            linker,
            ticker_stop,
            cache: None,
            compiler: compiler::Compiler::InProcess,
            options,
            gates: Gates::default(),
            live: tokio::sync::Semaphore::new(MAX_LIVE_INSTANCES as usize),
        })
    }

    /// Keeps compiled code in `dir` (see [`cache`]): creates the directory and
    /// its MAC key when missing.
    pub fn enable_cache(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        self.cache = Some(Arc::new(cache::CodeCache::open(dir, &self.engine)?));
        Ok(())
    }

    /// Compiles components this host has no cached code for in a child
    /// process running this executable (see [`compiler`]), so Cranelift's
    /// memory never stays in the host. Needs the cache (without one, code is
    /// compiled in this process).
    pub fn compile_in_child(&mut self) {
        self.compiler = compiler::Compiler::child(self.options);
    }

    /// The compiled-code cache, if any.
    pub fn cache(&self) -> Option<&cache::CodeCache> {
        self.cache.as_deref()
    }

    /// A permit to hold one instance, waiting at most `wait`; `None` if the host
    /// stays at [`MAX_LIVE_INSTANCES`] that long.
    async fn live_instance(&self, wait: Duration) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The usual case needs no timer.
        if let Ok(permit) = self.live.try_acquire() {
            return Some(permit);
        }
        tokio::time::timeout(wait, self.live.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The concurrency gate of plugin `name` with `limits` applied: one per name
    /// for the life of the process, so reloads keep counting running calls.
    pub fn gate(&self, name: &str, limits: &Limits) -> Arc<ConcurrencyGate> {
        self.gates
            .get(name, limits.max_concurrent, limits.max_queue)
    }

    /// The engine, shared by every plugin.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes` (whose sha256 is `digest`, hex; through the cache when
    /// there is one), links it, and asks the plugin to describe itself.
    pub async fn load(
        &self,
        name: &str,
        bytes: &[u8],
        digest: &str,
        limits: Limits,
    ) -> Result<PluginCode, LoadError> {
        if wasmparser_is_core_module(bytes) {
            return Err(LoadError::NotComponent(
                "this is a core WebAssembly module; build a component (cargo build --target wasm32-wasip2)".into(),
            ));
        }
        let started = Instant::now();
        // Compiling takes from milliseconds to seconds of CPU, and the cache
        // reads and writes files: keep both off the async workers.
        let (component, source) = {
            let (engine, cache) = (self.engine.clone(), self.cache.clone());
            let compiler = self.compiler.clone();
            let (digest, bytes) = (digest.to_owned(), bytes.to_vec());
            tokio::task::spawn_blocking(move || match &cache {
                Some(cache) => cache.component(&engine, &compiler, &digest, &bytes),
                None => compiler
                    .component(&engine, &bytes)
                    .map(|(c, _)| (c, cache::Source::Compiled)),
            })
            .await
            .map_err(|e| LoadError::NotComponent(format!("the compiler task failed: {e}")))?
            .map_err(|e| LoadError::NotComponent(e.to_string()))?
        };
        match source {
            cache::Source::Cache => tracing::debug!(
                plugin = %name, digest, ms = started.elapsed().as_millis() as u64,
                "compiled code loaded from cache"
            ),
            cache::Source::Compiled => tracing::debug!(
                plugin = %name, digest, ms = started.elapsed().as_millis() as u64,
                cached = self.cache.is_some(),
                compiler = self.compiler.kind(),
                "component compiled"
            ),
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(first_line(&e)))?;
        let tools_idx = guest_tools::GuestIndices::new(&pre)
            .map_err(|e| LoadError::NoToolsExport(first_line(&e)))?;
        let resources_idx = guest_resources::GuestIndices::new(&pre).ok();
        let prompts_idx = guest_prompts::GuestIndices::new(&pre).ok();

        let Some(_live) = self
            .live_instance(Duration::from_millis(limits.timeout_ms))
            .await
        else {
            return Err(LoadError::Describe(
                CallFailure::HostBusy(MAX_LIVE_INSTANCES).to_string(),
            ));
        };
        let mut store = self.store(CallContext::internal(name), &limits);
        let describe = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let tools = tools_idx.load(&mut store, &instance)?;
            let info = tools.call_describe(&mut store).await?;
            let list = tools.call_list_tools(&mut store).await?;
            let resources = match &resources_idx {
                Some(idx) => {
                    let r = idx.load(&mut store, &instance)?;
                    (
                        r.call_list_resources(&mut store).await?,
                        r.call_list_resource_templates(&mut store).await?,
                    )
                }
                None => Default::default(),
            };
            let prompts = match &prompts_idx {
                Some(idx) => {
                    idx.load(&mut store, &instance)?
                        .call_list_prompts(&mut store)
                        .await?
                }
                None => Vec::new(),
            };
            wasmtime::Result::Ok((info, list, resources, prompts))
        };
        let (info, tools, (resources, resource_templates), prompts) =
            match tokio::time::timeout(Duration::from_millis(limits.timeout_ms), describe).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    let failure = classify(&e, &store, &limits);
                    return Err(LoadError::Describe(failure.to_string()));
                }
                Err(_) => {
                    return Err(LoadError::Describe(
                        CallFailure::Timeout(Duration::from_millis(limits.timeout_ms)).to_string(),
                    ));
                }
            };
        Ok(PluginCode {
            pre,
            tools_idx,
            resources_idx,
            prompts_idx,
            info,
            tools,
            resources,
            resource_templates,
            prompts,
        })
    }

    fn store(&self, cx: CallContext, limits: &Limits) -> Store<CallState> {
        let stdout = MemoryOutputPipe::new(STDIO_CAPTURE);
        let stderr = MemoryOutputPipe::new(STDIO_CAPTURE);
        let state = CallState::new(
            cx,
            (limits.memory_mib as usize) << 20,
            limits.table_elements as usize,
            stdout,
            stderr,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Bounds every copy from the guest into the host (the result, and each
        // host call's arguments) as the bytes cross, before host memory is spent.
        store.set_hostcall_fuel(transfer_budget(limits));
        // Fuel is always enabled in the engine, so this cannot fail.
        let _ = store.set_fuel(limits.fuel);
        // Compiled code keeps its fuel count in a register and writes it back
        // only on some exits (not when an epoch deadline interrupts a loop):
        // refilling every FUEL_FLUSH units writes it back regularly, so a call
        // stopped by its deadline reports the fuel it really used (to within
        // FUEL_FLUSH).
        let _ = store.fuel_async_yield_interval(Some(FUEL_FLUSH));
        let deadline = Instant::now() + Duration::from_millis(limits.timeout_ms);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut cx| {
            if Instant::now() >= deadline {
                cx.data_mut().limiter.hit = Some(LimitHit::Timeout);
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Runs `op` on `plugin` in a fresh instance under `policy`'s limits.
    pub async fn invoke(
        &self,
        plugin: &PluginCode,
        policy: &Policy,
        op: Op<'_>,
        cx: CallContext,
    ) -> CallReport {
        let started = Instant::now();
        let limits = policy.limits;
        let refused = |failure| CallReport::stopped(failure, started.elapsed());
        let _slot = match policy.gate.enter().await {
            Ok(slot) => slot,
            Err(gate::Full) => {
                return refused(CallFailure::Busy {
                    plugin: cx.plugin.clone(),
                    running: limits.max_concurrent,
                    queued: limits.max_queue,
                });
            }
        };
        // Declared before the store, so the instance's pool slots are back before
        // the permit is.
        let Some(_live) = self
            .live_instance(Duration::from_millis(limits.timeout_ms))
            .await
        else {
            return refused(CallFailure::HostBusy(MAX_LIVE_INSTANCES));
        };
        let mut store = self.store(cx, &limits);
        let run = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            wasmtime::Result::Ok(match op {
                Op::CallTool {
                    tool,
                    arguments,
                    caller,
                } => {
                    let g = plugin.tools_idx.load(&mut store, &instance)?;
                    OpOutput::Tool(
                        g.call_call_tool(&mut store, tool, arguments, caller)
                            .await?,
                    )
                }
                Op::ReadResource { uri } => {
                    let idx = plugin.resources_idx.as_ref().ok_or_else(|| {
                        wasmtime::format_err!("the plugin does not export `{}`", names::RESOURCES)
                    })?;
                    let g = idx.load(&mut store, &instance)?;
                    OpOutput::Resource(g.call_read_resource(&mut store, uri).await?)
                }
                Op::GetPrompt { name, arguments } => {
                    let idx = plugin.prompts_idx.as_ref().ok_or_else(|| {
                        wasmtime::format_err!("the plugin does not export `{}`", names::PROMPTS)
                    })?;
                    let g = idx.load(&mut store, &instance)?;
                    OpOutput::Prompt(g.call_get_prompt(&mut store, name, arguments).await?)
                }
            })
        };
        // The epoch callback enforces the deadline inside wasm; this outer timeout
        // also bounds time spent in host calls (a grace of two ticks on top).
        let hard = Duration::from_millis(limits.timeout_ms) + EPOCH_TICK * 2;
        let outcome = match tokio::time::timeout(hard, run).await {
            Ok(Ok(r)) => {
                let size = r.size();
                if size > (limits.max_result_kib as usize) << 10 {
                    Err(CallFailure::ResultTooLarge {
                        size,
                        limit: limits.max_result_kib,
                    })
                } else {
                    Ok(r)
                }
            }
            Ok(Err(e)) => Err(classify(&e, &store, &limits)),
            Err(_) => Err(CallFailure::Timeout(Duration::from_millis(
                limits.timeout_ms,
            ))),
        };
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let data = store.data_mut();
        let denials = std::mem::take(
            &mut *data
                .http_policy
                .denials
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if let Some(audit) = &data.cx.audit {
            for detail in denials.iter().cloned() {
                audit
                    .note(crate::audit::AuditEvent::CapabilityDenied {
                        plugin: data.cx.plugin.clone(),
                        tool: data.cx.tool.clone(),
                        capability: "http".into(),
                        detail,
                    })
                    .await;
            }
        }
        let data = store.data();
        let denied = data
            .cx
            .denial_count
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_add(denials.len() as u32);
        CallReport {
            outcome,
            fuel_used,
            duration: started.elapsed(),
            notify_dropped: data.cx.notify_dropped,
            stderr: String::from_utf8_lossy(&data.stderr.contents()).into_owned(),
            denials,
            denied,
        }
    }
}

impl Runtime {
    /// Instantiates `plugin` in a fresh store and drops it: the fixed cost every
    /// call pays (for benchmarks).
    pub async fn instantiate_only(
        &self,
        plugin: &PluginCode,
        limits: &Limits,
    ) -> wasmtime::Result<()> {
        let _live = self.live.acquire().await?;
        let mut store = self.store(CallContext::internal("bench"), limits);
        plugin.pre.instantiate_async(&mut store).await?;
        Ok(())
    }
}

/// An operation on a plugin instance.
pub enum Op<'a> {
    /// `tools.call-tool`.
    CallTool {
        /// The tool.
        tool: &'a str,
        /// The arguments, a JSON object as text.
        arguments: &'a str,
        /// Who calls.
        caller: &'a guest_tools::Caller,
    },
    /// `resources.read-resource`.
    ReadResource {
        /// The URI.
        uri: &'a str,
    },
    /// `prompts.get-prompt`.
    GetPrompt {
        /// The prompt.
        name: &'a str,
        /// Its arguments.
        arguments: &'a [(String, String)],
    },
}

/// What an [`Op`] returned.
#[derive(Debug)]
pub enum OpOutput {
    /// From `call-tool`.
    Tool(Result<guest_tools::CallResult, guest_tools::ToolError>),
    /// From `read-resource`.
    Resource(Result<Vec<ResourceContents>, guest_resources::ResourceError>),
    /// From `get-prompt`.
    Prompt(Result<guest_prompts::PromptResult, guest_prompts::PromptError>),
}

impl OpOutput {
    /// Approximate size on the wire, for the result-size limit.
    fn size(&self) -> usize {
        use crate::bindings::types::Content;
        fn content(c: &Content) -> usize {
            match c {
                Content::Text(t) => t.len(),
                Content::Image(m) | Content::Audio(m) => m.data.len() * 4 / 3,
                Content::EmbeddedResource(r) => resource(r),
                Content::ResourceLink(l) => l.uri.len() + l.name.len(),
            }
        }
        fn resource(r: &ResourceContents) -> usize {
            match r {
                ResourceContents::Text(t) => t.text.len(),
                ResourceContents::Blob(b) => b.blob.len() * 4 / 3,
            }
        }
        match self {
            OpOutput::Tool(Ok(r)) => {
                r.structured_content.as_ref().map_or(0, String::len)
                    + r.content.iter().map(content).sum::<usize>()
            }
            OpOutput::Tool(Err(
                guest_tools::ToolError::Failed(m)
                | guest_tools::ToolError::InvalidArguments(m)
                | guest_tools::ToolError::UnknownTool(m),
            )) => m.len(),
            OpOutput::Resource(Ok(list)) => list.iter().map(resource).sum(),
            OpOutput::Prompt(Ok(p)) => p.messages.iter().map(|m| content(&m.content)).sum(),
            OpOutput::Resource(Err(_)) | OpOutput::Prompt(Err(_)) => 0,
        }
    }
}

/// The most bytes one guest-to-host copy may carry: the result limit, with room
/// for the result's structure, and never less than 1 MiB so host calls work
/// under a small result limit.
fn transfer_budget(limits: &Limits) -> usize {
    ((limits.max_result_kib as usize) << 10).max(1 << 20) + (64 << 10)
}

/// Whether `e` is wasmtime stopping a guest-to-host copy past the store's
/// hostcall fuel (its error type is private; its message is stable and covered
/// by the `huge_result` sandbox test).
fn is_transfer_limit(e: &wasmtime::Error) -> bool {
    e.chain().any(|c| {
        c.to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

/// Links every Stockade capability interface (not WASI) into `linker`. Each is
/// implemented on the call's [`CallContext`], which the store data holds.
fn link_capabilities(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use crate::bindings::stockade::plugin as p;
    use wasmtime::component::HasSelf;
    type Cx = HasSelf<CallContext>;
    p::types::add_to_linker::<CallState, Cx>(linker, |s| &mut s.cx)?;
    p::log::add_to_linker::<CallState, Cx>(linker, |s| &mut s.cx)?;
    p::progress::add_to_linker::<CallState, Cx>(linker, |s| &mut s.cx)?;
    p::client::add_to_linker::<CallState, Cx>(linker, |s| &mut s.cx)?;
    p::exec::add_to_linker::<CallState, Cx>(linker, |s| &mut s.cx)?;
    p::sql::add_to_linker::<CallState, Cx>(linker, |s| &mut s.cx)?;
    p::metrics::add_to_linker::<CallState, Cx>(linker, |s| &mut s.cx)?;
    p::events::add_to_linker::<CallState, Cx>(linker, |s| &mut s.cx)?;
    Ok(())
}

/// Turns a wasmtime error from a call into the failure it represents.
fn classify(e: &wasmtime::Error, store: &Store<CallState>, limits: &Limits) -> CallFailure {
    match store.data().limiter.hit {
        Some(LimitHit::Memory) => return CallFailure::Memory(limits.memory_mib),
        Some(LimitHit::Table) => return CallFailure::Table(limits.table_elements),
        Some(LimitHit::Timeout) => {
            return CallFailure::Timeout(Duration::from_millis(limits.timeout_ms));
        }
        None => {}
    }
    if is_transfer_limit(e) {
        return CallFailure::TransferTooLarge {
            limit: limits.max_result_kib,
        };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => return CallFailure::FuelExhausted(limits.fuel),
            Trap::Interrupt => {
                return CallFailure::Timeout(Duration::from_millis(limits.timeout_ms));
            }
            Trap::StackOverflow => {
                return CallFailure::Trap(format!(
                    "stack overflow: the plugin recursed past the {} KiB wasm stack limit",
                    WASM_STACK >> 10
                ));
            }
            _ => {}
        }
    }
    let mut message = trap_message(e);
    let stderr = String::from_utf8_lossy(&store.data().stderr.contents()).into_owned();
    if let Some(panic) = panic_message(&stderr) {
        message = format!("{panic} ({message})");
    }
    CallFailure::Trap(message)
}

/// What went wrong, as one line: the trap kind (or the root cause of a host
/// error) and the innermost wasm frames, e.g. `wasm \`unreachable\` instruction
/// executed in hostile::crash <- hostile::call_tool`.
fn trap_message(e: &wasmtime::Error) -> String {
    const FRAMES: usize = 3;
    let cause = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    };
    let cause = cause.lines().next().unwrap_or_default().to_owned();
    let frames: Vec<String> = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| {
            bt.frames()
                .iter()
                .take(FRAMES)
                .map(|f| match f.func_name() {
                    Some(name) => name.chars().take(120).collect(),
                    None => format!(
                        "{}!<function {}>",
                        f.module().name().unwrap_or("<module>"),
                        f.func_index()
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    if frames.is_empty() {
        cause
    } else {
        format!("{cause} in {}", frames.join(" <- "))
    }
}

/// Extracts a Rust guest's panic message from its stderr, if there is one.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let text: String = stderr[start..]
        .lines()
        .take(2)
        .collect::<Vec<_>>()
        .join(": ");
    Some(text.chars().take(500).collect())
}

fn first_line(e: &wasmtime::Error) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or_default().to_owned()
}

fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    // A core module has version 1 in its preamble; a component has a layer of 1.
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// What one call did.
pub struct CallReport {
    /// The plugin's answer, or why there was none.
    pub outcome: Result<OpOutput, CallFailure>,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Wall-clock time, including any wait for a concurrency slot.
    pub duration: Duration,
    /// Log/progress messages dropped for exceeding the budget.
    pub notify_dropped: u64,
    /// What the guest wrote to stderr (capped).
    pub stderr: String,
    /// The host's sentences for requests it refused during the call (for
    /// now outbound HTTP, whose WASI error codes cannot carry them): what was
    /// refused and which grant would allow it. Also audited.
    pub denials: Vec<String>,
    /// Capability requests refused during the call, of every kind.
    pub denied: u32,
}

impl CallReport {
    /// A call that ended before the plugin answered (refused, queued too long,
    /// cancelled).
    pub fn stopped(failure: CallFailure, duration: Duration) -> Self {
        Self {
            outcome: Err(failure),
            fuel_used: 0,
            duration,
            notify_dropped: 0,
            stderr: String::new(),
            denials: Vec::new(),
            denied: 0,
        }
    }
}

/// Dirty bytes of each freed memory and table slot reset with memset (and kept
/// resident) between calls; a small plugin's whole working set.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// One compiled, linked plugin version and what it said about itself at load time.
pub struct PluginCode {
    pre: InstancePre<CallState>,
    tools_idx: guest_tools::GuestIndices,
    resources_idx: Option<guest_resources::GuestIndices>,
    prompts_idx: Option<guest_prompts::GuestIndices>,
    /// The plugin's own description.
    pub info: guest_tools::PluginInfo,
    /// Its tools.
    pub tools: Vec<guest_tools::Tool>,
    /// Its concrete resources.
    pub resources: Vec<guest_resources::Resource>,
    /// Its resource templates.
    pub resource_templates: Vec<guest_resources::ResourceTemplate>,
    /// Its prompts.
    pub prompts: Vec<guest_prompts::Prompt>,
}

impl PluginCode {
    /// The names of the component's imports (`wasi:http/outgoing-handler@0.2.6`, ...).
    pub fn import_names(&self) -> Vec<String> {
        let component = self.pre.component();
        component
            .component_type()
            .imports(component.engine())
            .map(|(name, _)| name.to_owned())
            .collect()
    }
}

/// What the operator allows one plugin: its limits and grants, and the gate that
/// caps its concurrency. Rebuilt when the configuration changes; the compiled
/// code is shared.
pub struct Policy {
    /// The limits every call runs under.
    pub limits: Limits,
    /// The capabilities granted.
    pub grants: Arc<crate::config::Grants>,
    /// The SQL sources granted, by name.
    pub sql: Arc<std::collections::BTreeMap<String, crate::config::SqlSource>>,
    /// The OAuth scope a caller must hold, if any.
    pub scope: Option<String>,
    gate: Arc<ConcurrencyGate>,
}

impl Policy {
    /// A policy with `limits` and `grants`, admitting calls through `gate`
    /// (from [`Runtime::gate`]).
    pub fn new(
        limits: Limits,
        grants: crate::config::Grants,
        sql: std::collections::BTreeMap<String, crate::config::SqlSource>,
        scope: Option<String>,
        gate: Arc<ConcurrencyGate>,
    ) -> Self {
        Self {
            gate,
            limits,
            grants: Arc::new(grants),
            sql: Arc::new(sql),
            scope,
        }
    }
}

#[cfg(test)]
mod tests;
