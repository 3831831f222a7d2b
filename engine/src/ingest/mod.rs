//! Taking a measurement from a probe: checks that follow OONI's probe service, the
//! durable spool, and the handoff to the scorers.

pub mod spool;
pub mod submission;
