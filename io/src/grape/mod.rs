//! The Grape: its driver task, its HTTP and WebSocket API servers, and the handle that
//! starts and stops them.

mod driver;
mod http;
pub(crate) mod server;
mod ws;

use crate::config::Limits;
use crate::stop::Stop;
use driver::Command;

/// What every API connection needs: the way to the driver and the bounds to keep.
#[derive(Debug)]
pub(crate) struct ApiContext {
    pub(crate) commands: async_channel::Sender<Command>,
    /// The core's body limit; the WebSocket message cap too.
    pub(crate) max_payload: usize,
    pub(crate) limits: Limits,
    pub(crate) stop: Stop,
}
