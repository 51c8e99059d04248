//! What leaves the sensor: alerts (JSON lines) and incident bundles.

pub mod alerts;
pub mod http;
pub mod incident;
pub mod metrics;
pub mod ocsf;
#[cfg(test)]
mod promtool;
pub mod webhook;
