//! `stockade:plugin/log`: log messages to the MCP client and the host log.

use crate::bindings::log::{Host, Level};
use crate::call::{CallContext, LogLevel};

impl From<Level> for LogLevel {
    fn from(l: Level) -> Self {
        match l {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Notice => LogLevel::Notice,
            Level::Warning => LogLevel::Warning,
            Level::Error => LogLevel::Error,
            Level::Critical => LogLevel::Critical,
            Level::Alert => LogLevel::Alert,
            Level::Emergency => LogLevel::Emergency,
        }
    }
}

impl Host for CallContext {
    async fn log(&mut self, level: Level, logger: Option<String>, message: String) {
        let cx = self;
        if !cx.spend_notify(&[Some(&message), logger.as_deref()]) {
            return;
        }
        tracing::debug!(plugin = %cx.plugin, tool = cx.tool.as_deref(), ?level, logger = logger.as_deref(), %message, "plugin log");
        if let Some(link) = &cx.link {
            link.log(level.into(), logger, message);
        }
    }
}
