//! The wasmtime side: one `Engine` (pooling allocator, epoch interruption), the `Linker` with
//! exactly the imports a producer gets, and a fresh capability-less `Store` per request, under
//! the [`Policy`] of the component it runs (its topics, memory cap and deadline).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use vote_service::vote_metrics::VoteMetrics;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// How often the epoch advances: a running guest yields this often and checks its deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How much of each linear memory may be reset in place rather than decommitted, by default
/// (`--pool-keep-resident-kib`): resetting in place is faster, and keeps that much of every
/// instance slot ever used resident.
pub const KEEP_RESIDENT_BYTES: usize = 1024 * 1024;

/// How much of each table is reset in place rather than decommitted: one page (512 function
/// references) holds each of a producer's tables, so they are zeroed, not unmapped and re-faulted.
pub const TABLE_KEEP_RESIDENT_BYTES: usize = 4096;

/// How many instance slots' memory is decommitted in one batch.
pub const DECOMMIT_BATCH: usize = 16;

/// Limits of the engine: every component's own limits ([`Policy`]) fit inside them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most linear memory any instance may grow to (the pool's slot size).
    pub memory_bytes: usize,
    /// How long one request may run before it is stopped, unless its component says otherwise.
    pub request_timeout: Duration,
    /// How many instances may exist at once (the pool's size).
    pub max_instances: u32,
    /// How much of each linear memory is reset in place rather than decommitted.
    pub keep_resident_bytes: usize,
}

/// What one component's requests run under: the topics it may publish to, its memory cap and
/// its request timeout (from its manifest entry, or the host's flags).
#[derive(Debug, Clone)]
pub struct Policy {
    /// The component's id in the application (a metrics label).
    pub component: Arc<str>,
    /// The topics it may publish to; a publish elsewhere is `refused`.
    pub topics: Arc<Vec<String>>,
    pub memory_bytes: usize,
    pub request_timeout: Duration,
    /// How many requests one instance may serve, one after another ([`crate::reuse`]); `1` (the
    /// default): a fresh instance per request.
    pub instance_reuse: u32,
}

impl Policy {
    /// The policy a component is checked under while it loads: no topic, the engine's limits.
    pub fn check(limits: &Limits) -> Self {
        Self { component: Arc::from("check"), topics: Arc::new(Vec::new()), memory_bytes: limits.memory_bytes, request_timeout: limits.request_timeout, instance_reuse: 1 }
    }
}

/// What a store holds for one request: WASI state with no capabilities, the HTTP context, the
/// memory limiter, the publisher, and when the request arrived (for the vote metrics).
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    limits: StoreLimits,
    pub(crate) publisher: vote_rabbit::Brokers,
    pub(crate) allowed_topics: Arc<Vec<String>>,
    pub(crate) component: Arc<str>,
    pub(crate) votes: Option<VoteMetrics>,
    pub(crate) refusals: Option<prometheus::IntCounterVec>,
    pub(crate) received: Instant,
    /// When the running request must be stopped.
    deadline: Instant,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: wasmtime_wasi_http::default_hooks() }
    }
}

/// The engine, linker and limits shared by every request.
pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub limits: Limits,
    publisher: vote_rabbit::Brokers,
    votes: Option<VoteMetrics>,
    refusals: Option<prometheus::IntCounterVec>,
    /// Serve every component through `wasi:http`, even one exporting the one-call handler
    /// (`--wasi-http-only`, to measure or test that path).
    pub wasi_http_only: bool,
}

impl Runtime {
    /// The engine for `limits`, publishing through `publisher` (each topic to its broker), with
    /// `profiler` (`PerfMap` for `--perf-map`; `None` otherwise).
    pub fn new(limits: Limits, publisher: vote_rabbit::Brokers, profiler: ProfilingStrategy) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances * 4)
            .total_memories(limits.max_instances * 2)
            .total_tables(limits.max_instances * 2)
            .total_stacks(limits.max_instances)
            .max_memory_size(limits.memory_bytes)
            // Return freed instance memory to the OS in batches: fewer madvise calls and TLB
            // shootdowns per request.
            .decommit_batch_size(DECOMMIT_BATCH)
            // Where the kernel can say which pages an instance dirtied (PAGEMAP_SCAN, Linux 6.7+),
            // reset just those in place instead of unmapping and re-faulting them.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(limits.keep_resident_bytes)
            .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        config.profiler(profiler);
        let engine = Engine::new(&config)?;
        let linker = Self::linker(&engine)?;
        spawn_epoch_ticker(&engine);
        Ok(Self { engine, linker, limits, publisher, votes: None, refusals: None, wasi_http_only: false })
    }

    /// The publishers: which topics live on RabbitMQ.
    pub fn brokers(&self) -> &vote_rabbit::Brokers {
        &self.publisher
    }

    /// Counts every message the components publish to the votes topic as a vote in `votes`
    /// (accepted with its ingest time, or failed by reason), and every publish refused for its
    /// topic in `refusals` (by component).
    pub fn count_votes(mut self, votes: VoteMetrics, refusals: prometheus::IntCounterVec) -> Self {
        self.votes = Some(votes);
        self.refusals = Some(refusals);
        self
    }

    /// Serves every component through `wasi:http` (see [`crate::entry`]).
    pub fn wasi_http_only(mut self, only: bool) -> Self {
        self.wasi_http_only = only;
        self
    }

    /// WASI (with nothing granted: no preopened files, no environment, no network), the
    /// incoming side of `wasi:http` (no outgoing requests) and the publisher.
    fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
        wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<_, wasmtime_wasi_http::WasiHttp>(
            &mut linker,
            &(&options).into(),
            HostState::http,
        )?;
        crate::publisher::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;
        Ok(linker)
    }

    /// A fresh store for one request of a component under `policy`: its topics, memory cap and
    /// deadline.
    pub fn new_store(&self, policy: &Policy) -> Store<HostState> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        let now = Instant::now();
        let state = HostState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            limits: self.store_limits(policy),
            publisher: self.publisher.clone(),
            allowed_topics: policy.topics.clone(),
            component: policy.component.clone(),
            votes: self.votes.clone(),
            refusals: self.refusals.clone(),
            received: now,
            deadline: now + policy.request_timeout,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Every tick a running guest yields to the async runtime (so a guest that computes for
        // long never takes a worker thread from the others), and past the request timeout it is
        // stopped.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Err(wasmtime::Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Readies the store of a reused instance for its next request: the policy the component
    /// serves under now (a reload may have changed its topics or memory cap), a new arrival time
    /// and a new deadline.
    pub fn renew_store(&self, store: &mut Store<HostState>, policy: &Policy) {
        let now = Instant::now();
        let limits = self.store_limits(policy);
        let state = store.data_mut();
        state.limits = limits;
        state.allowed_topics = policy.topics.clone();
        state.component = policy.component.clone();
        state.received = now;
        state.deadline = now + policy.request_timeout;
        store.set_epoch_deadline(1);
    }

    fn store_limits(&self, policy: &Policy) -> StoreLimits {
        StoreLimitsBuilder::new().memory_size(policy.memory_bytes.min(self.limits.memory_bytes)).trap_on_grow_failure(false).build()
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] for as long as the process runs.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker");
}
