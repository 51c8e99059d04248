//! What leaves the sensor: alerts (JSON lines) and incident bundles.

pub mod alerts;
pub mod incident;
