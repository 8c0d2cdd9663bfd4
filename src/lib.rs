//! wsgate: a WebSocket gateway for AWS CLB/NLB.
pub mod proxy;
